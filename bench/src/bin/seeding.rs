//! # Seeding throughput: fogd failover-group creation vs. a bare `pg_basebackup`
//!
//! Creating an instance failover group seeds the secondary from the primary with
//! `pg_basebackup`, wrapped in fogd's operation machinery. This benchmark measures what
//! that wrapping costs: in one run, against one primary holding the same data, it times
//!
//! - **bare**: `pg_basebackup -D <dir> -X stream -c fast -d "host=… port=… user=fogadmin"`,
//!   run by hand as the `postgres` OS user (when root) — the floor for copying this data
//!   directory on this machine. Its bytes are the size of the copied data directory
//!   without `pg_wal` (the streamed WAL), i.e. what the base backup itself sent.
//! - **fogd**: `PUT …/locations/eastus/instanceFailoverGroups/bench-<round>` with a fresh,
//!   empty secondary, from sending the request until the `Azure-AsyncOperation` status is
//!   `Succeeded` (polled every 20 ms). Its bytes are the group's
//!   `properties.seedingProgress.bytesTotal` (pg_basebackup's own total, also without WAL).
//!
//! Throughput is bytes / seconds; the ratio is fogd's throughput over bare's in the same
//! round. Rounds alternate which of the two goes first, and every measurement starts
//! after `sync(2)` so neither pays for the other's dirty pages.
//!
//! Where the difference goes is read from the servers' logs (ms timestamps): the base
//! backup's checkpoint request on the primary starts the copy in both cases; on fogd's
//! secondary, the postmaster's "starting PostgreSQL" after it marks the copied data
//! directory in place, and "ready to accept read-only connections" the standby up.
//!
//! Set-up (not timed): a release `fogd serve` on a fresh data directory under a temporary
//! directory (mode 0755, so the `postgres` user can traverse it), instance `a` in `eastus`
//! with database `bench`, loaded through tokio-postgres with `--mb` MB of incompressible
//! rows, then `VACUUM (FREEZE, ANALYZE)` and `CHECKPOINT` so every round copies the same
//! bytes, then one untimed bare copy to settle the page cache and the disk. Each
//! round creates secondary `b<round>` in `westus` (DNS-zone partner of `a`) and afterwards
//! deletes the group and the secondary. fogd is stopped with SIGTERM at the end (it stops
//! its PostgreSQL servers), also on error or Ctrl-C.
//!
//! The figures go to `BENCHMARKS.md` at the workspace root, between
//! `<!-- seeding:start -->` and `<!-- seeding:end -->`; the rest of that file is kept.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use fog_bench::fogd::{Fogd, API};
use fog_bench::servers::{endpoint, Addr};
use fog_bench::writer::{ADMIN, DATABASE, PASSWORD};
use fog_bench::{
    days_from_civil, from_root, git_commit, machine, median, pg_user, utc_now, write_section,
    PgUser,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RG_PRIMARY: &str = "rg-bench-east";
const RG_SECONDARY: &str = "rg-bench-west";
const PRIMARY_LOCATION: &str = "eastus";
const SECONDARY_LOCATION: &str = "westus";
/// The target: fogd seeding at least this fraction of bare pg_basebackup.
const TARGET_RATIO: f64 = 0.9;
const START_MARKER: &str = "<!-- seeding:start -->";
const END_MARKER: &str = "<!-- seeding:end -->";
/// Longest any single operation may take before the benchmark gives up.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(600);
const MB: f64 = 1_000_000.0;

/// Measures fogd's failover-group seeding throughput against a bare pg_basebackup.
#[derive(Parser, Debug)]
#[command(name = "seeding")]
struct Args {
    /// Data to load into the primary, in MB (10^6 bytes of table on disk).
    #[arg(long, default_value_t = 300)]
    mb: u64,
    /// Rounds; each runs one bare pg_basebackup and one fogd seeding, alternating order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How often the fogd operation status is polled while timing, in ms.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// The fogd binary; a relative path is taken from the workspace root.
    #[arg(long, default_value = "target/release/fogd")]
    fogd: PathBuf,
    /// PostgreSQL 15 binaries (pg_basebackup, pg_ctl).
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin_dir: PathBuf,
    /// OS user that runs PostgreSQL tools when this runs as root.
    #[arg(long, default_value = "postgres")]
    pg_os_user: String,
    /// Where the figures go; a relative path is taken from the workspace root.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// Print the figures only; leave the output file alone.
    #[arg(long)]
    no_write: bool,
    /// Keep the temporary directory (fogd's log, data directory, the secondaries' server
    /// logs) for inspection.
    #[arg(long)]
    keep: bool,
}

/// A PostgreSQL tool, run as the PostgreSQL OS user when we are root.
fn pg_tool(bin_dir: &Path, tool: &str, user: &PgUser) -> tokio::process::Command {
    let path = bin_dir.join(tool);
    let mut cmd = match user {
        Some((name, _, _)) => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", name, "--"]).arg(path);
            c
        }
        None => tokio::process::Command::new(path),
    };
    cmd.stdin(Stdio::null())
        .kill_on_drop(true)
        .env("LC_ALL", "C.UTF-8")
        .env_remove("PGDATA")
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGUSER");
    cmd
}

