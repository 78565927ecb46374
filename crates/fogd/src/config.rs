//! `fogd serve` settings: command-line flags, environment variables and a TOML file.
//!
//! Every setting can come from three places; the first one that has it wins:
//!
//! 1. a command-line flag (`--data-dir`),
//! 2. its environment variable (`FOGD_DATA_DIR`; clap reads both into [`ServeArgs`]),
//! 3. the TOML file named by `--config` / `FOGD_CONFIG` (key `data_dir`, [`FileConfig`]),
//!
//! and otherwise the built-in default ([`Settings::default`]). [`Settings::resolve`] merges
//! them; [`FIELDS`] documents every key once, for `fogd config-example` ([`example_toml`]),
//! and the unit tests keep it in step with the flags, the file keys and the defaults.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An inclusive TCP port range, written `START-END` (e.g. `15000-15999`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn as_tuple(self) -> (u16, u16) {
        (self.start, self.end)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid port range '{s}': expected START-END with 0 < START <= END <= 65535, e.g. 15000-15999")
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start: u16 = a.trim().parse().map_err(|_| bad())?;
        let end: u16 = b.trim().parse().map_err(|_| bad())?;
        if start == 0 || start > end {
            return Err(bad());
        }
        Ok(PortRange { start, end })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Where fogd keeps its metadata: `sqlite` (the embedded default, `DATA_DIR/store.sqlite`)
/// or `etcd://HOST:PORT[,HOST:PORT…]` (an etcd 3.4+ cluster, keys under
/// [`fog_store::EtcdStore::DEFAULT_PREFIX`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum StoreSetting {
    Sqlite,
    /// Endpoint URLs (`http://HOST:PORT`).
    Etcd(Vec<String>),
}

impl FromStr for StoreSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "sqlite" {
            return Ok(StoreSetting::Sqlite);
        }
        if s.starts_with("etcd://") {
            return fog_store::EtcdStore::parse_url(s).map(StoreSetting::Etcd);
        }
        Err(format!(
            "invalid store '{s}': expected sqlite or etcd://HOST:PORT[,HOST:PORT...]"
        ))
    }
}

impl TryFrom<String> for StoreSetting {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::fmt::Display for StoreSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSetting::Sqlite => write!(f, "sqlite"),
            StoreSetting::Etcd(endpoints) => {
                let hosts: Vec<&str> = endpoints
                    .iter()
                    .map(|e| e.trim_start_matches("http://"))
                    .collect();
                write!(f, "etcd://{}", hosts.join(","))
            }
        }
    }
}

/// Built-in defaults (also shown in `--help`, `fogd config-example` and the README).
pub mod defaults {
    pub const DATA_DIR: &str = "/var/lib/fogd";
    pub const LISTEN: &str = "127.0.0.1:8443";
    pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
    pub const PG_OS_USER: &str = "postgres";
    pub const SERVER_HOST: &str = "127.0.0.1";
    pub const DNS_SUFFIX: &str = "database.fogd.local";
    pub const LEAVE_SERVERS_RUNNING: bool = false;
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    pub const MAX_HEADER_BYTES: usize = 32 * 1024;
    pub const MAX_CONNECTIONS: usize = 512;
    pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    pub const IDLE_TIMEOUT_MS: u64 = 60_000;
    pub const REQUEST_TIMEOUT_MS: u64 = 60_000;
    pub const LISTENER_HOST: &str = "127.0.0.1";
    pub const MIN_GRACE_PERIOD_MINUTES: i64 = 60;
    pub const LISTENER_HOLD_MS: u64 = 5000;
    pub const PLANNED_FAILOVER_TIMEOUT_MS: u64 = 30_000;
    pub const PROBE_INTERVAL_MS: u64 = 1000;
    pub const PROBE_TIMEOUT_MS: u64 = 2000;
    pub const GRACE_PERIOD_UNIT_MS: u64 = 60_000;
    pub const REJOIN_RETRY_MS: u64 = 5000;
    /// Several nodes on one store (issue 12).
    pub const LEASE_TTL: u64 = 5;
}

/// The secret key file, relative to the data directory, when `secret_key_file` is unset.
pub const DEFAULT_SECRET_KEY_FILE: &str = "keys/secrets.key";

fn parse_range(s: &str) -> Result<PortRange, String> {
    s.parse()
}

fn parse_store(s: &str) -> Result<StoreSetting, String> {
    s.parse()
}

