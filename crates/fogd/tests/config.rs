//! `fogd serve --config FILE`: the real binary with a TOML file, environment variables and
//! flags; `client.toml`; start-up errors; clean shutdown on SIGTERM.

use reqwest::{Method, StatusCode};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const API: &str = "api-version=2025-01-01";

/// A temporary root readable by the `postgres` user (fogd may run as root in tests).
fn root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    root
}

/// The fogd command with no FOGD_* variable inherited from the caller.
fn fogd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fogd"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FOGD_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

struct Running {
    child: Option<Child>,
    log: PathBuf,
    url: String,
    token: String,
    sub: String,
    client: reqwest::Client,
}

impl Running {
    /// Spawns `cmd` (whose data directory is `data`) and waits until it serves.
    fn start(mut cmd: Command, data: &Path, log: &Path) -> Running {
        let _ = std::fs::remove_file(data.join("api-url"));
        let _ = std::fs::remove_file(data.join("client.toml"));
        let file = std::fs::File::create(log).expect("log");
        cmd.stdout(file.try_clone().expect("log")).stderr(file);
        let mut child = cmd.spawn().expect("spawn fogd");
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            if let Ok(u) = std::fs::read_to_string(data.join("api-url")) {
                if u.ends_with('\n') {
                    break u.trim().to_string();
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "fogd exited during start-up ({status}); log:\n{}",
                    read(log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "fogd did not start; log:\n{}",
                read(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let ca = reqwest::Certificate::from_pem(&std::fs::read(data.join("ca.pem")).expect("ca"))
            .expect("ca pem");
        Running {
            child: Some(child),
            log: log.to_path_buf(),
            url,
            token: read(&data.join("admin-token")).trim().to_string(),
            sub: read(&data.join("subscription-id")).trim().to_string(),
            client: reqwest::Client::builder()
                .tls_certs_only([ca])
                .build()
                .expect("client"),
        }
    }

    /// The minimum grace period this fogd enforces, read from its validation message.
    async fn min_grace(&self) -> String {
        let path = format!(
            "{}/subscriptions/{}/resourceGroups/rg/providers/Microsoft.Sql/locations/eastus/instanceFailoverGroups/fg?{API}",
            self.url, self.sub
        );
        let body = r#"{"properties": {"readWriteEndpoint": {"failoverPolicy": "Automatic", "failoverWithDataLossGracePeriodMinutes": 0}}}"#;
        let r = self
            .client
            .request(Method::PUT, &path)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let v: serde_json::Value = r.json().await.expect("json");
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let n = msg
            .split("than or equal to the '")
            .nth(1)
            .and_then(|r| r.split("' minutes minimum").next())
            .unwrap_or_else(|| panic!("unexpected message: {v}"));
        n.to_string()
    }

    /// SIGTERM; asserts a prompt exit with status 0.
    fn terminate(&mut self) {
        let mut c = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                assert!(s.success(), "exit status {s}; log:\n{}", read(&self.log));
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fogd did not exit on SIGTERM; log:\n{}",
                read(&self.log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Runs `cmd` to completion (it must exit by itself within 30 s).
fn run_to_exit(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn fogd");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("fogd did not exit");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn config_file_client_toml_precedence_and_shutdown() {
    let root = root();
    let data = root.path().join("data");
    let cfg = root.path().join("fogd.toml");
    std::fs::write(
        &cfg,
        format!(
            "# test configuration\n\
             listen = \"127.0.0.1:0\"\n\
             data_dir = {:?}\n\
             min_grace_period_minutes = 7\n\
             dns_suffix = \"file.example\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let log = root.path().join("fogd.log");

    // 1. The file alone: data_dir and listen come from it.
    let mut cmd = fogd();
    cmd.arg("serve").arg("--config").arg(&cfg);
    let mut f = Running::start(cmd, &data, &log);
    assert!(f.url.starts_with("https://127.0.0.1:"), "{}", f.url);
    assert!(!f.url.ends_with(":8443"), "listen from the file: {}", f.url);

    // client.toml names the endpoint, the CA, the token file and the subscription.
    let client_toml = data.join("client.toml");
    let text = read(&client_toml);
    let client: toml::Table = toml::from_str(&text).expect("client.toml parses");
    let data_abs = std::fs::canonicalize(&data).unwrap();
    assert_eq!(client["endpoint"].as_str(), Some(f.url.as_str()), "{text}");
    let ca_file = PathBuf::from(client["ca_file"].as_str().expect("ca_file"));
    let token_file = PathBuf::from(client["token_file"].as_str().expect("token_file"));
    assert!(ca_file.is_absolute() && token_file.is_absolute(), "{text}");
    assert_eq!(
        std::fs::canonicalize(&ca_file).unwrap(),
        data_abs.join("ca.pem")
    );
    assert_eq!(
        std::fs::canonicalize(&token_file).unwrap(),
        data_abs.join("admin-token")
    );
    assert_eq!(client["subscription_id"].as_str(), Some(f.sub.as_str()));
    assert!(
        !text.contains(&f.token),
        "client.toml must not contain the token"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&client_toml), 0o644);
    assert_eq!(mode(&token_file), 0o600);

    // The API answers with the token named by client.toml, and refuses another one.
    let list = format!(
        "{}/subscriptions/{}/providers/Microsoft.Sql/managedInstances?{API}",
        client["endpoint"].as_str().unwrap(),
        f.sub
    );
    let token = read(&token_file).trim().to_string();
    let r = f
        .client
        .get(&list)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = f
        .client
        .get(&list)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // min_grace_period_minutes from the file.
    assert_eq!(f.min_grace().await, "7");

    // SIGTERM: clean, prompt exit with status 0.
    let t = Instant::now();
    f.terminate();
    assert!(t.elapsed() < Duration::from_secs(15));
    drop(f);

    // 2. FOGD_CONFIG names the file; an environment variable beats the file.
    let mut cmd = fogd();
    cmd.arg("serve")
        .env("FOGD_CONFIG", &cfg)
        .env("FOGD_MIN_GRACE_PERIOD_MINUTES", "6");
    let mut f = Running::start(cmd, &data, &log);
    assert_eq!(f.min_grace().await, "6");
    f.terminate();
    drop(f);

    // 3. A flag beats both the environment variable and the file.
    let mut cmd = fogd();
    cmd.args(["serve", "--min-grace-period-minutes", "5", "--config"])
        .arg(&cfg)
        .env("FOGD_MIN_GRACE_PERIOD_MINUTES", "6");
    let mut f = Running::start(cmd, &data, &log);
    assert_eq!(f.min_grace().await, "5");
    f.terminate();
}

#[test]
fn unknown_key_fails_start_up_naming_key_and_file() {
    let root = root();
    let cfg = root.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nmin_grace_minutes = 5\n",
            root.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = fogd();
    cmd.arg("serve").arg("--config").arg(&cfg);
    let out = run_to_exit(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "fogd accepted an unknown key: {stderr}"
    );
    assert!(stderr.contains("min_grace_minutes"), "{stderr}");
    assert!(stderr.contains(&cfg.display().to_string()), "{stderr}");
    assert!(
        !root.path().join("data").exists(),
        "nothing is created before the configuration is valid"
    );

    // A missing file is an error too.
    let mut cmd = fogd();
    cmd.arg("serve")
        .arg("--config")
        .arg(root.path().join("missing.toml"));
    let out = run_to_exit(cmd);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn config_example_parses_and_help_reads_well() {
    let out = run_to_exit({
        let mut c = fogd();
        c.arg("config-example");
        c
    });
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    let table: toml::Table = toml::from_str(&example).expect("the example is TOML");
    assert_eq!(table["data_dir"].as_str(), Some("/var/lib/fogd"));
    assert_eq!(table["min_grace_period_minutes"].as_integer(), Some(60));
    assert!(example.contains("# server_ports = \"15000-15999\""));

    // The example is accepted by `fogd serve --config` (checked up to binding the port:
    // listen is overridden to a port that is taken, so fogd exits after loading it).
    let root = root();
    let cfg = root.path().join("fogd.toml");
    std::fs::write(&cfg, &example).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = fogd();
    cmd.args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .arg("--listen")
        .arg(taken.local_addr().unwrap().to_string());
    let out = run_to_exit(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("listen on"), "{stderr}");

    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let out = run_to_exit({
            let mut c = fogd();
            c.args(args);
            c
        });
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        for needle in ["client.toml", "SIGTERM", "--config", "fogctl"] {
            if args.len() == 1 && needle == "--config" {
                continue;
            }
            assert!(help.contains(needle), "{args:?} lacks {needle}:\n{help}");
        }
    }
}