/// fogd on its embedded defaults (every `FOGD_*` variable of the caller removed).
async fn start_fogd(bin: &Path, root: &Path, pg_bin_dir: &Path, user: &PgUser) -> Result<Fogd> {
    let mut f = Fogd::new(bin, root, pg_bin_dir, user).with_operation_timeout(OPERATION_TIMEOUT);
    f.launch(&[]).await?;
    Ok(f)
}

fn instance_body(location: &str, partner: Option<&Value>) -> Value {
    let mut b = json!({
        "location": location,
        "sku": {"name": "GP_Gen5", "tier": "GeneralPurpose"},
        "properties": {"administratorLogin": ADMIN, "administratorLoginPassword": PASSWORD,
                       "vCores": 4, "storageSizeInGB": 64}
    });
    if let Some(p) = partner {
        b["properties"]["dnsZonePartner"] = p.clone();
    }
    b
}

/// What the load left on the primary.
struct Loaded {
    table_bytes: u64,
    cluster_bytes: u64,
    rows: i64,
}

/// Fills `bench.pad` with incompressible ~1 kB rows until the table has `mb` MB, then
/// freezes and analyzes it (so autovacuum has nothing left to do during the rounds) and
/// checkpoints, so every round copies the same bytes.
async fn load(view: &Value, mb: u64) -> Result<Loaded> {
    let Addr { host, port } = endpoint(view)?;
    let (c, conn) = tokio_postgres::Config::new()
        .host(&host)
        .port(port)
        .user(ADMIN)
        .password(PASSWORD)
        .dbname(DATABASE)
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to the primary as the administrator")?;
    let conn = tokio::spawn(conn);
    c.batch_execute("CREATE TABLE pad(id bigint NOT NULL, pad text NOT NULL)")
        .await
        .context("create table")?;
    // 960 characters of md5 hex per row: below the TOAST threshold, so stored as is.
    const CHUNK: i64 = 20_000;
    let want = mb.saturating_mul(1_000_000);
    let mut next = 1_i64;
    loop {
        let size: i64 = c
            .query_one("SELECT pg_total_relation_size('pad')", &[])
            .await
            .context("table size")?
            .get(0);
        if u64::try_from(size).unwrap_or(0) >= want {
            break;
        }
        c.execute(
            "INSERT INTO pad SELECT g, repeat(md5(g::text), 30) FROM generate_series($1::bigint, $2::bigint) g",
            &[&next, &(next + CHUNK - 1)],
        )
        .await
        .context("insert rows")?;
        next += CHUNK;
    }
    c.batch_execute("VACUUM (FREEZE, ANALYZE) pad")
        .await
        .context("vacuum")?;
    c.batch_execute("CHECKPOINT").await.context("checkpoint")?;
    let row = c
        .query_one(
            "SELECT pg_total_relation_size('pad'), (SELECT sum(pg_database_size(oid))::bigint FROM pg_database), (SELECT count(*) FROM pad)",
            &[],
        )
        .await
        .context("sizes")?;
    let loaded = Loaded {
        table_bytes: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        cluster_bytes: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        rows: row.get(2),
    };
    drop(c);
    let _ = conn.await;
    Ok(loaded)
}