/// `fogd serve`'s command line. Every field is optional so that an absent flag (and absent
/// environment variable) falls through to the config file and then to the default.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file; every key is optional and named like the flag with
    /// underscores (`data_dir = "/srv/fogd"`). `fogd config-example` prints one with every
    /// key, its default and its meaning. Flags and environment variables override it.
    #[arg(long, env = "FOGD_CONFIG", value_name = "FILE", verbatim_doc_comment)]
    pub config: Option<PathBuf>,
    /// Data directory: CA certificate, admin token, client.toml, metadata store and all
    /// PostgreSQL data [default: /var/lib/fogd]
    #[arg(long, env = "FOGD_DATA_DIR", value_name = "DIR", verbatim_doc_comment)]
    pub data_dir: Option<PathBuf>,
    /// File with the 256-bit key that encrypts the credentials in the metadata store;
    /// created (mode 0600) on first start. Keep it apart from backups of the store
    /// [default: DATA_DIR/keys/secrets.key]
    #[arg(
        long,
        env = "FOGD_SECRET_KEY_FILE",
        value_name = "FILE",
        verbatim_doc_comment
    )]
    pub secret_key_file: Option<PathBuf>,
    /// Metadata store: sqlite (DATA_DIR/store.sqlite) or etcd://HOST:PORT[,HOST:PORT...]
    /// (an etcd 3.4+ cluster, keys under /fogd/; several nodes may share it)
    /// [default: sqlite]
    #[arg(
        long,
        env = "FOGD_STORE",
        value_name = "STORE",
        value_parser = parse_store,
        verbatim_doc_comment
    )]
    pub store: Option<StoreSetting>,
    /// Address the HTTPS API listens on; port 0 picks a free port (see DIR/api-url)
    /// [default: 127.0.0.1:8443]
    #[arg(
        long,
        env = "FOGD_LISTEN",
        value_name = "ADDR:PORT",
        verbatim_doc_comment
    )]
    pub listen: Option<SocketAddr>,
    /// External base URL (e.g. https://fogd.example.com) used in polling URLs and
    /// client.toml, when clients reach fogd through another name than its listen address,
    /// e.g. behind a proxy; never taken from a request's Host header [default: https:// and
    /// the bound listen address]
    #[arg(
        long,
        env = "FOGD_PUBLIC_URL",
        value_name = "URL",
        verbatim_doc_comment
    )]
    pub public_url: Option<String>,
    /// Extra host names or IP addresses for the server certificate (repeatable, or
    /// comma-separated); localhost, 127.0.0.1, ::1 and the listen address are always
    /// included. Only used when the certificate is first created.
    #[arg(
        long = "tls-san",
        env = "FOGD_TLS_SAN",
        value_name = "NAME",
        value_delimiter = ',',
        verbatim_doc_comment
    )]
    pub tls_san: Option<Vec<String>>,
    /// Directory with the PostgreSQL 15 server binaries [default: /usr/lib/postgresql/15/bin]
    #[arg(
        long,
        env = "FOGD_PG_BIN_DIR",
        value_name = "DIR",
        verbatim_doc_comment
    )]
    pub pg_bin_dir: Option<PathBuf>,
    /// OS user that runs the PostgreSQL servers when fogd runs as root [default: postgres]
    #[arg(
        long,
        env = "FOGD_PG_OS_USER",
        value_name = "USER",
        verbatim_doc_comment
    )]
    pub pg_os_user: Option<String>,
    /// Address the managed PostgreSQL servers listen on (and clients connect to)
    /// [default: 127.0.0.1]
    #[arg(
        long,
        env = "FOGD_SERVER_HOST",
        value_name = "HOST",
        verbatim_doc_comment
    )]
    pub server_host: Option<String>,
    /// Port range for managed PostgreSQL servers, e.g. 15000-15999 [default: free ports
    /// chosen by the OS]
    #[arg(long, env = "FOGD_SERVER_PORTS", value_name = "START-END", value_parser = parse_range, verbatim_doc_comment)]
    pub server_ports: Option<PortRange>,
    /// DNS suffix of fully qualified domain names ({name}.{dnsZone}.{suffix})
    /// [default: database.fogd.local]
    #[arg(
        long,
        env = "FOGD_DNS_SUFFIX",
        value_name = "SUFFIX",
        verbatim_doc_comment
    )]
    pub dns_suffix: Option<String>,
    /// Keep the PostgreSQL servers running when fogd shuts down cleanly (by default fogd
    /// stops them; after a crash they keep running and fogd adopts them on restart).
    /// `--leave-servers-running` alone means true [default: false]
    #[arg(
        long,
        env = "FOGD_LEAVE_SERVERS_RUNNING",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        verbatim_doc_comment
    )]
    pub leave_servers_running: Option<bool>,
    /// Largest accepted request body in bytes; larger ones get 413 [default: 1048576]
    #[arg(
        long,
        env = "FOGD_MAX_BODY_BYTES",
        value_name = "BYTES",
        verbatim_doc_comment
    )]
    pub max_body_bytes: Option<usize>,
    /// Largest accepted request line plus headers in bytes; larger ones get 431
    /// [default: 32768]
    #[arg(
        long,
        env = "FOGD_MAX_HEADER_BYTES",
        value_name = "BYTES",
        verbatim_doc_comment
    )]
    pub max_header_bytes: Option<usize>,
    /// Most HTTPS connections open at once; at the limit a new connection replaces the one
    /// idle longest, or waits if all have a request in flight [default: 512]
    #[arg(
        long,
        env = "FOGD_MAX_CONNECTIONS",
        value_name = "N",
        verbatim_doc_comment
    )]
    pub max_connections: Option<usize>,
    /// How long a client may take to complete the TLS handshake, in milliseconds
    /// [default: 10000]
    #[arg(
        long,
        env = "FOGD_TLS_HANDSHAKE_TIMEOUT_MS",
        value_name = "MS",
        verbatim_doc_comment
    )]
    pub tls_handshake_timeout_ms: Option<u64>,
    /// How long a client may take to send a request's headers (and, on a kept-alive
    /// connection, to start its next request), in milliseconds [default: 10000]
    #[arg(
        long,
        env = "FOGD_HEADER_READ_TIMEOUT_MS",
        value_name = "MS",
        verbatim_doc_comment
    )]
    pub header_read_timeout_ms: Option<u64>,
    /// How long a connection with no request in flight stays open, in milliseconds
    /// [default: 60000]
    #[arg(
        long,
        env = "FOGD_IDLE_TIMEOUT_MS",
        value_name = "MS",
        verbatim_doc_comment
    )]
    pub idle_timeout_ms: Option<u64>,
    /// How long a request may take, body included, before it is answered 504
    /// GatewayTimeout, in milliseconds [default: 60000]
    #[arg(
        long,
        env = "FOGD_REQUEST_TIMEOUT_MS",
        value_name = "MS",
        verbatim_doc_comment
    )]
    pub request_timeout_ms: Option<u64>,
    /// Address failover-group listeners (read-write and read-only endpoints) bind to
    /// [default: 127.0.0.1]
    #[arg(
        long,
        env = "FOGD_LISTENER_HOST",
        value_name = "HOST",
        verbatim_doc_comment
    )]
    pub listener_host: Option<String>,
    /// Port range for failover-group listeners, e.g. 16000-16999 (a re-created group gets
    /// its old ports back when free) [default: free ports chosen by the OS]
    #[arg(long, env = "FOGD_LISTENER_PORTS", value_name = "START-END", value_parser = parse_range, verbatim_doc_comment)]
    pub listener_ports: Option<PortRange>,
    /// Smallest failoverWithDataLossGracePeriodMinutes accepted (Azure: 60) [default: 60]
    #[arg(
        long,
        env = "FOGD_MIN_GRACE_PERIOD_MINUTES",
        value_name = "MINUTES",
        verbatim_doc_comment
    )]
    pub min_grace_period_minutes: Option<i64>,
    /// How long a connection that reaches a read-write listener during a role switch
    /// waits for the new primary before it is refused, in milliseconds [default: 5000]
    #[arg(
        long,
        env = "FOGD_LISTENER_HOLD_MS",
        value_name = "MS",
        verbatim_doc_comment
    )]
    pub listener_hold_ms: Option<u64>,
    /// How long a planned failover waits for the old primary to stop and the new one to
    /// catch up before it gives up with PlannedFailoverTimedOut (group unchanged), in
    /// milliseconds [default: 30000]
    #[arg(
        long,
        env = "FOGD_PLANNED_FAILOVER_TIMEOUT_MS",
        value_name = "MS",
        verbatim_doc_comment
    )]
    pub planned_failover_timeout_ms: Option<u64>,
    /// How often the health monitor probes both members of every group, in milliseconds
    /// (at least 10) [default: 1000]
    #[arg(
        long,
        alias = "observe-interval-ms",
        env = "FOGD_PROBE_INTERVAL_MS",
        value_name = "MS",
        verbatim_doc_comment
    )]
    pub probe_interval_ms: Option<u64>,
    /// How long one probe of one server may take before it counts as failed, in
    /// milliseconds (at least 10) [default: 2000]
    #[arg(
        long,
        env = "FOGD_PROBE_TIMEOUT_MS",
        value_name = "MS",
        verbatim_doc_comment
    )]
    pub probe_timeout_ms: Option<u64>,
    /// Length of one minute of failoverWithDataLossGracePeriodMinutes, in milliseconds.
    /// Tests and demos shorten it so automatic failover is seconds away [default: 60000]
    #[arg(
        long,
        env = "FOGD_GRACE_PERIOD_UNIT_MS",
        value_name = "MS",
        verbatim_doc_comment
    )]
    pub grace_period_unit_ms: Option<u64>,
    /// How often fogd retries re-attaching a former primary that could not rejoin, in
    /// milliseconds (at least 10) [default: 5000]
    #[arg(
        long,
        env = "FOGD_REJOIN_RETRY_MS",
        value_name = "MS",
        verbatim_doc_comment
    )]
    pub rejoin_retry_ms: Option<u64>,
    // ---- Several nodes on one store (issue 12): node, lease_ttl, cluster_dir. ----
    /// This node's name among the fogd nodes sharing an etcd store (its node record,
    /// nodes/NAME, and what it owns are filed under it) [default: the host name]
    #[arg(long, env = "FOGD_NODE", value_name = "NAME", verbatim_doc_comment)]
    pub node: Option<String>,
    /// TTL of this node's etcd lease, in whole seconds (at least 2): a node that stops
    /// renewing it loses everything it owned this long after, and another node takes its
    /// operations and the health monitor over [default: 5]
    #[arg(
        long,
        env = "FOGD_LEASE_TTL",
        value_name = "SECONDS",
        verbatim_doc_comment
    )]
    pub lease_ttl: Option<u64>,
    /// Directory shared by the fogd nodes of one machine: the CA and TLS certificate, the
    /// admin token, the subscription id, the secret key and the PostgreSQL servers' data
    /// live there instead of in DATA_DIR [default: unset (DATA_DIR)]
    #[arg(
        long,
        env = "FOGD_CLUSTER_DIR",
        value_name = "DIR",
        verbatim_doc_comment
    )]
    pub cluster_dir: Option<PathBuf>,
}

