//! # Stores: fogd on etcd vs fogd on SQLite
//!
//! The same failover measurements as `failover` (planned-failover write window, forced
//! failover → first write) and the API's latency, against two release fogds running side by
//! side in one run: one on its embedded SQLite store (the default), one on a real etcd 3.4
//! (`--store etcd://…`, one member this program starts on free loopback ports with
//! `fog_store::testing::EtcdCluster`; one fogd node, `FOGD_NODE=bench-etcd`). Everything
//! else is the same: the same binary, embedded defaults (every other `FOGD_*` variable is
//! removed), the same set-up, the same writer.
//!
//! Set-up (not timed), on each fogd, both fogds at once: instances `a` (eastus) and `b`
//! (westus, DNS-zone partner of `a`), database `bench` on `a` with table `w`, group
//! `bench-fo` (Manual policy). A **writer** per fogd commits single-row INSERTs through
//! its group's read-write listener for the whole run (`INSERT … RETURNING
//! inet_server_port()`, reconnecting at once after any error) and records when each commit
//! completed and which server took it.
//!
//! Measured, interleaved: round `i` runs one switch on each store, the SQLite one first in
//! even rounds, the etcd one first in odd rounds; each switch goes the other way from the
//! previous one on that store.
//!
//! 1. **forced failover** first (`--forced-runs`, `…/forceFailoverAllowDataLoss`): request
//!    → the writer's first commit on the new primary; then the same settling as below. They
//!    come first because each re-attaches the old primary, which takes longer the more the
//!    writers have written.
//! 2. **planned failover** (`--runs`): `POST …/failover` at the secondary's location,
//!    polling the `Azure-AsyncOperation` every 20 ms until `Succeeded`. The **window** is
//!    the largest gap between consecutive commits of that store's writer within
//!    [request − 0.1 s, completion + 1 s] (clamped to that store's next request), as in
//!    `failover`. After each switch: the writer committed on the new primary, the old
//!    primary streams from it, 300 ms pause.
//! 3. **API latency** (`--api-requests`), per request alternating which store goes first,
//!    on a kept-alive HTTPS connection: `GET` of the group, `GET` of the groups at a
//!    location (list), and `PUT` of the group (the same Manual-policy body) until the
//!    answer (202 Accepted; the operation it starts is then waited for, untimed).
//!
//! Preconditions checked, failing the run rather than reporting nonsense: etcd serves
//! before and after the run; the etcd fogd logged that its metadata is in etcd and the
//! SQLite one that it is not; every failover operation ended `Succeeded` and moved the
//! writer to the other server; every window has commits on both sides of it; every API
//! answer had the expected status.
//!
//! The figures go to `BENCHMARKS.md` between `<!-- stores:start -->` and
//! `<!-- stores:end -->`.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use fog_bench::fogd::{Fogd, API};
use fog_bench::servers::{addr_at, endpoint, Addr};
use fog_bench::writer::{connect, Clock, Commit, Writer, ADMIN, DATABASE, PASSWORD};
use fog_bench::{from_root, git_commit, machine, median, pg_user, utc_now, write_section};
use fog_store::testing::EtcdCluster;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RG_EAST: &str = "rg-bench-east";
const RG_WEST: &str = "rg-bench-west";
const EAST: &str = "eastus";
const WEST: &str = "westus";
const GROUP: &str = "bench-fo";
const START_MARKER: &str = "<!-- stores:start -->";
const END_MARKER: &str = "<!-- stores:end -->";
/// The goal: etcd adds less than this to the median planned window.
const TARGET_ADDED_S: f64 = 0.020;
const POLL: Duration = Duration::from_millis(20);
const BEFORE: f64 = 0.1;
const AFTER: f64 = 1.0;
const PAUSE: Duration = Duration::from_millis(300);

