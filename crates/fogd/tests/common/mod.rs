//! Test harness: runs the real `fogd` binary over HTTPS against real PostgreSQL servers.
#![allow(dead_code)]

pub mod contract;
pub mod group;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "S0me-Str0ng-Pass!";
pub const API: &str = "api-version=2025-01-01";

/// One running fogd with its own data directory.
pub struct Fogd {
    _root: Option<tempfile::TempDir>,
    pub data: PathBuf,
    /// Where the PostgreSQL servers' directories are (`DATA_DIR/instances`, or the
    /// cluster directory's `instances` for a node of a cluster).
    pub servers: PathBuf,
    child: Option<Child>,
    pub url: String,
    pub token: String,
    pub sub: String,
    pub client: reqwest::Client,
}

/// A response: status, headers, JSON body (`Null` when empty).
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
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Fogd {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let data = root.path().join("data");
        let mut f = Fogd {
            servers: data.join("instances"),
            _root: Some(root),
            data,
            child: None,
            url: String::new(),
            token: String::new(),
            sub: String::new(),
            client: reqwest::Client::new(),
        };
        f.launch(env).await;
        f
    }

    /// A node of a cluster: its own data directory `data`, sharing `cluster_dir` (certificates,
    /// token, secret key, servers) with the other nodes; `env` should name the store.
    pub async fn start_node(data: PathBuf, cluster_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut f = Fogd {
            servers: cluster_dir.join("instances"),
            _root: None,
            data,
            child: None,
            url: String::new(),
            token: String::new(),
            sub: String::new(),
            client: reqwest::Client::new(),
        };
        let dir = cluster_dir.to_string_lossy().into_owned();
        let mut all: Vec<(&str, &str)> = vec![("FOGD_CLUSTER_DIR", dir.as_str())];
        all.extend_from_slice(env);
        f.launch(&all).await;
        f
    }

    /// The process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the process and waits until the API answers.
    pub async fn launch(&mut self, env: &[(&str, &str)]) {
        let _ = std::fs::remove_file(self.data.join("api-url"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_extension("log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fogd"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .env_remove("FOGD_FAILPOINTS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn fogd"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(u) = std::fs::read_to_string(self.data.join("api-url")) {
                if u.ends_with('\n') {
                    self.url = u.trim().to_string();
                    break;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "fogd exited during start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "fogd did not start; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // client.toml names the token and CA files (in a cluster directory for a node).
        let client: toml::Value =
            toml::from_str(&read(&self.data.join("client.toml"))).expect("client.toml");
        let field = |k: &str| client[k].as_str().expect("client.toml field").to_string();
        self.token = read(Path::new(&field("token_file")));
        self.sub = field("subscription_id");
        let ca = reqwest::Certificate::from_pem(&std::fs::read(field("ca_file")).expect("ca"))
            .expect("ca pem");
        self.client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .expect("client");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILL: no clean-up runs, PostgreSQL servers keep running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself (e.g. a crash failpoint).
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(Ok(Some(s))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "fogd did not exit; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and wait (clean shutdown).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn rg_path(&self, rg: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Sql",
            self.sub
        )
    }

    pub fn mi_path(&self, rg: &str, mi: &str) -> String {
        format!("{}/managedInstances/{mi}", self.rg_path(rg))
    }

    /// `…/locations/{location}/instanceFailoverGroups/{name}` (no query).
    pub fn ifog_path(&self, rg: &str, location: &str, name: &str) -> String {
        format!(
            "{}/locations/{location}/instanceFailoverGroups/{name}",
            self.rg_path(rg)
        )
    }

    /// Sends a request; `path` may include a query, or be an absolute URL (its path and
    /// query are used against this fogd, as go-azure-sdk does).
    pub async fn send(&self, method: Method, path: &str, body: Option<&str>) -> Reply {
        self.send_with(method, path, body, Some(&self.token.clone()))
            .await
    }

    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> Reply {
        let path = match path.find("/subscriptions/") {
            Some(i) if path.starts_with("https://") => &path[i..],
            _ => path,
        };
        let mut req = self
            .client
            .request(method.clone(), format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("non-JSON body: {}", String::from_utf8_lossy(&bytes)))
        };
        // Every response follows the published specification of the version it names.
        contract::check(&method, path, status.as_u16(), &body);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Polls an `Azure-AsyncOperation` URL until the operation is terminal.
    pub async fn wait_operation(&self, reply: &Reply) -> Value {
        assert_eq!(reply.status, StatusCode::ACCEPTED, "body: {}", reply.body);
        let url = reply
            .header("azure-asyncoperation")
            .expect("Azure-AsyncOperation");
        self.poll(&url, Duration::from_secs(120)).await
    }

    pub async fn poll(&self, url: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.send(Method::GET, url, None).await;
            assert_eq!(r.status, StatusCode::OK, "status URL: {}", r.body);
            let status = r.body["status"].as_str().unwrap_or("").to_string();
            if status != "InProgress" {
                return r.body;
            }
            assert_eq!(r.header("retry-after").as_deref(), Some("1"));
            assert!(
                Instant::now() < deadline,
                "operation did not finish; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn instance_body(location: &str) -> String {
        serde_json::json!({
            "location": location,
            "sku": {"name": "GP_Gen5", "tier": "GeneralPurpose"},
            "properties": {"administratorLogin": "fogadmin", "administratorLoginPassword": PASSWORD,
                            "vCores": 4, "storageSizeInGB": 64}
        })
        .to_string()
    }

    /// Creates an instance and waits for it; returns its GET view.
    pub async fn create_instance(&self, rg: &str, mi: &str, location: &str) -> Value {
        let path = format!("{}?{API}", self.mi_path(rg, mi));
        let r = self
            .send(Method::PUT, &path, Some(&Self::instance_body(location)))
            .await;
        let done = self.wait_operation(&r).await;
        assert_eq!(done["status"], "Succeeded", "{done}; log:\n{}", self.log());
        let got = self.send(Method::GET, &path, None).await;
        assert_eq!(got.status, StatusCode::OK);
        got.body
    }
}

impl Drop for Fogd {
    fn drop(&mut self) {
        self.terminate();
        // Safety net: no PostgreSQL server of this test outlives it.
        if self._root.is_none() {
            // A node of a cluster: the servers are the cluster's (its owner stops them).
            return;
        }
        if let Ok(entries) = std::fs::read_dir(&self.servers) {
            for e in entries.flatten() {
                let pgdata = e.path().join("pgdata");
                if pgdata.join("postmaster.pid").exists() {
                    let _ = Command::new("runuser")
                        .args([
                            "-u",
                            "postgres",
                            "--",
                            "/usr/lib/postgresql/15/bin/pg_ctl",
                            "stop",
                            "-m",
                            "immediate",
                            "-D",
                        ])
                        .arg(&pgdata)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).expect("read").trim().to_string()
}

/// Connects to an instance's PostgreSQL server as `user`.
pub async fn pg_connect(
    view: &Value,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (h, p) = endpoint(view, &["properties", "postgresEndpoint"]);
    pg(&h, p, user, password, db, Duration::from_secs(5)).await
}

/// Connects a PostgreSQL client.
pub async fn pg(
    host: &str,
    port: u64,
    user: &str,
    password: &str,
    db: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (c, conn) = tokio_postgres::Config::new()
        .host(host)
        .port(port as u16)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(timeout)
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(c)
}

/// `(host, port)` of the endpoint object at `path` (e.g. `["properties", "postgresEndpoint"]`).
pub fn endpoint(v: &Value, path: &[&str]) -> (String, u64) {
    let e = path.iter().fold(v, |e, p| &e[*p]);
    (
        e["host"].as_str().unwrap_or("").to_string(),
        e["port"].as_u64().unwrap_or(0),
    )
}

/// Connects as the administrator to an instance's server or a group listener (`path`).
pub async fn admin_at(
    v: &Value,
    path: &[&str],
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (h, p) = endpoint(v, path);
    pg(&h, p, "fogadmin", PASSWORD, db, Duration::from_secs(5)).await
}

impl Fogd {
    /// Creates an instance in `location` sharing `partner`'s DNS zone (64 GB, 4 vCores,
    /// like [`Fogd::instance_body`]); returns its GET view.
    pub async fn create_partner(
        &self,
        rg: &str,
        name: &str,
        location: &str,
        partner: &Value,
    ) -> Value {
        let body = serde_json::json!({"location": location, "sku": {"name": "GP_Gen5"}, "properties": {
            "administratorLogin": "fogadmin", "administratorLoginPassword": PASSWORD,
            "storageSizeInGB": 64, "vCores": 4, "dnsZonePartner": partner["id"]}});
        let path = format!("{}?{API}", self.mi_path(rg, name));
        let r = self.send(Method::PUT, &path, Some(&body.to_string())).await;
        assert_eq!(
            self.wait_operation(&r).await["status"],
            "Succeeded",
            "{name}"
        );
        self.send(Method::GET, &path, None).await.body
    }

    /// A group body pairing `primary` with `partner`; `extra` adds or replaces properties.
    pub fn group_body(
        primary: &Value,
        partner: &Value,
        partner_region: &str,
        extra: Value,
    ) -> String {
        let mut b = serde_json::json!({"properties": {
            "readWriteEndpoint": {"failoverPolicy": "Manual"},
            "partnerRegions": [{"location": partner_region}],
            "managedInstancePairs": [{"primaryManagedInstanceId": primary["id"], "partnerManagedInstanceId": partner["id"]}],
        }});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                b["properties"][k] = v;
            }
        }
        b.to_string()
    }

    /// Runs `pg_ctl {action} -m {mode}` on the server of instance `view`, behind fogd's back.
    pub fn pg_ctl(&self, view: &Value, action: &str, mode: &str) {
        let pgdata = self.pgdata_of(view);
        if let Err(e) = pg_ctl_at(&pgdata, &[action, "-m", mode]) {
            panic!("pg_ctl {action}: {e}");
        }
    }
}

impl Fogd {
    /// The data directory of the (running) server of instance `view`.
    pub fn pgdata_of(&self, view: &Value) -> PathBuf {
        let port = view["properties"]["postgresEndpoint"]["port"]
            .as_u64()
            .expect("port")
            .to_string();
        for e in std::fs::read_dir(&self.servers).expect("dir").flatten() {
            let pid =
                std::fs::read_to_string(e.path().join("pgdata/postmaster.pid")).unwrap_or_default();
            if pid.lines().nth(3).map(str::trim) == Some(port.as_str()) {
                return e.path().join("pgdata");
            }
        }
        panic!("no running server on port {port}");
    }
}

/// SIGKILL to the postmaster of the server in `pgdata` (a crash: no shutdown checkpoint).
pub fn kill9_postmaster(pgdata: &Path) {
    let pid: i32 = std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
}

/// Stops the server in `pgdata` at once (`pg_ctl stop -m immediate`), behind fogd's back.
pub fn stop_server_at(pgdata: &Path) {
    if let Err(e) = pg_ctl_at(pgdata, &["stop", "-m", "immediate"]) {
        panic!("pg_ctl stop: {e}");
    }
}

/// Starts the server in `pgdata` the way its host would after a reboot: on the instance's
/// address and port (`view` is the instance), behind fogd's back.
pub fn start_server_at(pgdata: &Path, view: &Value) -> Result<(), String> {
    let (host, port) = endpoint(view, &["properties", "postgresEndpoint"]);
    let log = pgdata.with_file_name("postgres.log");
    let opts = format!("-p {port} -c listen_addresses={host} -c unix_socket_directories=''");
    let log = log.to_string_lossy().into_owned();
    pg_ctl_at(pgdata, &["start", "-l", &log, "-o", &opts])
}

fn pg_ctl_at(pgdata: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/pg_ctl",
            "-w",
            "-D",
        ])
        .arg(pgdata)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("pg_ctl");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
