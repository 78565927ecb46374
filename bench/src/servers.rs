//! The PostgreSQL servers fogd runs, as the benchmarks reach them: their addresses
//! ([`Addr`], from an instance's `postgresEndpoint` or a group's listeners), their
//! directories under fogd's data directory (`instances/<uid>`: `pgdata/`, `postgres.log`)
//! and their processes (the postmaster's pid and its children, for kill -9, freezing and
//! thawing).

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `host:port` of a server or listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where a client reaches an instance's PostgreSQL server (its GET view's
/// `properties.postgresEndpoint`).
pub fn endpoint(view: &Value) -> Result<Addr> {
    addr_at(&view["properties"]["postgresEndpoint"], "postgresEndpoint")
}

/// Connects to `db` on `a` as `user` (no TLS), within `timeout`.
pub async fn connect_as(
    a: &Addr,
    db: &str,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&a.host)
        .port(a.port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(timeout);
    let fut = cfg.connect(tokio_postgres::NoTls);
    let (c, conn) = tokio::time::timeout(timeout + Duration::from_millis(500), fut)
        .await
        .with_context(|| format!("connect to {a}: timed out"))?
        .with_context(|| format!("connect to {a}"))?;
    tokio::spawn(conn);
    Ok(c)
}

/// The server directory (`<data>/instances/<uid>`) whose running postmaster listens on
/// `port` (line 4 of `postmaster.pid`).
pub fn server_dir(data: &Path, port: u16) -> Result<PathBuf> {
    let want = port.to_string();
    for e in std::fs::read_dir(data.join("instances"))
        .context("list server directories")?
        .flatten()
    {
        let pid =
            std::fs::read_to_string(e.path().join("pgdata/postmaster.pid")).unwrap_or_default();
        if pid.lines().nth(3).map(str::trim) == Some(want.as_str()) {
            return Ok(e.path());
        }
    }
    bail!("no running server on port {port}")
}

/// The `host` and `port` of a JSON object (`postgresEndpoint`, a listener).
pub fn addr_at(v: &Value, what: &str) -> Result<Addr> {
    let host = v["host"]
        .as_str()
        .ok_or_else(|| anyhow!("{what} without host: {v}"))?;
    let port = v["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| anyhow!("{what} without port: {v}"))?;
    Ok(Addr {
        host: host.to_string(),
        port,
    })
}

/// The postmaster's pid of the server in `dir` (first line of `pgdata/postmaster.pid`).
pub fn postmaster_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("pgdata/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The postmaster of the server in `dir` and its children (from `/proc/*/stat`).
pub fn server_pids(dir: &Path) -> Vec<i32> {
    let Some(pm) = postmaster_pid(dir) else {
        return Vec::new();
    };
    let mut pids = vec![pm];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ppid …`; comm may hold spaces: read after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(pm) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Sends `sig` to the whole server in `dir`, the postmaster first (frozen first, it forks
/// nothing meanwhile; thawed first, like a whole host resuming, it acts on signals that
/// arrived meanwhile as soon as its children do).
pub fn signal_server(dir: &Path, sig: Signal) -> usize {
    server_pids(dir)
        .iter()
        .filter(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(**p), sig).is_ok())
        .count()
}
