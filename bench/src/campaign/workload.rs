//! The workload checker that runs through every scenario:
//!
//! - a **writer** inserts numbered rows (`INSERT INTO acked(id)`, one row per transaction)
//!   through the group's read-write listener and records every acknowledged id with the
//!   server that took it and that server's WAL insert position inside the transaction;
//! - a **reader** reads (`SELECT max(id)`) through the read-only listener;
//! - a **monitor** asks both PostgreSQL servers directly, every few ms on its own
//!   connections, `pg_is_in_recovery()` with the server's clock; two servers answering
//!   `false` at overlapping times are a *two-primary moment*;
//! - a **read-write probe** opens a new session through the read-write listener every
//!   50 ms and records when it reached a server in recovery while the group was *settled*
//!   (the last switch had completed and no fault was being injected).

use anyhow::Result;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ADMIN: &str = "fogadmin";
pub const PASSWORD: &str = "Campaign-Passw0rd-123";
pub const DATABASE: &str = "app";

/// Wall-clock seconds since the epoch (the servers' `clock_timestamp()` is on the same
/// machine, so the two compare).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub use crate::servers::Addr;

/// Connects as the administrator.
pub async fn connect(a: &Addr, db: &str, timeout: Duration) -> Result<tokio_postgres::Client> {
    crate::servers::connect_as(a, db, ADMIN, PASSWORD, timeout).await
}

/// `X/Y` (hex) → a 64-bit WAL position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// One acknowledged write.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub id: i64,
    /// When the acknowledgement arrived (wall seconds).
    pub t: f64,
    /// The server that took it (`inet_server_port()`).
    pub port: u16,
    /// `pg_current_wal_insert_lsn()` inside the transaction, before its commit record.
    pub lsn: u64,
}

/// One answer of the monitor: server `server` (member index) said at `t` (its own clock)
/// whether it is a primary.
#[derive(Debug, Clone, Copy)]
struct Sample {
    server: usize,
    t: f64,
    primary: bool,
}

/// A time both servers were primaries: `[from, to]` (wall seconds; `from == to` for one
/// sample falling inside the other server's primary span).
#[derive(Debug, Clone, Copy)]
pub struct TwoPrimaries {
    pub from: f64,
    pub to: f64,
}

/// The read-write listener reached a server in recovery while the group was settled.
#[derive(Debug, Clone)]
pub struct RwViolation {
    pub t: f64,
    pub port: u16,
}

#[derive(Default)]
struct State {
    acks: Vec<Ack>,
    samples: Vec<Sample>,
    violations: Vec<RwViolation>,
    write_errors: u64,
    reads_ok: u64,
    read_errors: u64,
    /// When each read-write probe got its answer.
    probes: Vec<f64>,
}

/// Shared between the campaign and the workload tasks.
pub struct Shared {
    pub rw: Mutex<Addr>,
    pub ro: Mutex<Addr>,
    /// The two servers the monitor watches (member order).
    pub servers: [Addr; 2],
    /// Two-primary moments are counted only while armed (a group exists: deleting a group
    /// makes its secondary a stand-alone primary on purpose).
    armed: AtomicBool,
    settled: AtomicBool,
    /// Bumped on every change of `settled`, so a probe spanning a change is discarded.
    epoch: AtomicU64,
    stop: AtomicBool,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// The running workload.
pub struct Workload {
    pub shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the workload saw in a time range (for one trial).
#[derive(Debug, Default, Clone)]
pub struct Window {
    pub acks: usize,
    pub write_errors: u64,
    pub reads_ok: u64,
    pub read_errors: u64,
    pub two_primaries: Vec<TwoPrimaries>,
    pub violations: Vec<RwViolation>,
    pub probes: usize,
    /// Monitor answers per server in the window.
    pub samples: [usize; 2],
}

impl Workload {
    /// Starts the writer, reader, monitor and probe. `pace`: pause between writes.
    pub fn start(rw: Addr, ro: Addr, servers: [Addr; 2], pace: Duration, first_id: i64) -> Self {
        let shared = Arc::new(Shared {
            rw: Mutex::new(rw),
            ro: Mutex::new(ro),
            servers,
            armed: AtomicBool::new(true),
            settled: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        });
        let mut tasks = vec![
            tokio::spawn(writer(shared.clone(), pace, first_id)),
            tokio::spawn(reader(shared.clone())),
            tokio::spawn(rw_probe(shared.clone())),
        ];
        for i in 0..2 {
            tasks.push(tokio::spawn(monitor(shared.clone(), i)));
        }
        Workload { shared, tasks }
    }

    pub fn set_listeners(&self, rw: Addr, ro: Addr) {
        if let Ok(mut g) = self.shared.rw.lock() {
            *g = rw;
        }
        if let Ok(mut g) = self.shared.ro.lock() {
            *g = ro;
        }
    }

    /// The group is settled (writes must reach the primary) or not (a fault or switch is
    /// under way).
    pub fn settle(&self, settled: bool) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.settled.store(settled, Ordering::SeqCst);
    }

