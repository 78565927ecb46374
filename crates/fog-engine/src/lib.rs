//! # fog-engine — the instance agent: everything fogd does to a PostgreSQL server
//!
//! The orchestrator never runs `initdb` or opens a SQL connection itself; it sends commands
//! through the [`InstanceAgent`] trait. Today [`LocalAgent`] runs the servers on this
//! machine; later an agent process beside each server will implement the same trait over
//! the network, which is why every command names its target by [`ServerSpec`] alone and
//! every state-changing command carries a fencing [`Generation`].
//!
//! **Fencing.** Every command that changes a server carries a generation. The agent
//! remembers, per server, the highest generation it has accepted (in a file beside the
//! server's data directory) and refuses any command with a lower one
//! ([`EngineError::StaleGeneration`]). Admitting and acting happen under one lock per
//! server, so a command of an older generation can never interleave with a newer one. A
//! controller that lost its role therefore cannot act on a server after a newer controller
//! did. Only observations (`status`, `probe`, `replication_status`, `list_databases`,
//! `replayed_past`, `check_replication_source`) take no generation.
//!
//! **Idempotence.** Every command can be repeated after a crash: `ensure_*` commands
//! converge, deletes of missing things succeed.

mod fence;
mod local;
mod rewind;
/// A simulated agent for engine tests; never for an end-to-end claim.
pub mod sim;
mod sql;

pub use local::{LocalAgent, PgSettings};

use async_trait::async_trait;
use std::path::PathBuf;

/// A fencing token: role-changing commands carry the group's or instance's generation.
pub type Generation = u64;

/// Name of the internal superuser fogd uses to manage each server.
pub const SUPERUSER: &str = "fogd_superuser";
/// Name of the role standbys use to stream WAL and to take base backups.
pub const REPLICATOR: &str = "fogd_replicator";

/// How a standby reaches its primary for base backups and streaming. `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplicationSource {
    pub host: String,
    pub port: u16,
    pub password: String,
    /// Physical replication slot on the source.
    pub slot: String,
    /// `application_name` the standby reports (unique per standby).
    pub application_name: String,
}

/// Progress of a base backup, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedProgress {
    pub done: u64,
    pub total: u64,
}

/// Receives seeding progress reports.
pub type ProgressFn = dyn Fn(SeedProgress) + Send + Sync;

/// How a server stopped, from `pg_controldata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownState {
    /// `Database cluster state: shut down` (a clean stop whose WAL ends at the checkpoint).
    pub clean: bool,
    /// `Latest checkpoint location` (the shutdown checkpoint after a clean stop).
    pub checkpoint_lsn: String,
}

/// What a rewind found: where the histories diverged and where the old server's WAL ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewindReport {
    /// `None` when no rewind was needed (the server had nothing the source lacks).
    pub diverged_at: Option<String>,
    /// End of the old server's valid WAL before the rewind.
    pub old_end: Option<String>,
    /// Bytes of WAL the old server had after the divergence point.
    pub lost_bytes: u64,
    /// The rewind failed and the server was re-seeded with a base backup instead.
    pub reseeded: bool,
}

/// Parses a PostgreSQL LSN (`16/B374D848`) into a byte position.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// What a server says about replication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// The server is a standby.
    pub in_recovery: bool,
    /// `pg_stat_wal_receiver.status` on a standby (`streaming` when healthy).
    pub receiver_status: Option<String>,
    /// `application_name`s of standbys streaming from this server.
    pub streaming_standbys: Vec<String>,
}

/// What one health probe of a server found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthProbe {
    /// The server is a standby.
    pub in_recovery: bool,
    /// `pg_stat_wal_receiver.status` on a standby (`streaming` when healthy).
    pub receiver_status: Option<String>,
    /// A primary's current WAL position (read before the heartbeat is written); a
    /// standby's replay position.
    pub wal_lsn: Option<String>,
    /// On a standby: milliseconds since the primary committed the last transaction the
    /// standby replayed (the primary's heartbeat writes keep this meaningful when idle).
    pub replay_age_ms: Option<u64>,
    /// On a primary asked for a write probe: the heartbeat row was written and committed.
    pub wrote: bool,
    /// On a standby: the port of the server its WAL receiver is connected to, if any.
    pub sender_port: Option<u16>,
}

