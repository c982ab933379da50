//! The on-host contract: every object name and label drover writes on a
//! host, which two versions of drover must read alike. Nothing else in the
//! crate spells one out.
//!
//! | object | name | labels |
//! | --- | --- | --- |
//! | an app's container | `<stack>-<app>` | [`labels::MANAGED`], [`labels::STACK`], [`labels::APP`], [`labels::SPEC_HASH`], [`labels::SPEC_FIELDS`], [`labels::DEPENDS_ON`] |
//! | a stack's network | `drover-<stack>` | [`labels::MANAGED`], [`labels::STACK`] |
//! | a data volume | `<stack>-<volume>` | [`labels::MANAGED`], [`labels::STACK`], [`labels::VOLUME`], [`labels::MOVED_FROM`] |
//! | a copy record ([`records`]) | `drover-copy-<volume>-<seq>` (a label-only volume) | `drover.copy-*`, [`labels::INTERNAL`] |
//! | the Cluster's members ([`membership`]) | `drover-cluster-<seq>` (a label-only volume) | [`labels::cluster`] |
//! | the Git commit last applied ([`revision`]) | `drover-revision-<seq>` (a label-only volume) | [`labels::revision`] |
//! | the key for secret digests | [`hostkey::VOLUME`] (a label-only volume) | [`hostkey::LABEL`] |
//! | helpers' records of file hashes | [`HASH_RECORDS`] (a volume mounted only in helpers, a file per volume) | [`labels::INTERNAL`], [`HASH_RECORDS_LABEL`] |
//! | the lease | [`names::LEASE`], image [`names::LEASE_IMAGE`] | [`labels::lease`] |
//! | a move's helper | `drover-move-<volume>`, image `drover-helper:<digest>` | [`labels::INTERNAL`] |
//! | a snapshot | `<stack>-<volume>.<snapshot>` | [`labels::MANAGED`], [`labels::SNAPSHOT_OF`], [`labels::SNAPSHOT`], [`labels::REVISION`], [`labels::SCHEDULED`] |
//! | a snapshot's record (it is complete) | `drover-snapshot-<snapshot volume>` (label-only) | [`labels::SNAPSHOT_RECORD`], [`labels::TAKEN`], [`labels::BYTES`], [`labels::FILES`], [`labels::CONSISTENCY`], [`labels::HELD_MS`], and [`labels::PUSHED_AS`] once pushed |
//! | an app frozen for a snapshot | `drover-freeze-<container>` (label-only) | [`labels::FROZEN`], [`labels::FROZEN_FOR`] |
//! | a restore under way | `drover-restore-<volume>` (label-only) | `drover.restore-*` |
//! | a clone under way | `drover-seed-<volume>` (label-only) | [`labels::SEEDING`], [`labels::SEED_FROM`] |
//! | a clone | `<stack>-<volume>` | as a data volume, and [`labels::CLONED_FROM`] |
//!
//! Every internal object also carries [`labels::CONTRACT`] = [`VERSION`]; a
//! host holding one of a later version is not read (a newer drover made it,
//! and this one could misread it).

pub mod hostkey;
pub mod membership;
pub mod records;
pub mod revision;

/// The version of this contract. Raised when a drover writes something an
/// older one would misread.
pub const VERSION: u32 = 1;

/// The volume where every helper on a host keeps, per volume, its record of
/// the files it knows the content hash of (one file per volume; a cache:
/// removing it only makes the next copy read every file again).
pub const HASH_RECORDS: &str = "drover-hash-records";
/// The label that marks [`HASH_RECORDS`].
pub const HASH_RECORDS_LABEL: &str = "drover.hash-records";

/// Whether a volume's labels are those of [`HASH_RECORDS`].
pub fn is_hash_records(l: &std::collections::HashMap<String, String>) -> bool {
    l.get(HASH_RECORDS_LABEL).is_some_and(|v| v == "true")
        && l.get(labels::INTERNAL).is_some_and(|v| v == "true")
}