/// Bytes of regular files under `dir`, and how many of them are under `dir/pg_wal`.
fn dir_bytes(dir: &Path) -> Result<(u64, u64)> {
    fn walk(p: &Path, total: &mut u64) -> Result<()> {
        for e in std::fs::read_dir(p).with_context(|| format!("read {}", p.display()))? {
            let e = e?;
            let md = std::fs::symlink_metadata(e.path())?;
            if md.is_dir() {
                walk(&e.path(), total)?;
            } else if md.is_file() {
                *total += md.len();
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(dir, &mut total)?;
    let mut wal = 0;
    let wal_dir = dir.join("pg_wal");
    if wal_dir.is_dir() {
        walk(&wal_dir, &mut wal)?;
    }
    Ok((total, wal))
}

/// One timed copy.
#[derive(Debug, Clone, Copy)]
struct Copy {
    secs: f64,
    bytes: u64,
}

/// A bare pg_basebackup.
#[derive(Debug, Clone, Copy)]
struct Bare {
    copy: Copy,
    phases: Option<BarePhases>,
}

fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The timestamp of a server log line (fogd's `log_line_prefix` starts with `%m`; only
/// UTC is understood) as seconds since the epoch.
fn log_time(line: &str) -> Option<f64> {
    let ts = line.get(..23)?;
    if !line.get(23..)?.starts_with(" UTC ") {
        return None;
    }
    let n = |r: std::ops::Range<usize>| ts.get(r).and_then(|x| x.parse::<i64>().ok());
    let days = days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?);
    let secs = days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?;
    Some(secs as f64 + n(20..23)? as f64 / 1000.0)
}

/// When the first line containing `needle` logged at or after `since` was logged (log
/// timestamps have whole milliseconds).
fn logged(log: &Path, needle: &str, since: f64) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter(|l| l.contains(needle))
        .filter_map(log_time)
        .find(|t| *t >= since - 0.001)
}

/// What the primary logs when a base backup (`-c fast`) asks for its checkpoint.
const CHECKPOINT_STARTING: &str = "LOG:  checkpoint starting: immediate force wait";

impl Copy {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / MB / self.secs
    }
}

/// A fogd seeding, with what the status polls showed along the way (seconds from the PUT).
#[derive(Debug, Clone, Copy)]
struct Seeding {
    copy: Copy,
    /// The PUT's answer (202) arrived.
    accepted: f64,
    /// From the servers' logs, when they could be read.
    phases: Option<SeedPhases>,
}

/// Where a fogd seeding's time went, in seconds, from the PostgreSQL logs (timestamps in
/// ms): the base backup's checkpoint on the primary marks the start of the copy; on the
/// secondary, the first "starting PostgreSQL" after it marks the copied data directory in
/// place, and "ready to accept read-only connections" the standby up.
#[derive(Debug, Clone, Copy)]
struct SeedPhases {
    /// PUT → base backup checkpoint requested (202, align, slot, pg_basebackup start).
    before_copy: f64,
    /// Checkpoint → standby postmaster starting (pg_basebackup: checkpoint, sizing,
    /// transfer, fsync; then the secondary stopped, data directories swapped, the old one
    /// removed, `pg_ctl start`).
    copy: f64,
    /// Postmaster starting → ready for read-only connections (recovery start-up).
    startup: f64,
    /// Standby ready → `Succeeded` seen by the poller (readiness check, link, finish, poll).
    after: f64,
}

/// A bare pg_basebackup's time, in seconds, split at its checkpoint on the primary.
#[derive(Debug, Clone, Copy)]
struct BarePhases {
    /// Process start → checkpoint requested (connect, authenticate).
    before_copy: f64,
    /// Checkpoint → process exit (checkpoint, transfer, fsync).
    copy: f64,
}

struct Bench<'a> {
    fogd: &'a Fogd,
    primary: Value,
    /// The primary's server directory (its `postgres.log` lives there).
    primary_dir: PathBuf,
    /// Status polling interval while timing fogd.
    poll: Duration,
    root: PathBuf,
    bare_dir: PathBuf,
    pg_bin_dir: PathBuf,
    user: PgUser,
}