/// The TOML configuration file: the same settings as [`ServeArgs`], keyed by their
/// snake_case names. Unknown keys are an error.
#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub secret_key_file: Option<PathBuf>,
    pub store: Option<StoreSetting>,
    pub listen: Option<SocketAddr>,
    pub public_url: Option<String>,
    pub tls_san: Option<Vec<String>>,
    pub pg_bin_dir: Option<PathBuf>,
    pub pg_os_user: Option<String>,
    pub server_host: Option<String>,
    pub server_ports: Option<PortRange>,
    pub dns_suffix: Option<String>,
    pub leave_servers_running: Option<bool>,
    pub max_body_bytes: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub tls_handshake_timeout_ms: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub listener_host: Option<String>,
    pub listener_ports: Option<PortRange>,
    pub min_grace_period_minutes: Option<i64>,
    pub listener_hold_ms: Option<u64>,
    pub planned_failover_timeout_ms: Option<u64>,
    pub probe_interval_ms: Option<u64>,
    pub probe_timeout_ms: Option<u64>,
    pub grace_period_unit_ms: Option<u64>,
    pub rejoin_retry_ms: Option<u64>,
    // Several nodes on one store (issue 12).
    pub node: Option<String>,
    pub lease_ttl: Option<u64>,
    pub cluster_dir: Option<PathBuf>,
}

impl FileConfig {
    /// Parses TOML text (no path resolution).
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads `path`. Relative `data_dir`, `secret_key_file` and `pg_bin_dir` are taken
    /// relative to the file's directory. Errors name the file (and, from the TOML parser,
    /// the key and line).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the config file {}", path.display()))?;
        let mut cfg = Self::parse(&text)
            .map_err(|e| anyhow!("invalid config file {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [
            &mut cfg.data_dir,
            &mut cfg.secret_key_file,
            &mut cfg.pg_bin_dir,
            &mut cfg.cluster_dir,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }
}

/// The resolved settings `fogd serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// `None`: `DATA_DIR/keys/secrets.key` ([`Settings::secret_key_path`]).
    pub secret_key_file: Option<PathBuf>,
    pub store: StoreSetting,
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub tls_san: Vec<String>,
    pub pg_bin_dir: PathBuf,
    pub pg_os_user: String,
    pub server_host: String,
    pub server_ports: Option<PortRange>,
    pub dns_suffix: String,
    pub leave_servers_running: bool,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub tls_handshake_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub listener_host: String,
    pub listener_ports: Option<PortRange>,
    pub min_grace_period_minutes: i64,
    pub listener_hold_ms: u64,
    pub planned_failover_timeout_ms: u64,
    pub probe_interval_ms: u64,
    pub probe_timeout_ms: u64,
    pub grace_period_unit_ms: u64,
    pub rejoin_retry_ms: u64,
    /// Several nodes on one store (issue 12): see [`ClusterSettings`].
    pub cluster: ClusterSettings,
}

/// The settings of one node among several sharing an etcd store (issue 12). They matter
/// only with `store = etcd://…`; the embedded default ignores them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterSettings {
    /// `None`: the host name ([`ClusterSettings::node_name`]).
    pub node: Option<String>,
    /// Lease TTL in whole seconds.
    pub lease_ttl: u64,
    /// `None`: shared material lives in the data directory.
    pub cluster_dir: Option<PathBuf>,
}

impl ClusterSettings {
    /// The node's name: `node`, else the host name, else `fogd`.
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node {
            return n.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "fogd".into())
    }

    fn resolve(args: &ServeArgs, file: &FileConfig) -> Self {
        ClusterSettings {
            node: args.node.clone().or(file.node.clone()),
            lease_ttl: args
                .lease_ttl
                .or(file.lease_ttl)
                .unwrap_or(defaults::LEASE_TTL),
            cluster_dir: args.cluster_dir.clone().or(file.cluster_dir.clone()),
        }
    }

    fn check(&self) -> Result<()> {
        if self.lease_ttl < 2 {
            bail!("lease_ttl must be at least 2 (seconds; etcd's minimum)");
        }
        if let Some(n) = &self.node {
            let ok = !n.is_empty()
                && n.len() <= 63
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !ok {
                bail!("node '{n}' must be 1-63 letters, digits, '-', '_' or '.'");
            }
        }
        Ok(())
    }
}