/// The labels every internal object drover makes starts from, with `extra`.
pub fn internal_labels<K: ToString, V: ToString>(
    extra: impl IntoIterator<Item = (K, V)>,
) -> std::collections::BTreeMap<String, String> {
    let mut out: std::collections::BTreeMap<String, String> = [
        (labels::MANAGED, "true".to_string()),
        (labels::INTERNAL, "true".to_string()),
        (labels::CONTRACT, VERSION.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    out.extend(
        extra
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    out
}

/// The contract version an object's labels say it follows, when it is
/// later than this drover's: such an object may mean something this
/// drover would misread.
pub fn newer_version(l: &std::collections::HashMap<String, String>) -> Option<u32> {
    let v: u32 = l.get(labels::CONTRACT)?.parse().ok().unwrap_or(u32::MAX);
    (v > VERSION).then_some(v)
}

/// Whether a label-only volume is one of the records of snapshots,
/// freezes, restores and clones (never data).
pub fn is_data_record(l: &std::collections::HashMap<String, String>) -> bool {
    l.get(labels::INTERNAL).is_some_and(|x| x == "true")
        && [
            labels::SNAPSHOT_RECORD,
            labels::FROZEN,
            labels::RESTORE_OF,
            labels::SEEDING,
        ]
        .iter()
        .any(|k| l.contains_key(*k))
}

/// Labels drover puts on what it makes.
pub mod labels {
    pub const MANAGED: &str = "drover.managed";
    pub const INTERNAL: &str = "drover.internal";
    pub const STACK: &str = "drover.stack";
    /// On a network whose settings are not Docker's defaults: them, as
    /// JSON, so that a network made with others is found out.
    pub const NETWORK_CONFIG: &str = "drover.network-config";
    pub const APP: &str = "drover.app";
    pub const VOLUME: &str = "drover.volume";
    pub const SPEC_HASH: &str = "drover.spec-hash";
    pub const SPEC_FIELDS: &str = "drover.spec-fields";
    /// Apps this container waits for, so removals can run in reverse order
    /// after the app has left the spec.
    pub const DEPENDS_ON: &str = "drover.depends-on";
    /// On an app that shares another's network stack: that app's spec
    /// hash, so that recreating it recreates this one too.
    pub const NETWORK_OF: &str = "drover.network-of";
    /// On an app that depends on others with `restart: true`: their spec
    /// hashes, so that recreating one of them recreates this one too.
    pub const RESTARTS_WITH: &str = "drover.restarts-with";
    /// On a volume a move made: the host its data was copied from.
    pub const MOVED_FROM: &str = "drover.moved-from";
    /// On a copy record: the Docker volume whose copy it describes.
    pub const COPY_OF: &str = "drover.copy-of";
    pub const COPY_ROLE: &str = "drover.copy-role";
    pub const COPY_EPOCH: &str = "drover.copy-epoch";
    /// On a copy made by `drover volume recover`: the hosts whose copies
    /// it replaced (comma-separated); theirs, of a lower epoch, are stale.
    pub const COPY_SUPERSEDES: &str = "drover.copy-supersedes";
    pub const COPY_PEER: &str = "drover.copy-peer";
    pub const COPY_SEQ: &str = "drover.copy-seq";
    pub const COPY_BYTES: &str = "drover.copy-bytes";
    /// What the last move of a copy cost: entries, copy rate (bytes/s) and
    /// downtime (ms).
    pub const COPY_FILES: &str = "drover.copy-files";
    pub const MOVE_RATE: &str = "drover.move-rate";
    pub const MOVE_DOWNTIME: &str = "drover.move-downtime-ms";
    pub const MOVE_TO: &str = "drover.move-to";
    pub const MOVE_PHASE: &str = "drover.move-phase";

    /// On a snapshot: `<stack>/<volume>` it was taken of, its name, and the
    /// Git revision of the manifests when known.
    pub const SNAPSHOT_OF: &str = "drover.snapshot-of";
    pub const SNAPSHOT: &str = "drover.snapshot";
    pub const REVISION: &str = "drover.revision";
    /// On a snapshot the controller took for `snapshots:` (only those are
    /// pruned by its `keep`).
    pub const SCHEDULED: &str = "drover.scheduled";
    /// On a snapshot's record: the snapshot volume it completes, when it
    /// was taken (RFC 3339), its regular files' bytes, its entries, how it
    /// was made consistent and how long the apps were held for it (ms).
    pub const SNAPSHOT_RECORD: &str = "drover.snapshot-record";
    pub const TAKEN: &str = "drover.taken";
    /// On a snapshot's record: the ID of the backup pushed from it, when
    /// it has not changed since.
    pub const PUSHED_AS: &str = "drover.pushed-as";
    pub const BYTES: &str = "drover.bytes";
    pub const FILES: &str = "drover.files";
    pub const CONSISTENCY: &str = "drover.consistency";
    pub const HELD_MS: &str = "drover.held-ms";
    /// On a freeze's record: the container drover paused, and what for.
    pub const FROZEN: &str = "drover.frozen";
    pub const FROZEN_FOR: &str = "drover.frozen-for";
    /// On a restore's record: the volume, the snapshot volume it is
    /// restored from, the snapshot name its old content is kept as, and the
    /// containers to start once it is done.
    pub const RESTORE_OF: &str = "drover.restore-of";
    pub const RESTORE_FROM: &str = "drover.restore-from";
    pub const RESTORE_BEFORE: &str = "drover.restore-before";
    pub const RESTORE_APPS: &str = "drover.restore-apps";
    /// On a clone's record while it is made: the volume, and its source
    /// (`stack/volume[@snapshot]`).
    pub const SEEDING: &str = "drover.seeding";
    pub const SEED_FROM: &str = "drover.seed-from";
    /// On a volume made as a clone: its source.
    pub const CLONED_FROM: &str = "drover.cloned-from";

    /// On internal objects: the [`super::VERSION`] of the contract they follow.
    pub const CONTRACT: &str = "drover.contract";

    /// On the lease object.
    pub mod lease {
        /// Who holds a lease: `machine/pid/random`.
        pub const HOLDER: &str = "drover.lease.holder";
        /// The command that holds it (`reconcile`, `controller`, `volume rm`).
        pub const COMMAND: &str = "drover.lease.command";
        /// When it was taken (Unix seconds).
        pub const SINCE: &str = "drover.lease.since";
        /// When it ends unless extended (Unix seconds).
        pub const EXPIRES: &str = "drover.lease.expires";
        /// Where the holder runs: `boot id/pid namespace/pid/start time` (the
        /// start time in clock ticks since boot, from `/proc/PID/stat`). A drover in
        /// the same process space (same kernel boot, same pid namespace) that finds
        /// no process with that pid and start time knows the lease is stale
        /// without waiting.
        pub const PROCESS: &str = "drover.lease.process";
    }

    /// On the record of the Cluster's members.
    pub mod revision {
        /// The commit, as JSON ([`crate::contract::revision::Applied`]).
        pub const REVISION: &str = "drover.revision";
        /// The record's sequence number.
        pub const SEQ: &str = "drover.revision-seq";
    }

    pub mod cluster {
        /// The hosts, as JSON.
        pub const HOSTS: &str = "drover.cluster-hosts";
        /// The record's sequence number.
        pub const SEQ: &str = "drover.cluster-seq";
    }
}

/// The names of what drover makes.
pub mod names {
    pub fn container(stack: &str, app: &str) -> String {
        format!("{stack}-{app}")
    }
    pub fn volume(stack: &str, volume: &str) -> String {
        format!("{stack}-{volume}")
    }
    pub fn network(stack: &str) -> String {
        format!("drover-{stack}")
    }
    /// Network `net` of a stack (a Compose file's `networks:`); `default`
    /// is the stack's own network.
    pub fn stack_network(stack: &str, net: &str) -> String {
        if net == "default" {
            return network(stack);
        }
        let safe: String = net
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("drover-{stack}-{safe}")
    }
    /// `DB_HOST` / `DB_PORT` prefix for a link to `db`.
    pub fn link_prefix(app: &str) -> String {
        app.to_ascii_uppercase().replace(['-', '.'], "_")
    }

    /// The lease object's container name on every host.
    pub const LEASE: &str = "drover-lease";
    /// The lease object's image (an empty root file system).
    pub const LEASE_IMAGE: &str = "drover-lease:1";
    /// The name of a volume move's helper container, before the volume's name.
    pub const HELPER_PREFIX: &str = "drover-move-";

    /// The helper image of a drover binary with this digest.
    pub fn helper_image(digest: &str) -> String {
        format!("drover-helper:{digest}")
    }

    /// Copy record `seq` of Docker volume `of`.
    pub fn record(of: &str, seq: u64) -> String {
        format!("drover-copy-{of}-{seq}")
    }

    /// Snapshot `snapshot` of Docker volume `volume`.
    pub fn snapshot(volume: &str, snapshot: &str) -> String {
        format!("{volume}.{snapshot}")
    }

    /// The record that a snapshot volume is complete.
    pub fn snapshot_record(snapshot_volume: &str) -> String {
        format!("drover-snapshot-{snapshot_volume}")
    }

    /// The record that drover froze `container`.
    pub fn freeze_record(container: &str) -> String {
        format!("drover-freeze-{container}")
    }

    /// The record of a restore of Docker volume `volume` under way.
    pub fn restore_record(volume: &str) -> String {
        format!("drover-restore-{volume}")
    }

    /// The record of a clone into Docker volume `volume` under way.
    pub fn seed_record(volume: &str) -> String {
        format!("drover-seed-{volume}")
    }

    /// Record `seq` of the Git commit last applied.
    pub fn revision(seq: u64) -> String {
        format!("drover-revision-{seq}")
    }

    /// Record `seq` of the Cluster's members.
    pub fn membership(seq: u64) -> String {
        format!("drover-cluster-{seq}")
    }
}
