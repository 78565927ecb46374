//! The workload of the failover benchmarks: a writer committing numbered single-row
//! INSERTs through a read-write endpoint (or straight to servers), recording when each
//! commit was acknowledged and which server took it, and when an open session was closed
//! under it. Shared by `failover` and `stores`.

use crate::servers::{connect_as, Addr};
use anyhow::{anyhow, bail, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The administrator login the benchmarks give their instances.
pub const ADMIN: &str = "fogadmin";
/// Its password.
pub const PASSWORD: &str = "Bench-Passw0rd-123";
/// The database the writer writes to (table `w`).
pub const DATABASE: &str = "bench";

/// Connects to `a` as [`ADMIN`].
pub async fn connect(a: &Addr, db: &str, timeout: Duration) -> Result<tokio_postgres::Client> {
    connect_as(a, db, ADMIN, PASSWORD, timeout).await
}

/// Seconds since the start of the benchmark (monotonic), convertible to wall time for
/// comparing with log timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    epoch: f64,
}

impl Clock {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Clock {
            base: Instant::now(),
            epoch,
        }
    }

    pub fn now(&self) -> f64 {
        self.base.elapsed().as_secs_f64()
    }

    /// Wall-clock seconds since the epoch → benchmark seconds.
    pub fn at_wall(&self, wall: f64) -> f64 {
        wall - self.epoch
    }
}

/// One acknowledged commit: when it completed, and the port of the server that took it.
#[derive(Debug, Clone, Copy)]
pub struct Commit {
    pub t: f64,
    pub port: u16,
}

/// A writer task committing single-row INSERTs.
pub struct Writer {
    commits: Arc<Mutex<Vec<Commit>>>,
    /// When a statement on an open session failed (the session was closed under it).
    drops: Arc<Mutex<Vec<f64>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

/// Inserts row `id` into `w`; the port of the server that took it.
pub async fn insert(c: &tokio_postgres::Client, id: i64) -> Result<u16> {
    let msgs = c
        .simple_query(&format!(
            "INSERT INTO w(id) VALUES ({id}) RETURNING inet_server_port()"
        ))
        .await?;
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("INSERT returned no port"))
}

impl Writer {
    /// Writes to the first of `addrs` that accepts an INSERT, keeping that connection until
    /// an error; then tries the last good address first, then the others.
    pub fn spawn(addrs: Vec<Addr>, connect_timeout: Duration, clock: Clock) -> Self {
        let commits = Arc::new(Mutex::new(Vec::<Commit>::with_capacity(1 << 20)));
        let drops = Arc::new(Mutex::new(Vec::<f64>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (commits, drops, stop) = (commits.clone(), drops.clone(), stop.clone());
            tokio::spawn(async move {
                let mut conn: Option<tokio_postgres::Client> = None;
                let mut prefer = 0usize;
                let mut id = 0i64;
                let mut errors = 0u64;
                let record = |port: u16| {
                    let t = clock.now();
                    if let Ok(mut l) = commits.lock() {
                        l.push(Commit { t, port });
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    if let Some(c) = conn.as_ref() {
                        id += 1;
                        match insert(c, id).await {
                            Ok(port) => record(port),
                            Err(_) => {
                                let t = clock.now();
                                if let Ok(mut d) = drops.lock() {
                                    d.push(t);
                                }
                                errors += 1;
                                conn = None;
                            }
                        }
                        continue;
                    }
                    let mut ok = false;
                    for k in 0..addrs.len() {
                        let i = (prefer + k) % addrs.len();
                        let Ok(c) = connect(&addrs[i], DATABASE, connect_timeout).await else {
                            continue;
                        };
                        id += 1;
                        if let Ok(port) = insert(&c, id).await {
                            record(port);
                            conn = Some(c);
                            prefer = i;
                            ok = true;
                            break;
                        }
                    }
                    if !ok {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                errors
            })
        };
        Writer {
            commits,
            drops,
            stop,
            task,
        }
    }

    /// The first commit on the server at `port` completed after `after`.
    pub fn first_on(&self, port: u16, after: f64) -> Option<f64> {
        let l = self.commits.lock().ok()?;
        let start = l.partition_point(|c| c.t <= after);
        l[start..].iter().find(|c| c.port == port).map(|c| c.t)
    }

    /// Waits until the writer committed on `port` after `after`.
    pub async fn wait_for(&self, port: u16, after: f64, what: &str) -> Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = self.first_on(port, after) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                bail!("{what}: no commit on port {port} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the writer: its commits, its dropped sessions and how many attempts failed.
    pub async fn finish(self) -> Result<(Vec<Commit>, Vec<f64>, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.task.await.context("writer task")?;
        let commits = self.commits.lock().map(|l| l.clone()).unwrap_or_default();
        let drops = self.drops.lock().map(|l| l.clone()).unwrap_or_default();
        Ok((commits, drops, errors))
    }
}