/// Everything the agent needs to know to address one server. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Internal id of the instance (stable, unique).
    pub uid: String,
    /// The region (the instance's location) whose agent must run every command for this
    /// server. Today one process's [`LocalAgent`] runs every region's servers; a node that
    /// only runs its own region's agent routes on this.
    pub region: String,
    /// Directory that holds the server's data directory, log and fence file.
    pub dir: PathBuf,
    pub host: String,
    pub port: u16,
    /// Password of [`SUPERUSER`] on this server.
    pub superuser_password: String,
}

impl std::fmt::Debug for ServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSpec")
            .field("uid", &self.uid)
            .field("region", &self.region)
            .field("dir", &self.dir)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("superuser_password", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for ReplicationSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationSource")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &"<redacted>")
            .field("slot", &self.slot)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl ServerSpec {
    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }
}

/// What the agent observes about a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    pub initialized: bool,
    pub running: bool,
    /// The data directory is there (a server that is down can be rewound or started).
    pub has_data: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The command's generation is older than one the server already accepted.
    #[error("stale generation {got}: server {uid} already accepted generation {current}")]
    StaleGeneration {
        uid: String,
        got: Generation,
        current: Generation,
    },
    /// A PostgreSQL tool exited with an error.
    #[error("{tool} failed ({status}): {output}")]
    Tool {
        tool: String,
        status: String,
        output: String,
    },
    /// SQL against the server failed.
    #[error("sql on {uid}: {message}")]
    Sql { uid: String, message: String },
    /// Local I/O (directories, files).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The agent is misconfigured (missing binaries, unknown OS user, untraversable path).
    #[error("configuration: {0}")]
    Config(String),
}