impl Bench<'_> {
    fn primary_log(&self) -> PathBuf {
        self.primary_dir.join("postgres.log")
    }

    async fn bare(&self, round: usize) -> Result<Bare> {
        let Addr { host, port } = endpoint(&self.primary)?;
        let target = self.bare_dir.join(format!("copy-{round}"));
        let mut cmd = pg_tool(&self.pg_bin_dir, "pg_basebackup", &self.user);
        cmd.arg("-D")
            .arg(&target)
            .args(["-X", "stream", "-c", "fast", "-d"])
            .arg(format!("host={host} port={port} user={ADMIN}"))
            .env("PGPASSWORD", PASSWORD)
            .current_dir(&self.root)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        nix::unistd::sync();
        let wall = epoch_secs();
        let start = Instant::now();
        let out = cmd.output().await.context("run pg_basebackup")?;
        let secs = start.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "pg_basebackup failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (total, wal) = dir_bytes(&target)?;
        std::fs::remove_dir_all(&target).with_context(|| format!("remove {}", target.display()))?;
        let phases = logged(&self.primary_log(), CHECKPOINT_STARTING, wall).map(|c| {
            let before_copy = c - wall;
            BarePhases {
                before_copy,
                copy: secs - before_copy,
            }
        });
        Ok(Bare {
            copy: Copy {
                secs,
                bytes: total - wal,
            },
            phases,
        })
    }

    /// The secondary's server directory: the one under `instances` that is not the
    /// primary's.
    fn secondary_dir(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.fogd.data.join("instances"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| *p != self.primary_dir)
    }

    async fn fogd(&self, round: usize) -> Result<Seeding> {
        let f = self.fogd;
        let b_path = f.instance_path(RG_SECONDARY, &format!("b{round}"));
        f.complete(
            Method::PUT,
            &b_path,
            Some(&instance_body(
                SECONDARY_LOCATION,
                Some(&self.primary["id"]),
            )),
            "create the secondary",
        )
        .await?;
        let secondary = f.get(&b_path).await?;
        let group_path = format!(
            "{}/locations/{PRIMARY_LOCATION}/instanceFailoverGroups/bench-{round}?{API}",
            f.rg_path(RG_PRIMARY)
        );
        let body = json!({"properties": {
            "readWriteEndpoint": {"failoverPolicy": "Manual"},
            "partnerRegions": [{"location": SECONDARY_LOCATION}],
            "managedInstancePairs": [{
                "primaryManagedInstanceId": self.primary["id"],
                "partnerManagedInstanceId": secondary["id"],
            }],
        }});

        nix::unistd::sync();
        let wall = epoch_secs();
        let start = Instant::now();
        let r = f.send(Method::PUT, &group_path, Some(&body)).await?;
        let accepted = start.elapsed().as_secs_f64();
        if r.status != StatusCode::ACCEPTED {
            bail!("create group: {} {}", r.status, r.body);
        }
        let status_url = r
            .header("azure-asyncoperation")
            .ok_or_else(|| anyhow!("create group: no Azure-AsyncOperation header"))?;
        let secs = loop {
            let s = f.get(&status_url).await?;
            let now = start.elapsed().as_secs_f64();
            match s["status"].as_str() {
                Some("InProgress") => {}
                Some("Succeeded") => break now,
                _ => bail!(
                    "create group did not succeed: {s}; fogd log:\n{}",
                    f.log_tail(30)
                ),
            }
            if now > OPERATION_TIMEOUT.as_secs_f64() {
                bail!("create group did not finish in {OPERATION_TIMEOUT:?}");
            }
            tokio::time::sleep(self.poll).await;
        };
        let group = f.get(&group_path).await?;
        let bytes = group["properties"]["seedingProgress"]["bytesTotal"]
            .as_u64()
            .ok_or_else(|| anyhow!("group without seedingProgress.bytesTotal: {group}"))?;
        let phases = self.secondary_dir().and_then(|dir| {
            let log = dir.join("postgres.log");
            // Deleting the secondary removes its log; keep a copy beside fogd's.
            let _ = std::fs::copy(&log, self.root.join(format!("b{round}-postgres.log")));
            let checkpoint = logged(&self.primary_log(), CHECKPOINT_STARTING, wall)?;
            let start = logged(&log, "LOG:  starting PostgreSQL", checkpoint)?;
            let ready = logged(
                &log,
                "LOG:  database system is ready to accept read-only connections",
                start,
            )?;
            Some(SeedPhases {
                before_copy: checkpoint - wall,
                copy: start - checkpoint,
                startup: ready - start,
                after: wall + secs - ready,
            })
        });

        // Start the next round clean: no group, no secondary.
        f.complete(Method::DELETE, &group_path, None, "delete the group")
            .await?;
        f.complete(Method::DELETE, &b_path, None, "delete the secondary")
            .await?;
        Ok(Seeding {
            copy: Copy { secs, bytes },
            accepted,
            phases,
        })
    }
}