impl Default for Settings {
    fn default() -> Self {
        use defaults::*;
        Settings {
            data_dir: DATA_DIR.into(),
            secret_key_file: None,
            store: StoreSetting::Sqlite,
            listen: LISTEN.parse().expect("default listen address"),
            public_url: None,
            tls_san: Vec::new(),
            pg_bin_dir: PG_BIN_DIR.into(),
            pg_os_user: PG_OS_USER.into(),
            server_host: SERVER_HOST.into(),
            server_ports: None,
            dns_suffix: DNS_SUFFIX.into(),
            leave_servers_running: LEAVE_SERVERS_RUNNING,
            max_body_bytes: MAX_BODY_BYTES,
            max_header_bytes: MAX_HEADER_BYTES,
            max_connections: MAX_CONNECTIONS,
            tls_handshake_timeout_ms: TLS_HANDSHAKE_TIMEOUT_MS,
            header_read_timeout_ms: HEADER_READ_TIMEOUT_MS,
            idle_timeout_ms: IDLE_TIMEOUT_MS,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            listener_host: LISTENER_HOST.into(),
            listener_ports: None,
            min_grace_period_minutes: MIN_GRACE_PERIOD_MINUTES,
            listener_hold_ms: LISTENER_HOLD_MS,
            planned_failover_timeout_ms: PLANNED_FAILOVER_TIMEOUT_MS,
            probe_interval_ms: PROBE_INTERVAL_MS,
            probe_timeout_ms: PROBE_TIMEOUT_MS,
            grace_period_unit_ms: GRACE_PERIOD_UNIT_MS,
            rejoin_retry_ms: REJOIN_RETRY_MS,
            cluster: ClusterSettings {
                lease_ttl: LEASE_TTL,
                ..Default::default()
            },
        }
    }
}

impl Settings {
    /// Reads the config file named by `args` (if any) and resolves.
    pub fn load(args: ServeArgs) -> Result<Self> {
        let file = match &args.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        Self::resolve(args, file)
    }

    /// Flag or environment variable (both in `args`) > `file` > default; then checks.
    pub fn resolve(args: ServeArgs, file: FileConfig) -> Result<Self> {
        let d = Settings::default();
        let cluster = ClusterSettings::resolve(&args, &file);
        let s = Settings {
            data_dir: args.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            secret_key_file: args
                .secret_key_file
                .or(file.secret_key_file)
                .or(d.secret_key_file),
            store: args.store.or(file.store).unwrap_or(d.store),
            listen: args.listen.or(file.listen).unwrap_or(d.listen),
            public_url: args.public_url.or(file.public_url).or(d.public_url),
            tls_san: args.tls_san.or(file.tls_san).unwrap_or(d.tls_san),
            pg_bin_dir: args.pg_bin_dir.or(file.pg_bin_dir).unwrap_or(d.pg_bin_dir),
            pg_os_user: args.pg_os_user.or(file.pg_os_user).unwrap_or(d.pg_os_user),
            server_host: args
                .server_host
                .or(file.server_host)
                .unwrap_or(d.server_host),
            server_ports: args.server_ports.or(file.server_ports).or(d.server_ports),
            dns_suffix: args.dns_suffix.or(file.dns_suffix).unwrap_or(d.dns_suffix),
            leave_servers_running: args
                .leave_servers_running
                .or(file.leave_servers_running)
                .unwrap_or(d.leave_servers_running),
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(d.max_body_bytes),
            max_header_bytes: args
                .max_header_bytes
                .or(file.max_header_bytes)
                .unwrap_or(d.max_header_bytes),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            tls_handshake_timeout_ms: args
                .tls_handshake_timeout_ms
                .or(file.tls_handshake_timeout_ms)
                .unwrap_or(d.tls_handshake_timeout_ms),
            header_read_timeout_ms: args
                .header_read_timeout_ms
                .or(file.header_read_timeout_ms)
                .unwrap_or(d.header_read_timeout_ms),
            idle_timeout_ms: args
                .idle_timeout_ms
                .or(file.idle_timeout_ms)
                .unwrap_or(d.idle_timeout_ms),
            request_timeout_ms: args
                .request_timeout_ms
                .or(file.request_timeout_ms)
                .unwrap_or(d.request_timeout_ms),
            listener_host: args
                .listener_host
                .or(file.listener_host)
                .unwrap_or(d.listener_host),
            listener_ports: args
                .listener_ports
                .or(file.listener_ports)
                .or(d.listener_ports),
            min_grace_period_minutes: args
                .min_grace_period_minutes
                .or(file.min_grace_period_minutes)
                .unwrap_or(d.min_grace_period_minutes),
            listener_hold_ms: args
                .listener_hold_ms
                .or(file.listener_hold_ms)
                .unwrap_or(d.listener_hold_ms),
            planned_failover_timeout_ms: args
                .planned_failover_timeout_ms
                .or(file.planned_failover_timeout_ms)
                .unwrap_or(d.planned_failover_timeout_ms),
            probe_interval_ms: args
                .probe_interval_ms
                .or(file.probe_interval_ms)
                .unwrap_or(d.probe_interval_ms),
            probe_timeout_ms: args
                .probe_timeout_ms
                .or(file.probe_timeout_ms)
                .unwrap_or(d.probe_timeout_ms),
            grace_period_unit_ms: args
                .grace_period_unit_ms
                .or(file.grace_period_unit_ms)
                .unwrap_or(d.grace_period_unit_ms),
            rejoin_retry_ms: args
                .rejoin_retry_ms
                .or(file.rejoin_retry_ms)
                .unwrap_or(d.rejoin_retry_ms),
            cluster,
        };
        s.check()?;
        Ok(s)
    }

    /// The secret key file: `secret_key_file`, else `DATA_DIR/keys/secrets.key`.
    pub fn secret_key_path(&self) -> PathBuf {
        self.secret_key_file
            .clone()
            .unwrap_or_else(|| self.shared_dir().join(DEFAULT_SECRET_KEY_FILE))
    }

