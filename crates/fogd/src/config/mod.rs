//! `fogd serve` settings: command-line flags, environment variables and a TOML file.
//!
//! Every setting is declared **once**, in the [`settings!`](declare::settings) table below:
//! its key, type, default, help text and example. From that one entry come the flag
//! (`--data-dir`), the environment variable (`FOGD_DATA_DIR`), the TOML key (`data_dir`), the
//! field of the resolved [`Settings`], `--help`, `fogd config-example` ([`example_toml`]) and
//! the README's table ([`markdown_table`]; a unit test keeps the README in step).
//!
//! Each setting comes from the first place that has it:
//!
//! 1. a command-line flag,
//! 2. its environment variable (clap reads both into [`ServeArgs`]),
//! 3. the TOML file named by `--config` / `FOGD_CONFIG` ([`FileConfig`]),
//!
//! and otherwise its default. [`Settings::resolve`] merges them and runs the checks.
//! Durations are [`std::time::Duration`]s written with a unit (`"5s"`, `250ms`); the
//! settings that used to be integers of milliseconds (`probe_interval_ms`) still accept
//! their old key, flag and variable ([`value`]).
//!
//! **Adding a setting** is one entry in the table (doc comment, key, type, default, value
//! name, example; optionally what unset means and a check), then reading `settings.key`
//! where it is used. A new type implements [`value::Value`].

mod declare;
pub mod value;

use anyhow::{anyhow, Context, Result};
use declare::{either, settings};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use value::{PortRange, StoreSetting};

/// The secret key file, relative to the data directory, when `secret_key_file` is unset.
pub const DEFAULT_SECRET_KEY_FILE: &str = "keys/secrets.key";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// (`&String`: a check takes its setting's type by reference.)
#[allow(clippy::ptr_arg)]
fn not_empty(s: &String) -> Result<(), String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(())
    }
}

fn positive(d: &Duration) -> Result<(), String> {
    if d.is_zero() {
        Err("must be at least 1ms".into())
    } else {
        Ok(())
    }
}

