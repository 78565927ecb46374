//! Real etcd servers for tests: [`EtcdCluster::start`] runs one or more etcd 3.4 members
//! (Debian's `etcd-server`, `/usr/bin/etcd`, or `FOGD_ETCD_BIN`) on free loopback ports
//! with their data in a fresh temporary directory, waits until the cluster serves
//! linearizable reads, and kills the members and removes the directory when dropped.
//! Each member's log is `DIR/mN.log`.

use crate::{EtcdStore, StoreError};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to serve after its members start.
const START_WAIT: Duration = Duration::from_secs(30);

/// A running member.
struct Member {
    name: String,
    client_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A test etcd cluster on loopback (see the module documentation).
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: PathBuf,
}

/// The etcd binary tests run.
pub fn etcd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FOGD_ETCD_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from("/usr/bin/etcd")
}

fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    // Hold every listener until all ports are chosen, so none is picked twice.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl EtcdCluster {
    /// Starts an `n`-member cluster and waits until it serves (a few tries if a chosen port
    /// was taken meanwhile).
    pub async fn start(n: usize) -> Result<Self, String> {
        let binary = etcd_binary();
        if !binary.exists() {
            return Err(format!(
                "{} not found: install etcd-server (scripts/install-deps.sh) or set FOGD_ETCD_BIN",
                binary.display()
            ));
        }
        let mut last = String::new();
        for _ in 0..3 {
            let mut cluster = Self::spawn(&binary, n)?;
            match cluster.wait_ready().await {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn spawn(binary: &Path, n: usize) -> Result<Self, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let token = format!("fogd-test-{}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(&token);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ports = free_ports(2 * n).map_err(|e| format!("free ports: {e}"))?;
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let initial: Vec<String> = (0..n)
            .map(|i| format!("m{i}={}", url(ports[2 * i + 1])))
            .collect();
        let mut cluster = Self {
            members: Vec::new(),
            dir,
        };
        for i in 0..n {
            let (client, peer) = (ports[2 * i], ports[2 * i + 1]);
            let name = format!("m{i}");
            let log = cluster.dir.join(format!("{name}.log"));
            let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(binary)
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(cluster.dir.join(&name))
                .arg("--listen-client-urls")
                .arg(url(client))
                .arg("--advertise-client-urls")
                .arg(url(client))
                .arg("--listen-peer-urls")
                .arg(url(peer))
                .arg("--initial-advertise-peer-urls")
                .arg(url(peer))
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg(&token)
                .arg("--logger")
                .arg("zap")
                .arg("--log-outputs")
                .arg("stderr")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("start {}: {e}", binary.display()))?;
            cluster.members.push(Member {
                name,
                client_port: client,
                child: Some(child),
                log,
            });
        }
        Ok(cluster)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_WAIT;
        for m in &mut self.members {
            let address = format!("127.0.0.1:{}", m.client_port);
            loop {
                if let Some(Ok(Some(status))) = m.child.as_mut().map(Child::try_wait) {
                    return Err(format!(
                        "etcd member {} exited ({status}); its log:\n{}",
                        m.name,
                        tail(&m.log)
                    ));
                }
                // Connect only once the port listens, then ask for a linearizable read.
                let ok = tokio::net::TcpStream::connect(&address).await.is_ok()
                    && match tokio::time::timeout(
                        Duration::from_secs(5),
                        EtcdStore::connect(std::slice::from_ref(&address), "/"),
                    )
                    .await
                    {
                        Ok(Ok(_)) => true,
                        Ok(Err(_)) | Err(_) => false,
                    };
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "etcd member {} did not serve within {START_WAIT:?}; its log:\n{}",
                        m.name,
                        tail(&m.log)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// `HOST:PORT` of every member still running.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `HOST:PORT` of every member, stopped or not.
    pub fn all_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The `--store` value that names this cluster (`etcd://HOST:PORT,…`).
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.all_endpoints().join(","))
    }

    /// A store on every member, keys under `prefix`.
    pub async fn connect(&self, prefix: &str) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect(&self.all_endpoints(), prefix).await
    }

    /// Kills member `i` (SIGKILL: an abrupt loss).
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut child) = self.members.get_mut(i).and_then(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The data and log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
