//! Test harness: a real `fogd` process (real PostgreSQL servers) and the real `fogctl`
//! binary run as a subprocess against it, exactly as a user would.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "S0me-Str0ng-Pass!";

/// The `fogd` binary beside `fogctl` in the target directory.
pub fn fogd_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_fogctl")).with_file_name("fogd");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p fogd` first (the fogctl tests drive a real fogd)",
        p.display()
    );
    p
}

/// What one fogctl run produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    /// Asserts success and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "fogctl failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts failure with `code` and an `ERROR: (Code) …` line naming `arm_code`.
    #[track_caller]
    pub fn fails_with(self, exit: i32, arm_code: &str) -> Self {
        assert_eq!(
            self.code, exit,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(&format!("ERROR: ({arm_code})")),
            "stderr should name {arm_code}:\n{}",
            self.stderr
        );
        self
    }

    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// One running fogd with its own data directory.
pub struct Fogd {
    _root: tempfile::TempDir,
    pub data: PathBuf,
    child: Option<Child>,
}

impl Fogd {
    /// Starts fogd on a free port; `env` adds environment variables (e.g. minimum grace).
    pub fn start(env: &[(&str, &str)]) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        // PostgreSQL runs as `postgres` when the tests run as root: it must reach the data.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let data = root.path().join("data");
        let log = std::fs::File::create(root.path().join("fogd.log")).expect("log file");
        let mut cmd = Command::new(fogd_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .env_remove("FOGD_FAILPOINTS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut f = Fogd {
            child: Some(cmd.spawn().expect("spawn fogd")),
            data,
            _root: root,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::fs::read_to_string(f.data.join("api-url")).is_ok_and(|u| u.ends_with('\n')) {
                break;
            }
            if let Some(Ok(Some(status))) = f.child.as_mut().map(|c| c.try_wait()) {
                panic!("fogd exited during start-up ({status}); log:\n{}", f.log());
            }
            assert!(
                Instant::now() < deadline,
                "fogd did not start; log:\n{}",
                f.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        f
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_file_name("fogd.log")).unwrap_or_default()
    }

    /// A data-directory file, trimmed (`api-url`, `admin-token`, `subscription-id`).
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.data.join(name))
            .expect("read")
            .trim()
            .to_string()
    }

    /// Runs fogctl with this fogd's data directory and no other configuration.
    pub fn fogctl(&self, args: &[&str]) -> Out {
        self.fogctl_env(args, &[])
    }

    /// Runs fogctl with extra environment; gives up (and fails) after two minutes.
    pub fn fogctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fogctl"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("FOGCTL_") || k.starts_with("FOGD_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("FOGD_DATA_DIR", &self.data)
            .env("FOGCTL_POLL_INTERVAL_MS", "200");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn fogctl");
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_string(&mut s);
                }
                s
            })
        };
        let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
        let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
        let deadline = started + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait fogctl") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "fogctl {args:?} did not finish in 120 s; fogd log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Out {
            code: status.code().unwrap_or(-1),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
            elapsed: started.elapsed(),
        }
    }

    /// `fogctl sql mi create` with the test password; returns the instance's JSON.
    pub fn create_instance(&self, rg: &str, name: &str, location: &str, extra: &[&str]) -> Value {
        let mut args = vec![
            "sql", "mi", "create", "-g", rg, "-n", name, "-l", location, "-u", "fogadmin", "-p",
            PASSWORD,
        ];
        args.extend_from_slice(extra);
        self.fogctl(&args).ok().json()
    }
}

impl Drop for Fogd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Safety net: no PostgreSQL server of this test outlives it.
        if let Ok(entries) = std::fs::read_dir(self.data.join("instances")) {
            for e in entries.flatten() {
                let pgdata = e.path().join("pgdata");
                if pgdata.join("postmaster.pid").exists() {
                    let _ = Command::new("runuser")
                        .args(["-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl"])
                        .args(["stop", "-m", "immediate", "-D"])
                        .arg(&pgdata)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}
