//! The Docker boundary. [`DockerApi`] is the small set of calls drover makes
//! on a host, in drover's own types; [`Engine`] implements it over bollard
//! (`engine.rs`), [`fake::FakeDocker`] records calls for unit tests, and
//! [`hosts`] connects to and reads every host of the Cluster.

mod engine;
pub mod fake;
pub mod hosts;
pub mod usage;

pub use engine::{
    exit_code_from_status, health_from_status, Engine, CONNECT_TIMEOUT, REQUEST_TIMEOUT_SECS,
};

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWrite;

use crate::contract::hostkey::{self, HostKey};
use crate::contract::labels;
use crate::desired::{decode_field_digests, ContainerSpec, NetworkSpec, VolumeSpec};
use crate::model::{Host, Restart};
use crate::observed::{
    ContainerState, Health, ObservedContainer, ObservedHost, ObservedNetwork, ObservedVolume,
    PublishedPort, RecordObject, RecordRef,
};

/// What went wrong talking to a host. Never carries a secret: container
/// configs are not echoed back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("host `{host}` cannot be reached at {endpoint}: {reason}")]
    Unreachable {
        host: String,
        endpoint: String,
        reason: String,
    },
    #[error("host `{host}`: {op}: {message}")]
    Api {
        host: String,
        op: String,
        message: String,
        /// The engine's HTTP status, when it answered with one.
        status: Option<u16>,
    },
}

/// A container's run state as seen when waiting for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub state: ContainerState,
    pub health: Option<Health>,
    /// An exited container's exit code.
    pub exit_code: Option<i64>,
    /// The output of the latest health check, for error messages.
    pub last_health_output: Option<String>,
    /// Its restart policy: `always` brings a stopped container back when
    /// the engine restarts.
    pub restart: Option<Restart>,
}

/// A drover helper container: the volume mounted at `/data`, drover's own
/// image, nothing else (no ports, no privileges, no host paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperSpec {
    pub name: String,
    pub image: String,
    pub volume: String,
    pub read_only: bool,
    /// Another volume on the same host, mounted read-only at `/source`
    /// (a copy between two volumes of one host).
    pub source: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub cmd: Vec<String>,
    /// Networked (for the direct copy path); otherwise no network at all.
    pub network: bool,
    /// `(host ip, container port)` to publish on a port the engine picks;
    /// an empty ip means every interface.
    pub publish: Option<(String, u16)>,
    /// Keeps its records of file hashes in the host's
    /// [`crate::contract::HASH_RECORDS`] volume, so that the next helper
    /// of these volumes reads only what changed since.
    pub records: bool,
}

/// A root file system tar for `docker import`, as it is made.
pub type RootFs = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A root file system tar held whole, as a [`RootFs`].
pub fn rootfs_of(tar: Vec<u8>) -> RootFs {
    Box::pin(futures_util::stream::once(std::future::ready(Ok(
        Bytes::from(tar),
    ))))
}

/// A container made only to carry labels: never started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A lease object as read from a host: its id, its labels, and the time
/// its holder last extended it to (Unix seconds), if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub renewed_until: Option<u64>,
}

/// The image lease objects are made from: an empty file system, imported
/// on first use (a lease object is never started).
pub use crate::contract::names::LEASE_IMAGE;

/// A chunk of what a command run in a container printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Bytes),
    Stderr(Bytes),
}

pub type ExecOutputStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, EngineError>> + Send>>;

