//! [`Engine`]: [`DockerApi`] over bollard. bollard's types never leave
//! this file, and a 404 from Docker means "absent" here, not an error.

use super::*;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, DeviceMapping,
    EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig, Mount,
    MountBindOptions, MountType, NetworkCreateRequest, NetworkingConfig, PortBinding,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::{body_full, body_try_stream, Docker, API_DEFAULT_VERSION};

use super::usage::Route;

impl EngineError {
    fn api(host: &str, op: impl Into<String>, e: BollardError) -> EngineError {
        EngineError::Api {
            host: host.to_string(),
            op: op.into(),
            message: error_text(&e),
            status: status_of(&e),
        }
    }
}

/// Docker's own message for a server error, else bollard's description.
fn error_text(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        BollardError::RequestTimeoutError => "the request timed out".into(),
        other => other.to_string(),
    }
}

/// The HTTP status of a server error.
fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_not_modified(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// A call whose goal is already reached when Docker answers as `done` says
/// (already gone, already started): that answer is success.
fn settled(
    host: &str,
    op: impl FnOnce() -> String,
    r: Result<(), BollardError>,
    done: fn(&BollardError) -> bool,
) -> Result<(), EngineError> {
    match r {
        Err(e) if !done(&e) => Err(EngineError::api(host, op(), e)),
        _ => Ok(()),
    }
}

fn is_gone_or_unchanged(e: &BollardError) -> bool {
    is_not_found(e) || is_not_modified(e)
}

/// Absent, or on its way out (a container removed on exit is being removed).
fn is_gone_or_going(e: &BollardError) -> bool {
    is_not_found(e)
        || matches!(e, BollardError::DockerResponseServerError { status_code: 409, message }
            if message.contains("already in progress"))
}

/// Where a lease object keeps the time its holder extended it to.
const LEASE_FILE: &str = "expires";

/// A tar of one file or directory entry.
fn tar_of(name: &str, data: &[u8], dir: bool) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_size(data.len() as u64);
    h.set_cksum();
    tar.append_data(&mut h, name, data)
        .and_then(|()| tar.into_inner())
        .expect("a tar in memory")
}

/// A tar of the manifests' files for a container, by their absolute paths.
fn files_tar(files: &[crate::model::ConfigFile]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(f.mode);
        h.set_size(f.content.len() as u64);
        h.set_cksum();
        tar.append_data(
            &mut h,
            f.target.trim_start_matches('/'),
            f.content.as_slice(),
        )
        .expect("a tar in memory");
    }
    tar.into_inner().expect("a tar in memory")
}

/// Time allowed to reach a host and agree on an API version.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one request (pulls get longer).
pub const REQUEST_TIMEOUT_SECS: u64 = 120;

/// A Docker host reached through bollard.
pub struct Engine {
    host: String,
    docker: Docker,
    /// How the engine is reached, for the one raw request
    /// ([`super::usage`]).
    route: Route,
    /// The host's key for secret digests, read (or made) once.
    key: tokio::sync::OnceCell<HostKey>,
}

impl Engine {
    /// Connects and negotiates the API version, within [`CONNECT_TIMEOUT`].
    pub async fn connect(host: &Host) -> Result<Engine, EngineError> {
        let endpoint = endpoint_of(host);
        let unreachable = |reason: String| EngineError::Unreachable {
            host: host.name.clone(),
            endpoint: endpoint.clone(),
            reason,
        };
        if is_plain_remote_tcp(&endpoint, host.tls.is_some()) {
            tracing::warn!(host = %host.name, %endpoint, "plain TCP to a remote Docker host: anyone on the network can read and control it; use TLS");
        }
        let addr = endpoint
            .replacen("tcp://", "", 1)
            .replacen("https://", "", 1)
            .replacen("http://", "", 1);
        let (docker, route) = if let Some(tls) = &host.tls {
            let (docker, config) = connect_tls(tls, &addr).map_err(unreachable)?;
            (docker, Route::Tls { addr, config })
        } else if let Some(path) = endpoint.strip_prefix("unix://") {
            (
                Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION),
                Route::Unix(path.into()),
            )
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            (
                Docker::connect_with_http(&endpoint, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION),
                Route::Tcp(addr),
            )
        } else {
            return Err(unreachable(format!("unsupported endpoint `{endpoint}`")));
        };
        let docker = docker.map_err(|e| unreachable(error_text(&e)))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(error_text(&e)))?;
        Ok(Engine {
            host: host.name.clone(),
            docker,
            route,
            key: tokio::sync::OnceCell::new(),
        })
    }
}

/// The largest certificate or key file read.
const TLS_FILE_MAX: u64 = 1 << 20;

/// Reads a certificate or key: a regular file (a FIFO would wait for ever,
/// `/dev/zero` would never end) of at most [`TLS_FILE_MAX`] bytes.
fn read_tls_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = || format!("the TLS {what} `{}`", path.display());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| format!("{} cannot be read: {e}", shown()))?;
    let meta = f.metadata().map_err(|e| format!("{}: {e}", shown()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", shown()));
    }
    let mut data = Vec::new();
    f.take(TLS_FILE_MAX + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("{} cannot be read: {e}", shown()))?;
    if data.len() as u64 > TLS_FILE_MAX {
        return Err(format!("{} is larger than 1 MiB", shown()));
    }
    Ok(data)
}

/// HTTPS to a Docker host with a client certificate, trusting only the
/// CA the Cluster names for it.
fn connect_tls(
    tls: &crate::model::Tls,
    addr: &str,
) -> Result<(Result<Docker, BollardError>, Arc<rustls::ClientConfig>), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let ca = read_tls_file("CA", &tls.ca)?;
    let cert = read_tls_file("certificate", &tls.cert)?;
    let key = read_tls_file("key", &tls.key)?;
    let bad = |what: &str, p: &std::path::Path| {
        format!("the TLS {what} `{}` holds no valid PEM", p.display())
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots
            .add(c.map_err(|_| bad("CA", &tls.ca))?)
            .map_err(|e| format!("the TLS CA `{}`: {e}", tls.ca.display()))?;
    }
    if roots.is_empty() {
        return Err(bad("CA", &tls.ca));
    }
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("certificate", &tls.cert))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| bad("key", &tls.key))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| format!("the TLS certificate and key do not fit: {e}"))?;
    let config = Arc::new(config);
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnector::from((http, (*config).clone()));
    let client = Arc::new(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(https),
    );
    let transport = move |req: bollard::BollardRequest| {
        let client = Arc::clone(&client);
        async move { client.request(req).await.map_err(BollardError::from) }
    };
    Ok((
        Docker::connect_with_custom_transport(
            transport,
            Some(format!("https://{addr}")),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        ),
        config,
    ))
}