struct Round {
    bare_first: bool,
    bare: Bare,
    fogd: Seeding,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.fogd.copy.mb_per_s() / self.bare.copy.mb_per_s()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "–".into())
}

struct Report<'a> {
    args: &'a Args,
    machine: String,
    pg_version: String,
    loaded: &'a Loaded,
    rounds: &'a [Round],
}

impl Report<'_> {
    fn section(&self) -> String {
        let r = self.rounds;
        let med = |f: &dyn Fn(&Round) -> f64| median(r.iter().map(f).collect());
        // Median over the rounds where the value is known.
        let med_opt = |f: &dyn Fn(&Round) -> Option<f64>| {
            let v: Vec<f64> = r.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(v))
        };
        let med_ratio = med(&|x| x.ratio());
        let met = med_ratio >= TARGET_RATIO;
        let mut s = String::new();
        let _ = writeln!(s, "{START_MARKER}");
        let _ = writeln!(s, "## Failover-group seeding vs. bare `pg_basebackup`\n");
        let _ = writeln!(
            s,
            "Measured {} on commit {} with `./target/release/seeding --mb {} --rounds {}{}` \
             (`bench/src/bin/seeding.rs`; how to run: `bench/README.md`).\n",
            utc_now(),
            git_commit(),
            self.args.mb,
            self.args.rounds,
            if self.args.poll_ms == 20 {
                String::new()
            } else {
                format!(" --poll-ms {}", self.args.poll_ms)
            }
        );
        let _ = writeln!(s, "- Machine: {}", self.machine);
        let _ = writeln!(s, "- PostgreSQL: {}", self.pg_version);
        let _ = writeln!(
            s,
            "- Data: {} rows, table {:.1} MB in database `{DATABASE}`; all databases {:.1} MB \
             (MB = 10^6 bytes), frozen, analyzed and checkpointed, then one untimed bare copy before the rounds.",
            self.loaded.rows,
            self.loaded.table_bytes as f64 / MB,
            self.loaded.cluster_bytes as f64 / MB
        );
        let _ = writeln!(
            s,
            "- bare: `pg_basebackup -D <dir> -X stream -c fast` as the administrator login, \
             timed around the process; bytes = the copy without `pg_wal`.\n\
             - fogd: `PUT …/instanceFailoverGroups/bench-<round>` with a fresh empty secondary, \
             timed from the request to status `Succeeded` (polled every {} ms); bytes = \
             `seedingProgress.bytesTotal`.\n- Rounds alternate which goes first; each \
             measurement starts after `sync`.\n",
            self.args.poll_ms
        );
        let _ = writeln!(
            s,
            "| round | first | bare s | bare MB | bare MB/s | fogd s | fogd MB | fogd MB/s | ratio |"
        );
        let _ = writeln!(
            s,
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for (i, x) in r.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.2}× |",
                i + 1,
                if x.bare_first { "bare" } else { "fogd" },
                x.bare.copy.secs,
                x.bare.copy.bytes as f64 / MB,
                x.bare.copy.mb_per_s(),
                x.fogd.copy.secs,
                x.fogd.copy.bytes as f64 / MB,
                x.fogd.copy.mb_per_s(),
                x.ratio(),
            );
        }
        let _ = writeln!(
            s,
            "| **median** | | {:.2} | | {:.1} | {:.2} | | {:.1} | **{:.2}×** |\n",
            med(&|x| x.bare.copy.secs),
            med(&|x| x.bare.copy.mb_per_s()),
            med(&|x| x.fogd.copy.secs),
            med(&|x| x.fogd.copy.mb_per_s()),
            med_ratio,
        );
        let _ = writeln!(
            s,
            "**Target** (from the issue): fogd seeding throughput ≥ {TARGET_RATIO}× bare \
             `pg_basebackup`. **Median ratio {med_ratio:.2}× — {}.**\n",
            if met { "met" } else { "not met" }
        );

        let _ = writeln!(s, "### Where the time goes (seconds)\n");
        let _ = writeln!(
            s,
            "Split at events in the PostgreSQL servers' logs (ms timestamps): the base \
             backup's checkpoint request on the primary (`checkpoint starting: immediate force \
             wait`) starts the copy in both columns; on fogd's secondary, the first `starting \
             PostgreSQL` after it (the copied data directory is in place) and `ready to \
             accept read-only connections`. Both copy columns include the checkpoint and the \
             final fsync; fogd's also includes stopping the secondary (if not done by then), \
             swapping the data directories, removing the old one and `pg_ctl start` up to the \
             postmaster's first log line.\n"
        );
        let _ = writeln!(
            s,
            "| round | bare: start → checkpoint | bare: copy | fogd: PUT → 202 | fogd: PUT → checkpoint | fogd: copy + swap | fogd: standby start-up | fogd: standby ready → `Succeeded` seen | fogd − bare |"
        );
        let _ = writeln!(
            s,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let bare_before = |x: &Round| x.bare.phases.map(|p| p.before_copy);
        let bare_copy = |x: &Round| x.bare.phases.map(|p| p.copy);
        let before = |x: &Round| x.fogd.phases.map(|p| p.before_copy);
        let copy = |x: &Round| x.fogd.phases.map(|p| p.copy);
        let startup = |x: &Round| x.fogd.phases.map(|p| p.startup);
        let after = |x: &Round| x.fogd.phases.map(|p| p.after);
        let extra = |x: &Round| x.fogd.copy.secs - x.bare.copy.secs;
        for (i, x) in r.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {} | {} | {} | {} | {:.2} |",
                i + 1,
                opt(bare_before(x)),
                opt(bare_copy(x)),
                x.fogd.accepted,
                opt(before(x)),
                opt(copy(x)),
                opt(startup(x)),
                opt(after(x)),
                extra(x),
            );
        }
        let _ = writeln!(
            s,
            "| **median** | {} | {} | {:.3} | {} | {} | {} | {} | {:.2} |\n",
            opt(med_opt(&bare_before)),
            opt(med_opt(&bare_copy)),
            med(&|x| x.fogd.accepted),
            opt(med_opt(&before)),
            opt(med_opt(&copy)),
            opt(med_opt(&startup)),
            opt(med_opt(&after)),
            med(&extra),
        );
        let _ = writeln!(
            s,
            "fogd's time covers more than the copy: before it, the synchronous connectivity \
             check (`psql IDENTIFY_SYSTEM` from the secondary's side) ahead of the 202, \
             aligning the secondary's internal credentials, creating the physical slot and a \
             store commit per step; during it, pg_basebackup runs with `--progress` (the \
             primary sizes the data directory before sending it) while fogd persists progress \
             every 0.5 s; after it, stopping the secondary, swapping in the copied data \
             directory, starting it as a hot standby (recovery from a base backup first \
             fsyncs the whole data directory) and waiting until it answers SQL, linking every \
             user database (`sp_wait_for_database_copy_sync`, `synchronous_standby_names` + \
             reload), the final commit, and up to {} ms of polling granularity.",
            self.args.poll_ms
        );
        let _ = writeln!(s, "{END_MARKER}");
        s
    }
}