/// A command running in a container, with its stdin and output attached.
pub struct Exec {
    pub id: String,
    pub output: ExecOutputStream,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

/// A container's state for an error message: `running, unhealthy; last
/// health output: …`, or `missing`.
pub fn describe_status(status: Option<&ContainerStatus>) -> String {
    let Some(s) = status else {
        return "missing".into();
    };
    let health = match s.health {
        Some(Health::Starting) => ", health starting",
        Some(Health::Healthy) => ", healthy",
        Some(Health::Unhealthy) => ", unhealthy",
        None => "",
    };
    let last = s
        .last_health_output
        .as_deref()
        .filter(|o| !o.is_empty())
        .map_or(String::new(), |o| format!("; last health output: {o}"));
    format!("{}{health}{last}", s.state.as_str())
}

/// `message` without the health-check output [`describe_status`] put in
/// it (the output may hold anything): for what is served unauthenticated.
pub fn without_health_output(message: &str) -> String {
    const MARK: &str = "; last health output: ";
    match message.find(MARK) {
        Some(at) => format!("{}; last health output in the log", &message[..at]),
        None => message.to_string(),
    }
}

/// The calls drover makes on one Docker host. Implementations are cheap to
/// share between tasks.
#[async_trait]
pub trait DockerApi: Send + Sync {
    /// The host's name in the Cluster.
    fn host(&self) -> &str;
    /// The Engine API version agreed with the host, where known.
    fn api_version(&self) -> Option<String> {
        None
    }
    /// Everything drover needs to plan against this host.
    async fn observe(&self) -> Result<ObservedHost, EngineError>;
    /// Each volume's size as the engine counts it: it reads every volume's
    /// files, so this is asked only for the volumes a plan moves.
    async fn volume_sizes(&self) -> Result<BTreeMap<String, u64>, EngineError>;
    async fn image_present(&self, image: &str) -> Result<bool, EngineError>;
    /// Pulls `image`, for `platform` (`linux/arm64`) when one is named.
    async fn pull_image(&self, image: &str, platform: Option<&str>) -> Result<(), EngineError>;
    async fn create_volume(&self, v: &VolumeSpec) -> Result<(), EngineError>;
    /// Deletes a volume and its data. Only explicit commands call this.
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError>;
    async fn create_network(&self, n: &NetworkSpec) -> Result<(), EngineError>;
    async fn remove_network(&self, name: &str) -> Result<(), EngineError>;
    /// Makes a container; one with a secret value gets its digests under
    /// the host's key ([`DockerApi::secret_key`]).
    async fn create_container(&self, c: &ContainerSpec) -> Result<(), EngineError>;
    /// The host's key for digests of secret values, made if it has none.
    async fn secret_key(&self) -> Result<HostKey, EngineError>;
    async fn start_container(&self, name: &str) -> Result<(), EngineError>;
    async fn stop_container(&self, name: &str, grace: Duration) -> Result<(), EngineError>;
    /// `docker pause`: the container's processes are frozen (cgroup
    /// freezer) and keep their memory and connections.
    async fn pause_container(&self, name: &str) -> Result<(), EngineError>;
    /// `docker unpause`; a container that is not paused is left as it is.
    async fn unpause_container(&self, name: &str) -> Result<(), EngineError>;
    /// Removes a container, never its volumes.
    async fn remove_container(&self, name: &str) -> Result<(), EngineError>;
    /// `None` when there is no such container.
    async fn container_status(&self, name: &str) -> Result<Option<ContainerStatus>, EngineError>;
    /// Changes a container's restart policy in place.
    async fn set_restart(&self, name: &str, restart: Restart) -> Result<(), EngineError>;
    /// `docker import` of a root file system tar as `tag`.
    async fn import_image(&self, tag: &str, rootfs: RootFs) -> Result<(), EngineError>;
    /// Makes and starts a helper container; returns the host port its
    /// published port got, if it publishes one.
    async fn run_helper(&self, h: &HelperSpec) -> Result<Option<u16>, EngineError>;
    /// Makes a copy record: a label-only volume, which no container prune
    /// removes (and no volume prune of Docker 23 or later).
    async fn create_record(&self, m: &RecordSpec) -> Result<(), EngineError>;
    /// Removes a copy record. A volume is removed only if it is a record
    /// (labelled `drover.copy-of` and internal), never one holding data.
    async fn remove_record(&self, r: &RecordRef) -> Result<(), EngineError>;
    /// Makes the lease object `name` with `labels`; `None` when one exists
    /// already. The engine's unique container names make this the lock.
    async fn create_lease(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<String>, EngineError>;
    /// The lease object `name`, if there is one.
    async fn read_lease(&self, name: &str) -> Result<Option<LeaseRecord>, EngineError>;
    /// Records that the lease object `id` now runs until `until` (Unix
    /// seconds); false when that object is gone.
    async fn renew_lease(&self, id: &str, until: u64) -> Result<bool, EngineError>;
    /// Removes the lease object `id` (by id, so never a successor); false
    /// when it was gone already.
    async fn remove_lease(&self, id: &str) -> Result<bool, EngineError>;
    /// Runs a command in a running container, stdin and output attached.
    async fn exec(&self, container: &str, cmd: Vec<String>) -> Result<Exec, EngineError>;
    /// The exit code of a finished command; `None` while it runs.
    async fn exec_exit_code(&self, id: &str) -> Result<Option<i64>, EngineError>;
    /// Whether the engine answers at all.
    async fn ping(&self) -> Result<(), EngineError>;
}

/// The endpoint of a host, `$DOCKER_HOST` or the default socket for the
/// implicit `local` host.
pub fn endpoint_of(host: &Host) -> String {
    if !host.endpoint.is_empty() {
        return host.endpoint.clone();
    }
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

/// Whether plain TCP to this endpoint crosses a network unencrypted.
pub fn is_plain_remote_tcp(endpoint: &str, tls: bool) -> bool {
    if tls || endpoint.starts_with("unix://") || endpoint.starts_with("https://") {
        return false;
    }
    let addr = crate::load::values::default_address(endpoint);
    !(addr == "localhost" || addr.starts_with("127.") || addr == "::1")
}

/// A change on a host that a controller must look at, in drover's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEvent {
    /// `container`, `volume` or `network`.
    pub kind: String,
    /// Docker's action: `die`, `stop`, `destroy`, `oom`.
    pub action: String,
    pub name: String,
}

/// Whether an event concerns an object drover manages: managed containers
/// (never its own helpers), and any volume or network removed (Docker's
/// volume and network events carry no labels).
pub fn is_relevant_event(kind: &str, attributes: &HashMap<String, String>) -> bool {
    match kind {
        "container" => {
            attributes.get(labels::MANAGED).map(String::as_str) == Some("true")
                && attributes.get(labels::INTERNAL).map(String::as_str) != Some("true")
        }
        _ => true,
    }
}

/// `repo[:tag][@digest]` into what the pull API takes.
pub fn split_image(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}