fn state_of(s: Option<&ContainerSummaryStateEnum>) -> ContainerState {
    match s {
        Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
        Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Dead,
        _ => ContainerState::Exited,
    }
}

/// Health from the status line Docker shows (`Up 3 minutes (healthy)`),
/// which every API version has.
pub fn health_from_status(status: &str) -> Option<Health> {
    if status.contains("(healthy)") {
        Some(Health::Healthy)
    } else if status.contains("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.contains("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}

/// The exit code from the status line Docker shows (`Exited (0) 3 minutes
/// ago`).
pub fn exit_code_from_status(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest[..rest.find(')')?].parse().ok()
}

fn observed_container(c: &ContainerSummary) -> ObservedContainer {
    let l = c.labels.clone().unwrap_or_default();
    let flag = |k: &str| l.get(k).is_some_and(|v| v == "true");
    let name = c
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default();
    let mut ports: Vec<PublishedPort> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PublishedPort {
                ip: p
                    .ip
                    .clone()
                    .filter(|ip| ip != "0.0.0.0" && ip != "::")
                    .unwrap_or_default(),
                port: p.public_port?,
                protocol: p.typ.map_or("tcp".into(), |t| t.to_string()),
            })
        })
        .collect();
    ports.sort_by(|a, b| (a.port, &a.protocol, &a.ip).cmp(&(b.port, &b.protocol, &b.ip)));
    ports.dedup();
    let managed = flag(labels::MANAGED);
    ObservedContainer {
        name,
        id: c.id.clone().unwrap_or_default(),
        managed,
        internal: flag(labels::INTERNAL),
        stack: l.get(labels::STACK).cloned(),
        app: l.get(labels::APP).cloned(),
        image: c.image.clone().unwrap_or_default(),
        state: state_of(c.state.as_ref()),
        health: c.status.as_deref().and_then(health_from_status),
        exit_code: c.status.as_deref().and_then(exit_code_from_status),
        spec_hash: l.get(labels::SPEC_HASH).cloned(),
        spec_fields: l
            .get(labels::SPEC_FIELDS)
            .map(|s| decode_field_digests(s))
            .unwrap_or_default(),
        depends_on: l
            .get(labels::DEPENDS_ON)
            .map(|s| {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        ports,
    }
}

fn to_hashmap(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The create request for a container spec: the only place its secret
/// values are read.
fn create_body(c: &ContainerSpec, key: Option<&HostKey>) -> ContainerCreateBody {
    let o = &c.options;
    let list = |l: &Vec<String>| (!l.is_empty()).then(|| l.clone());
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for p in &c.ports {
        let key = format!("{}/{}", p.container, p.protocol.as_str());
        exposed.push(key.clone());
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: (!p.ip.is_empty()).then(|| p.ip.clone()),
                // An empty host port: Docker picks a free one.
                host_port: Some(match p.host {
                    0 => String::new(),
                    h => h.to_string(),
                }),
            });
    }
    exposed.extend(c.options.expose.iter().cloned());
    exposed.sort();
    exposed.dedup();
    let mounts = c
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: Some(m.source.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .chain(
            c.binds
                .iter()
                .filter(|b| b.device.is_none())
                .map(|b| Mount {
                    target: Some(b.target.clone()),
                    source: Some(b.host_path.clone()),
                    typ: Some(if b.volume {
                        MountType::VOLUME
                    } else {
                        MountType::BIND
                    }),
                    read_only: Some(b.read_only),
                    // (A name the manifest checked, as Docker spells it.)
                    bind_options: b.propagation.as_deref().map(|p| MountBindOptions {
                        propagation: p.parse().ok(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
        )
        .collect();
    let devices: Vec<DeviceMapping> = c
        .binds
        .iter()
        .filter_map(|b| {
            Some(DeviceMapping {
                path_on_host: Some(b.host_path.clone()),
                path_in_container: Some(b.target.clone()),
                cgroup_permissions: Some(b.device.clone()?),
            })
        })
        .collect();
    let restart = restart_name(c.restart);
    let ns = |v: Option<u64>| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let healthcheck = c.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.iter().map(|t| t.expose().to_string()).collect()),
        interval: ns(h.interval_ns),
        timeout: ns(h.timeout_ns),
        retries: h.retries.map(i64::from),
        start_period: ns(h.start_period_ns),
        start_interval: None,
    });
    let texts = |l: &Option<Vec<crate::model::Text>>| {
        l.as_ref()
            .map(|v| v.iter().map(|t| t.expose().to_string()).collect())
    };
    ContainerCreateBody {
        image: Some(c.image.expose().to_string()),
        cmd: texts(&c.command),
        entrypoint: texts(&c.entrypoint),
        env: Some(
            c.env
                .iter()
                .map(|(k, v)| format!("{k}={}", v.expose()))
                .collect(),
        ),
        labels: Some(c.all_labels(key).into_iter().collect()),
        user: c.user.as_ref().map(|u| u.expose().to_string()),
        working_dir: c.working_dir.as_ref().map(|w| w.expose().to_string()),
        stop_signal: c.stop_signal.clone(),
        stop_timeout: c
            .stop_grace_period_ns
            .map(|n| i64::try_from(n / 1_000_000_000).unwrap_or(i64::MAX)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        hostname: o.hostname.clone(),
        domainname: o.domainname.clone(),
        tty: o.tty.then_some(true),
        open_stdin: o.stdin_open.then_some(true),
        host_config: Some(HostConfig {
            extra_hosts: list(&o.extra_hosts),
            cap_add: list(&o.cap_add),
            cap_drop: list(&o.cap_drop),
            security_opt: list(&o.security_opt),
            dns: list(&o.dns),
            dns_search: list(&o.dns_search),
            tmpfs: (!o.tmpfs.is_empty()).then(|| to_hashmap(&o.tmpfs)),
            sysctls: (!o.sysctls.is_empty()).then(|| to_hashmap(&o.sysctls)),
            ulimits: (!o.ulimits.is_empty()).then(|| {
                o.ulimits
                    .iter()
                    .map(|(name, (soft, hard))| ResourcesUlimits {
                        name: Some(name.clone()),
                        soft: Some(*soft),
                        hard: Some(*hard),
                    })
                    .collect()
            }),
            readonly_rootfs: o.read_only.then_some(true),
            log_config: o
                .logging
                .as_ref()
                .map(|(driver, options)| HostConfigLogConfig {
                    typ: Some(driver.clone()),
                    config: Some(to_hashmap(options)),
                }),
            init: o.init,
            privileged: Some(o.privileged),
            pid_mode: o.pid.clone(),
            runtime: o.runtime.clone(),
            devices: (!devices.is_empty()).then_some(devices),
            pids_limit: o.pids_limit,
            shm_size: o.shm_size.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            mounts: Some(mounts),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            memory: c.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            nano_cpus: c.nano_cpus.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            network_mode: Some(c.network.clone()),
            ..Default::default()
        }),
        // The host's, none, or another container's network stack takes no
        // endpoint settings.
        networking_config: c.has_own_network().then(|| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                c.network.clone(),
                endpoint(c, &c.network),
            )])),
        }),
        ..Default::default()
    }
}

