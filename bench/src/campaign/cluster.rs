//! The system under attack: one fogd, two instances (eastus / westus, DNS-zone partners),
//! database `app` with table `acked`, and failover group `camp-fog` between them — plus
//! what the campaign does to it (failovers, server crashes and freezes, a host that
//! disappears) and how it decides that fogd recovered and nothing acknowledged was lost.

use super::workload::{connect, now, parse_lsn, Ack, Addr, Workload, ADMIN, DATABASE, PASSWORD};
use crate::fogd::{Fogd, API};
pub use crate::servers::signal_server;
use crate::servers::{addr_at, postmaster_pid, server_dir, server_pids};
use crate::PgUser;
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const GROUP: &str = "camp-fog";

/// One managed instance of the group.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: &'static str,
    pub rg: &'static str,
    pub loc: &'static str,
    /// Resource id.
    pub id: String,
    /// Its PostgreSQL server.
    pub addr: Addr,
    /// `<data>/instances/<uid>`: `pgdata/`, `postgres.log`.
    pub dir: PathBuf,
}

/// WAL a failover reported lost: on the server at `port`, from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LossRange {
    pub port: u16,
    pub from: u64,
    pub to: u64,
}

/// The result of checking the acknowledged writes.
#[derive(Debug, Default, Clone)]
pub struct DataCheck {
    /// Acknowledged ids missing outside every reported loss range (newly found).
    pub lost: Vec<i64>,
    /// Acknowledged ids missing inside a reported loss range (newly found).
    pub reported: usize,
    pub checked: usize,
    pub notes: Vec<String>,
}

pub struct Cluster {
    pub fogd: Fogd,
    pub members: [Member; 2],
    /// Index of the member that is primary (as last seen).
    pub primary: usize,
    /// Whether the group exists (after a delete it does not until re-created).
    pub grouped: bool,
    pub rw: Addr,
    pub ro: Addr,
    pub workload: Option<Workload>,
    /// Ids already counted missing (never counted twice).
    missing: HashSet<i64>,
    pub ranges: BTreeSet<(u16, u64, u64)>,
    /// Events already looked at (time + message).
    seen_events: HashSet<String>,
    pub pg_bin_dir: PathBuf,
    pub user: PgUser,
    /// The trial left changes behind that only a new cluster undoes.
    pub dispose: bool,
    /// Loop-mounted file systems under the servers; dropped after `fogd` (declared
    /// earlier), i.e. once fogd stopped its servers.
    pub mounts: Mounts,
}

/// File systems to unmount (`umount`; a loop device mounted with `-o loop` is detached
/// with it).
#[derive(Default)]
pub struct Mounts(pub Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.drain(..).rev() {
            let ok = std::process::Command::new("umount")
                .arg(&m)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Something still holds it: detach it lazily rather than leave it behind.
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&m)
                    .status();
            }
        }
    }
}

/// The WAL receiver of the server in `dir` (a child of its postmaster).
pub fn walreceiver_pid(dir: &Path) -> Option<i32> {
    server_pids(dir).into_iter().skip(1).find(|p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("walreceiver"))
            .unwrap_or(false)
    })
}