settings! {
    /// Data directory: CA certificate, admin token, client.toml, metadata store and all
    /// PostgreSQL data; created if missing.
    ///
    /// It holds ca.pem, admin-token, subscription-id, api-url, client.toml, the metadata
    /// store (store.sqlite) and every PostgreSQL server's data (instances/). In a file, a
    /// relative path is relative to the file's directory.
    data_dir: PathBuf {
        default: PathBuf::from("/var/lib/fogd"),
        value_name: "DIR",
        example: r#""/srv/fogd""#,
    }

    /// File with the 256-bit key (64 hex digits) that encrypts the credentials in the
    /// metadata store; created (mode 0600) on first start. Keep it apart from backups of the
    /// store.
    ///
    /// A key file other users may read is refused, and none is created while the store holds
    /// records sealed with another key. Back it up separately: without it the stored
    /// credentials cannot be read. In a file, a relative path is relative to the file's
    /// directory.
    secret_key_file: Option<PathBuf> {
        default: None,
        value_name: "FILE",
        example: r#""/etc/fogd/secrets.key""#,
        unset: "DATA_DIR/keys/secrets.key",
    }

    /// Metadata store: sqlite (DATA_DIR/store.sqlite) or etcd://HOST:PORT[,HOST:PORT...] (an
    /// etcd 3.4+ cluster over plain HTTP, keys under /fogd/).
    ///
    /// Several fogd nodes may share one etcd cluster (see node, lease_ttl and cluster_dir,
    /// and "Running several nodes" in the README).
    store: StoreSetting {
        default: StoreSetting::Sqlite,
        value_name: "STORE",
        example: r#""etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379""#,
    }

    /// Address the HTTPS API listens on; port 0 picks a free port (see DATA_DIR/api-url).
    ///
    /// The URL actually bound is written to DATA_DIR/api-url and DATA_DIR/client.toml. To
    /// accept other hosts use 0.0.0.0 and add the name clients use to tls_san.
    listen: std::net::SocketAddr {
        default: std::net::SocketAddr::from(([127, 0, 0, 1], 8443)),
        value_name: "ADDR:PORT",
        example: r#""0.0.0.0:8443""#,
    }

    /// External base URL of polling URLs and client.toml, when clients reach fogd through
    /// another name than its listen address (e.g. behind a proxy).
    ///
    /// Used in Azure-AsyncOperation, Location and nextLink URLs. Polling URLs are never built
    /// from a request's Host header.
    public_url: Option<String> {
        default: None,
        value_name: "URL",
        example: r#""https://fogd.example.com:8443""#,
        unset: "https:// and the bound listen address, a wildcard address replaced by loopback",
        check: |u| match u {
            Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => Err(format!(
                "'{u}' must be an absolute URL starting with https://"
            )),
            _ => Ok(()),
        },
    }

    /// Extra host names or IP addresses for the server certificate; localhost, 127.0.0.1,
    /// ::1 and the listen address are always included.
    ///
    /// Used when the certificate is created on first start (to re-issue, remove DATA_DIR/tls
    /// and DATA_DIR/ca.pem; clients must then trust the new ca.pem). As a flag: repeatable or
    /// comma-separated; as an environment variable: comma-separated. A list replaces a list
    /// from the file, never merges with it.
    tls_san: Vec<String> {
        default: Vec::new(),
        value_name: "NAME",
        example: r#"["fogd.example.com", "10.0.0.5"]"#,
    }

    /// Directory with the PostgreSQL 15 server binaries.
    ///
    /// initdb, pg_ctl, postgres, pg_basebackup, pg_rewind and pg_waldump. In a file, a
    /// relative path is relative to the file's directory.
    pg_bin_dir: PathBuf {
        default: PathBuf::from("/usr/lib/postgresql/15/bin"),
        value_name: "DIR",
        example: r#""/usr/lib/postgresql/15/bin""#,
    }

    /// OS user that runs the PostgreSQL servers when fogd runs as root.
    ///
    /// PostgreSQL refuses to run as root; every directory above the data directory must be
    /// traversable by this user.
    pg_os_user: String {
        default: "postgres".into(),
        value_name: "USER",
        example: r#""postgres""#,
        check: not_empty,
    }

    /// Address the managed PostgreSQL servers listen on (and clients connect to).
    ///
    /// Also the host in each instance's properties.postgresEndpoint.
    server_host: String {
        default: "127.0.0.1".into(),
        value_name: "HOST",
        example: r#""10.0.0.5""#,
        check: not_empty,
    }

    /// Port range START-END (inclusive) for the managed PostgreSQL servers, one port per
    /// instance, e.g. 15000-15999.
    server_ports: Option<PortRange> {
        default: None,
        value_name: "START-END",
        example: r#""15000-15999""#,
        unset: "free ports chosen by the OS",
    }

    /// DNS suffix of fully qualified domain names ({name}.{dnsZone}.{suffix}).
    ///
    /// Instances are {name}.{dnsZone}.{suffix}, listeners {group}.{dnsZone}.{suffix} and
    /// {group}.secondary.{dnsZone}.{suffix}.
    dns_suffix: String {
        default: "database.fogd.local".into(),
        value_name: "SUFFIX",
        example: r#""database.example.com""#,
        check: not_empty,
    }

    /// Keep the PostgreSQL servers running when fogd shuts down cleanly; by default fogd
    /// stops them.
    ///
    /// A clean shutdown is SIGTERM or Ctrl-C. After a crash the servers keep running either
    /// way and fogd adopts them on its next start. The flag alone means true;
    /// --leave-servers-running=false overrides a file that says true.
    leave_servers_running: bool {
        default: false,
        value_name: "BOOL",
        example: "true",
    }

    /// Largest accepted request body in bytes; larger ones get 413 RequestEntityTooLarge.
    max_body_bytes: usize {
        default: 1024 * 1024,
        value_name: "BYTES",
        example: "4194304",
        check: |n| if *n == 0 { Err("must be at least 1".into()) } else { Ok(()) },
    }

    /// Largest accepted request line plus headers in bytes (at least 1024); larger ones get
    /// 431 RequestHeaderFieldsTooLarge.
    ///
    /// The answer carries the error envelope. Beyond the HTTP parser's own buffer (the larger
    /// of about 400 KiB and this value plus 16 KiB) or 256 header fields, the parser answers
    /// 431 itself, without a body.
    max_header_bytes: usize {
        default: 32 * 1024,
        value_name: "BYTES",
        example: "65536",
        check: |n| if *n < 1024 { Err("must be at least 1024".into()) } else { Ok(()) },
    }

    /// Most HTTPS connections open at once; at the limit a new connection replaces the one
    /// idle longest, or waits if all have a request in flight.
    ///
    /// A connection counts from acceptance, through the TLS handshake, until closed. Idle
    /// means no request in flight: still in its handshake, still sending headers, or between
    /// requests. If every connection has a request in flight a new one waits in the kernel's
    /// accept backlog.
    max_connections: usize {
        default: 512,
        value_name: "N",
        example: "2048",
        check: |n| if *n == 0 { Err("must be at least 1".into()) } else { Ok(()) },
    }

    /// How long a client may take to complete the TLS handshake.
    tls_handshake_timeout: Duration {
        default: ms(10_000),
        value_name: "DURATION",
        example: r#""10s""#,
        check: positive,
        legacy_ms: tls_handshake_timeout_ms,
    }

    /// How long a client may take to send a request's line and headers (and, on a
    /// kept-alive connection, to start its next request).
    ///
    /// Also the time a new connection has to send its first request (HTTP/1.1 or HTTP/2). A
    /// client that is slower is disconnected.
    header_read_timeout: Duration {
        default: ms(10_000),
        value_name: "DURATION",
        example: r#""10s""#,
        check: positive,
        legacy_ms: header_read_timeout_ms,
    }

    /// How long a connection with no request in flight stays open.
    ///
    /// An HTTP/1.1 connection waiting for its next request is closed after
    /// header_read_timeout already, so this bounds HTTP/2 connections mostly.
    idle_timeout: Duration {
        default: ms(60_000),
        value_name: "DURATION",
        example: r#""1m""#,
        check: positive,
        legacy_ms: idle_timeout_ms,
    }

    /// How long a request may take, body included, before it is answered 504
    /// GatewayTimeout.
    ///
    /// The handler is not cut off half-way: it finishes in the background.
    request_timeout: Duration {
        default: ms(60_000),
        value_name: "DURATION",
        example: r#""1m""#,
        check: positive,
        legacy_ms: request_timeout_ms,
    }

    /// Address failover-group listeners (read-write and read-only endpoints) bind to.
    listener_host: String {
        default: "127.0.0.1".into(),
        value_name: "HOST",
        example: r#""10.0.0.5""#,
        check: not_empty,
    }

    /// Port range START-END (inclusive) for failover-group listeners, two ports per group,
    /// e.g. 16000-16999.
    ///
    /// A re-created group gets its old ports back when they are free.
    listener_ports: Option<PortRange> {
        default: None,
        value_name: "START-END",
        example: r#""16000-16999""#,
        unset: "free ports chosen by the OS",
    }

    /// Smallest failoverWithDataLossGracePeriodMinutes a group accepts (Azure: 60).
    ///
    /// Tests and demos lower it.
    min_grace_period_minutes: i64 {
        default: 60,
        value_name: "MINUTES",
        example: "1",
    }

    /// How long a connection that reaches a read-write listener during a role switch waits
    /// for the new primary before it is refused.
    listener_hold: Duration {
        default: ms(5000),
        value_name: "DURATION",
        example: r#""5s""#,
        legacy_ms: listener_hold_ms,
    }

    /// How long a planned failover waits for the old primary to stop and the secondary to
    /// catch up before it is undone with PlannedFailoverTimedOut (group unchanged).
    planned_failover_timeout: Duration {
        default: ms(30_000),
        value_name: "DURATION",
        example: r#""30s""#,
        legacy_ms: planned_failover_timeout_ms,
    }

    /// How often the health monitor probes both members of every group (at least 10ms).
    probe_interval: Duration {
        default: ms(1000),
        value_name: "DURATION",
        example: r#""1s""#,
        legacy_ms: probe_interval_ms,
        legacy_flags: ["observe-interval-ms"],
    }

    /// How long one probe of one server may take before it counts as failed (at least
    /// 10ms).
    probe_timeout: Duration {
        default: ms(2000),
        value_name: "DURATION",
        example: r#""2s""#,
        legacy_ms: probe_timeout_ms,
    }

    /// Length of one minute of failoverWithDataLossGracePeriodMinutes.
    ///
    /// Tests and demos shorten it so that an automatic failover is seconds away.
    grace_period_unit: Duration {
        default: ms(60_000),
        value_name: "DURATION",
        example: r#""1s""#,
        check: positive,
        legacy_ms: grace_period_unit_ms,
    }

    /// How often fogd retries re-attaching a former primary that could not rejoin its group
    /// as the secondary (at least 10ms).
    rejoin_retry: Duration {
        default: ms(5000),
        value_name: "DURATION",
        example: r#""5s""#,
        legacy_ms: rejoin_retry_ms,
    }

    /// This node's name among the fogd nodes sharing an etcd store.
    ///
    /// Its node record (nodes/NAME, bound to its lease) and every ownership it holds are
    /// filed under it: 1-63 letters, digits, '-', '_' or '.'. Unused with the SQLite store.
    node: Option<String> {
        default: None,
        value_name: "NAME",
        example: r#""east-1""#,
        unset: "the host name",
        check: node_name_check,
    }

    /// TTL of this node's etcd lease (whole seconds, at least 2s).
    ///
    /// The node renews it every third of it; a node that stops (killed, paused, cut off)
    /// loses its node record and everything it owned (operations, the health monitor) this
    /// long after, and another node takes over. Unused with the SQLite store.
    lease_ttl: Duration {
        default: Duration::from_secs(5),
        value_name: "DURATION",
        example: r#""5s""#,
        check: lease_ttl_check,
    }

    /// Directory the fogd nodes of one machine share.
    ///
    /// It holds ca.pem and tls/ (one certificate for every node: add each node's listen
    /// address to tls_san on the first start), admin-token, subscription-id,
    /// keys/secrets.key (unless secret_key_file) and instances/ (the PostgreSQL servers
    /// every node may command). DATA_DIR then keeps only the node's own files (fogd.lock,
    /// api-url, client.toml). In a file, a relative path is relative to the file's
    /// directory.
    cluster_dir: Option<PathBuf> {
        default: None,
        value_name: "DIR",
        example: r#""/srv/fogd-cluster""#,
        unset: "DATA_DIR",
    }
}