/// The commands the orchestrator sends to a PostgreSQL server.
#[async_trait]
pub trait InstanceAgent: Send + Sync + 'static {
    /// Creates the cluster if it does not exist (initdb, settings for replication, access
    /// rules, the internal superuser). A half-made cluster from an interrupted run is
    /// removed and made again.
    async fn ensure_initialized(
        &self,
        spec: &ServerSpec,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Starts the server if it is not running and waits until it accepts connections.
    async fn ensure_running(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError>;
    /// Admits `gen` into the server's fence and changes nothing else: from now on commands
    /// under older generations are refused. A node that takes an operation over from a
    /// dead one does this before commanding the server (a server with no directory yet has
    /// nothing to fence).
    async fn fence(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError>;
    /// Stops the server cleanly if it runs.
    async fn stop(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError>;
    /// Stops the server and removes all its files.
    async fn destroy(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError>;
    /// Observes the server.
    async fn status(&self, spec: &ServerSpec) -> Result<ServerStatus, EngineError>;
    /// Creates or updates a superuser login with a SCRAM verifier (never a clear password).
    async fn ensure_login(
        &self,
        spec: &ServerSpec,
        login: &str,
        scram_verifier: &str,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Creates a database if it does not exist.
    async fn create_database(
        &self,
        spec: &ServerSpec,
        name: &str,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Drops a database if it exists, ending its sessions.
    async fn drop_database(
        &self,
        spec: &ServerSpec,
        name: &str,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Names of the user databases on the server.
    async fn list_databases(&self, spec: &ServerSpec) -> Result<Vec<String>, EngineError>;
    /// Creates or updates [`REPLICATOR`] with a SCRAM verifier.
    async fn ensure_replication_role(
        &self,
        spec: &ServerSpec,
        scram_verifier: &str,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// From `from`'s side, opens a physical replication connection to `source` with its
    /// credentials and identifies the system: proves a standby could stream from it.
    async fn check_replication_source(
        &self,
        from: &ServerSpec,
        source: &ReplicationSource,
    ) -> Result<(), EngineError>;
    /// Creates a physical replication slot reserving WAL now, if absent.
    async fn ensure_slot(
        &self,
        spec: &ServerSpec,
        slot: &str,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Drops a replication slot if present (waiting briefly for it to become inactive).
    async fn drop_slot(
        &self,
        spec: &ServerSpec,
        slot: &str,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Replaces the server's data with a base backup of `source` and starts it as a hot
    /// standby streaming from it through the slot. Idempotent: a server already seeded from
    /// this slot is only started.
    async fn seed_standby(
        &self,
        spec: &ServerSpec,
        source: &ReplicationSource,
        progress: &ProgressFn,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Promotes a standby to a read-write primary (no-op on a primary), checkpoints, and
    /// forgets its upstream.
    async fn promote(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError>;
    /// A health probe: connects, reads the server's role and WAL position and, when
    /// `write` is set and the server is a primary, commits a heartbeat row (locally
    /// durable; never waits for a synchronous standby).
    async fn probe(&self, spec: &ServerSpec, write: bool) -> Result<HealthProbe, EngineError>;
    /// Observes replication on the server.
    async fn replication_status(&self, spec: &ServerSpec)
        -> Result<ReplicationStatus, EngineError>;
    /// Makes `sp_wait_for_database_copy_sync` in `database` wait for the geo-secondary
    /// whose walreceiver reports `application_name`, and accept `partner` (instance name,
    /// or a fully qualified name starting with `{partner}.{zone}.`) as its target server.
    async fn install_geo_link(
        &self,
        spec: &ServerSpec,
        database: &str,
        partner: &str,
        zone: &str,
        application_name: &str,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Removes the geo link of `database` (the procedure then reports it has none).
    async fn clear_geo_link(
        &self,
        spec: &ServerSpec,
        database: &str,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Names the standby that `SET LOCAL synchronous_commit = on` waits for (`None`: none).
    async fn set_sync_standby(
        &self,
        spec: &ServerSpec,
        application_name: Option<&str>,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Stops the server with a fast shutdown (its final WAL, the shutdown checkpoint, is
    /// streamed to connected standbys before it exits) and reports how it stopped.
    async fn stop_and_inspect(
        &self,
        spec: &ServerSpec,
        gen: Generation,
    ) -> Result<ShutdownState, EngineError>;
    /// Stops the server at once (`-m immediate`): fencing a primary that must not go on.
    async fn kill(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError>;
    /// Whether a standby has replayed strictly past `lsn`.
    async fn replayed_past(&self, spec: &ServerSpec, lsn: &str) -> Result<bool, EngineError>;
    /// Throws the server's data away and seeds it again from `source` (stopping it first):
    /// the repair of a standby that neither streams nor can be rewound into streaming.
    async fn reseed_standby(
        &self,
        spec: &ServerSpec,
        source: &ReplicationSource,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Restarts a cleanly stopped server as a hot standby streaming from `source`.
    async fn follow(
        &self,
        spec: &ServerSpec,
        source: &ReplicationSource,
        gen: Generation,
    ) -> Result<(), EngineError>;
    /// Rewinds a stopped (possibly crashed) former primary onto `source_server`'s history
    /// with pg_rewind — re-seeding with a base backup when rewinding is impossible — and
    /// starts it as a standby of `source`. Reports what the old history had that is lost.
    /// The report is persisted beside the data directory: a repeated call of the same
    /// generation (the caller lost the reply) returns it again instead of rewinding anew.
    async fn rewind_and_follow(
        &self,
        spec: &ServerSpec,
        source_server: &ServerSpec,
        source: &ReplicationSource,
        gen: Generation,
    ) -> Result<RewindReport, EngineError>;
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password`. Computed where the
/// password arrives so that only the verifier is ever persisted or sent to a server.
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// A random password for internal roles.
pub fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns() {
        assert_eq!(parse_lsn("0/3000148"), Some(0x3000148));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn verifier_hides_the_password() {
        let v = scram_verifier("S0me-Str0ng-Pass!");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!v.contains("S0me"));
        assert_ne!(v, scram_verifier("S0me-Str0ng-Pass!"), "salted");
        assert_eq!(random_secret().len(), 32);
    }

    #[test]
    fn debug_output_hides_passwords() {
        let spec = ServerSpec {
            uid: "u".into(),
            region: "eastus".into(),
            dir: "/d".into(),
            host: "h".into(),
            port: 1,
            superuser_password: "Sup3r-Secret-Value".into(),
        };
        let source = ReplicationSource {
            host: "h".into(),
            port: 1,
            password: "Repl-Secret-Value".into(),
            slot: "s".into(),
            application_name: "a".into(),
        };
        let text = format!("{spec:?} {source:?} {spec:#?}");
        assert!(!text.contains("Secret-Value"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
