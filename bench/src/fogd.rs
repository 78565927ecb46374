//! One release `fogd serve` under a benchmark's control, shared by the `failover` and
//! `seeding` benchmarks and the campaign: launched (again) on a fresh data directory with
//! chosen environment variables (every other `FOGD_*` variable removed), killed -9, frozen
//! and thawed, spoken to over its HTTPS API (requests, operations polled to their end, the
//! group's event history), and stopped — with every PostgreSQL server of its data
//! directory — when dropped.

use crate::{days_from_civil, PgUser};
use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const API: &str = "api-version=2025-01-01";

/// An HTTP answer: status, headers and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The `Azure-AsyncOperation` URL as a path (it names the authority of the fogd that
    /// answered; after a restart on another port only the path is still good).
    pub fn operation(&self) -> Option<String> {
        self.header("azure-asyncoperation").map(|u| url_path(&u))
    }

    pub fn code(&self) -> String {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// `https://host:port/path?q` → `/path?q`; a path stays as it is.
pub fn url_path(url: &str) -> String {
    match url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    {
        Some(rest) => rest
            .find('/')
            .map_or_else(|| "/".to_string(), |i| rest[i..].to_string()),
        None => url.to_string(),
    }
}

/// The fogd process and its API client.
pub struct Fogd {
    bin: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
    pg_bin_dir: PathBuf,
    user: PgUser,
    /// `FOGD_*` variables every launch gets.
    env: Vec<(String, String)>,
    /// How long [`Fogd::complete`] waits for an operation.
    operation_timeout: Duration,
    child: Option<Child>,
    /// How the last fogd process ended (once reaped).
    last_exit: Option<ExitStatus>,
    launches: u32,
    pub url: String,
    pub token: String,
    pub sub: String,
    pub client: reqwest::Client,
    ca: Option<reqwest::Certificate>,
}

impl Fogd {
    /// A fogd (not started) with its data directory `root/data` and log `root/fogd.log`.
    pub fn new(bin: &Path, root: &Path, pg_bin_dir: &Path, user: &PgUser) -> Self {
        Fogd {
            bin: bin.to_path_buf(),
            data: root.join("data"),
            log: root.join("fogd.log"),
            pg_bin_dir: pg_bin_dir.to_path_buf(),
            user: user.clone(),
            env: Vec::new(),
            operation_timeout: Duration::from_secs(120),
            child: None,
            last_exit: None,
            launches: 0,
            url: String::new(),
            token: String::new(),
            sub: String::new(),
            client: reqwest::Client::new(),
            ca: None,
        }
    }

    /// Environment variables every launch gets (on top of none: the caller's `FOGD_*`
    /// variables are removed).
    pub fn with_env(mut self, env: &[(&str, &str)]) -> Self {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// How long [`Fogd::complete`] waits for an operation (default 120 s).
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// [`Fogd::new`] with `env`, launched: the benchmarks' one fogd.
    pub async fn start(
        bin: &Path,
        root: &Path,
        pg_bin_dir: &Path,
        user: &PgUser,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut f = Fogd::new(bin, root, pg_bin_dir, user).with_env(env);
        f.launch(&[]).await?;
        Ok(f)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    pub fn running(&mut self) -> bool {
        let Some(c) = self.child.as_mut() else {
            return false;
        };
        match c.try_wait() {
            Ok(None) => true,
            Ok(Some(st)) => {
                self.last_exit = Some(st);
                self.child = None;
                false
            }
            Err(_) => false,
        }
    }

    /// Starts fogd with its environment plus `extra` and waits until its API listens
    /// (`api-url` rewritten). Returns early with an error if fogd exits first.
    pub async fn launch(&mut self, extra: &[(&str, &str)]) -> Result<()> {
        if self.running() {
            bail!("fogd is already running");
        }
        self.launches += 1;
        self.last_exit = None;
        let _ = std::fs::remove_file(self.data.join("api-url"));
        let mut log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .context("open fogd log")?;
        let _ = writeln!(
            log_file,
            "{LAUNCH} #{} {}",
            self.launches,
            extra
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data)
            .arg("--pg-bin-dir")
            .arg(&self.pg_bin_dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("fogd log")?)
            .stderr(log_file)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("FOGD_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        if let Some((name, _, _)) = &self.user {
            cmd.arg("--pg-os-user").arg(name);
        }
        let child = cmd.spawn().with_context(|| {
            format!(
                "start {} (build it: cargo build --release -p fogd -p fog-bench)",
                self.bin.display()
            )
        })?;
        self.child = Some(child);
        self.url =
            match crate::wait_for_api_url(&self.data, &mut self.child, Duration::from_millis(20))
                .await
            {
                Ok(url) => url,
                Err(e) => bail!("{e}; log:\n{}", self.log_tail(20)),
            };
        if self.ca.is_none() {
            let read = |name: &str| -> Result<String> {
                Ok(std::fs::read_to_string(self.data.join(name))
                    .with_context(|| format!("read {name}"))?
                    .trim()
                    .to_string())
            };
            self.token = read("admin-token")?;
            self.sub = read("subscription-id")?;
            let ca = std::fs::read(self.data.join("ca.pem")).context("read ca.pem")?;
            let ca = reqwest::Certificate::from_pem(&ca).context("parse ca.pem")?;
            self.client = reqwest::Client::builder()
                .tls_certs_only([ca.clone()])
                .timeout(Duration::from_secs(30))
                .build()
                .context("HTTPS client")?;
            self.ca = Some(ca);
        }
        Ok(())
    }

    /// A client that opens a new connection for every request (as a new user would).
    pub fn fresh_client(&self, timeout: Duration) -> Result<reqwest::Client> {
        let ca = self
            .ca
            .clone()
            .ok_or_else(|| anyhow!("fogd never started"))?;
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .pool_max_idle_per_host(0)
            .timeout(timeout)
            .build()
            .context("HTTPS client")
    }

    pub fn ca_pem(&self) -> Result<Vec<u8>> {
        std::fs::read(self.data.join("ca.pem")).context("read ca.pem")
    }

    /// The API's `host:port`.
    pub fn api_addr(&self) -> String {
        url_path_authority(&self.url)
    }

    /// SIGKILL (a crash: nothing is cleaned up; PostgreSQL servers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            self.last_exit = c.wait().ok();
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow!("fogd is not running"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .with_context(|| format!("{sig} to fogd"))
    }

    /// Waits up to `timeout` for fogd to exit by itself (at once if it already has).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(c) = self.child.as_mut() else {
                return Ok(self.last_exit);
            };
            if let Some(s) = c.try_wait().context("wait for fogd")? {
                self.child = None;
                self.last_exit = Some(s);
                return Ok(Some(s));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then SIGKILL after 60 s.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            // A frozen fogd would never see the SIGTERM.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("fogd did not stop within 60 s of SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The log's lines written after byte `from` that say something went wrong (warnings,
    /// errors, failpoints, panics, launches), the last `max` of them.
    pub fn log_excerpt(&self, from: u64, max: usize) -> Vec<String> {
        excerpt(&self.log, from, max)
    }

    pub fn rg_path(&self, rg: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Sql",
            self.sub
        )
    }

    /// `…/managedInstances/{name}?api-version=…`.
    pub fn instance_path(&self, rg: &str, name: &str) -> String {
        format!("{}/managedInstances/{name}?{API}", self.rg_path(rg))
    }

    /// `…/locations/{location}/instanceFailoverGroups/{name}` (no query).
    pub fn group_path(&self, rg: &str, location: &str, name: &str) -> String {
        format!(
            "{}/locations/{location}/instanceFailoverGroups/{name}",
            self.rg_path(rg)
        )
    }

    /// Sends a request to a path (or to an absolute URL fogd handed out, by its path).
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        send_with(
            &self.client,
            &self.url,
            &self.token,
            method,
            &url_path(path),
            body,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        let r = self.send(Method::GET, path, None).await?;
        if r.status != StatusCode::OK {
            bail!("GET {path}: {} {}", r.status, r.body);
        }
        Ok(r.body)
    }

    /// Polls an operation-status path every 50 ms until it is no longer `InProgress`;
    /// returns its status view. Transport errors (fogd restarting) are retried.
    pub async fn wait_operation(&self, status: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.send(Method::GET, status, None).await {
                if r.status == StatusCode::OK && r.body["status"] != "InProgress" {
                    return Ok(r.body);
                }
            }
            if Instant::now() > deadline {
                bail!("operation {status} not finished within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls an operation-status URL (or path) every `every` until the operation
    /// succeeded: for timing an operation (a failed read or a failed operation is an error).
    pub async fn wait_succeeded(&self, status: &str, what: &str, every: Duration) -> Result<()> {
        let deadline = Instant::now() + self.operation_timeout;
        loop {
            let s = self.get(status).await?;
            match s["status"].as_str() {
                Some("InProgress") => {}
                Some("Succeeded") => return Ok(()),
                _ => bail!(
                    "{what} did not succeed: {s}; fogd log:\n{}",
                    self.log_tail(30)
                ),
            }
            if Instant::now() > deadline {
                bail!("{what} did not finish in {:?}", self.operation_timeout);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Sends a request and, when it starts an operation, waits until it succeeded.
    pub async fn complete(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Reply> {
        let r = self.send(method, path, body).await?;
        if !r.status.is_success() {
            bail!("{what}: {} {}", r.status, r.body);
        }
        if let Some(op) = r.operation() {
            let s = self.wait_operation(&op, self.operation_timeout).await?;
            if s["status"] != "Succeeded" {
                bail!(
                    "{what}: operation ended {s}; fogd log:\n{}",
                    self.log_tail(20)
                );
            }
        }
        Ok(r)
    }

    /// The group's event history (`GET …/instanceFailoverGroups/{name}/events`, oldest
    /// first; fogd keeps the newest 1000), addressed from either member's `group_path`.
    pub async fn events(&self, group_path: &str) -> Result<Vec<GroupEvent>> {
        let h = self.get(&format!("{group_path}/events?{API}")).await?;
        let list = h["value"]
            .as_array()
            .ok_or_else(|| anyhow!("events without a value list: {h}"))?;
        list.iter()
            .map(|e| {
                let time = e["time"].as_str().unwrap_or_default();
                Ok(GroupEvent {
                    wall: rfc3339_secs(time)
                        .ok_or_else(|| anyhow!("event time {time:?} is not RFC 3339 UTC"))?,
                    kind: e["type"].as_str().unwrap_or_default().to_string(),
                    message: e["message"].as_str().unwrap_or_default().to_string(),
                    generation: e["generation"].as_u64().unwrap_or(0),
                })
            })
            .collect()
    }
}

/// What each launch writes into the log first.
const LAUNCH: &str = "=== fog-bench: launch";

/// One entry of a group's event history.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEvent {
    /// fogd's wall-clock time, seconds since the Unix epoch.
    pub wall: f64,
    /// `Fenced`, `RoleChanged`, `FailoverFinished`, `AutomaticFailoverTriggered`, …
    pub kind: String,
    pub message: String,
    pub generation: u64,
}

/// fogd's RFC 3339 UTC time (`…Z` or `…+00:00`, any fraction) → seconds since the epoch.
pub fn rfc3339_secs(ts: &str) -> Option<f64> {
    let body = ts.strip_suffix('Z').or_else(|| ts.strip_suffix("+00:00"))?;
    civil_secs(body.get(..19)?, body.get(20..).unwrap_or(""))
}

/// `YYYY-MM-DD?HH:MM:SS` + fraction digits → seconds since the epoch (UTC).
pub fn civil_secs(ts: &str, frac: &str) -> Option<f64> {
    let n = |r: std::ops::Range<usize>| ts.get(r).and_then(|x| x.parse::<i64>().ok());
    let days = days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?);
    let secs = days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?;
    let frac = if frac.is_empty() {
        0.0
    } else {
        frac.parse::<f64>().ok()? / 10f64.powi(i32::try_from(frac.len()).ok()?)
    };
    Some(secs as f64 + frac)
}

/// The lines of a fogd log written after byte `from` that say something went wrong
/// (warnings, errors, failpoints, panics, launches), the last `max` of them.
pub fn excerpt(log: &Path, from: u64, max: usize) -> Vec<String> {
    let bytes = std::fs::read(log).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[from..]);
    let keep: Vec<String> = text
        .lines()
        .filter(|l| {
            l.contains(" WARN ")
                || l.contains(" ERROR ")
                || l.contains("failpoint")
                || l.contains("panicked")
                || l.starts_with(LAUNCH)
        })
        .map(|l| shorten(l, 400))
        .collect();
    keep[keep.len().saturating_sub(max)..].to_vec()
}

/// `https://host:port/…` → `host:port`.
fn url_path_authority(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_string()
}

pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// One request with a given client (so that a fresh-connection client can be used).
pub async fn send_with(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Reply> {
    let url = format!("{base}{path}");
    let mut req = client.request(method.clone(), &url).bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.context("read response body")?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        headers,
        body,
    })
}

impl Drop for Fogd {
    fn drop(&mut self) {
        self.terminate();
        // Safety net: no PostgreSQL server of this run outlives it.
        let Ok(entries) = std::fs::read_dir(self.data.join("instances")) else {
            return;
        };
        for e in entries.flatten() {
            let pgdata = e.path().join("pgdata");
            if !pgdata.join("postmaster.pid").exists() {
                continue;
            }
            // A frozen server would never stop.
            crate::servers::signal_server(&e.path(), nix::sys::signal::Signal::SIGCONT);
            let pg_ctl = self.pg_bin_dir.join("pg_ctl");
            let mut cmd = match &self.user {
                Some((name, _, _)) => {
                    let mut c = std::process::Command::new("runuser");
                    c.args(["-u", name, "--"]).arg(&pg_ctl);
                    c
                }
                None => std::process::Command::new(&pg_ctl),
            };
            let _ = cmd
                .args(["stop", "-m", "immediate", "-D"])
                .arg(&pgdata)
                .current_dir("/")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