/// A container's settings on one of its networks: its names there, and
/// its fixed address, if it has one.
fn endpoint(c: &ContainerSpec, network: &str) -> EndpointSettings {
    EndpointSettings {
        aliases: Some(c.aliases.clone()),
        ipam_config: c
            .addresses
            .get(network)
            .map(|a| bollard::models::EndpointIpamConfig {
                ipv4_address: Some(a.clone()),
                ..Default::default()
            }),
        ..Default::default()
    }
}

#[async_trait]
impl DockerApi for Engine {
    fn host(&self) -> &str {
        &self.host
    }

    fn api_version(&self) -> Option<String> {
        let v = self.docker.client_version();
        Some(format!("{}.{}", v.major_version, v.minor_version))
    }

    async fn volume_sizes(&self) -> Result<BTreeMap<String, u64>, EngineError> {
        let v = self.docker.client_version();
        let api = format!("{}.{}", v.major_version, v.minor_version);
        super::usage::volume_sizes(&self.route, &api)
            .await
            .map_err(|message| EngineError::Api {
                host: self.host.clone(),
                op: "read the volumes' disk usage".into(),
                message,
                status: None,
            })
    }

    async fn observe(&self) -> Result<ObservedHost, EngineError> {
        let h = &self.host;
        let opts = ListContainersOptionsBuilder::new().all(true).build();
        let (containers, volumes, networks, images) = tokio::join!(
            self.docker.list_containers(Some(opts)),
            self.docker.list_volumes(None::<ListVolumesOptions>),
            self.docker.list_networks(None::<ListNetworksOptions>),
            self.docker.list_images(None::<ListImagesOptions>),
        );
        let containers = containers.map_err(|e| EngineError::api(h, "list containers", e))?;
        let volumes = volumes.map_err(|e| EngineError::api(h, "list volumes", e))?;
        let networks = networks.map_err(|e| EngineError::api(h, "list networks", e))?;
        let images = images.map_err(|e| EngineError::api(h, "list images", e))?;

        let mut used_by: HashMap<String, Vec<String>> = HashMap::new();
        for c in &containers {
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string());
            for m in c.mounts.iter().flatten() {
                if let (Some(v), Some(name)) = (&m.name, &name) {
                    used_by.entry(v.clone()).or_default().push(name.clone());
                }
            }
        }
        // Copy records: label-only volumes, and the never-started
        // containers older drovers wrote. The newest record of each copy
        // counts.
        let volumes = volumes.volumes.unwrap_or_default();
        let newer = containers
            .iter()
            .filter_map(|c| c.labels.as_ref())
            .chain(volumes.iter().map(|v| &v.labels))
            .find_map(crate::contract::newer_version);
        if let Some(v) = newer {
            return Err(EngineError::Api {
                host: h.clone(),
                op: "read the host".into(),
                message: format!(
                    "objects on it were made by a newer drover (on-host contract version {v}; this drover knows {}): upgrade drover",
                    crate::contract::VERSION
                ), status: None });
        }
        let mut records: HashMap<String, (u64, crate::observed::CopyRecord)> = HashMap::new();
        let mut refs = Vec::new();
        let labelled = containers
            .iter()
            .filter_map(|c| {
                Some((
                    c.names.as_ref()?.first()?.trim_start_matches('/'),
                    c.labels.as_ref()?,
                    RecordObject::Container,
                ))
            })
            .chain(
                volumes
                    .iter()
                    .map(|v| (v.name.as_str(), &v.labels, RecordObject::Volume)),
            );
        for (name, l, object) in labelled {
            if let Some((of, seq, r)) = crate::observed::CopyRecord::from_labels(l) {
                refs.push(RecordRef {
                    name: name.to_string(),
                    of: of.clone(),
                    seq,
                    object,
                });
                if records.get(&of).is_none_or(|(s, _)| *s < seq) {
                    records.insert(of, (seq, r));
                }
            }
        }
        refs.sort_by(|a, b| (&a.of, a.seq, &a.name).cmp(&(&b.of, b.seq, &b.name)));
        let membership = crate::observed::Membership::from_volumes(
            volumes.iter().map(|v| (v.name.as_str(), &v.labels)),
        );
        let revision = crate::contract::revision::HostRevision::from_volumes(
            volumes.iter().map(|v| (v.name.as_str(), &v.labels)),
        );
        let secret_key =
            hostkey::from_volumes(volumes.iter().map(|v| (v.name.as_str(), &v.labels)))
                .map_or(hostkey::SecretKey::Absent, hostkey::SecretKey::Known);
        // The records of snapshots, freezes, restores and clones.
        let notes: Vec<_> = volumes
            .iter()
            .filter(|v| crate::contract::is_data_record(&v.labels))
            .collect();
        let snapshot_records: HashMap<&str, &HashMap<String, String>> = notes
            .iter()
            .filter_map(|v| Some((v.labels.get(labels::SNAPSHOT_RECORD)?.as_str(), &v.labels)))
            .collect();
        let frozen = notes
            .iter()
            .filter_map(|v| crate::observed::Frozen::from_labels(&v.name, &v.labels))
            .collect();
        let restores = notes
            .iter()
            .filter_map(|v| crate::observed::Restoring::from_labels(&v.name, &v.labels))
            .collect();
        let seeding = notes
            .iter()
            .filter_map(|v| crate::observed::Seeding::from_labels(&v.name, &v.labels))
            .collect();
        let snapshots: HashMap<String, crate::observed::SnapshotInfo> = volumes
            .iter()
            .filter_map(|v| {
                let record = snapshot_records.get(v.name.as_str()).copied();
                Some((
                    v.name.clone(),
                    crate::observed::SnapshotInfo::from_labels(&v.labels, record)?,
                ))
            })
            .collect();
        let mut out = ObservedHost {
            records: refs,
            membership,
            revision,
            secret_key,
            frozen,
            restores,
            seeding,
            containers: containers.iter().map(observed_container).collect(),
            volumes: volumes
                .into_iter()
                .filter(|v| {
                    !v.labels.contains_key(labels::COPY_OF)
                        && !crate::observed::Membership::is_record(&v.labels)
                        && !crate::contract::revision::HostRevision::is_record(&v.labels)
                        && !hostkey::is_key(&v.labels)
                        && !crate::contract::is_hash_records(&v.labels)
                        && !crate::contract::is_data_record(&v.labels)
                })
                .map(|v| {
                    let flag = |k: &str| v.labels.get(k).is_some_and(|x| x == "true");
                    let mut users = used_by.remove(&v.name).unwrap_or_default();
                    let copy = records.remove(&v.name).map(|(_, r)| r);
                    users.sort();
                    ObservedVolume {
                        managed: flag(labels::MANAGED),
                        internal: flag(labels::INTERNAL),
                        stack: v.labels.get(labels::STACK).cloned(),
                        volume: v.labels.get(labels::VOLUME).cloned(),
                        driver: v.driver.clone(),
                        // The engine's figure, else the size last verified
                        // by a move.
                        size_bytes: v
                            .usage_data
                            .as_ref()
                            .and_then(|u| u64::try_from(u.size).ok())
                            .or_else(|| copy.as_ref().and_then(|r| r.bytes)),
                        used_by: users,
                        retained_for: copy
                            .as_ref()
                            .filter(|r| r.role == crate::observed::CopyRole::Retained)
                            .and_then(|r| r.peer.clone()),
                        copy,
                        moved_from: v.labels.get(labels::MOVED_FROM).cloned(),
                        snapshot: snapshots.get(&v.name).cloned(),
                        name: v.name,
                    }
                })
                .collect(),
            networks: networks
                .into_iter()
                .map(|n| {
                    let l = n.labels.unwrap_or_default();
                    let flag = |k: &str| l.get(k).is_some_and(|x| x == "true");
                    ObservedNetwork {
                        name: n.name.unwrap_or_default(),
                        managed: flag(labels::MANAGED),
                        internal: flag(labels::INTERNAL),
                        stack: l.get(labels::STACK).cloned(),
                        config: l.get(labels::NETWORK_CONFIG).cloned(),
                    }
                })
                .collect(),
            images: images
                .into_iter()
                .flat_map(|i| i.repo_tags)
                .filter(|t| t != "<none>:<none>")
                .collect(),
        };
        out.containers.sort_by(|a, b| a.name.cmp(&b.name));
        out.volumes.sort_by(|a, b| a.name.cmp(&b.name));
        out.networks.sort_by(|a, b| a.name.cmp(&b.name));
        out.images.sort();
        Ok(out)
    }

    async fn image_present(&self, image: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(EngineError::api(
                &self.host,
                format!("inspect image `{image}`"),
                e,
            )),
        }
    }

    async fn pull_image(&self, image: &str, platform: Option<&str>) -> Result<(), EngineError> {
        let (repo, tag) = split_image(image);
        let mut opts = CreateImageOptionsBuilder::new().from_image(repo).tag(tag);
        if let Some(p) = platform {
            opts = opts.platform(p);
        }
        let opts = opts.build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| EngineError::api(&self.host, format!("pull `{image}`"), e))?;
        }
        Ok(())
    }

    async fn create_volume(&self, v: &VolumeSpec) -> Result<(), EngineError> {
        let req = VolumeCreateRequest {
            name: Some(v.name.clone()),
            driver: Some(v.driver.clone()),
            driver_opts: Some(to_hashmap(&v.driver_opts)),
            labels: Some(to_hashmap(&v.labels)),
            cluster_volume_spec: None,
        };
        self.docker
            .create_volume(req)
            .await
            .map(|_| ())
            .map_err(|e| EngineError::api(&self.host, format!("create volume `{}`", v.name), e))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let opts = RemoveVolumeOptionsBuilder::new().force(false).build();
        settled(
            &self.host,
            || format!("remove volume `{name}`"),
            self.docker.remove_volume(name, Some(opts)).await,
            is_not_found,
        )
    }

    async fn create_network(&self, n: &NetworkSpec) -> Result<(), EngineError> {
        let subnets = &n.settings.subnets;
        let req = NetworkCreateRequest {
            name: n.name.clone(),
            driver: Some("bridge".into()),
            labels: Some(to_hashmap(&n.labels)),
            internal: n.settings.internal.then_some(true),
            ipam: (!subnets.is_empty()).then(|| bollard::models::Ipam {
                config: Some(
                    subnets
                        .iter()
                        .map(|s| bollard::models::IpamConfig {
                            subnet: Some(s.subnet.clone()),
                            gateway: s.gateway.clone(),
                            ip_range: s.ip_range.clone(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker
            .create_network(req)
            .await
            .map(|_| ())
            .map_err(|e| EngineError::api(&self.host, format!("create network `{}`", n.name), e))
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        settled(
            &self.host,
            || format!("remove network `{name}`"),
            self.docker.remove_network(name).await,
            is_not_found,
        )
    }

    async fn create_container(&self, c: &ContainerSpec) -> Result<(), EngineError> {
        let key = match c.has_secrets() {
            true => Some(self.secret_key().await?),
            false => None,
        };
        let mut opts = CreateContainerOptionsBuilder::new().name(&c.name);
        if let Some(p) = &c.options.platform {
            opts = opts.platform(p);
        }
        let opts = opts.build();
        self.docker
            .create_container(Some(opts), create_body(c, key.as_ref()))
            .await
            .map(|_| ())
            .map_err(|e| {
                EngineError::api(&self.host, format!("create container `{}`", c.name), e)
            })?;
        // The stack's other networks it joins, with the same names.
        for net in &c.extra_networks {
            let req = bollard::models::NetworkConnectRequest {
                container: c.name.clone(),
                endpoint_config: Some(endpoint(c, net)),
            };
            self.docker.connect_network(net, req).await.map_err(|e| {
                EngineError::api(
                    &self.host,
                    format!("connect container `{}` to `{net}`", c.name),
                    e,
                )
            })?;
        }
        if c.files.is_empty() {
            return Ok(());
        }
        // The manifests' files, written before the container first starts.
        let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::new()
            .path("/")
            .build();
        self.docker
            .upload_to_container(
                &c.name,
                Some(opts),
                body_full(Bytes::from(files_tar(&c.files))),
            )
            .await
            .map_err(|e| {
                EngineError::api(
                    &self.host,
                    format!("write the files of container `{}`", c.name),
                    e,
                )
            })
    }

    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        settled(
            &self.host,
            || format!("start container `{name}`"),
            self.docker.start_container(name, None).await,
            is_not_modified,
        )
    }

    async fn stop_container(&self, name: &str, grace: Duration) -> Result<(), EngineError> {
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::new().t(secs).build();
        // The engine answers once the grace period is over: the request may
        // take that long and a little more, even past the usual timeout.
        let wait = REQUEST_TIMEOUT_SECS.max(grace.as_secs().saturating_add(30));
        let docker = self.docker.clone().with_timeout(Duration::from_secs(wait));
        settled(
            &self.host,
            || format!("stop container `{name}`"),
            docker.stop_container(name, Some(opts)).await,
            is_gone_or_unchanged,
        )
    }

    async fn pause_container(&self, name: &str) -> Result<(), EngineError> {
        self.docker
            .pause_container(name)
            .await
            .map_err(|e| EngineError::api(&self.host, format!("freeze container `{name}`"), e))
    }

    async fn unpause_container(&self, name: &str) -> Result<(), EngineError> {
        // One that is not paused (any more) is what was asked for.
        match self.docker.unpause_container(name).await {
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("not paused") => Ok(()),
            r => settled(
                &self.host,
                || format!("unfreeze container `{name}`"),
                r,
                is_not_found,
            ),
        }
    }

    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(false)
            .build();
        settled(
            &self.host,
            || format!("remove container `{name}`"),
            self.docker.remove_container(name, Some(opts)).await,
            is_gone_or_going,
        )
    }

    async fn container_status(&self, name: &str) -> Result<Option<ContainerStatus>, EngineError> {
        let info = match self.docker.inspect_container(name, None).await {
            Ok(i) => i,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => {
                return Err(EngineError::api(
                    &self.host,
                    format!("inspect container `{name}`"),
                    e,
                ))
            }
        };
        let state = info.state.unwrap_or_default();
        let run = if state.running == Some(true) {
            ContainerState::Running
        } else if state.restarting == Some(true) {
            ContainerState::Restarting
        } else if state.paused == Some(true) {
            ContainerState::Paused
        } else if state.dead == Some(true) {
            ContainerState::Dead
        } else if state
            .started_at
            .as_deref()
            .is_none_or(|s| s.starts_with("0001"))
        {
            ContainerState::Created
        } else {
            ContainerState::Exited
        };
        let health = state.health.as_ref().and_then(|h| match h.status {
            Some(HealthStatusEnum::HEALTHY) => Some(Health::Healthy),
            Some(HealthStatusEnum::UNHEALTHY) => Some(Health::Unhealthy),
            Some(HealthStatusEnum::STARTING) => Some(Health::Starting),
            _ => None,
        });
        let last_health_output = state
            .health
            .and_then(|h| h.log)
            .and_then(|l| l.last().and_then(|r| r.output.clone()))
            .map(|o| o.trim().to_string());
        let restart = info
            .host_config
            .and_then(|h| h.restart_policy)
            .and_then(|p| p.name)
            .map(|n| match n {
                RestartPolicyNameEnum::ALWAYS => Restart::Always,
                RestartPolicyNameEnum::UNLESS_STOPPED => Restart::UnlessStopped,
                RestartPolicyNameEnum::ON_FAILURE => Restart::OnFailure,
                _ => Restart::No,
            });
        Ok(Some(ContainerStatus {
            exit_code: (run == ContainerState::Exited)
                .then_some(state.exit_code)
                .flatten(),
            state: run,
            health,
            last_health_output,
            restart,
        }))
    }

    async fn set_restart(&self, name: &str, restart: Restart) -> Result<(), EngineError> {
        let body = bollard::models::ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(restart_name(restart)),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        self.docker
            .update_container(name, body)
            .await
            .map_err(|e| EngineError::api(&self.host, format!("update container `{name}`"), e))
    }

    async fn import_image(&self, tag: &str, rootfs: RootFs) -> Result<(), EngineError> {
        let (repo, t) = split_image(tag);
        let opts = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(repo)
            .tag(t)
            .build();
        let mut stream = self
            .docker
            .create_image(Some(opts), Some(body_try_stream(rootfs)), None);
        while let Some(item) = stream.next().await {
            let info =
                item.map_err(|e| EngineError::api(&self.host, format!("import `{tag}`"), e))?;
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Api {
                    host: self.host.clone(),
                    op: format!("import `{tag}`"),
                    message: err,
                    status: None,
                });
            }
        }
        Ok(())
    }

    async fn run_helper(&self, h: &HelperSpec) -> Result<Option<u16>, EngineError> {
        let mut body = helper_body(&h.image, &h.labels, Some(h.cmd.clone()));
        if let Some((ip, port)) = &h.publish {
            let key = format!("{port}/tcp");
            body.exposed_ports = Some(vec![key.clone()]);
            if let Some(hc) = body.host_config.as_mut() {
                hc.port_bindings = Some(HashMap::from([(
                    key,
                    Some(vec![PortBinding {
                        host_ip: (!ip.is_empty()).then(|| ip.clone()),
                        host_port: Some(String::new()),
                    }]),
                )]));
            }
        }
        if let Some(hc) = body.host_config.as_mut() {
            if h.network {
                hc.network_mode = Some("bridge".into());
            }
            let mut mounts = vec![Mount {
                target: Some(crate::helper::ROOT.into()),
                source: Some(h.volume.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(h.read_only),
                ..Default::default()
            }];
            if let Some(src) = &h.source {
                mounts.push(Mount {
                    target: Some(crate::helper::SOURCE.into()),
                    source: Some(src.clone()),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(true),
                    ..Default::default()
                });
            }
            if h.records {
                mounts.push(Mount {
                    target: Some(crate::helper::RECORDS.into()),
                    source: Some(crate::contract::HASH_RECORDS.into()),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(false),
                    ..Default::default()
                });
                let mut env = vec![format!("{}={}", crate::helper::RECORD_ENV, h.volume)];
                if let Some(src) = &h.source {
                    env.push(format!("{}={src}", crate::helper::SOURCE_RECORD_ENV));
                }
                body.env = Some(env);
            }
            hc.mounts = Some(mounts);
            hc.auto_remove = Some(true);
            // The least a helper needs: its own files cannot be changed
            // (only a tmpfs, and the host's records of hashes), no
            // privilege can be gained,
            // and of root's powers only reading every file (the source) and
            // setting owners, modes and times (the target)
            hc.readonly_rootfs = Some(true);
            hc.tmpfs = Some(HashMap::from([(
                "/tmp".to_string(),
                "rw,nosuid,nodev,noexec,mode=1777".to_string(),
            )]));
            hc.security_opt = Some(vec!["no-new-privileges".into()]);
            hc.cap_drop = Some(vec!["ALL".into()]);
            // (All of Docker's default set: a helper has less than an app.)
            let caps: &[&str] = if h.read_only {
                &["DAC_OVERRIDE"]
            } else {
                &["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]
            };
            hc.cap_add = Some(caps.iter().map(|c| c.to_string()).collect());
        }
        if h.records {
            self.create_record(&RecordSpec {
                name: crate::contract::HASH_RECORDS.into(),
                labels: crate::contract::internal_labels([(
                    crate::contract::HASH_RECORDS_LABEL,
                    "true",
                )]),
            })
            .await?;
        }
        self.create_plain(&h.name, body, "helper").await?;
        self.start_container(&h.name).await?;
        let Some((_, port)) = &h.publish else {
            return Ok(None);
        };
        let info = self
            .docker
            .inspect_container(&h.name, None)
            .await
            .map_err(|e| EngineError::api(&self.host, format!("inspect `{}`", h.name), e))?;
        Ok(info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port?.parse().ok())))
    }

    async fn secret_key(&self) -> Result<HostKey, EngineError> {
        self.key
            .get_or_try_init(|| self.read_or_make_key())
            .await
            .cloned()
    }

    async fn create_record(&self, m: &RecordSpec) -> Result<(), EngineError> {
        self.create_volume(&VolumeSpec {
            name: m.name.clone(),
            stack: String::new(),
            volume: String::new(),
            host: self.host.clone(),
            driver: "local".into(),
            driver_opts: BTreeMap::new(),
            labels: m.labels.clone(),
            max_downtime: None,
            consistency: Default::default(),
            from: None,
            snapshots: None,
            backup: None,
        })
        .await
    }

    async fn remove_record(&self, r: &RecordRef) -> Result<(), EngineError> {
        if r.object == RecordObject::Container {
            return self.remove_container(&r.name).await;
        }
        let what = || format!("remove the copy record `{}`", r.name);
        let v = match self.docker.inspect_volume(&r.name).await {
            Ok(v) => v,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(EngineError::api(&self.host, what(), e)),
        };
        let is_record = ((v.labels.contains_key(labels::COPY_OF)
            || crate::observed::Membership::is_record(&v.labels)
            || crate::contract::revision::HostRevision::is_record(&v.labels))
            && v.labels.get(labels::INTERNAL).is_some_and(|x| x == "true"))
            || crate::contract::is_data_record(&v.labels);
        if !is_record {
            return Err(EngineError::Api {
                host: self.host.clone(),
                op: what(),
                message: "it is not a copy record; nothing was removed".into(),
                status: None,
            });
        }
        self.remove_volume(&r.name).await
    }

    async fn create_lease(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<String>, EngineError> {
        let opts = CreateContainerOptionsBuilder::new().name(name).build();
        let mut body = helper_body(LEASE_IMAGE, labels, Some(vec!["/lease".into()]));
        body.stop_signal = None;
        for attempt in 0..2 {
            match self
                .docker
                .create_container(Some(opts.clone()), body.clone())
                .await
            {
                Ok(r) => return Ok(Some(r.id)),
                Err(BollardError::DockerResponseServerError {
                    status_code: 409, ..
                }) => return Ok(None),
                Err(e) if is_not_found(&e) && attempt == 0 => {
                    self.import_image(LEASE_IMAGE, rootfs_of(tar_of("tmp/", &[], true)))
                        .await?;
                }
                Err(e) => return Err(EngineError::api(&self.host, "take the lease", e)),
            }
        }
        unreachable!("the second attempt returns")
    }

    async fn read_lease(&self, name: &str) -> Result<Option<LeaseRecord>, EngineError> {
        use bollard::models::ContainerStateStatusEnum as Status;
        // A lease being removed (a release the engine took up late) reads
        // as released; a dead one has no file left to read.
        let status = |info: &bollard::models::ContainerInspectResponse| {
            info.state.as_ref().and_then(|s| s.status)
        };
        let info = match self.docker.inspect_container(name, None).await {
            Ok(i) if status(&i) == Some(Status::REMOVING) => return Ok(None),
            Ok(i) => i,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(EngineError::api(&self.host, "read the lease", e)),
        };
        let dead = status(&info) == Some(Status::DEAD);
        let id = info.id.unwrap_or_default();
        let labels = info
            .config
            .and_then(|c| c.labels)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let opts = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
            .path(&format!("/{LEASE_FILE}"))
            .build();
        let mut tar = Vec::new();
        if !dead {
            let mut stream = self.docker.download_from_container(&id, Some(opts));
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(b) => tar.extend_from_slice(&b),
                    // Never extended, or gone since the inspect.
                    Err(e) if is_not_found(&e) => break,
                    // Its removal may have begun since the inspect.
                    Err(e) => match self.docker.inspect_container(&id, None).await {
                        Ok(i) if status(&i) == Some(Status::REMOVING) => return Ok(None),
                        Err(gone) if is_not_found(&gone) => return Ok(None),
                        _ => return Err(EngineError::api(&self.host, "read the lease", e)),
                    },
                }
            }
        }
        let mut renewed_until = None;
        if let Ok(mut entries) = tar::Archive::new(tar.as_slice()).entries() {
            if let Some(Ok(mut entry)) = entries.next() {
                let mut text = String::new();
                if std::io::Read::read_to_string(&mut entry, &mut text).is_ok() {
                    renewed_until = text.trim().parse().ok();
                }
            }
        }
        Ok(Some(LeaseRecord {
            id,
            labels,
            renewed_until,
        }))
    }

    async fn renew_lease(&self, id: &str, until: u64) -> Result<bool, EngineError> {
        let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::new()
            .path("/")
            .build();
        let tar = tar_of(LEASE_FILE, until.to_string().as_bytes(), false);
        match self
            .docker
            .upload_to_container(id, Some(opts), body_full(Bytes::from(tar)))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(EngineError::api(&self.host, "renew the lease", e)),
        }
    }

    async fn remove_lease(&self, id: &str) -> Result<bool, EngineError> {
        let opts = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(true),
            Err(e) if is_gone_or_going(&e) => Ok(false),
            Err(e) => Err(EngineError::api(&self.host, "release the lease", e)),
        }
    }

    async fn exec(&self, container: &str, cmd: Vec<String>) -> Result<Exec, EngineError> {
        let op = || format!("run `{}` in `{container}`", cmd.join(" "));
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.clone()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| EngineError::api(&self.host, op(), e))?;
        // Bulk data comes through here: read it in large frames.
        let start = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: Some(1 << 20),
        };
        match self.docker.start_exec(&created.id, Some(start)).await {
            Ok(StartExecResults::Attached { output, input }) => {
                let host = self.host.clone();
                let what = op();
                let output = output.filter_map(move |item| {
                    let r = match item {
                        Ok(LogOutput::StdOut { message }) => Some(Ok(ExecOutput::Stdout(message))),
                        Ok(LogOutput::StdErr { message }) => Some(Ok(ExecOutput::Stderr(message))),
                        Ok(_) => None,
                        Err(e) => Some(Err(EngineError::api(&host, what.clone(), e))),
                    };
                    std::future::ready(r)
                });
                Ok(Exec {
                    id: created.id,
                    output: Box::pin(output),
                    input,
                })
            }
            Ok(StartExecResults::Detached) => Err(EngineError::Api {
                host: self.host.clone(),
                op: op(),
                message: "the engine did not attach".into(),
                status: None,
            }),
            Err(e) => Err(EngineError::api(&self.host, op(), e)),
        }
    }

    async fn exec_exit_code(&self, id: &str) -> Result<Option<i64>, EngineError> {
        let info = self
            .docker
            .inspect_exec(id)
            .await
            .map_err(|e| EngineError::api(&self.host, "inspect exec", e))?;
        Ok(if info.running == Some(true) {
            None
        } else {
            info.exit_code
        })
    }

    async fn ping(&self) -> Result<(), EngineError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| EngineError::api(&self.host, "ping", e))
    }
}