/// A node name: 1-63 letters, digits, '-', '_' or '.'.
fn node_name_check(n: &Option<String>) -> Result<(), String> {
    match n {
        Some(n)
            if n.is_empty()
                || n.len() > 63
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            Err(format!(
                "'{n}' must be 1-63 letters, digits, '-', '_' or '.'"
            ))
        }
        _ => Ok(()),
    }
}

/// etcd leases count whole seconds, at least 2.
fn lease_ttl_check(d: &Duration) -> Result<(), String> {
    if d.as_secs() < 2 || d.subsec_nanos() != 0 {
        Err("must be whole seconds, at least 2s (etcd leases count seconds)".into())
    } else {
        Ok(())
    }
}

impl FileConfig {
    /// Parses TOML text (no path resolution).
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads `path`. Relative paths (`data_dir`, `secret_key_file`, `pg_bin_dir`) are taken
    /// relative to the file's directory. Errors name the file (and, from the TOML parser,
    /// the key and line).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the config file {}", path.display()))?;
        let mut cfg = Self::parse(&text)
            .map_err(|e| anyhow!("invalid config file {}: {e}", path.display()))?;
        cfg.paths_relative_to(path.parent().unwrap_or(Path::new("")));
        Ok(cfg)
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

    /// The secret key file: `secret_key_file`, else `keys/secrets.key` in the shared
    /// directory ([`Self::shared_dir`]).
    pub fn secret_key_path(&self) -> PathBuf {
        self.secret_key_file
            .clone()
            .unwrap_or_else(|| self.shared_dir().join(DEFAULT_SECRET_KEY_FILE))
    }