    /// Where the material every node of a machine shares lives: `cluster_dir`, else the
    /// data directory.
    pub fn shared_dir(&self) -> PathBuf {
        self.cluster
            .cluster_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.clone())
    }

    fn check(&self) -> Result<()> {
        if let Some(u) = &self.public_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                bail!("public_url '{u}' must be an absolute URL starting with https://");
            }
        }
        if self.pg_os_user.is_empty() {
            bail!("pg_os_user must not be empty");
        }
        if self.server_host.is_empty() || self.listener_host.is_empty() {
            bail!("server_host and listener_host must not be empty");
        }
        if self.dns_suffix.is_empty() {
            bail!("dns_suffix must not be empty");
        }
        if self.max_body_bytes == 0 {
            bail!("max_body_bytes must be at least 1");
        }
        if self.max_header_bytes < 1024 {
            bail!("max_header_bytes must be at least 1024");
        }
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        for (key, ms) in [
            ("tls_handshake_timeout_ms", self.tls_handshake_timeout_ms),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
        ] {
            if ms == 0 {
                bail!("{key} must be at least 1");
            }
        }
        if self.grace_period_unit_ms == 0 {
            bail!("grace_period_unit_ms must be at least 1");
        }
        self.cluster.check()
    }
}

/// One documented setting: its TOML key (the flag is `--` + the key with hyphens, the
/// environment variable `FOGD_` + the key in upper case).
pub struct Field {
    pub key: &'static str,
    /// The default as a TOML value; `None` when the setting is unset by default.
    pub default: Option<&'static str>,
    /// What unset means, for settings without a default value.
    pub unset: &'static str,
    /// An example TOML value (shown commented out when there is no default).
    pub example: &'static str,
    /// What the setting does.
    pub doc: &'static str,
}

impl Field {
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }
    pub fn env(&self) -> String {
        format!("FOGD_{}", self.key.to_uppercase())
    }
}