impl Engine {
    /// The host's stream of changes to managed objects: a container that
    /// dies, stops or is removed, a volume or network removed. It ends (or
    /// yields an error) when the connection to the engine is lost.
    pub fn watch(&self) -> Pin<Box<dyn Stream<Item = Result<HostEvent, EngineError>> + Send>> {
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([
            ("type", vec!["container", "volume", "network"]),
            ("event", vec!["die", "stop", "destroy", "oom", "pause"]),
        ]);
        let opts = bollard::query_parameters::EventsOptionsBuilder::new()
            .filters(&filters)
            .build();
        let host = self.host.clone();
        Box::pin(self.docker.events(Some(opts)).filter_map(move |r| {
            let out = match r {
                Err(e) => Some(Err(EngineError::api(&host, "watch events", e))),
                Ok(m) => {
                    let kind = m.typ.map(|t| t.to_string()).unwrap_or_default();
                    let actor = m.actor.unwrap_or_default();
                    let attributes = actor.attributes.unwrap_or_default();
                    is_relevant_event(&kind, &attributes).then(|| {
                        Ok(HostEvent {
                            name: attributes.get("name").cloned().unwrap_or_default(),
                            kind,
                            action: m.action.unwrap_or_default(),
                        })
                    })
                }
            };
            std::future::ready(out)
        }))
    }