    pub fn arm(&self, armed: bool) {
        self.shared.armed.store(armed, Ordering::SeqCst);
    }

    /// Every acknowledged write so far, in acknowledgement order.
    pub fn acks(&self) -> Vec<Ack> {
        self.shared.lock().acks.clone()
    }

    pub fn ack_count(&self) -> usize {
        self.shared.lock().acks.len()
    }

    /// The last acknowledged write on `port` after `after`, if any.
    pub fn acked_on_since(&self, port: u16, after: f64) -> Option<Ack> {
        let s = self.shared.lock();
        s.acks
            .iter()
            .rev()
            .take_while(|a| a.t > after)
            .find(|a| a.port == port)
            .copied()
    }

    /// What happened in `[from, to]` (wall seconds).
    pub fn window(&self, from: f64, to: f64) -> Window {
        let s = self.shared.lock();
        let acks = s.acks.iter().filter(|a| a.t >= from && a.t <= to).count();
        let samples: Vec<Sample> = s
            .samples
            .iter()
            .filter(|x| x.t >= from - 1.0 && x.t <= to + 1.0)
            .copied()
            .collect();
        let mut counts = [0usize; 2];
        for x in samples.iter().filter(|x| x.t >= from && x.t <= to) {
            counts[x.server] += 1;
        }
        let two_primaries = overlaps(&samples)
            .into_iter()
            .filter(|o| o.to >= from && o.from <= to)
            .collect();
        Window {
            acks,
            write_errors: s.write_errors,
            reads_ok: s.reads_ok,
            read_errors: s.read_errors,
            two_primaries,
            violations: s
                .violations
                .iter()
                .filter(|v| v.t >= from && v.t <= to)
                .cloned()
                .collect(),
            probes: s.probes.iter().filter(|t| **t >= from && **t <= to).count(),
            samples: counts,
        }
    }

    /// Keeps memory bounded: monitor samples older than `before` are dropped.
    pub fn forget_samples(&self, before: f64) {
        let mut s = self.shared.lock();
        s.samples.retain(|x| x.t >= before);
        s.probes.retain(|t| *t >= before);
    }