/// Every setting, in the order of `--help`.
pub const FIELDS: &[Field] = &[
    Field {
        key: "data_dir",
        default: Some(r#""/var/lib/fogd""#),
        unset: "",
        example: r#""/srv/fogd""#,
        doc: "Data directory, created if missing: ca.pem, admin-token, subscription-id, api-url, \
              client.toml, the metadata store (store.sqlite) and every PostgreSQL server's data \
              (instances/). In a file, a relative path is relative to the file's directory.",
    },
    Field {
        key: "secret_key_file",
        default: None,
        unset: "DATA_DIR/keys/secrets.key",
        example: r#""/etc/fogd/secrets.key""#,
        doc: "File holding the 256-bit key (64 hex digits) that encrypts the credentials fogd \
              keeps in its metadata store. Created with mode 0600 (its directory 0700) on first \
              start; a key file other users may read is refused. Keep it apart from backups of \
              the store, and back it up separately: without it the stored credentials cannot \
              be read. In a file, a relative path is relative to the file's directory.",
    },
    Field {
        key: "store",
        default: Some(r#""sqlite""#),
        unset: "",
        example: r#""etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379""#,
        doc: "Where fogd keeps its metadata: \"sqlite\" (DATA_DIR/store.sqlite, one node) or \
              \"etcd://HOST:PORT[,HOST:PORT...]\", an etcd 3.4+ cluster (plain HTTP, keys under \
              /fogd/). Several fogd nodes may share one etcd cluster (see node, lease_ttl and \
              cluster_dir).",
    },
    Field {
        key: "listen",
        default: Some(r#""127.0.0.1:8443""#),
        unset: "",
        example: r#""0.0.0.0:8443""#,
        doc: "Address and port the HTTPS API listens on. Port 0 picks a free port; the URL \
              actually bound is written to DATA_DIR/api-url and DATA_DIR/client.toml. To accept \
              other hosts use 0.0.0.0 and add the name clients use to tls_san.",
    },
    Field {
        key: "public_url",
        default: None,
        unset: "https:// and the bound listen address, a wildcard address replaced by loopback",
        example: r#""https://fogd.example.com:8443""#,
        doc: "External base URL used in polling URLs (Azure-AsyncOperation, Location, \
              nextLink) and in client.toml, for clients that reach fogd through another name \
              than its listen address, e.g. behind a proxy. Polling URLs are never built from \
              a request's Host header.",
    },
    Field {
        key: "tls_san",
        default: Some("[]"),
        unset: "",
        example: r#"["fogd.example.com", "10.0.0.5"]"#,
        doc: "Extra host names or IP addresses for the HTTPS server certificate; localhost, \
              127.0.0.1, ::1 and the listen address are always included. Used when the \
              certificate is created on first start (to re-issue, remove DATA_DIR/tls and \
              DATA_DIR/ca.pem; clients must then trust the new ca.pem). As a flag: repeatable \
              or comma-separated; as an environment variable: comma-separated.",
    },
    Field {
        key: "pg_bin_dir",
        default: Some(r#""/usr/lib/postgresql/15/bin""#),
        unset: "",
        example: r#""/usr/lib/postgresql/15/bin""#,
        doc: "Directory with the PostgreSQL 15 server binaries (initdb, pg_ctl, postgres, \
              pg_basebackup, pg_rewind). In a file, a relative path is relative to the file's \
              directory.",
    },
    Field {
        key: "pg_os_user",
        default: Some(r#""postgres""#),
        unset: "",
        example: r#""postgres""#,
        doc: "OS user that runs the PostgreSQL servers when fogd runs as root (PostgreSQL \
              refuses to run as root); every directory above the data directory must be \
              traversable by it.",
    },
    Field {
        key: "server_host",
        default: Some(r#""127.0.0.1""#),
        unset: "",
        example: r#""10.0.0.5""#,
        doc: "Address the managed PostgreSQL servers listen on; also the host in each \
              instance's properties.postgresEndpoint.",
    },
    Field {
        key: "server_ports",
        default: None,
        unset: "free ports chosen by the OS",
        example: r#""15000-15999""#,
        doc: "Port range START-END (inclusive) for the managed PostgreSQL servers, one port per \
              instance.",
    },
    Field {
        key: "dns_suffix",
        default: Some(r#""database.fogd.local""#),
        unset: "",
        example: r#""database.example.com""#,
        doc: "DNS suffix of fully qualified domain names: instances are \
              {name}.{dnsZone}.{suffix}, listeners {group}.{dnsZone}.{suffix} and \
              {group}.secondary.{dnsZone}.{suffix}.",
    },
    Field {
        key: "leave_servers_running",
        default: Some("false"),
        unset: "",
        example: "true",
        doc: "Keep the PostgreSQL servers running when fogd shuts down cleanly (SIGTERM, \
              Ctrl-C); by default fogd stops them. After a crash they keep running either way \
              and fogd adopts them on its next start. The flag alone means true; \
              --leave-servers-running=false overrides a file that says true.",
    },
    Field {
        key: "max_body_bytes",
        default: Some("1048576"),
        unset: "",
        example: "4194304",
        doc: "Largest accepted request body, in bytes; larger requests get 413 \
              RequestEntityTooLarge.",
    },
    Field {
        key: "max_header_bytes",
        default: Some("32768"),
        unset: "",
        example: "65536",
        doc: "Largest accepted request line plus headers, in bytes (at least 1024); larger \
              requests get 431 RequestHeaderFieldsTooLarge with the error envelope. Beyond \
              the HTTP parser's own buffer (the larger of about 400 KiB and this value plus \
              16 KiB) or 256 header fields, the parser answers 431 itself, without a body.",
    },
    Field {
        key: "max_connections",
        default: Some("512"),
        unset: "",
        example: "2048",
        doc: "Most HTTPS connections open at once (from acceptance, through the TLS handshake, \
              until closed). At the limit a new connection replaces the one idle longest (no \
              request in flight: still in its handshake, still sending headers, or between \
              requests); if every connection has a request in flight it waits in the \
              kernel's accept backlog.",
    },
    Field {
        key: "tls_handshake_timeout_ms",
        default: Some("10000"),
        unset: "",
        example: "10000",
        doc: "How long a client may take to complete the TLS handshake, in milliseconds.",
    },
    Field {
        key: "header_read_timeout_ms",
        default: Some("10000"),
        unset: "",
        example: "10000",
        doc: "How long a client may take to send a request's line and headers, in \
              milliseconds; also the time a new connection has to send its first request \
              (HTTP/1.1 or HTTP/2) and an HTTP/1.1 connection kept alive has to start its \
              next one. A client that is slower is disconnected.",
    },
    Field {
        key: "idle_timeout_ms",
        default: Some("60000"),
        unset: "",
        example: "60000",
        doc: "How long a connection with no request in flight stays open, in milliseconds \
              (an HTTP/1.1 connection waiting for its next request is closed after \
              header_read_timeout_ms already).",
    },
    Field {
        key: "request_timeout_ms",
        default: Some("60000"),
        unset: "",
        example: "60000",
        doc: "How long a request may take, reading its body included, before fogd answers \
              504 GatewayTimeout, in milliseconds. The handler is not cut off half-way: it \
              finishes in the background.",
    },
    Field {
        key: "listener_host",
        default: Some(r#""127.0.0.1""#),
        unset: "",
        example: r#""10.0.0.5""#,
        doc: "Address the failover-group listeners (read-write and read-only endpoints) bind to.",
    },
    Field {
        key: "listener_ports",
        default: None,
        unset: "free ports chosen by the OS",
        example: r#""16000-16999""#,
        doc: "Port range START-END (inclusive) for failover-group listeners, two ports per \
              group; a re-created group gets its old ports back when they are free.",
    },
    Field {
        key: "min_grace_period_minutes",
        default: Some("60"),
        unset: "",
        example: "1",
        doc: "Smallest failoverWithDataLossGracePeriodMinutes a group accepts (Azure: 60); \
              tests and demos lower it.",
    },
    Field {
        key: "listener_hold_ms",
        default: Some("5000"),
        unset: "",
        example: "5000",
        doc: "How long a connection that reaches a read-write listener during a role switch \
              waits for the new primary before it is refused, in milliseconds.",
    },
    Field {
        key: "planned_failover_timeout_ms",
        default: Some("30000"),
        unset: "",
        example: "30000",
        doc: "How long a planned failover waits for the old primary to stop and the secondary \
              to catch up before it is undone with PlannedFailoverTimedOut (group unchanged), \
              in milliseconds.",
    },
    Field {
        key: "probe_interval_ms",
        default: Some("1000"),
        unset: "",
        example: "1000",
        doc: "How often the health monitor probes both members of every group, in milliseconds \
              (at least 10). The flag also answers to its former name --observe-interval-ms.",
    },
    Field {
        key: "probe_timeout_ms",
        default: Some("2000"),
        unset: "",
        example: "2000",
        doc: "How long one probe of one server may take before it counts as failed, in \
              milliseconds (at least 10).",
    },
    Field {
        key: "grace_period_unit_ms",
        default: Some("60000"),
        unset: "",
        example: "1000",
        doc: "Length of one minute of failoverWithDataLossGracePeriodMinutes, in milliseconds. \
              Tests and demos shorten it so that an automatic failover is seconds away.",
    },
    Field {
        key: "rejoin_retry_ms",
        default: Some("5000"),
        unset: "",
        example: "5000",
        doc: "How often fogd retries re-attaching a former primary that could not rejoin its \
              group as the secondary, in milliseconds (at least 10).",
    },
    // ---- Several nodes on one store (issue 12). ----
    Field {
        key: "node",
        default: None,
        unset: "the host name",
        example: r#""east-1""#,
        doc: "This node's name among the fogd nodes that share an etcd store: its node record \
              (nodes/NAME, bound to its lease) and every ownership it holds are filed under it. \
              Unused with the SQLite store.",
    },
    Field {
        key: "lease_ttl",
        default: Some("5"),
        unset: "",
        example: "5",
        doc: "TTL of this node's etcd lease, in whole seconds (at least 2). The node renews it \
              every third of it; a node that stops (killed, paused, cut off) loses its node \
              record and everything it owned (operations, the health monitor) this long \
              after, and another node takes over. Unused with the SQLite store.",
    },
    Field {
        key: "cluster_dir",
        default: None,
        unset: "DATA_DIR",
        example: r#""/srv/fogd-cluster""#,
        doc: "Directory the fogd nodes of one machine share: ca.pem and tls/ (one certificate \
              for every node: add each node's listen address to tls_san on the first start), \
              admin-token, subscription-id, keys/secrets.key (unless secret_key_file) and \
              instances/ (the PostgreSQL servers every node may command). DATA_DIR then keeps \
              only the node's own files (fogd.lock, api-url, client.toml). In a file, a \
              relative path is relative to the file's directory.",
    },
];

/// Wraps `text` into `# `-prefixed comment lines of at most ~90 columns.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 90 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// A commented `fogd serve` configuration file with every key set to its default (keys
/// without a default are shown commented out, with an example value).
pub fn example_toml() -> String {
    let mut out = String::new();
    comment(
        &mut out,
        "fogd serve configuration file (TOML). Generated by `fogd config-example`.",
    );
    out.push_str("#\n");
    comment(
        &mut out,
        "Use it with `fogd serve --config FILE` (or FOGD_CONFIG=FILE). Every key is optional. \
         A command-line flag beats its environment variable, which beats this file, which \
         beats the built-in default. The values below are the defaults. An unknown key is an \
         error at start-up.",
    );
    for f in FIELDS {
        out.push('\n');
        comment(&mut out, f.doc);
        match f.default {
            Some(d) => {
                comment(
                    &mut out,
                    &format!("Flag {}, environment {}.", f.flag(), f.env()),
                );
                let _ = writeln!(out, "{} = {d}", f.key);
            }
            None => {
                comment(
                    &mut out,
                    &format!(
                        "Flag {}, environment {}. Default: unset ({}).",
                        f.flag(),
                        f.env(),
                        f.unset
                    ),
                );
                let _ = writeln!(out, "# {} = {}", f.key, f.example);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// Parses flags only: environment variables of the test process are ignored.
    fn flags(argv: &[&str]) -> ServeArgs {
        let mut cmd = TestCli::command();
        // Drop every env binding so the tests do not depend on the caller's environment.
        let ids: Vec<_> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
        for id in ids {
            cmd = cmd.mut_arg(id, |a| a.env(None::<&str>));
        }
        let m = cmd
            .try_get_matches_from(std::iter::once("fogd").chain(argv.iter().copied()))
            .expect("flags parse");
        TestCli::from_arg_matches(&m).expect("flags").serve
    }

    #[test]
    fn defaults_without_flags_or_file() {
        let s = Settings::resolve(flags(&[]), FileConfig::default()).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/fogd"));
        assert_eq!(s.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(s.pg_bin_dir, PathBuf::from("/usr/lib/postgresql/15/bin"));
        assert_eq!(s.pg_os_user, "postgres");
        assert_eq!(s.dns_suffix, "database.fogd.local");
        assert_eq!(s.max_body_bytes, 1 << 20);
        assert_eq!((s.max_header_bytes, s.max_connections), (32 * 1024, 512));
        assert_eq!(
            (s.tls_handshake_timeout_ms, s.header_read_timeout_ms),
            (10_000, 10_000)
        );
        assert_eq!((s.idle_timeout_ms, s.request_timeout_ms), (60_000, 60_000));
        assert_eq!(s.min_grace_period_minutes, 60);
        assert_eq!(s.grace_period_unit_ms, 60_000);
        assert_eq!(s.probe_interval_ms, 1000);
        assert_eq!(s.probe_timeout_ms, 2000);
        assert_eq!(s.rejoin_retry_ms, 5000);
        assert_eq!(s.listener_hold_ms, 5000);
        assert_eq!(s.planned_failover_timeout_ms, 30_000);
        assert!(!s.leave_servers_running);
        assert!(s.server_ports.is_none() && s.listener_ports.is_none());
        assert!(s.public_url.is_none() && s.tls_san.is_empty());
        assert_eq!(s.secret_key_file, None);
        assert_eq!(
            s.secret_key_path(),
            PathBuf::from("/var/lib/fogd/keys/secrets.key")
        );
        let moved = Settings::resolve(flags(&["--data-dir", "/srv/f"]), FileConfig::default());
        assert_eq!(
            moved.unwrap().secret_key_path(),
            PathBuf::from("/srv/f/keys/secrets.key")
        );
        let file = FileConfig::parse("secret_key_file = \"/etc/fogd/k\"").unwrap();
        assert_eq!(
            Settings::resolve(flags(&[]), file)
                .unwrap()
                .secret_key_path(),
            PathBuf::from("/etc/fogd/k")
        );
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let file = FileConfig::parse(
            r#"
            dns_suffix = "file.example"
            min_grace_period_minutes = 5
            listener_ports = "16000-16009"
            tls_san = ["a.example", "b.example"]
            leave_servers_running = true
            "#,
        )
        .unwrap();
        let args = flags(&[
            "--dns-suffix",
            "flag.example",
            "--tls-san",
            "c.example,d.example",
            "--leave-servers-running=false",
            "--probe-interval-ms",
            "250",
        ]);
        let s = Settings::resolve(args, file).unwrap();
        assert_eq!(s.dns_suffix, "flag.example"); // flag over file
        assert_eq!(s.min_grace_period_minutes, 5); // file over default
        assert_eq!(
            s.listener_ports,
            Some(PortRange {
                start: 16000,
                end: 16009
            })
        );
        assert_eq!(s.tls_san, ["c.example", "d.example"]); // a list is replaced, not merged
        assert!(!s.leave_servers_running);
        assert_eq!(s.probe_interval_ms, 250);
        assert_eq!(s.rejoin_retry_ms, defaults::REJOIN_RETRY_MS); // default
    }

    #[test]
    fn environment_values_arrive_like_flags() {
        // clap puts an environment variable's value into ServeArgs exactly as it does a
        // flag's (the end-to-end test checks the real variables), so it beats the file.
        let file = || FileConfig::parse("dns_suffix = \"file.example\"").unwrap();
        let args = ServeArgs {
            dns_suffix: Some("env.example".into()),
            ..Default::default()
        };
        assert_eq!(
            Settings::resolve(args, file()).unwrap().dns_suffix,
            "env.example"
        );
        let cmd = TestCli::command();
        let env = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        // Names scripts and tests rely on.
        assert_eq!(env("config").as_deref(), Some("FOGD_CONFIG"));
        assert_eq!(
            env("probe_interval_ms").as_deref(),
            Some("FOGD_PROBE_INTERVAL_MS")
        );
        assert_eq!(
            env("min_grace_period_minutes").as_deref(),
            Some("FOGD_MIN_GRACE_PERIOD_MINUTES")
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fogd.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:0\"\nlisten_adress = \"x\"\n").unwrap();
        let err = format!("{:#}", FileConfig::read(&path).unwrap_err());
        assert!(err.contains("listen_adress"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error_naming_the_key() {
        let err = FileConfig::parse("max_body_bytes = \"big\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body_bytes"), "{err}");
        let err = FileConfig::parse("listen = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn port_ranges() {
        assert_eq!(
            "15000-15999".parse::<PortRange>(),
            Ok(PortRange {
                start: 15000,
                end: 15999
            })
        );
        assert_eq!(
            " 1 - 1 ".parse::<PortRange>().map(PortRange::as_tuple),
            Ok((1, 1))
        );
        for bad in ["", "15000", "0-10", "20-10", "1-70000", "a-b", "-5", "5-"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        let err = FileConfig::parse("server_ports = \"9-1\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server_ports") && err.contains("START-END"),
            "{err}"
        );
        let args = flags(&["--server-ports", "15000-15010"]);
        assert_eq!(
            args.server_ports,
            Some(PortRange {
                start: 15000,
                end: 15010
            })
        );
        let mut cmd = TestCli::command();
        assert!(cmd
            .try_get_matches_from_mut(["fogd", "--listener-ports", "10"])
            .is_err());
    }

    #[test]
    fn store_is_sqlite_or_etcd_endpoints() {
        assert_eq!(Settings::default().store, StoreSetting::Sqlite);
        let etcd = StoreSetting::Etcd(vec![
            "http://127.0.0.1:2379".into(),
            "http://10.0.0.2:2379".into(),
        ]);
        assert_eq!(
            flags(&["--store", "etcd://127.0.0.1:2379,10.0.0.2:2379"]).store,
            Some(etcd.clone())
        );
        assert_eq!(etcd.to_string(), "etcd://127.0.0.1:2379,10.0.0.2:2379");
        assert_eq!(
            FileConfig::parse("store = \"sqlite\"").unwrap().store,
            Some(StoreSetting::Sqlite)
        );
        for bad in [
            "",
            "etcd",
            "etcd://",
            "etcd://host",
            "postgres://x:1",
            "SQLite",
        ] {
            assert!(bad.parse::<StoreSetting>().is_err(), "{bad}");
        }
        let err = FileConfig::parse("store = \"etcd://nohost\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store"), "{err}");
    }

    #[test]
    fn relative_paths_in_a_file_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fogd.toml");
        std::fs::write(
            &path,
            "data_dir = \"data\"\npg_bin_dir = \"/opt/pg/bin\"\nsecret_key_file = \"k/s.key\"\n",
        )
        .unwrap();
        let f = FileConfig::read(&path).unwrap();
        assert_eq!(f.data_dir, Some(dir.path().join("data")));
        assert_eq!(f.secret_key_file, Some(dir.path().join("k/s.key")));
        assert_eq!(f.pg_bin_dir, Some(PathBuf::from("/opt/pg/bin")));
    }

    #[test]
    fn invalid_values_are_refused() {
        let file = FileConfig::parse("public_url = \"fogd.example.com\"").unwrap();
        let err = Settings::resolve(flags(&[]), file).unwrap_err().to_string();
        assert!(err.contains("public_url"), "{err}");
        assert!(
            Settings::resolve(flags(&["--max-body-bytes", "0"]), FileConfig::default()).is_err()
        );
        for bad in [
            ["--max-connections", "0"],
            ["--max-header-bytes", "100"],
            ["--header-read-timeout-ms", "0"],
            ["--request-timeout-ms", "0"],
        ] {
            assert!(
                Settings::resolve(flags(&bad), FileConfig::default()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn example_parses_back_to_the_defaults() {
        let text = example_toml();
        let file = FileConfig::parse(&text).expect("the example parses");
        assert_eq!(
            Settings::resolve(ServeArgs::default(), file).unwrap(),
            Settings::default()
        );
        for f in FIELDS {
            assert!(text.contains(&format!("{} = ", f.key)), "{} missing", f.key);
        }
    }

    /// FIELDS, FileConfig and the flags describe the same settings.
    #[test]
    fn fields_flags_and_file_keys_agree() {
        // Every FIELDS example is a valid value of a FileConfig key...
        let mut full = String::new();
        for f in FIELDS {
            full.push_str(&format!("{} = {}\n", f.key, f.example));
        }
        let file = FileConfig::parse(&full).expect("every example parses");
        // ...and every FileConfig key has a FIELDS entry (the destructuring is exhaustive,
        // so a new key fails to compile until it is listed here).
        let FileConfig {
            data_dir,
            secret_key_file,
            store,
            listen,
            public_url,
            tls_san,
            pg_bin_dir,
            pg_os_user,
            server_host,
            server_ports,
            dns_suffix,
            leave_servers_running,
            max_body_bytes,
            max_header_bytes,
            max_connections,
            tls_handshake_timeout_ms,
            header_read_timeout_ms,
            idle_timeout_ms,
            request_timeout_ms,
            listener_host,
            listener_ports,
            min_grace_period_minutes,
            listener_hold_ms,
            planned_failover_timeout_ms,
            probe_interval_ms,
            probe_timeout_ms,
            grace_period_unit_ms,
            rejoin_retry_ms,
            node,
            lease_ttl,
            cluster_dir,
        } = file;
        assert!(node.is_some() && lease_ttl.is_some() && cluster_dir.is_some());
        assert!(data_dir.is_some() && listen.is_some() && public_url.is_some());
        assert!(secret_key_file.is_some() && store.is_some());
        assert!(tls_san.is_some() && pg_bin_dir.is_some() && pg_os_user.is_some());
        assert!(server_host.is_some() && server_ports.is_some() && dns_suffix.is_some());
        assert!(leave_servers_running.is_some() && max_body_bytes.is_some());
        assert!(max_header_bytes.is_some() && max_connections.is_some());
        assert!(tls_handshake_timeout_ms.is_some() && header_read_timeout_ms.is_some());
        assert!(idle_timeout_ms.is_some() && request_timeout_ms.is_some());
        assert!(listener_host.is_some() && listener_ports.is_some());
        assert!(min_grace_period_minutes.is_some() && listener_hold_ms.is_some());
        assert!(planned_failover_timeout_ms.is_some() && probe_interval_ms.is_some());
        assert!(probe_timeout_ms.is_some() && grace_period_unit_ms.is_some());
        assert!(rejoin_retry_ms.is_some());

        // Every flag (but --config) is a FIELDS entry with the derived name and variable.
        let cmd = TestCli::command();
        let mut keys = Vec::new();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || id == "help" {
                continue;
            }
            let f = FIELDS
                .iter()
                .find(|f| f.key == id)
                .unwrap_or_else(|| panic!("flag {id} is not in FIELDS"));
            assert_eq!(format!("--{}", arg.get_long().unwrap()), f.flag());
            assert_eq!(
                arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(f.env())
            );
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            match f.default {
                Some(d) if d != "[]" => assert!(
                    help.contains(&format!("[default: {}]", d.trim_matches('"'))),
                    "--{id}: help should say the default {d}: {help}"
                ),
                _ => {}
            }
            keys.push(id.to_string());
        }
        assert_eq!(keys.len(), FIELDS.len());
    }

    #[test]
    fn readme_documents_every_setting() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .expect("README has a Configuration section");
        let section = section.split("\n## ").next().unwrap();
        for f in FIELDS {
            for needle in [
                format!("`{}`", f.key),
                format!("`{}`", f.flag()),
                format!("`{}`", f.env()),
            ] {
                assert!(
                    section.contains(&needle),
                    "README Configuration lacks {needle}"
                );
            }
        }
    }
}