/// Planned/forced failover windows and API latency, fogd on etcd next to fogd on SQLite.
#[derive(Parser, Debug)]
#[command(name = "stores")]
struct Args {
    /// Planned failovers per store, interleaved.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Forced failovers per store, interleaved, before the planned ones.
    #[arg(long, default_value_t = 6)]
    forced_runs: usize,
    /// API requests of each kind per store (GET group, list, PUT), interleaved.
    #[arg(long, default_value_t = 300)]
    api_requests: usize,
    /// The fogd binary; a relative path is taken from the workspace root.
    #[arg(long, default_value = "target/release/fogd")]
    fogd: PathBuf,
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin_dir: PathBuf,
    /// OS user that runs PostgreSQL when this runs as root.
    #[arg(long, default_value = "postgres")]
    pg_os_user: String,
    /// Where the figures go; a relative path is taken from the workspace root.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// Print the figures only; leave the output file alone.
    #[arg(long)]
    no_write: bool,
    /// Keep the temporary directory (both fogds' logs and data directories).
    #[arg(long)]
    keep: bool,
}

fn largest_gap(commits: &[Commit], lo: f64, hi: f64) -> Option<f64> {
    let a = commits.partition_point(|c| c.t < lo);
    let b = commits.partition_point(|c| c.t <= hi);
    commits[a..b]
        .windows(2)
        .map(|w| w[1].t - w[0].t)
        .max_by(f64::total_cmp)
}