    /// Where the material every node of a machine shares lives: `cluster_dir`, else the
    /// data directory.
    pub fn shared_dir(&self) -> PathBuf {
        self.cluster_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.clone())
    }

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
}

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
         beats the built-in default. The values below are the defaults. Durations take a \
         unit: 250ms, 5s, 1m30s, 2h. An unknown key is an error at start-up.",
    );
    for f in fields() {
        out.push('\n');
        comment(&mut out, &f.paragraphs().join(" "));
        if let Some(legacy) = f.legacy_text() {
            comment(&mut out, &legacy);
        }
        match &f.default {
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

/// The README's table of settings (between its `settings-table` markers).
#[cfg(test)]
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| TOML key | flag | environment | default | meaning |\n| --- | --- | --- | --- | --- |\n",
    );
    for f in fields() {
        let mut flag = format!("`{}`", f.flag());
        let mut env = format!("`{}`", f.env());
        if let Some(legacy) = f.legacy {
            let mut old = vec![format!("`--{}`", legacy.replace('_', "-"))];
            old.extend(f.legacy_flags.iter().map(|a| format!("`--{a}`")));
            flag.push_str(&format!(" (formerly {})", old.join(", ")));
            env.push_str(&format!(" (formerly `FOGD_{}`)", legacy.to_uppercase()));
        }
        let default = match &f.shown_default {
            Some(d) => format!("`{d}`"),
            None => f.unset.to_string(),
        };
        let key = match f.legacy {
            Some(legacy) => format!("`{}` (formerly `{legacy}`, in ms)", f.key),
            None => format!("`{}`", f.key),
        };
        let _ = writeln!(
            out,
            "| {key} | {flag} | {env} | {default} | {} |",
            f.summary().replace('|', "\\|")
        );
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
        try_flags(argv).expect("flags parse")
    }

    fn try_flags(argv: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut cmd = TestCli::command();
        // Drop every env binding so the tests do not depend on the caller's environment.
        let ids: Vec<_> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
        for id in ids {
            cmd = cmd.mut_arg(id, |a| a.env(None::<&str>));
        }
        let m = cmd.try_get_matches_from(std::iter::once("fogd").chain(argv.iter().copied()))?;
        Ok(TestCli::from_arg_matches(&m)?.serve)
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
            (s.tls_handshake_timeout, s.header_read_timeout),
            (ms(10_000), ms(10_000))
        );
        assert_eq!(
            (s.idle_timeout, s.request_timeout),
            (ms(60_000), ms(60_000))
        );
        assert_eq!(s.min_grace_period_minutes, 60);
        assert_eq!(s.grace_period_unit, ms(60_000));
        assert_eq!(s.probe_interval, ms(1000));
        assert_eq!(s.probe_timeout, ms(2000));
        assert_eq!(s.rejoin_retry, ms(5000));
        assert_eq!(s.listener_hold, ms(5000));
        assert_eq!(s.planned_failover_timeout, ms(30_000));
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
            probe_timeout = "3s"
            "#,
        )
        .unwrap();
        let args = flags(&[
            "--dns-suffix",
            "flag.example",
            "--tls-san",
            "c.example,d.example",
            "--leave-servers-running=false",
            "--probe-interval",
            "250ms",
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
        assert_eq!(s.probe_interval, ms(250));
        assert_eq!(s.probe_timeout, ms(3000));
        assert_eq!(s.rejoin_retry, Settings::default().rejoin_retry); // default
        assert!(flags(&["--leave-servers-running"]).leave_servers_running == Some(true));
    }

    /// The former millisecond flags, variables and keys still work, with their meaning.
    #[test]
    fn former_millisecond_names_still_work() {
        let s = Settings::resolve(
            flags(&[
                "--probe-interval-ms",
                "250",
                "--grace-period-unit-ms=1000",
                "--listener-hold-ms",
                "2s",
            ]),
            FileConfig::parse("rejoin_retry_ms = 40\nrequest_timeout_ms = 1500\n").unwrap(),
        )
        .unwrap();
        assert_eq!(s.probe_interval, ms(250));
        assert_eq!(s.grace_period_unit, ms(1000));
        assert_eq!(s.listener_hold, ms(2000));
        assert_eq!(s.rejoin_retry, ms(40));
        assert_eq!(s.request_timeout, ms(1500));
        // The older alias of the older name.
        assert_eq!(
            flags(&["--observe-interval-ms", "300"]).probe_interval,
            Some(ms(300))
        );
        // A flag under the new name beats the file's old key.
        let s = Settings::resolve(
            flags(&["--rejoin-retry", "1s"]),
            FileConfig::parse("rejoin_retry_ms = 40").unwrap(),
        )
        .unwrap();
        assert_eq!(s.rejoin_retry, ms(1000));
        // The same setting twice in one file is refused.
        let both = FileConfig::parse("probe_interval = \"1s\"\nprobe_interval_ms = 500").unwrap();
        let err = Settings::resolve(flags(&[]), both).unwrap_err().to_string();
        assert!(err.contains("probe_interval_ms"), "{err}");
        // Under the new name a bare number has no unit and is refused.
        assert!(try_flags(&["--probe-interval", "250"]).is_err());
        let err = FileConfig::parse("probe_interval = 250")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("probe_interval") && err.contains("unit"),
            "{err}"
        );
    }

    /// A file written for an earlier fogd (every key of its `fogd config-example`, durations
    /// as integers of milliseconds) still parses, to the same settings.
    #[test]
    fn a_file_from_an_earlier_fogd_still_parses() {
        let old = r#"
            data_dir = "/var/lib/fogd"
            store = "sqlite"
            listen = "127.0.0.1:8443"
            tls_san = []
            pg_bin_dir = "/usr/lib/postgresql/15/bin"
            pg_os_user = "postgres"
            server_host = "127.0.0.1"
            dns_suffix = "database.fogd.local"
            leave_servers_running = false
            max_body_bytes = 1048576
            max_header_bytes = 32768
            max_connections = 512
            tls_handshake_timeout_ms = 10000
            header_read_timeout_ms = 10000
            idle_timeout_ms = 60000
            request_timeout_ms = 60000
            listener_host = "127.0.0.1"
            min_grace_period_minutes = 60
            listener_hold_ms = 5000
            planned_failover_timeout_ms = 30000
            probe_interval_ms = 1000
            probe_timeout_ms = 2000
            grace_period_unit_ms = 60000
            rejoin_retry_ms = 5000
        "#;
        let file = FileConfig::parse(old).expect("the old file parses");
        assert_eq!(
            Settings::resolve(ServeArgs::default(), file).unwrap(),
            Settings::default()
        );
        let file = FileConfig::parse(
            "probe_interval_ms = 250
grace_period_unit_ms = 1000",
        )
        .unwrap();
        let s = Settings::resolve(ServeArgs::default(), file).unwrap();
        assert_eq!((s.probe_interval, s.grace_period_unit), (ms(250), ms(1000)));
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
            env("probe_interval").as_deref(),
            Some("FOGD_PROBE_INTERVAL")
        );
        assert_eq!(
            env("probe_interval_ms").as_deref(),
            Some("FOGD_PROBE_INTERVAL_MS")
        );
        assert_eq!(
            env("grace_period_unit_ms").as_deref(),
            Some("FOGD_GRACE_PERIOD_UNIT_MS")
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
        let err = FileConfig::parse("\n\nidle_timeout = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("idle_timeout") && err.contains("line 3"),
            "{err}"
        );
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
            Some(Some(PortRange {
                start: 15000,
                end: 15010
            }))
        );
        assert!(try_flags(&["--listener-ports", "10"]).is_err());
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
        assert_eq!(f.secret_key_file, Some(Some(dir.path().join("k/s.key"))));
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
            ["--request-timeout", "0s"],
            ["--dns-suffix", ""],
        ] {
            let err = Settings::resolve(flags(&bad), FileConfig::default());
            assert!(err.is_err(), "{bad:?}");
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
        for f in fields() {
            assert!(text.contains(&format!("{} = ", f.key)), "{} missing", f.key);
        }
        assert!(text.contains("probe_interval = \"1s\""), "{text}");
    }

    /// Every documented example is a valid value, and every flag is a documented setting.
    #[test]
    fn fields_flags_and_file_keys_agree() {
        let mut full = String::new();
        for f in fields() {
            full.push_str(&format!("{} = {}\n", f.key, f.example));
        }
        let file = FileConfig::parse(&full).expect("every example parses");
        let s = Settings::resolve(ServeArgs::default(), file).expect("every example is valid");
        assert!(s.public_url.is_some() && s.server_ports.is_some());

        let cmd = TestCli::command();
        let fields = fields();
        let mut keys = Vec::new();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || id == "help" || arg.is_hide_set() {
                continue;
            }
            let f = fields
                .iter()
                .find(|f| f.key == id)
                .unwrap_or_else(|| panic!("flag {id} is not a setting"));
            assert_eq!(format!("--{}", arg.get_long().unwrap()), f.flag());
            assert_eq!(
                arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(f.env())
            );
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.contains(&format!("[default: {}]", f.default_text())),
                "--{id}: help should say the default: {help}"
            );
            assert!(!f.summary().is_empty(), "{id} has no help");
            keys.push(id.to_string());
        }
        assert_eq!(keys.len(), fields.len());
        // Every hidden flag is a former name of a setting.
        for arg in cmd.get_arguments().filter(|a| a.is_hide_set()) {
            let id = arg.get_id().as_str();
            assert!(fields.iter().any(|f| f.legacy == Some(id)), "{id}");
        }
    }

    /// The README's table is [`markdown_table`]. `FOGD_BLESS=1 cargo test -p fogd --bin
    /// fogd readme` rewrites it after a setting changed.
    #[test]
    fn readme_documents_every_setting() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let (begin, end) = (
            "<!-- settings-table:begin -->\n",
            "<!-- settings-table:end -->",
        );
        let start = readme.find(begin).expect("README has the begin marker") + begin.len();
        let stop = readme.find(end).expect("README has the end marker");
        let table = markdown_table();
        if readme[start..stop] != table {
            if std::env::var_os("FOGD_BLESS").is_some() {
                let updated = format!("{}{table}{}", &readme[..start], &readme[stop..]);
                std::fs::write(path, updated).expect("write README.md");
            } else {
                panic!(
                    "README.md's settings table is out of date; run \
                     `FOGD_BLESS=1 cargo test -p fogd --bin fogd readme`. Expected:\n{table}"
                );
            }
        }
    }
}