async fn run(args: &Args) -> Result<()> {
    if args.rounds == 0 || args.mb == 0 {
        bail!("--rounds and --mb must be at least 1");
    }
    let bin = from_root(&args.fogd);
    if !bin.exists() {
        bail!(
            "{} not found; build it first: cargo build --release -p fogd -p fog-bench",
            bin.display()
        );
    }
    let user = pg_user(&args.pg_os_user)?;
    let pg_version = {
        let out = pg_tool(&args.pg_bin_dir, "pg_basebackup", &None)
            .arg("--version")
            .output()
            .await
            .context("run pg_basebackup --version")?;
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    let root = tempfile::Builder::new()
        .prefix("fog-bench-")
        .tempdir()
        .context("create temporary directory")?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
        .context("chmod temporary directory")?;
    let root_path = root.path().to_path_buf();
    let bare_dir = root_path.join("bare");
    std::fs::create_dir(&bare_dir).context("create bare copy directory")?;
    std::fs::set_permissions(&bare_dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some((_, uid, gid)) = &user {
        std::os::unix::fs::chown(&bare_dir, Some(*uid), Some(*gid))
            .context("chown bare copy directory")?;
    }
    let root_guard = if args.keep {
        eprintln!("keeping {}", root_path.display());
        let _ = root.keep();
        None
    } else {
        Some(root)
    };

    let result = measure(args, &bin, &root_path, &bare_dir, &user, pg_version).await;
    drop(root_guard);
    let (report, rounds_summary) = result?;
    print!("{report}");
    if !args.no_write {
        let out = from_root(&args.output);
        write_section(&out, START_MARKER, END_MARKER, &report)?;
        eprintln!("wrote {}", out.display());
    }
    eprintln!("{rounds_summary}");
    Ok(())
}

/// Starts fogd, loads the primary, runs the rounds; fogd stops when this returns.
async fn measure(
    args: &Args,
    bin: &Path,
    root: &Path,
    bare_dir: &Path,
    user: &PgUser,
    pg_version: String,
) -> Result<(String, String)> {
    let t = Instant::now();
    let fogd = start_fogd(bin, root, &args.pg_bin_dir, user).await?;
    eprintln!(
        "fogd up at {} ({:.1} s)",
        fogd.url,
        t.elapsed().as_secs_f64()
    );

    let a_path = fogd.instance_path(RG_PRIMARY, "a");
    fogd.complete(
        Method::PUT,
        &a_path,
        Some(&instance_body(PRIMARY_LOCATION, None)),
        "create the primary",
    )
    .await?;
    let primary = fogd.get(&a_path).await?;
    fogd.complete(
        Method::PUT,
        &format!(
            "{}/managedInstances/a/databases/{DATABASE}?{API}",
            fogd.rg_path(RG_PRIMARY)
        ),
        Some(&json!({})),
        "create the database",
    )
    .await?;
    eprintln!(
        "primary a and database {DATABASE} ready ({:.1} s); loading {} MB",
        t.elapsed().as_secs_f64(),
        args.mb
    );
    let loaded = load(&primary, args.mb).await?;
    eprintln!(
        "loaded {} rows, table {:.1} MB ({:.1} s)",
        loaded.rows,
        loaded.table_bytes as f64 / MB,
        t.elapsed().as_secs_f64()
    );

    let primary_dir = std::fs::read_dir(fogd.data.join("instances"))
        .context("list server directories")?
        .flatten()
        .map(|e| e.path())
        .next()
        .ok_or_else(|| anyhow!("the primary has no server directory"))?;
    let bench = Bench {
        fogd: &fogd,
        primary,
        primary_dir,
        poll: Duration::from_millis(args.poll_ms),
        root: root.to_path_buf(),
        bare_dir: bare_dir.to_path_buf(),
        pg_bin_dir: args.pg_bin_dir.clone(),
        user: user.clone(),
    };
    // One untimed copy first: it settles the page cache and the disk after the load.
    let warm = bench.bare(0).await?;
    eprintln!("warm-up copy: {:.2} s (not counted)", warm.copy.secs);
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let bare_first = round % 2 == 1;
        let (bare, seeded) = if bare_first {
            let b = bench.bare(round).await?;
            (b, bench.fogd(round).await?)
        } else {
            let s = bench.fogd(round).await?;
            (bench.bare(round).await?, s)
        };
        let r = Round {
            bare_first,
            bare,
            fogd: seeded,
        };
        eprintln!(
            "round {round}: bare {:.2} s {:.1} MB/s | fogd {:.2} s {:.1} MB/s | ratio {:.2} | {:?} | {:?}",
            r.bare.copy.secs,
            r.bare.copy.mb_per_s(),
            r.fogd.copy.secs,
            r.fogd.copy.mb_per_s(),
            r.ratio(),
            r.bare.phases,
            r.fogd.phases,
        );
        rounds.push(r);
    }
    let report = Report {
        args,
        machine: machine(root),
        pg_version,
        loaded: &loaded,
        rounds: &rounds,
    }
    .section();
    let summary = format!(
        "median ratio {:.2} (target ≥ {TARGET_RATIO}); total {:.1} s",
        median(rounds.iter().map(Round::ratio).collect()),
        t.elapsed().as_secs_f64()
    );
    drop(bench);
    drop(fogd);
    Ok((report, summary))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tokio::select! {
        r = run(&args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; fogd and its servers were stopped")),
    }
}