async fn wait_streaming(a: &Addr, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(c) = connect(a, "postgres", Duration::from_secs(2)).await {
            let st = c
                .query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
                .await
                .ok()
                .flatten()
                .map(|r| r.get::<_, String>(0));
            if st.as_deref() == Some("streaming") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{what} is not streaming after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One switch: request, completion (operation `Succeeded`), first commit on the new
/// primary.
#[derive(Debug, Clone, Copy)]
struct Switch {
    req: f64,
    done: f64,
    first: f64,
}

/// One store's fogd, its group and its writer.
struct Side {
    name: &'static str,
    fogd: Fogd,
    /// (resource group, location, server address) of `a` and `b`.
    members: [(&'static str, &'static str, Addr); 2],
    ids: [Value; 2],
    primary: usize,
    writer: Option<Writer>,
    planned: Vec<Switch>,
    forced: Vec<Switch>,
    get: Vec<f64>,
    list: Vec<f64>,
    put: Vec<f64>,
    put_status: Vec<u16>,
}

async fn create_instance(
    f: &Fogd,
    rg: &str,
    name: &str,
    location: &str,
    partner: Option<&Value>,
) -> Result<Value> {
    let mut body = json!({
        "location": location,
        "sku": {"name": "GP_Gen5", "tier": "GeneralPurpose"},
        "properties": {"administratorLogin": ADMIN, "administratorLoginPassword": PASSWORD,
                       "vCores": 4, "storageSizeInGB": 64}
    });
    if let Some(p) = partner {
        body["properties"]["dnsZonePartner"] = p.clone();
    }
    let path = f.instance_path(rg, name);
    f.complete(
        Method::PUT,
        &path,
        Some(&body),
        &format!("create instance {name}"),
    )
    .await?;
    f.get(&path).await
}

impl Side {
    /// Starts fogd (`env` on top of nothing) and sets up instances, database and group.
    async fn start(
        name: &'static str,
        args: &Args,
        bin: &Path,
        root: &Path,
        env: &[(&str, &str)],
        t0: Clock,
    ) -> Result<Self> {
        let user = pg_user(&args.pg_os_user)?;
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).context("create fogd directory")?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let fogd = Fogd::start(bin, &dir, &args.pg_bin_dir, &user, env)
            .await
            .with_context(|| format!("start fogd on {name}"))?;
        let a = create_instance(&fogd, RG_EAST, "a", EAST, None).await?;
        let b = create_instance(&fogd, RG_WEST, "b", WEST, Some(&a["id"])).await?;
        fogd.complete(
            Method::PUT,
            &format!(
                "{}/managedInstances/a/databases/{DATABASE}?{API}",
                fogd.rg_path(RG_EAST)
            ),
            Some(&json!({})),
            "create database",
        )
        .await?;
        let (sa, sb) = (endpoint(&a)?, endpoint(&b)?);
        connect(&sa, DATABASE, Duration::from_secs(10))
            .await?
            .batch_execute(
                "CREATE TABLE w(id bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())",
            )
            .await
            .context("create table")?;
        let mut side = Side {
            name,
            fogd,
            members: [(RG_EAST, EAST, sa.clone()), (RG_WEST, WEST, sb.clone())],
            ids: [a["id"].clone(), b["id"].clone()],
            primary: 0,
            writer: None,
            planned: Vec::new(),
            forced: Vec::new(),
            get: Vec::new(),
            list: Vec::new(),
            put: Vec::new(),
            put_status: Vec::new(),
        };
        let body = side.group_body();
        side.fogd
            .complete(
                Method::PUT,
                &side.url_at(0),
                Some(&body),
                "create the group",
            )
            .await?;
        let g = side.fogd.get(&side.url_at(0)).await?;
        let rw = addr_at(
            &g["properties"]["listeners"]["readWrite"],
            "readWrite listener",
        )?;
        wait_streaming(&sb, &format!("{name}: b")).await?;
        let w = Writer::spawn(vec![rw], Duration::from_secs(10), t0);
        w.wait_for(sa.port, 0.0, &format!("{name} writer")).await?;
        side.writer = Some(w);
        Ok(side)
    }

    fn url_at(&self, i: usize) -> String {
        let (rg, loc, _) = &self.members[i];
        format!("{}?{API}", self.fogd.group_path(rg, loc, GROUP))
    }

    /// The group's PUT body as it stands (Manual policy, current primary first).
    fn group_body(&self) -> Value {
        let (p, s) = (self.primary, 1 - self.primary);
        json!({"properties": {
            "readWriteEndpoint": {"failoverPolicy": "Manual"},
            "partnerRegions": [{"location": self.members[s].1}],
            "managedInstancePairs": [{
                "primaryManagedInstanceId": self.ids[p],
                "partnerManagedInstanceId": self.ids[s],
            }],
        }})
    }

    fn writer(&self) -> Result<&Writer> {
        self.writer
            .as_ref()
            .ok_or_else(|| anyhow!("{}: no writer", self.name))
    }

    /// One failover (`failover` or `forceFailoverAllowDataLoss`), then settling.
    async fn failover(&mut self, action: &str, t0: Clock) -> Result<Switch> {
        let new = 1 - self.primary;
        let (rg, loc, new_addr) = self.members[new].clone();
        let old_addr = self.members[self.primary].2.clone();
        let url = format!("{}/{action}?{API}", self.fogd.group_path(rg, loc, GROUP));
        let what = format!("{}: {action}", self.name);
        let req = t0.now();
        let r = self.fogd.send(Method::POST, &url, None).await?;
        if r.status != StatusCode::ACCEPTED {
            bail!("{what}: {} {}", r.status, r.body);
        }
        let op = r
            .header("azure-asyncoperation")
            .ok_or_else(|| anyhow!("{what}: no Azure-AsyncOperation header"))?;
        self.fogd.wait_succeeded(&op, &what, POLL).await?;
        let done = t0.now();
        self.primary = new;
        let first = self.writer()?.wait_for(new_addr.port, req, &what).await?;
        wait_streaming(&old_addr, &format!("{what}: old primary")).await?;
        tokio::time::sleep(PAUSE).await;
        Ok(Switch { req, done, first })
    }

    /// One GET of the group, one list, one PUT (timed until its answer; its operation then
    /// waited for).
    async fn api_round(&mut self) -> Result<()> {
        let (rg, loc, _) = &self.members[self.primary];
        let get_url = self.url_at(self.primary);
        let list_url = format!(
            "{}/locations/{loc}/instanceFailoverGroups?{API}",
            self.fogd.rg_path(rg)
        );
        let timed = |status: StatusCode, what: &str, r: &fog_bench::fogd::Reply| -> Result<()> {
            if r.status != status {
                bail!("{}: {what}: {} {}", self.name, r.status, r.body);
            }
            Ok(())
        };
        let s = Instant::now();
        let r = self.fogd.send(Method::GET, &get_url, None).await?;
        let get = s.elapsed().as_secs_f64();
        timed(StatusCode::OK, "GET group", &r)?;
        if r.body["name"] != GROUP {
            bail!("{}: GET group answered {}", self.name, r.body);
        }
        let s = Instant::now();
        let r = self.fogd.send(Method::GET, &list_url, None).await?;
        let list = s.elapsed().as_secs_f64();
        timed(StatusCode::OK, "list groups", &r)?;
        if r.body["value"].as_array().map(Vec::len) != Some(1) {
            bail!("{}: list answered {}", self.name, r.body);
        }
        let body = self.group_body();
        let s = Instant::now();
        let r = self.fogd.send(Method::PUT, &get_url, Some(&body)).await?;
        let put = s.elapsed().as_secs_f64();
        if !matches!(r.status, StatusCode::OK | StatusCode::ACCEPTED) {
            bail!("{}: PUT group: {} {}", self.name, r.status, r.body);
        }
        if let Some(op) = r.operation() {
            let st = self
                .fogd
                .wait_operation(&op, Duration::from_secs(60))
                .await?;
            if st["status"] != "Succeeded" {
                bail!("{}: PUT group: operation ended {st}", self.name);
            }
        }
        self.get.push(get);
        self.list.push(list);
        self.put.push(put);
        self.put_status.push(r.status.as_u16());
        Ok(())
    }
}

/// Nearest-rank percentile (`p` in 0..=100).
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn maxv(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// Checks that etcd serves a linearizable read.
async fn etcd_serves(etcd: &EtcdCluster, when: &str) -> Result<()> {
    match tokio::time::timeout(Duration::from_secs(10), etcd.connect("/fog-bench-probe/")).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!("etcd does not serve {when}: {e}"),
        Err(_) => bail!("etcd does not serve {when}: no answer within 10 s"),
    }
}

/// Results of both stores.
struct Results {
    sides: Vec<SideResult>,
    elapsed: f64,
}

struct SideResult {
    windows: Vec<f64>,
    planned_done: Vec<f64>,
    forced_first: Vec<f64>,
    get: Vec<f64>,
    list: Vec<f64>,
    put: Vec<f64>,
    put_status: Vec<u16>,
    commits: usize,
    errors: u64,
}

async fn measure(args: &Args, bin: &Path, root: &Path) -> Result<Results> {
    let t0 = Clock::new();
    let etcd = EtcdCluster::start(1)
        .await
        .map_err(|e| anyhow!("start etcd: {e}"))?;
    etcd_serves(&etcd, "at the start").await?;
    let store = etcd.store_url();
    eprintln!("etcd up: {store}");
    let etcd_env = [("FOGD_STORE", store.as_str()), ("FOGD_NODE", "bench-etcd")];
    let (sqlite, etcd_side) = tokio::try_join!(
        Side::start("sqlite", args, bin, root, &[], t0),
        Side::start("etcd", args, bin, root, &etcd_env, t0),
    )?;
    // Which store each fogd really runs on: fogd logs it at start-up.
    let in_etcd = |f: &Fogd| {
        std::fs::read_to_string(&f.log)
            .unwrap_or_default()
            .contains("metadata in etcd")
    };
    if in_etcd(&sqlite.fogd) || !in_etcd(&etcd_side.fogd) {
        bail!("the fogds are not on the stores they should be (fogd logs: 'metadata in etcd')");
    }
    let mut sides = [sqlite, etcd_side];
    eprintln!("set up in {:.1} s", t0.now());
    tokio::time::sleep(Duration::from_millis(500)).await;

    for i in 0..args.forced_runs {
        for k in [i % 2, 1 - i % 2] {
            let s = &mut sides[k];
            let r = s.failover("forceFailoverAllowDataLoss", t0).await?;
            eprintln!(
                "forced {} {}: first write {:.0} ms",
                i + 1,
                s.name,
                (r.first - r.req) * 1000.0
            );
            s.forced.push(r);
        }
    }
    for i in 0..args.runs {
        for k in [i % 2, 1 - i % 2] {
            let s = &mut sides[k];
            let r = s.failover("failover", t0).await?;
            eprintln!(
                "planned {} {}: done {:.0} ms, first write {:.0} ms",
                i + 1,
                s.name,
                (r.done - r.req) * 1000.0,
                (r.first - r.req) * 1000.0
            );
            s.planned.push(r);
        }
    }
    for i in 0..args.api_requests {
        for k in [i % 2, 1 - i % 2] {
            sides[k].api_round().await?;
        }
        if (i + 1) % 50 == 0 {
            eprintln!("api {}/{}", i + 1, args.api_requests);
        }
    }
    etcd_serves(&etcd, "at the end").await?;
    let elapsed = t0.now();

    let mut out = Vec::new();
    for s in &mut sides {
        let w = s
            .writer
            .take()
            .ok_or_else(|| anyhow!("{}: no writer", s.name))?;
        let (commits, _drops, errors) = w.finish().await?;
        let mut reqs: Vec<f64> = s
            .planned
            .iter()
            .chain(s.forced.iter())
            .map(|r| r.req)
            .collect();
        reqs.sort_by(f64::total_cmp);
        let mut windows = Vec::new();
        for (i, r) in s.planned.iter().enumerate() {
            // Clamped to this store's next switch request.
            let next = reqs
                .iter()
                .copied()
                .find(|&t| t > r.req)
                .unwrap_or(f64::INFINITY);
            let hi = (r.done + AFTER).min(next);
            let lo = r.req - BEFORE;
            let gap = largest_gap(&commits, lo, hi)
                .ok_or_else(|| anyhow!("{}: planned {}: no commits around it", s.name, i + 1))?;
            // The window must be bounded by commits on both sides.
            // The writer must have been writing just before the request, and again after.
            if !commits.iter().any(|c| c.t >= lo && c.t <= r.req)
                || !commits.iter().any(|c| c.t >= r.first && c.t <= hi)
            {
                bail!(
                    "{}: planned {}: the writer did not write just before and after it",
                    s.name,
                    i + 1
                );
            }
            windows.push(gap);
        }
        out.push(SideResult {
            windows,
            planned_done: s.planned.iter().map(|r| r.done - r.req).collect(),
            forced_first: s.forced.iter().map(|r| r.first - r.req).collect(),
            get: s.get.clone(),
            list: s.list.clone(),
            put: s.put.clone(),
            put_status: s.put_status.clone(),
            commits: commits.len(),
            errors,
        });
    }
    drop(sides);
    drop(etcd);
    Ok(Results {
        sides: out,
        elapsed,
    })
}

fn ms(x: f64) -> String {
    format!("{:.0}", x * 1000.0)
}

fn ms1(x: f64) -> String {
    format!("{:.1}", x * 1000.0)
}

fn section(args: &Args, machine: &str, pg: &str, r: &Results) -> String {
    let (sq, et) = (&r.sides[0], &r.sides[1]);
    let mut s = String::new();
    let _ = writeln!(s, "{START_MARKER}");
    let _ = writeln!(s, "## Stores: etcd vs SQLite\n");
    let _ = writeln!(
        s,
        "Measured {} on commit {} with `./target/release/stores --runs {} --forced-runs {} \
         --api-requests {}` ({:.0} s): two release fogds side by side in one run, one on its \
         embedded SQLite store, one on a one-member etcd 3.4 (`--store etcd://…`, one fogd \
         node) that the benchmark started on loopback; each with its own group `a`/`b` and a \
         writer through its read-write listener for the whole run. Rounds interleaved (each \
         round one switch per store, the first store alternating). {pg}. Machine: {machine}.\n",
        utc_now(),
        git_commit(),
        args.runs,
        args.forced_runs,
        args.api_requests,
        r.elapsed
    );
    let med_diff = |a: &[f64], b: &[f64]| median(b.to_vec()) - median(a.to_vec());
    let _ = writeln!(s, "### Failover (ms)\n");
    let _ = writeln!(
        s,
        "| | SQLite | etcd | etcd − SQLite |\n|---|---:|---:|---:|"
    );
    let row = |s: &mut String, label: &str, a: &[f64], b: &[f64]| {
        let _ = writeln!(
            s,
            "| {label} | {} / {} / {} | {} / {} / {} | {:+.0} (median) |",
            ms(median(a.to_vec())),
            ms(pct(a, 90.0)),
            ms(maxv(a)),
            ms(median(b.to_vec())),
            ms(pct(b, 90.0)),
            ms(maxv(b)),
            med_diff(a, b) * 1000.0
        );
    };
    row(
        &mut s,
        &format!(
            "planned: write window, median / p90 / max ({} each)",
            sq.windows.len()
        ),
        &sq.windows,
        &et.windows,
    );
    row(
        &mut s,
        "planned: request → operation `Succeeded` (polled every 20 ms)",
        &sq.planned_done,
        &et.planned_done,
    );
    row(
        &mut s,
        &format!(
            "forced: request → first write, median / p90 / max ({} each)",
            sq.forced_first.len()
        ),
        &sq.forced_first,
        &et.forced_first,
    );
    let added = med_diff(&sq.windows, &et.windows);
    let _ = writeln!(
        s,
        "\nGoal: etcd adds < {:.0} ms to the median planned window: **{}** ({:+.0} ms).\n",
        TARGET_ADDED_S * 1000.0,
        if added < TARGET_ADDED_S {
            "met"
        } else {
            "not met"
        },
        added * 1000.0
    );
    let _ = writeln!(s, "### API latency (ms, kept-alive HTTPS connection)\n");
    let _ = writeln!(
        s,
        "| request | SQLite p50 / p99 | etcd p50 / p99 | etcd − SQLite (p50) |\n|---|---:|---:|---:|"
    );
    let lat = |s: &mut String, label: &str, a: &[f64], b: &[f64]| {
        let _ = writeln!(
            s,
            "| {label} | {} / {} | {} / {} | {:+.1} |",
            ms1(pct(a, 50.0)),
            ms1(pct(a, 99.0)),
            ms1(pct(b, 50.0)),
            ms1(pct(b, 99.0)),
            (pct(b, 50.0) - pct(a, 50.0)) * 1000.0
        );
    };
    lat(&mut s, "GET group", &sq.get, &et.get);
    lat(
        &mut s,
        "GET list of groups at a location",
        &sq.list,
        &et.list,
    );
    let status = |v: &[u16]| {
        let mut c: Vec<u16> = v.to_vec();
        c.sort_unstable();
        c.dedup();
        c.iter().map(u16::to_string).collect::<Vec<_>>().join("/")
    };
    lat(
        &mut s,
        &format!(
            "PUT group → answer ({} SQLite, {} etcd)",
            status(&sq.put_status),
            status(&et.put_status)
        ),
        &sq.put,
        &et.put,
    );
    let _ = writeln!(
        s,
        "\n{} requests of each kind per store. Writers: SQLite {} commits ({} failed \
         attempts), etcd {} commits ({} failed attempts).",
        sq.get.len(),
        sq.commits,
        sq.errors,
        et.commits,
        et.errors
    );
    let _ = writeln!(s, "{END_MARKER}");
    s
}

async fn run(args: &Args) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let bin = from_root(&args.fogd);
    if !bin.exists() {
        bail!(
            "{} not found; build it first: cargo build --release -p fogd -p fog-bench",
            bin.display()
        );
    }
    let pg = {
        let out = tokio::process::Command::new(args.pg_bin_dir.join("postgres"))
            .arg("--version")
            .output()
            .await
            .context("run postgres --version")?;
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let root = tempfile::Builder::new()
        .prefix("fog-bench-stores-")
        .tempdir()
        .context("create temporary directory")?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
    let root_path = root.path().to_path_buf();
    let guard = if args.keep {
        eprintln!("keeping {}", root_path.display());
        let _ = root.keep();
        None
    } else {
        Some(root)
    };
    let result = measure(args, &bin, &root_path).await;
    let machine = machine(&root_path);
    drop(guard);
    let r = result?;
    let report = section(args, &machine, &pg, &r);
    print!("{report}");
    if !args.no_write {
        let out = from_root(&args.output);
        write_section(&out, START_MARKER, END_MARKER, &report)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tokio::select! {
        r = run(&args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; fogd and its servers were stopped")),
    }
}