/// Polls until `f` returns `Some`, every `every`, for at most `bound`.
pub async fn until<T, F, Fut>(bound: Duration, every: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

impl Cluster {
    /// Starts fogd on `root` and builds the group; starts the workload.
    pub async fn build(
        bin: &Path,
        root: &Path,
        pg_bin_dir: &Path,
        user: &PgUser,
        first_id: i64,
    ) -> Result<Cluster> {
        let mut fogd = Fogd::new(bin, root, pg_bin_dir, user).with_env(super::fogd::BASE_ENV);
        fogd.launch(&[]).await?;
        let east = create_instance(&fogd, "rg-camp-east", "ca-east", "eastus", None).await?;
        let west = create_instance(
            &fogd,
            "rg-camp-west",
            "ca-west",
            "westus",
            Some(east["id"].clone()),
        )
        .await?;
        fogd.complete(
            Method::PUT,
            &format!(
                "{}/managedInstances/ca-east/databases/{DATABASE}?{API}",
                fogd.rg_path("rg-camp-east")
            ),
            Some(&json!({})),
            "create database app",
        )
        .await?;
        let member = |name, rg, loc, v: &Value| -> Result<Member> {
            let addr = addr_at(&v["properties"]["postgresEndpoint"], "postgresEndpoint")?;
            Ok(Member {
                name,
                rg,
                loc,
                id: v["id"].as_str().unwrap_or_default().to_string(),
                dir: server_dir(&fogd.data, addr.port)?,
                addr,
            })
        };
        let members = [
            member("ca-east", "rg-camp-east", "eastus", &east)?,
            member("ca-west", "rg-camp-west", "westus", &west)?,
        ];
        let c = connect(&members[0].addr, DATABASE, Duration::from_secs(10)).await?;
        c.batch_execute(
            "CREATE TABLE acked(id bigint PRIMARY KEY); CREATE TABLE load(id int, pad text)",
        )
        .await
        .context("create table acked")?;
        let mut cl = Cluster {
            fogd,
            members,
            primary: 0,
            grouped: false,
            rw: Addr {
                host: String::new(),
                port: 0,
            },
            ro: Addr {
                host: String::new(),
                port: 0,
            },
            workload: None,
            missing: HashSet::new(),
            ranges: BTreeSet::new(),
            seen_events: HashSet::new(),
            pg_bin_dir: pg_bin_dir.to_path_buf(),
            user: user.clone(),
            dispose: false,
            mounts: Mounts::default(),
        };
        cl.create_group(None).await?;
        cl.wait_recovered(Duration::from_secs(60), &[]).await?;
        let servers = [cl.members[0].addr.clone(), cl.members[1].addr.clone()];
        cl.workload = Some(Workload::start(
            cl.rw.clone(),
            cl.ro.clone(),
            servers,
            Duration::from_millis(2),
            first_id,
        ));
        Ok(cl)
    }

    pub fn workload(&self) -> &Workload {
        match &self.workload {
            Some(w) => w,
            None => unreachable!("the workload starts with the cluster"),
        }
    }

    pub fn secondary(&self) -> usize {
        1 - self.primary
    }

    /// The group's URL at member `i`'s location, with `suffix` (`""`, `/failover`, …).
    pub fn group_url(&self, i: usize, suffix: &str) -> String {
        let m = &self.members[i];
        format!(
            "{}/locations/{}/instanceFailoverGroups/{GROUP}{suffix}?{API}",
            self.fogd.rg_path(m.rg),
            m.loc
        )
    }

    pub fn database_url(&self, i: usize, db: &str) -> String {
        let m = &self.members[i];
        format!(
            "{}/managedInstances/{}/databases/{db}?{API}",
            self.fogd.rg_path(m.rg),
            m.name
        )
    }

    /// The group's create/update body with the current primary and `rw` policy.
    pub fn group_body(&self, read_write: Value) -> Value {
        let (p, s) = (self.primary, self.secondary());
        json!({"properties": {
            "readWriteEndpoint": read_write,
            "readOnlyEndpoint": {"failoverPolicy": "Disabled"},
            "partnerRegions": [{"location": self.members[s].loc}],
            "managedInstancePairs": [{
                "primaryManagedInstanceId": self.members[p].id,
                "partnerManagedInstanceId": self.members[s].id,
            }],
        }})
    }

    /// Sends the create request; with `wait`, waits until it succeeded and reads the
    /// listeners. Returns the reply.
    pub async fn create_group(&mut self, op: Option<&mut Option<String>>) -> Result<()> {
        let body = self.group_body(json!({"failoverPolicy": "Manual"}));
        let url = self.group_url(self.primary, "");
        match op {
            None => {
                self.fogd
                    .complete(Method::PUT, &url, Some(&body), "create the group")
                    .await?;
                self.grouped = true;
                self.read_listeners().await?;
            }
            Some(slot) => {
                let r = self.fogd.send(Method::PUT, &url, Some(&body)).await?;
                if !r.status.is_success() {
                    bail!("create the group: {} {}", r.status, r.body);
                }
                self.grouped = true;
                *slot = r.operation();
            }
        }
        Ok(())
    }

    /// Reads the listeners' addresses and points the workload at them.
    pub async fn read_listeners(&mut self) -> Result<()> {
        let g = self.fogd.get(&self.group_url(0, "")).await?;
        self.rw = addr_at(&g["properties"]["listeners"]["readWrite"], "readWrite")?;
        self.ro = addr_at(&g["properties"]["listeners"]["readOnly"], "readOnly")?;
        if let Some(w) = &self.workload {
            w.set_listeners(self.rw.clone(), self.ro.clone());
        }
        Ok(())
    }

    /// Deletes the group (waits), then database `app` on the former secondary, which keeps
    /// it as its own, so that the group can be created again.
    pub async fn delete_group(&mut self) -> Result<()> {
        self.workload().arm(false);
        self.fogd
            .complete(
                Method::DELETE,
                &self.group_url(self.primary, ""),
                None,
                "delete the group",
            )
            .await?;
        self.grouped = false;
        self.clear_secondary().await
    }

    /// Database `app` goes from the former secondary (stand-alone after a delete).
    pub async fn clear_secondary(&mut self) -> Result<()> {
        let s = self.secondary();
        let url = self.database_url(s, DATABASE);
        let r = self.fogd.send(Method::DELETE, &url, None).await?;
        if r.status == StatusCode::NOT_FOUND || r.status == StatusCode::NO_CONTENT {
            return Ok(());
        }
        if !r.status.is_success() {
            bail!(
                "delete app on {}: {} {}",
                self.members[s].name,
                r.status,
                r.body
            );
        }
        if let Some(op) = r.operation() {
            let st = self
                .fogd
                .wait_operation(&op, Duration::from_secs(60))
                .await?;
            if st["status"] != "Succeeded" {
                bail!("delete app on {}: {st}", self.members[s].name);
            }
        }
        Ok(())
    }

    /// Which member the group says is primary (`None`: no group or fogd not answering).
    pub async fn recorded_primary(&self) -> Option<usize> {
        let r = self
            .fogd
            .send(Method::GET, &self.group_url(0, ""), None)
            .await
            .ok()?;
        if r.status != StatusCode::OK {
            return None;
        }
        match r.body["properties"]["replicationRole"].as_str()? {
            "Primary" => Some(0),
            "Secondary" => Some(1),
            _ => None,
        }
    }

    /// Whether the group is recovered, or what is still missing.
    async fn recovered_now(&self, ops: &[String]) -> Result<usize, String> {
        for op in ops {
            let r = self
                .fogd
                .send(Method::GET, op, None)
                .await
                .map_err(|e| format!("operation status: {e:#}"))?;
            if r.status != StatusCode::OK || r.body["status"] == "InProgress" {
                return Err(format!("operation {} still {}", op, r.body["status"]));
            }
        }
        let p = self
            .recorded_primary()
            .await
            .ok_or("the group does not answer")?;
        let s = 1 - p;
        let g = self
            .fogd
            .get(&self.group_url(p, ""))
            .await
            .map_err(|e| format!("{e:#}"))?;
        let props = &g["properties"];
        let state = props["replicationState"].as_str().unwrap_or("?");
        let hp = props["health"]["primary"]["status"].as_str().unwrap_or("?");
        let hs = props["health"]["secondary"]["status"]
            .as_str()
            .unwrap_or("?");
        if state != "CATCH_UP" || hp != "Healthy" || hs != "Healthy" {
            return Err(format!(
                "replicationState {state}, primary {} {hp}, secondary {} {hs}{}",
                self.members[p].name,
                self.members[s].name,
                props["health"]["primary"]["lastError"]
                    .as_str()
                    .or(props["health"]["secondary"]["lastError"].as_str())
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        let ask = |a: Addr, q: &'static str| async move {
            let c = connect(&a, "postgres", Duration::from_secs(2)).await?;
            let row = tokio::time::timeout(Duration::from_secs(2), c.query_one(q, &[]))
                .await
                .context("timed out")??;
            anyhow::Ok(row)
        };
        let row = ask(self.members[p].addr.clone(), "SELECT pg_is_in_recovery()")
            .await
            .map_err(|e| format!("primary {}: {e:#}", self.members[p].name))?;
        if row.get::<_, bool>(0) {
            return Err(format!("primary {} is in recovery", self.members[p].name));
        }
        let row = ask(
            self.members[s].addr.clone(),
            "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)",
        )
        .await
        .map_err(|e| format!("secondary {}: {e:#}", self.members[s].name))?;
        if !row.get::<_, bool>(0) || row.get::<_, Option<String>>(1).as_deref() != Some("streaming")
        {
            return Err(format!(
                "secondary {} is not a streaming standby",
                self.members[s].name
            ));
        }
        let row = ask(
            self.rw.clone(),
            "SELECT pg_is_in_recovery(), inet_server_port()",
        )
        .await
        .map_err(|e| format!("read-write listener: {e:#}"))?;
        let port: Option<i32> = row.get(1);
        if row.get::<_, bool>(0) || port != Some(i32::from(self.members[p].addr.port)) {
            return Err(format!(
                "read-write listener reaches port {port:?}, not the primary {}",
                self.members[p].name
            ));
        }
        Ok(p)
    }

    /// Waits, hands off, until the group is recovered: `ops` finished, the group says
    /// CATCH_UP with both members Healthy, the primary is writable, the secondary streams,
    /// and the read-write listener reaches the primary. Returns the seconds it took.
    pub async fn wait_recovered(&mut self, bound: Duration, ops: &[String]) -> Result<f64> {
        let start = Instant::now();
        loop {
            let last = match self.recovered_now(ops).await {
                Ok(p) => {
                    self.primary = p;
                    return Ok(start.elapsed().as_secs_f64());
                }
                Err(e) => e,
            };
            if start.elapsed() > bound {
                bail!("not recovered within {} s: {last}", bound.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Collects reported WAL loss: `DataLoss` events and `lastFailover.dataLoss`.
    pub async fn collect_loss_reports(&mut self) {
        let port_of = |name: &str| {
            self.members
                .iter()
                .find(|m| m.name.eq_ignore_ascii_case(name))
                .map(|m| m.addr.port)
        };
        let mut found = Vec::new();
        for i in 0..2 {
            if let Ok(g) = self.fogd.get(&self.group_url(i, "")).await {
                let l = &g["properties"]["lastFailover"];
                let from = l["dataLoss"]["fromLsn"].as_str().and_then(parse_lsn);
                let to = l["dataLoss"]["toLsn"].as_str().and_then(parse_lsn);
                let old = l["from"].as_str().and_then(port_of);
                if let (Some(from), Some(to), Some(port)) = (from, to, old) {
                    found.push((port, from, to));
                }
            }
            let Ok(ev) = self.fogd.get(&self.group_url(i, "/events")).await else {
                continue;
            };
            for e in ev["value"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if e["type"] != "DataLoss" {
                    continue;
                }
                let msg = e["message"].as_str().unwrap_or("");
                let key = format!("{}{msg}", e["time"]);
                if !self.seen_events.insert(key) {
                    continue;
                }
                // "{old} had N bytes of WAL the new primary never received (A to B); …"
                let old = msg.split_whitespace().next().and_then(port_of);
                let range = msg
                    .split_once('(')
                    .and_then(|(_, r)| r.split_once(')'))
                    .and_then(|(r, _)| r.split_once(" to "))
                    .and_then(|(a, b)| Some((parse_lsn(a)?, parse_lsn(b)?)));
                if let (Some(port), Some((from, to))) = (old, range) {
                    found.push((port, from, to));
                }
            }
        }
        self.ranges.extend(found);
    }

    /// Ids in `app.acked` on member `i`, sorted.
    async fn ids_on(&self, i: usize) -> Result<Vec<i64>> {
        let c = connect(&self.members[i].addr, DATABASE, Duration::from_secs(5)).await?;
        let rows = tokio::time::timeout(
            Duration::from_secs(60),
            c.query("SELECT id FROM acked ORDER BY id", &[]),
        )
        .await
        .context("read ids: timed out")??;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Checks that every write acknowledged before `until` is on the primary and, when the
    /// group exists, on the secondary once it replayed the primary's WAL. Missing ids inside
    /// a reported loss range count as reported; others as lost.
    pub async fn check_data(&mut self, upto_t: f64) -> Result<DataCheck> {
        self.collect_loss_reports().await;
        let acks = self.workload().acks();
        let upto = acks.partition_point(|a| a.t <= upto_t);
        let mut out = DataCheck {
            checked: upto,
            ..DataCheck::default()
        };
        // Upper bound of each ack's commit: the next ack's WAL position on the same server.
        let mut next_lsn = vec![u64::MAX; acks.len()];
        let mut last_on: std::collections::HashMap<u16, usize> = Default::default();
        for (i, a) in acks.iter().enumerate() {
            if let Some(&j) = last_on.get(&a.port) {
                if a.lsn > acks[j].lsn {
                    next_lsn[j] = a.lsn;
                }
            }
            last_on.insert(a.port, i);
        }
        let reported = |i: usize, a: &Ack| {
            self.ranges
                .iter()
                .any(|&(port, from, to)| port == a.port && a.lsn < to && next_lsn[i] > from)
        };
        let p = self.primary;
        let on_primary = self.ids_on(p).await.with_context(|| {
            format!(
                "read acknowledged ids on the primary {}",
                self.members[p].name
            )
        })?;
        let mut lost = Vec::new();
        let mut reported_n = 0;
        let mut newly = Vec::new();
        for (i, a) in acks[..upto].iter().enumerate() {
            if self.missing.contains(&a.id) || on_primary.binary_search(&a.id).is_ok() {
                continue;
            }
            newly.push(a.id);
            if reported(i, a) {
                reported_n += 1;
            } else {
                lost.push(a.id);
            }
        }
        self.missing.extend(newly);
        if self.grouped {
            // The secondary must have replayed everything the primary has.
            let c = connect(&self.members[p].addr, "postgres", Duration::from_secs(5)).await?;
            let lsn: String = c
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await?
                .get(0);
            let s = self.secondary();
            let saddr = self.members[s].addr.clone();
            let caught = until(Duration::from_secs(30), Duration::from_millis(100), || {
                let (saddr, lsn) = (saddr.clone(), lsn.clone());
                async move {
                    let c = connect(&saddr, "postgres", Duration::from_secs(2))
                        .await
                        .ok()?;
                    let row = c
                        .query_one(
                            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                            &[&lsn],
                        )
                        .await
                        .ok()?;
                    row.get::<_, Option<bool>>(0).filter(|b| *b)
                }
            })
            .await;
            if caught.is_none() {
                out.notes.push(format!(
                    "secondary {} did not replay up to {lsn} within 30 s",
                    self.members[s].name
                ));
            } else {
                let on_secondary = self.ids_on(s).await?;
                let mut gone = Vec::new();
                for a in &acks[..upto] {
                    if self.missing.contains(&a.id) {
                        continue;
                    }
                    if on_secondary.binary_search(&a.id).is_err() {
                        gone.push(a.id);
                    }
                }
                if !gone.is_empty() {
                    out.notes.push(format!(
                        "{} acknowledged ids on the primary are missing on the caught-up \
                         secondary {} (first {:?})",
                        gone.len(),
                        self.members[s].name,
                        &gone[..gone.len().min(5)]
                    ));
                    self.missing.extend(gone.iter().copied());
                    lost.extend(gone);
                }
            }
        }
        out.lost = lost;
        out.reported = reported_n;
        Ok(out)
    }

    /// kill -9 of member `i`'s postmaster.
    pub fn kill9_server(&self, i: usize) -> Result<i32> {
        let dir = &self.members[i].dir;
        let pid =
            postmaster_pid(dir).ok_or_else(|| anyhow!("no postmaster.pid in {}", dir.display()))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL)
            .with_context(|| format!("kill -9 {pid} ({})", self.members[i].name))?;
        Ok(pid)
    }

    /// The host of member `i` disappears: its directory moves away and a file stands in
    /// its place, so nothing can start it or read it.
    pub fn host_away(&self, i: usize) -> Result<()> {
        let dir = &self.members[i].dir;
        let lost = dir.with_extension("lost");
        std::fs::rename(dir, &lost).with_context(|| format!("move {}", dir.display()))?;
        std::fs::write(dir, "unreachable").context("placeholder")?;
        Ok(())
    }

    pub fn host_back(&self, i: usize) -> Result<()> {
        let dir = &self.members[i].dir;
        let lost = dir.with_extension("lost");
        if !lost.exists() {
            return Ok(());
        }
        let _ = std::fs::remove_file(dir);
        std::fs::rename(&lost, dir).with_context(|| format!("move back {}", dir.display()))
    }

    /// Starts a planned (`failover`) or forced (`forceFailoverAllowDataLoss`) failover to
    /// the secondary; returns the operation-status path.
    pub async fn request_failover(&self, action: &str) -> Result<String> {
        let url = self.group_url(self.secondary(), &format!("/{action}"));
        let r = self.fogd.send(Method::POST, &url, None).await?;
        if r.status != StatusCode::ACCEPTED {
            bail!("{action}: {} {}", r.status, r.body);
        }
        r.operation()
            .ok_or_else(|| anyhow!("{action}: no Azure-AsyncOperation header"))
    }

    /// Sets the read-write policy (PUT at the primary's location) and waits.
    pub async fn set_policy(&self, read_write: Value) -> Result<()> {
        let body = self.group_body(read_write);
        self.fogd
            .complete(
                Method::PUT,
                &self.group_url(self.primary, ""),
                Some(&body),
                "update the group",
            )
            .await
            .map(|_| ())
    }

    /// The acknowledged writes since `t` on the other member: the writer reached it.
    pub fn writes_on(&self, i: usize, since: f64) -> bool {
        self.workload()
            .acked_on_since(self.members[i].addr.port, since)
            .is_some()
    }

    /// Stops the workload and fogd (SIGTERM: fogd stops its servers).
    pub async fn shutdown(mut self) {
        for i in 0..2 {
            let _ = self.host_back(i);
            signal_server(&self.members[i].dir, Signal::SIGCONT);
        }
        if let Some(w) = self.workload.take() {
            w.stop().await;
        }
        self.fogd.terminate();
        // `self.mounts` goes when `self` does, after fogd stopped the servers.
    }

    /// Runs `pg_ctl` on member `i`'s server as the PostgreSQL OS user.
    pub fn pg_ctl(&self, i: usize, args: &[&str]) -> Result<()> {
        let pg_ctl = self.pg_bin_dir.join("pg_ctl");
        let mut cmd = match &self.user {
            Some((name, _, _)) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", name, "--"]).arg(&pg_ctl);
                c
            }
            None => std::process::Command::new(&pg_ctl),
        };
        let out = cmd
            .args(args)
            .arg("-D")
            .arg(self.members[i].dir.join("pgdata"))
            .current_dir("/")
            .output()
            .context("run pg_ctl")?;
        if !out.status.success() {
            bail!(
                "pg_ctl {args:?} on {}: {}{}",
                self.members[i].name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub fn admin() -> (&'static str, &'static str) {
        (ADMIN, PASSWORD)
    }

    pub fn now() -> f64 {
        now()
    }
}

async fn create_instance(
    fogd: &Fogd,
    rg: &str,
    name: &str,
    location: &str,
    partner: Option<Value>,
) -> Result<Value> {
    let mut body = json!({
        "location": location,
        "sku": {"name": "GP_Gen5", "tier": "GeneralPurpose"},
        "properties": {"administratorLogin": ADMIN, "administratorLoginPassword": PASSWORD,
                       "vCores": 4, "storageSizeInGB": 64}
    });
    if let Some(p) = partner {
        body["properties"]["dnsZonePartner"] = p;
    }
    let path = format!("{}/managedInstances/{name}?{API}", fogd.rg_path(rg));
    fogd.complete(
        Method::PUT,
        &path,
        Some(&body),
        &format!("create instance {name}"),
    )
    .await?;
    fogd.get(&path).await
}