    async fn create_plain(
        &self,
        name: &str,
        body: ContainerCreateBody,
        what: &str,
    ) -> Result<(), EngineError> {
        let opts = CreateContainerOptionsBuilder::new().name(name).build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map(|_| ())
            .map_err(|e| EngineError::api(&self.host, format!("create {what} `{name}`"), e))
    }
}

fn helper_body(
    image: &str,
    labels: &BTreeMap<String, String>,
    cmd: Option<Vec<String>>,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd,
        labels: Some(to_hashmap(labels)),
        // A helper holds no state worth a grace period.
        stop_signal: Some("SIGKILL".into()),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            privileged: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn restart_name(r: Restart) -> RestartPolicyNameEnum {
    match r {
        Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        Restart::Always => RestartPolicyNameEnum::ALWAYS,
        Restart::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        Restart::No => RestartPolicyNameEnum::NO,
    }
}

impl Engine {
    /// The key in the host's key volume; a new one when there is none.
    async fn read_or_make_key(&self) -> Result<HostKey, EngineError> {
        let read = || async {
            match self.docker.inspect_volume(hostkey::VOLUME).await {
                Ok(v) => hostkey::from_labels(&v.labels).map(Some).ok_or_else(|| EngineError::Api {
                    host: self.host.clone(),
                    op: format!("read the key volume `{}`", hostkey::VOLUME),
                    message: "it holds no key drover made; drover leaves it (remove it, and drover makes a new key)".into(), status: None }),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(EngineError::api(&self.host, format!("read the key volume `{}`", hostkey::VOLUME), e)),
            }
        };
        if let Some(k) = read().await? {
            return Ok(k);
        }
        let fresh = HostKey::random().map_err(|e| EngineError::Api {
            host: self.host.clone(),
            op: "make a key for secret digests".into(),
            message: e,
            status: None,
        })?;
        self.create_record(&RecordSpec {
            name: hostkey::VOLUME.into(),
            labels: fresh.volume_labels(),
        })
        .await?;
        // Another drover may have made one first; its key is the one kept.
        read().await?.ok_or_else(|| EngineError::Api {
            host: self.host.clone(),
            op: format!("read the key volume `{}`", hostkey::VOLUME),
            message: "it was gone right after it was made".into(),
            status: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_service_takes_of_its_host_reaches_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("s")).unwrap();
        std::fs::write(
            dir.path().join("s/compose.yaml"),
            "services:\n  a:\n    image: x\n    privileged: true\n    pid: host\n    runtime: runc\n    devices: [\"/dev/fuse\"]\n    volumes:\n      - /srv:/srv\n      - /:/host:ro,rslave\n      - { type: bind, source: /mnt, target: /mnt, bind: { propagation: rshared } }\n  b:\n    image: x\n",
        )
        .unwrap();
        let env = std::collections::BTreeMap::<String, String>::new();
        let spec = crate::load::load(dir.path(), &env).unwrap();
        let d = crate::desired::render(&spec);
        let host = |name: &str| {
            create_body(&d.hosts["local"].containers[name], None)
                .host_config
                .unwrap()
        };
        let a = host("s-a");
        assert_eq!(a.privileged, Some(true));
        assert_eq!(a.pid_mode.as_deref(), Some("host"));
        assert_eq!(a.runtime.as_deref(), Some("runc"));
        assert_eq!(
            a.devices,
            Some(vec![DeviceMapping {
                path_on_host: Some("/dev/fuse".into()),
                path_in_container: Some("/dev/fuse".into()),
                cgroup_permissions: Some("rwm".into()),
            }])
        );
        let mounts: Vec<_> = a
            .mounts
            .unwrap()
            .into_iter()
            .map(|m| {
                let p = m.bind_options.and_then(|o| o.propagation);
                (m.source.unwrap(), m.read_only, p.map(|p| p.to_string()))
            })
            .collect();
        let (ro, rw) = (Some(true), Some(false));
        assert_eq!(
            mounts,
            [
                ("/srv".into(), rw, None),
                ("/".into(), ro, Some("rslave".into())),
                ("/mnt".into(), rw, Some("rshared".into()))
            ]
        );
        let b = host("s-b");
        assert_eq!(
            (b.privileged, b.pid_mode, b.runtime, b.devices),
            (Some(false), None, None, None)
        );
    }

    #[test]
    fn image_references_split_for_pulling() {
        assert_eq!(split_image("postgres:16"), ("postgres", "16"));
        assert_eq!(split_image("postgres"), ("postgres", "latest"));
        assert_eq!(split_image("reg:5000/app"), ("reg:5000/app", "latest"));
        assert_eq!(split_image("reg:5000/app:2"), ("reg:5000/app", "2"));
    }

    #[test]
    fn health_is_read_from_the_status_line() {
        assert_eq!(
            health_from_status("Up 3 seconds (healthy)"),
            Some(Health::Healthy)
        );
        assert_eq!(
            health_from_status("Up 1 second (health: starting)"),
            Some(Health::Starting)
        );
        assert_eq!(health_from_status("Up 2 hours"), None);
    }

    #[test]
    fn an_engine_error_keeps_the_http_status_and_its_message() {
        let e = EngineError::api(
            "h",
            "remove volume `v`",
            BollardError::DockerResponseServerError {
                status_code: 409,
                message: "volume is in use".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "host `h`: remove volume `v`: volume is in use (HTTP 409)"
        );
        assert!(matches!(
            e,
            EngineError::Api {
                status: Some(409),
                ..
            }
        ));
    }

    #[test]
    fn a_container_already_being_removed_counts_as_removed() {
        let e = |status_code: u16, message: &str| BollardError::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        assert!(is_gone_or_going(&e(
            409,
            "removal of container x is already in progress"
        )));
        assert!(is_gone_or_going(&e(404, "No such container: x")));
        assert!(!is_gone_or_going(&e(
            409,
            "conflict: container x is running"
        )));
    }

    #[test]
    fn events_of_managed_containers_count_and_of_helpers_do_not() {
        let attrs = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let managed = attrs(&[(labels::MANAGED, "true"), ("name", "shop-web")]);
        let helper = attrs(&[(labels::MANAGED, "true"), (labels::INTERNAL, "true")]);
        assert!(is_relevant_event("container", &managed));
        assert!(!is_relevant_event("container", &helper));
        assert!(!is_relevant_event(
            "container",
            &attrs(&[("name", "other")])
        ));
        assert!(is_relevant_event("volume", &attrs(&[("driver", "local")])));
    }

    #[test]
    fn plain_tcp_to_another_machine_is_flagged() {
        assert!(is_plain_remote_tcp("tcp://10.0.0.2:2375", false));
        assert!(!is_plain_remote_tcp("tcp://127.0.0.1:2375", false));
        assert!(!is_plain_remote_tcp("tcp://10.0.0.2:2376", true));
        assert!(!is_plain_remote_tcp("unix:///var/run/docker.sock", false));
    }
}