    pub async fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// Two samples of one server saying "primary" at most this far apart (server clock) are
/// taken as one span: no server becomes a standby and a primary again that fast.
const SPAN_GAP: f64 = 0.1;

/// Times both servers were primaries, from the monitor's samples.
fn overlaps(samples: &[Sample]) -> Vec<TwoPrimaries> {
    let spans = |server: usize| -> Vec<(f64, f64)> {
        let mut mine: Vec<&Sample> = samples.iter().filter(|s| s.server == server).collect();
        mine.sort_by(|a, b| a.t.total_cmp(&b.t));
        let mut out: Vec<(f64, f64)> = Vec::new();
        let mut cur: Option<(f64, f64)> = None;
        for s in mine {
            match (s.primary, cur) {
                (true, Some((a, b))) if s.t - b <= SPAN_GAP => cur = Some((a, s.t)),
                (true, Some(span)) => {
                    out.push(span);
                    cur = Some((s.t, s.t));
                }
                (true, None) => cur = Some((s.t, s.t)),
                (false, Some(span)) => {
                    out.push(span);
                    cur = None;
                }
                (false, None) => {}
            }
        }
        out.extend(cur);
        out
    };
    let (a, b) = (spans(0), spans(1));
    let mut out = Vec::new();
    for &(a0, a1) in &a {
        for &(b0, b1) in &b {
            let (from, to) = (a0.max(b0), a1.min(b1));
            if from <= to {
                out.push(TwoPrimaries { from, to });
            }
        }
    }
    out
}

fn addr_of(m: &Mutex<Addr>) -> Addr {
    match m.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

async fn writer(sh: Arc<Shared>, pace: Duration, first_id: i64) {
    let mut next = first_id;
    let mut conn: Option<(tokio_postgres::Client, tokio_postgres::Statement)> = None;
    while !sh.stop.load(Ordering::Relaxed) {
        if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            let rw = addr_of(&sh.rw);
            let c = match connect(&rw, DATABASE, Duration::from_secs(2)).await {
                Ok(c) => c,
                Err(_) => {
                    sh.lock().write_errors += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let st = tokio::time::timeout(
                Duration::from_secs(5),
                c.prepare(
                    "INSERT INTO acked(id) VALUES ($1) \
                     RETURNING inet_server_port(), pg_current_wal_insert_lsn()::text",
                ),
            )
            .await;
            match st {
                Ok(Ok(st)) => conn = Some((c, st)),
                _ => {
                    sh.lock().write_errors += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let Some((c, st)) = conn.as_ref() else {
            continue;
        };
        let id = next;
        next += 1; // an id is never reused, acknowledged or not
        match tokio::time::timeout(Duration::from_secs(5), c.query_one(st, &[&id])).await {
            Ok(Ok(row)) => {
                let port: Option<i32> = row.get(0);
                let lsn: Option<String> = row.get(1);
                let ack = Ack {
                    id,
                    t: now(),
                    port: port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                    lsn: lsn.as_deref().and_then(parse_lsn).unwrap_or(0),
                };
                sh.lock().acks.push(ack);
            }
            _ => {
                sh.lock().write_errors += 1;
                conn = None;
            }
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
}

async fn reader(sh: Arc<Shared>) {
    let mut conn: Option<tokio_postgres::Client> = None;
    while !sh.stop.load(Ordering::Relaxed) {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            let ro = addr_of(&sh.ro);
            conn = connect(&ro, DATABASE, Duration::from_secs(2)).await.ok();
            if conn.is_none() {
                sh.lock().read_errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        match tokio::time::timeout(
            Duration::from_secs(5),
            c.query_one("SELECT max(id) FROM acked", &[]),
        )
        .await
        {
            Ok(Ok(_)) => sh.lock().reads_ok += 1,
            _ => {
                sh.lock().read_errors += 1;
                conn = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rw_probe(sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let epoch = sh.epoch.load(Ordering::SeqCst);
        if !sh.settled.load(Ordering::SeqCst) {
            continue;
        }
        let rw = addr_of(&sh.rw);
        let answer = async {
            let c = connect(&rw, DATABASE, Duration::from_secs(2)).await?;
            let row = c
                .query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[])
                .await?;
            anyhow::Ok((row.get::<_, bool>(0), row.get::<_, Option<i32>>(1)))
        };
        let Ok(Ok((recovering, port))) = tokio::time::timeout(Duration::from_secs(3), answer).await
        else {
            continue;
        };
        let mut s = sh.lock();
        s.probes.push(now());
        if recovering && sh.epoch.load(Ordering::SeqCst) == epoch {
            s.violations.push(RwViolation {
                t: now(),
                port: port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
            });
        }
    }
}

async fn monitor(sh: Arc<Shared>, server: usize) {
    let addr = sh.servers[server].clone();
    let mut conn: Option<tokio_postgres::Client> = None;
    while !sh.stop.load(Ordering::Relaxed) {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            conn = connect(&addr, "postgres", Duration::from_secs(1))
                .await
                .ok();
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        let q = c.query_one(
            "SELECT pg_is_in_recovery(), extract(epoch FROM clock_timestamp())::float8",
            &[],
        );
        match tokio::time::timeout(Duration::from_secs(1), q).await {
            Ok(Ok(row)) => {
                let recovering: bool = row.get(0);
                let t: f64 = row.get(1);
                if sh.armed.load(Ordering::SeqCst) {
                    sh.lock().samples.push(Sample {
                        server,
                        t,
                        primary: !recovering,
                    });
                }
            }
            _ => conn = None,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Extra write load through the read-write listener (not checked): `n` sessions each
/// inserting 200 rows of 200 bytes per transaction into `load`, so that the secondary lags
/// and a forced failover has something to lose.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Load {
    pub fn start(rw: Addr, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|_| {
                let (stop, rw) = (stop.clone(), rw.clone());
                tokio::spawn(async move {
                    let mut done = 0u64;
                    let mut conn: Option<tokio_postgres::Client> = None;
                    while !stop.load(Ordering::Relaxed) {
                        if conn.as_ref().is_none_or(|c| c.is_closed()) {
                            conn = connect(&rw, DATABASE, Duration::from_secs(2)).await.ok();
                            if conn.is_none() {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                        let Some(c) = conn.as_ref() else { continue };
                        let q = c.batch_execute(
                            "INSERT INTO load SELECT g, repeat('x', 200) FROM generate_series(1, 200) g",
                        );
                        match tokio::time::timeout(Duration::from_secs(5), q).await {
                            Ok(Ok(())) => done += 1,
                            _ => conn = None,
                        }
                    }
                    done
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the load; returns how many transactions it committed.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let mut n = 0;
        for t in self.tasks {
            if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(10), t).await {
                n += d;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(server: usize, t: f64, primary: bool) -> Sample {
        Sample { server, t, primary }
    }

    #[test]
    fn overlapping_primary_spans_are_found() {
        // A primary until 1.00, B from 1.05: no overlap.
        let clean = [
            s(0, 0.95, true),
            s(0, 1.0, true),
            s(1, 1.0, false),
            s(1, 1.05, true),
            s(1, 1.1, true),
        ];
        assert!(overlaps(&clean).is_empty());
        // B answers "primary" at 1.02 while A said so at 1.00 and 1.04.
        let split = [
            s(0, 1.0, true),
            s(0, 1.04, true),
            s(1, 1.02, true),
            s(1, 1.06, false),
        ];
        let o = overlaps(&split);
        assert_eq!(o.len(), 1);
        assert!((o[0].from - 1.02).abs() < 1e-9 && (o[0].to - 1.02).abs() < 1e-9);
        // A gap longer than SPAN_GAP splits a span.
        let gap = [s(0, 1.0, true), s(0, 1.5, true), s(1, 1.2, true)];
        assert!(overlaps(&gap).is_empty());
    }

    #[test]
    fn lsn_parses() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B_3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("x"), None);
    }
}
