//! The scenarios. Each *trial* injects one fault (or one burst of requests), then waits —
//! hands off — until fogd recovered by itself, and checks the acknowledged writes; the
//! workload checker runs throughout (see [`super::workload`]).

use super::attack::{tls_config, Flood, SlowClients};
use super::cluster::{signal_server, until, walreceiver_pid, Cluster, DataCheck, GROUP};
use super::fogd::{send_with, Reply};
use super::workload::{now, Load, DATABASE as DATABASE_NAME};
use crate::PgUser;
use anyhow::{anyhow, bail, Context, Result};
use fog_model::Action;
use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the campaign runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub runs: usize,
    /// Scenario keys or prefixes (`crash`, `pg-kill-primary`, …); empty: all.
    pub only: Vec<String>,
    pub bin: PathBuf,
    pub pg_bin_dir: PathBuf,
    pub user: PgUser,
    /// Where clusters' data directories go.
    pub root: PathBuf,
    /// How long fogd may take to recover from one fault.
    pub bound: Duration,
}

/// One scenario: a row of the report.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub key: &'static str,
    /// The scenario number.
    pub number: u8,
    pub title: &'static str,
    /// In `--quick`.
    pub quick: bool,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        key: "crash-planned",
        number: 1,
        title: "kill -9 of fogd at each step of a planned failover",
        quick: true,
    },
    Scenario {
        key: "crash-forced",
        number: 1,
        title: "kill -9 of fogd at each step of a forced failover",
        quick: true,
    },
    Scenario {
        key: "crash-rejoin",
        number: 1,
        title: "kill -9 of fogd at each step of the rejoin of a former primary",
        quick: true,
    },
    Scenario {
        key: "crash-create",
        number: 1,
        title: "kill -9 of fogd at each step of a group create",
        quick: true,
    },
    Scenario {
        key: "crash-delete",
        number: 1,
        title: "kill -9 of fogd at each step of a group delete",
        quick: true,
    },
    Scenario {
        key: "crash-update",
        number: 1,
        title: "kill -9 of fogd at each step of a group update",
        quick: false,
    },
    Scenario {
        key: "pg-kill-primary",
        number: 2,
        title: "kill -9 of the primary's postmaster",
        quick: true,
    },
    Scenario {
        key: "pg-kill-secondary",
        number: 2,
        title: "kill -9 of the secondary's postmaster",
        quick: true,
    },
    Scenario {
        key: "sigstop-primary",
        number: 3,
        title: "SIGSTOP/SIGCONT of the primary server",
        quick: true,
    },
    Scenario {
        key: "sigstop-secondary",
        number: 3,
        title: "SIGSTOP/SIGCONT of the secondary server",
        quick: false,
    },
    Scenario {
        key: "sigstop-fogd",
        number: 3,
        title: "SIGSTOP/SIGCONT of fogd",
        quick: true,
    },
    Scenario {
        key: "sigstop-primary-auto",
        number: 3,
        title: "SIGSTOP of the primary beyond an Automatic grace period",
        quick: false,
    },
    Scenario {
        key: "forced-under-load",
        number: 4,
        title: "forced failover under write load",
        quick: true,
    },
    Scenario {
        key: "planned-under-load",
        number: 4,
        title: "planned failover under write load",
        quick: true,
    },
    Scenario {
        key: "automatic-host-gone",
        number: 4,
        title: "automatic failover, the primary's host gone",
        quick: true,
    },
    Scenario {
        key: "conflict-failover",
        number: 5,
        title: "50 concurrent planned failovers",
        quick: true,
    },
    Scenario {
        key: "conflict-forced",
        number: 5,
        title: "50 concurrent forced failovers",
        quick: false,
    },
    Scenario {
        key: "conflict-update",
        number: 5,
        title: "50 concurrent group updates",
        quick: true,
    },
    Scenario {
        key: "conflict-delete",
        number: 5,
        title: "50 concurrent group deletes",
        quick: false,
    },
    Scenario {
        key: "conflict-db-create",
        number: 5,
        title: "50 concurrent creates of one database",
        quick: true,
    },
    Scenario {
        key: "slow-clients",
        number: 6,
        title: "40 slow clients (one byte a second)",
        quick: true,
    },
    Scenario {
        key: "connection-flood",
        number: 6,
        title: "500 half-open TCP/TLS connections",
        quick: true,
    },
    Scenario {
        key: "disk-full",
        number: 7,
        title: "the secondary's disk full (a small loop-mounted file system), then space again",
        quick: false,
    },
    Scenario {
        key: "slot-overflow",
        number: 7,
        title: "secondary frozen until its slot passes max_slot_wal_keep_size",
        quick: false,
    },
];

/// The steps of the group operations, from the orchestrator itself (they double as
/// failpoint names).
pub fn steps(key: &str) -> Vec<&'static str> {
    // Built from JSON (the stored form), so that fields the orchestrator adds with defaults
    // do not break the campaign.
    let action = match key {
        "crash-planned" => json!({"type": "FailoverGroup", "name": GROUP, "planned": true}),
        "crash-forced" => json!({"type": "FailoverGroup", "name": GROUP, "planned": false}),
        "crash-rejoin" => json!({"type": "RejoinGroup", "name": GROUP}),
        "crash-create" => json!({"type": "CreateFailoverGroup", "name": GROUP}),
        "crash-delete" => json!({"type": "DeleteFailoverGroup", "name": GROUP}),
        "crash-update" => json!({"type": "UpdateFailoverGroup", "name": GROUP, "policies": {
            "read_write": "Manual", "grace_period_minutes": null,
            "read_only": "Disabled", "secondary_type": "Geo"}}),
        _ => return Vec::new(),
    };
    match serde_json::from_value::<Action>(action) {
        Ok(a) => fog_orchestrator::steps::step_names(&a).to_vec(),
        Err(e) => {
            eprintln!("cannot name the steps of {key}: {e}");
            Vec::new()
        }
    }
}

/// The steps `--quick` crashes at besides every step of both failovers: the one of each
/// other operation that changes the servers most.
const QUICK_STEPS: &[&str] = &["rejoin.rewind", "create_group.seed", "delete_group.promote"];

/// The cases of a scenario: its steps (crash scenarios) or one unnamed case.
pub fn cases(sc: &Scenario, quick: bool) -> Vec<String> {
    let all = steps(sc.key);
    if all.is_empty() {
        return vec![String::new()];
    }
    let picked: Vec<&str> = if quick {
        let q: Vec<&str> = all
            .iter()
            .copied()
            .filter(|s| s.starts_with("failover.") || QUICK_STEPS.contains(s))
            .collect();
        if q.is_empty() {
            all[..1].to_vec()
        } else {
            q
        }
    } else {
        all
    };
    picked.into_iter().map(str::to_string).collect()
}

pub fn selected(s: &Settings) -> Vec<Scenario> {
    SCENARIOS
        .iter()
        .filter(|sc| {
            if s.only.is_empty() {
                !s.quick || sc.quick
            } else {
                s.only
                    .iter()
                    .any(|o| sc.key == o || sc.key.starts_with(&format!("{o}-")))
            }
        })
        .copied()
        .collect()
}

/// Whether a scenario changes the group's roles (or removes the group).
fn switches(key: &str) -> bool {
    key.starts_with("crash-")
        || matches!(
            key,
            "sigstop-primary-auto"
                | "forced-under-load"
                | "planned-under-load"
                | "automatic-host-gone"
                | "conflict-failover"
                | "conflict-forced"
                | "conflict-delete"
        )
}

/// One trial's result.
#[derive(Debug, Clone)]
pub struct Trial {
    pub scenario: &'static str,
    pub case: String,
    pub failures: Vec<String>,
    pub lost: usize,
    pub lost_ids: Vec<i64>,
    pub reported: usize,
    pub two_primaries: usize,
    pub recover_s: Option<f64>,
    pub acks: usize,
    pub notes: Vec<String>,
    pub evidence: Vec<String>,
    pub secs: f64,
}

/// What a trial function hands back.
#[derive(Debug, Default)]
struct Outcome {
    recover_s: Option<f64>,
    failures: Vec<String>,
    notes: Vec<String>,
    /// A data check the trial made itself (before re-creating a deleted group).
    check: Option<DataCheck>,
}

pub struct Campaign {
    pub s: Settings,
    cluster: Option<Cluster>,
    builds: u32,
    next_id: i64,
    pub trials: Vec<Trial>,
    /// Whether the fogd binary honours `FOGD_FAILPOINTS`.
    failpoints: bool,
    /// Consecutive failed set-ups, and the last one's reason: after two, the remaining
    /// trials fail at once with that reason instead of waiting for more.
    setup_failures: (u32, String),
    failed_setup_log: Option<PathBuf>,
}

/// Whether `bin` was built with the `failpoints` feature: its crash message is compiled in
/// only then.
pub fn has_failpoints(bin: &std::path::Path) -> bool {
    let Ok(bytes) = std::fs::read(bin) else {
        return false;
    };
    let needle = b": crashing";
    bytes.windows(needle.len()).any(|w| w == needle)
}

impl Campaign {
    pub fn new(s: Settings) -> Self {
        let failpoints = has_failpoints(&s.bin);
        Campaign {
            s,
            cluster: None,
            builds: 0,
            next_id: 1,
            trials: Vec::new(),
            failpoints,
            setup_failures: (0, String::new()),
            failed_setup_log: None,
        }
    }

    /// Runs every selected scenario `runs` times.
    pub async fn run(&mut self) {
        let scenarios = selected(&self.s);
        for run in 0..self.s.runs {
            for sc in &scenarios {
                for case in cases(sc, self.s.quick) {
                    self.trial(sc, &case, run).await;
                }
            }
        }
        if let Some(c) = self.cluster.take() {
            c.shutdown().await;
        }
    }

    /// A fresh cluster when there is none (first use, or the last one broke); otherwise
    /// the group is put back the way trials expect it: fogd running, servers thawed and
    /// present, group present with the Manual policy, recovered.
    async fn ready(&mut self) -> Result<()> {
        if self.cluster.is_none() {
            if self.setup_failures.0 >= 2 {
                bail!(
                    "not tried: the group could not be set up twice in a row ({})",
                    self.setup_failures.1
                );
            }
            self.builds += 1;
            let root = self.s.root.join(format!("cluster-{}", self.builds));
            std::fs::create_dir_all(&root).context("cluster directory")?;
            let t = Instant::now();
            let c = Cluster::build(
                &self.s.bin,
                &root,
                &self.s.pg_bin_dir,
                &self.s.user,
                self.next_id,
            )
            .await
            .context("set up fogd, two instances and the group");
            let c = match c {
                Ok(c) => {
                    self.setup_failures = (0, String::new());
                    c
                }
                Err(e) => {
                    self.setup_failures.0 += 1;
                    self.setup_failures.1 = super::fogd::shorten(&format!("{e:#}"), 300);
                    // Its fogd was stopped when the set-up gave up; keep its log for the report.
                    self.failed_setup_log = Some(root.join("fogd.log"));
                    return Err(e);
                }
            };
            eprintln!(
                "cluster {} ready in {:.1} s ({})",
                self.builds,
                t.elapsed().as_secs_f64(),
                root.display()
            );
            self.cluster = Some(c);
        }
        let bound = self.s.bound;
        let cl = self.cluster.as_mut().ok_or_else(|| anyhow!("no cluster"))?;
        for i in 0..2 {
            cl.host_back(i)?;
            signal_server(&cl.members[i].dir, Signal::SIGCONT);
        }
        if cl.fogd.pid().is_some() {
            let _ = cl.fogd.signal(Signal::SIGCONT);
        }
        if !cl.fogd.running() {
            cl.fogd.launch(&[]).await?;
        }
        if !cl.grouped {
            cl.workload().arm(false);
            cl.clear_secondary().await?;
            cl.create_group(None).await?;
            cl.wait_recovered(bound, &[]).await?;
            cl.workload().arm(true);
        }
        cl.wait_recovered(bound, &[]).await?;
        let g = cl.fogd.get(&cl.group_url(cl.primary, "")).await?;
        if g["properties"]["readWriteEndpoint"]["failoverPolicy"] != "Manual" {
            cl.set_policy(json!({"failoverPolicy": "Manual"})).await?;
        }
        cl.workload().arm(true);
        cl.workload().settle(true);
        Ok(())
    }

    async fn trial(&mut self, sc: &Scenario, case: &str, run: usize) {
        let started = Instant::now();
        let t0 = now();
        let label = if case.is_empty() {
            sc.key.to_string()
        } else {
            format!("{} {case}", sc.key)
        };
        eprintln!("--- {label} (run {})", run + 1);
        let mut trial = Trial {
            scenario: sc.key,
            case: case.to_string(),
            failures: Vec::new(),
            lost: 0,
            lost_ids: Vec::new(),
            reported: 0,
            two_primaries: 0,
            recover_s: None,
            acks: 0,
            notes: Vec::new(),
            evidence: Vec::new(),
            secs: 0.0,
        };
        if sc.key.starts_with("crash-") && !self.failpoints {
            trial.failures.push(format!(
                "{} was built without the `failpoints` feature: build with \
                 `cargo build --release -p fogd -p fog-bench`",
                self.s.bin.display()
            ));
            self.finish(trial, started);
            return;
        }
        if let Err(e) = self.ready().await {
            trial
                .failures
                .push(format!("could not prepare the group: {e:#}"));
            if let Some(c) = self.cluster.take() {
                trial.evidence = c.fogd.log_excerpt(0, 12);
                c.shutdown().await;
            } else if let Some(log) = self.failed_setup_log.take() {
                trial.evidence = super::fogd::excerpt(&log, 0, 12);
            }
            self.finish(trial, started);
            return;
        }
        let s = self.s.clone();
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let log_from = cl.fogd.log_len();
        let acks_before = cl.workload().ack_count();
        let reads_before = cl.workload().window(t0, t0);
        // While roles may change, the read-write probe holds its judgement until the
        // switch completed; in the other scenarios the primary never changes, so the
        // listener must reach it throughout.
        cl.workload().settle(!switches(sc.key));
        let result = match sc.key {
            "crash-planned" => crash_failover(cl, &s, true, case).await,
            "crash-forced" => crash_failover(cl, &s, false, case).await,
            "crash-rejoin" => crash_rejoin(cl, &s, case).await,
            "crash-create" => crash_create(cl, &s, case).await,
            "crash-delete" => crash_delete(cl, &s, case).await,
            "crash-update" => crash_update(cl, &s, case).await,
            "pg-kill-primary" => pg_kill(cl, &s, true).await,
            "pg-kill-secondary" => pg_kill(cl, &s, false).await,
            "sigstop-primary" => sigstop_server(cl, &s, true).await,
            "sigstop-secondary" => sigstop_server(cl, &s, false).await,
            "sigstop-fogd" => sigstop_fogd(cl, &s).await,
            "sigstop-primary-auto" => sigstop_primary_auto(cl, &s).await,
            "forced-under-load" => failover_under_load(cl, &s, false).await,
            "planned-under-load" => failover_under_load(cl, &s, true).await,
            "automatic-host-gone" => automatic_host_gone(cl, &s).await,
            "conflict-failover" => conflict(cl, &s, Conflict::Failover).await,
            "conflict-forced" => conflict(cl, &s, Conflict::Forced).await,
            "conflict-update" => conflict(cl, &s, Conflict::Update).await,
            "conflict-delete" => conflict(cl, &s, Conflict::Delete).await,
            "conflict-db-create" => conflict(cl, &s, Conflict::DbCreate).await,
            "slow-clients" => api_attack(cl, &s, true).await,
            "connection-flood" => api_attack(cl, &s, false).await,
            "slot-overflow" => slot_overflow(cl, &s).await,
            "disk-full" => disk_full(cl, &s).await,
            other => Err(anyhow!("unknown scenario {other}")),
        };
        let mut broken = false;
        let mut own_check: Option<DataCheck> = None;
        match result {
            Ok(o) => {
                trial.recover_s = o.recover_s;
                trial.failures.extend(o.failures);
                trial.notes.extend(o.notes);
                if let Some(d) = o.check {
                    own_check = Some(d);
                }
            }
            Err(e) => {
                trial.failures.push(format!("{e:#}"));
                // Whatever went wrong, give fogd the same bound once more to recover by
                // itself before judging the data; a group that does not is rebuilt.
                for i in 0..2 {
                    let _ = cl.host_back(i);
                    signal_server(&cl.members[i].dir, Signal::SIGCONT);
                }
                if !cl.fogd.running() {
                    cl.fogd.kill9();
                    if let Err(e) = cl.fogd.launch(&[]).await {
                        trial.failures.push(format!("fogd does not start: {e:#}"));
                    }
                }
                if cl.grouped {
                    if let Err(e) = cl.wait_recovered(s.bound, &[]).await {
                        trial.notes.push(format!("still not recovered: {e:#}"));
                        broken = true;
                    }
                }
            }
        }
        let upto = now();
        let check = cl.check_data(upto).await.map(|mut d| {
            if let Some(o) = own_check.take() {
                d.lost.extend(o.lost);
                d.reported += o.reported;
                d.notes.extend(o.notes);
            }
            d
        });
        match check {
            Ok(d) => {
                trial.lost = d.lost.len();
                trial.lost_ids = d.lost.iter().take(10).copied().collect();
                trial.reported = d.reported;
                if !d.lost.is_empty() {
                    trial.failures.push(format!(
                        "{} acknowledged writes lost outside any reported loss (ids {:?}…)",
                        d.lost.len(),
                        trial.lost_ids
                    ));
                }
                trial.notes.extend(d.notes);
            }
            Err(e) => {
                trial
                    .failures
                    .push(format!("could not check the data: {e:#}"));
                broken = true;
            }
        }
        let w = cl.workload().window(t0, now());
        trial.acks = cl.workload().ack_count().saturating_sub(acks_before);
        trial.two_primaries = w.two_primaries.len();
        trial.notes.push(format!(
            "checker: {} reads through the read-only listener ({} failed), {} monitor answers \
             from {} and {} from {}, {} read-write probes",
            w.reads_ok.saturating_sub(reads_before.reads_ok),
            w.read_errors.saturating_sub(reads_before.read_errors),
            w.samples[0],
            cl.members[0].name,
            w.samples[1],
            cl.members[1].name,
            w.probes
        ));
        if let Some(first) = w.two_primaries.first() {
            let longest = w
                .two_primaries
                .iter()
                .map(|o| (o.to - o.from) * 1000.0)
                .fold(0.0, f64::max);
            trial.failures.push(format!(
                "{} two-primary moments (both servers answered pg_is_in_recovery() = false), \
                 first {:.3} s into the trial, longest {longest:.0} ms",
                w.two_primaries.len(),
                first.from - t0
            ));
        }
        if let Some(v) = w.violations.first() {
            trial.failures.push(format!(
                "the read-write listener reached a server in recovery (port {}) {} times \
                 after the group had settled, first {:.3} s into the trial",
                v.port,
                w.violations.len(),
                v.t - t0
            ));
        }
        if !trial.failures.is_empty() {
            trial.evidence = cl.fogd.log_excerpt(log_from, 14);
        }
        cl.workload().settle(true);
        cl.workload().forget_samples(now() - 5.0);
        self.next_id = i64::try_from(cl.workload().ack_count()).unwrap_or(0) + 1;
        // A failed trial may leave damage behind that would fail the next ones for the same
        // reason; every trial after a failure starts on a fresh cluster.
        if broken || cl.dispose || !trial.failures.is_empty() {
            if let Some(c) = self.cluster.take() {
                // Ids go on from where the writer is, so a new cluster never reuses one.
                let last = c.workload().acks().last().map_or(0, |a| a.id);
                self.next_id = self.next_id.max(last + 1_000_000);
                c.shutdown().await;
            }
        }
        self.finish(trial, started);
    }

    fn finish(&mut self, mut trial: Trial, started: Instant) {
        trial.secs = started.elapsed().as_secs_f64();
        let verdict = if trial.failures.is_empty() {
            "ok".to_string()
        } else {
            format!("FAILED: {}", trial.failures.join("; "))
        };
        eprintln!(
            "    {verdict} | recovered {} | acks {} lost {} reported {} two-primary {} | {:.1} s{}",
            trial
                .recover_s
                .map_or("–".to_string(), |r| format!("in {r:.1} s")),
            trial.acks,
            trial.lost,
            trial.reported,
            trial.two_primaries,
            trial.secs,
            if trial.notes.is_empty() {
                String::new()
            } else {
                format!("\n    notes: {}", trial.notes.join("; "))
            }
        );
        for l in &trial.evidence {
            eprintln!("      | {l}");
        }
        self.trials.push(trial);
    }

    /// Trials grouped by scenario, in scenario order.
    pub fn by_scenario(&self) -> BTreeMap<usize, (Scenario, Vec<&Trial>)> {
        let mut out = BTreeMap::new();
        for (i, sc) in SCENARIOS.iter().enumerate() {
            let ts: Vec<&Trial> = self
                .trials
                .iter()
                .filter(|t| t.scenario == sc.key)
                .collect();
            if !ts.is_empty() {
                out.insert(i, (*sc, ts));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Scenario 1: kill -9 of fogd at every step.

/// Restarts fogd so that it crashes when `step` is about to run.
async fn arm_failpoint(cl: &mut Cluster, step: &str) -> Result<()> {
    cl.fogd.kill9();
    cl.fogd
        .launch(&[("FOGD_FAILPOINTS", &format!("{step}=crash"))])
        .await
}

/// A request sent to a fogd armed to crash: when fogd died before its answer arrived
/// (the step ran at once), `Ok(None)` and a note; other errors stay errors.
async fn accepted<T>(cl: &mut Cluster, r: Result<T>, out: &mut Outcome) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            if cl.fogd.wait_exit(Duration::from_secs(2)).await?.is_some() {
                out.notes.push(format!(
                    "fogd crashed before its answer reached the client ({})",
                    super::fogd::shorten(&format!("{e:#}"), 80)
                ));
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Waits for fogd to crash at `step`, then starts it again (as a supervisor would).
/// Returns when it crashed.
async fn crashed(cl: &mut Cluster, step: &str, out: &mut Outcome) -> Result<f64> {
    match cl.fogd.wait_exit(Duration::from_secs(90)).await? {
        Some(st) if st.success() => out
            .failures
            .push(format!("fogd exited cleanly instead of crashing at {step}")),
        Some(_) => {}
        None => {
            out.failures.push(format!(
                "failpoint {step} never fired within 90 s (the step was not reached)"
            ));
            cl.fogd.kill9();
        }
    }
    let t = now();
    cl.fogd
        .launch(&[])
        .await
        .context("start fogd after the crash")?;
    Ok(t)
}

/// The final status of an operation, as "Succeeded" or "Failed (Code: message)".
async fn op_status(cl: &Cluster, op: &str) -> String {
    match cl.fogd.get(op).await {
        Ok(v) => {
            let st = v["status"].as_str().unwrap_or("?").to_string();
            match v["error"]["code"].as_str() {
                Some(c) => format!(
                    "{st} ({c}: {})",
                    v["error"]["message"].as_str().unwrap_or("")
                ),
                None => st,
            }
        }
        Err(e) => format!("unknown ({e:#})"),
    }
}

async fn crash_failover(
    cl: &mut Cluster,
    s: &Settings,
    planned: bool,
    step: &str,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    arm_failpoint(cl, step).await?;
    cl.wait_recovered(s.bound, &[])
        .await
        .context("after restarting fogd with the failpoint")?;
    let from = cl.members[cl.primary].name;
    let op = cl
        .request_failover(if planned {
            "failover"
        } else {
            "forceFailoverAllowDataLoss"
        })
        .await?;
    let t = crashed(cl, step, &mut out).await?;
    cl.wait_recovered(s.bound, std::slice::from_ref(&op))
        .await?;
    out.recover_s = Some(now() - t);
    let st = op_status(cl, &op).await;
    if !st.starts_with("Succeeded") {
        out.failures
            .push(format!("the failover did not survive the crash: {st}"));
    }
    out.notes.push(format!(
        "{step}: {st}, {from} → {}",
        cl.members[cl.primary].name
    ));
    Ok(out)
}

async fn crash_rejoin(cl: &mut Cluster, s: &Settings, step: &str) -> Result<Outcome> {
    let mut out = Outcome::default();
    let p = cl.primary;
    // The primary's host disappears; a forced failover cannot re-attach it.
    cl.kill9_server(p)?;
    cl.host_away(p)?;
    let op = cl.request_failover("forceFailoverAllowDataLoss").await;
    let op = match op {
        Ok(op) => op,
        Err(e) => {
            cl.host_back(p)?;
            return Err(e);
        }
    };
    let st = cl.fogd.wait_operation(&op, s.bound).await;
    if let Err(e) = st {
        cl.host_back(p)?;
        return Err(e.context("forced failover with the primary's host gone"));
    }
    cl.workload().settle(true);
    // fogd dies (servers keep running); the host comes back; fogd restarts and crashes at
    // `step` of the rejoin it starts.
    cl.fogd.kill9();
    cl.host_back(p)?;
    cl.workload().settle(false);
    cl.fogd
        .launch(&[("FOGD_FAILPOINTS", &format!("{step}=crash"))])
        .await?;
    let t = crashed(cl, step, &mut out).await?;
    cl.wait_recovered(s.bound, &[]).await?;
    out.recover_s = Some(now() - t);
    Ok(out)
}

async fn crash_create(cl: &mut Cluster, s: &Settings, step: &str) -> Result<Outcome> {
    let mut out = Outcome::default();
    cl.delete_group().await.context("delete the group first")?;
    arm_failpoint(cl, step).await?;
    let mut op = None;
    let r = cl.create_group(Some(&mut op)).await;
    let sent = accepted(cl, r, &mut out).await?;
    let t = crashed(cl, step, &mut out).await?;
    if sent.is_none() {
        // Whether the create was recorded before the crash decides what converged means.
        let r = cl
            .fogd
            .send(Method::GET, &cl.group_url(cl.primary, ""), None)
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            cl.grouped = false;
            out.notes
                .push(format!("{step}: the create was not recorded"));
            return Ok(out);
        }
    }
    let Some(op) = op else {
        cl.read_listeners().await?;
        cl.wait_recovered(s.bound, &[]).await?;
        out.recover_s = Some(now() - t);
        cl.workload().arm(true);
        return Ok(out);
    };
    let st = cl.fogd.wait_operation(&op, s.bound).await?;
    if st["status"] != "Succeeded" {
        bail!("the create did not survive the crash: {st}");
    }
    cl.read_listeners().await?;
    cl.wait_recovered(s.bound, &[]).await?;
    out.recover_s = Some(now() - t);
    cl.workload().arm(true);
    out.notes
        .push(format!("{step}: {}", op_status(cl, &op).await));
    smoke_failover(cl, s, &mut out, "after the group was created again").await?;
    Ok(out)
}

/// A planned failover must work on a group that was just (re-)created.
async fn smoke_failover(
    cl: &mut Cluster,
    s: &Settings,
    out: &mut Outcome,
    when: &str,
) -> Result<()> {
    let op = cl.request_failover("failover").await?;
    let st = cl.fogd.wait_operation(&op, s.bound).await?;
    if st["status"] != "Succeeded" {
        out.failures.push(format!(
            "a planned failover {when} failed: {}: {}",
            st["error"]["code"].as_str().unwrap_or("?"),
            st["error"]["message"].as_str().unwrap_or("?")
        ));
    }
    cl.wait_recovered(s.bound, &[]).await?;
    Ok(())
}

/// After a delete: the data check (the former primary keeps every acknowledged write),
/// then the group is created again and must fail over.
async fn recreate(cl: &mut Cluster, s: &Settings, out: &mut Outcome) -> Result<()> {
    out.check = Some(cl.check_data(now()).await?);
    cl.clear_secondary().await?;
    cl.create_group(None).await?;
    cl.wait_recovered(s.bound, &[]).await?;
    cl.workload().arm(true);
    smoke_failover(cl, s, out, "after the group was deleted and created again").await
}

/// Waits until the group is gone at both locations and both servers are writable.
async fn wait_deleted(cl: &Cluster, bound: Duration, op: Option<&str>) -> Result<()> {
    let deadline = Instant::now() + bound;
    loop {
        let mut done = true;
        if let Some(op) = op {
            done &= matches!(cl.fogd.get(op).await, Ok(v) if v["status"] != "InProgress");
        }
        for i in 0..2 {
            let r = cl.fogd.send(Method::GET, &cl.group_url(i, ""), None).await;
            done &= matches!(r, Ok(r) if r.status == StatusCode::NOT_FOUND);
            let writable = async {
                let c = super::workload::connect(
                    &cl.members[i].addr,
                    "postgres",
                    Duration::from_secs(2),
                )
                .await?;
                let r = c.query_one("SELECT pg_is_in_recovery()", &[]).await?;
                anyhow::Ok(!r.get::<_, bool>(0))
            };
            done &= matches!(writable.await, Ok(true));
        }
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the group is not gone (or a member not writable) within {} s",
                bound.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn crash_delete(cl: &mut Cluster, s: &Settings, step: &str) -> Result<Outcome> {
    let mut out = Outcome::default();
    arm_failpoint(cl, step).await?;
    cl.wait_recovered(s.bound, &[]).await?;
    cl.workload().arm(false);
    let r = cl
        .fogd
        .send(Method::DELETE, &cl.group_url(cl.primary, ""), None)
        .await;
    let mut op = match accepted(cl, r, &mut out).await? {
        Some(r) if !r.status.is_success() => bail!("delete the group: {} {}", r.status, r.body),
        Some(r) => r.operation(),
        None => None,
    };
    let t = crashed(cl, step, &mut out).await?;
    if op.is_none() {
        // Not knowing whether the delete was recorded, ask for it again: 202 (it was not),
        // 409 (it is running) or 404 (it is done).
        let r = cl
            .fogd
            .send(Method::DELETE, &cl.group_url(cl.primary, ""), None)
            .await?;
        if r.status.is_success() {
            op = r.operation();
        }
    }
    wait_deleted(cl, s.bound, op.as_deref()).await?;
    out.recover_s = Some(now() - t);
    cl.grouped = false;
    if let Some(op) = &op {
        let st = op_status(cl, op).await;
        if !st.starts_with("Succeeded") {
            out.failures
                .push(format!("the delete did not survive the crash: {st}"));
        }
        out.notes.push(format!("{step}: {st}"));
    }
    recreate(cl, s, &mut out).await?;
    Ok(out)
}

async fn crash_update(cl: &mut Cluster, s: &Settings, step: &str) -> Result<Outcome> {
    let mut out = Outcome::default();
    arm_failpoint(cl, step).await?;
    cl.wait_recovered(s.bound, &[]).await?;
    let body = cl.group_body(json!({"failoverPolicy": "Manual"}));
    let r = cl
        .fogd
        .send(Method::PUT, &cl.group_url(cl.primary, ""), Some(&body))
        .await;
    let op = match accepted(cl, r, &mut out).await? {
        Some(r) if !r.status.is_success() => bail!("update the group: {} {}", r.status, r.body),
        Some(r) => r.operation(),
        None => None,
    };
    let t = crashed(cl, step, &mut out).await?;
    let ops: Vec<String> = op.iter().cloned().collect();
    cl.wait_recovered(s.bound, &ops).await?;
    out.recover_s = Some(now() - t);
    if let Some(op) = &op {
        let st = op_status(cl, op).await;
        if !st.starts_with("Succeeded") {
            out.failures
                .push(format!("the update did not survive the crash: {st}"));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Scenario 2: kill -9 of a postmaster.

async fn pg_kill(cl: &mut Cluster, s: &Settings, primary: bool) -> Result<Outcome> {
    let i = if primary { cl.primary } else { cl.secondary() };
    let pid = cl.kill9_server(i)?;
    let t = now();
    cl.wait_recovered(s.bound, &[]).await?;
    Ok(Outcome {
        recover_s: Some(now() - t),
        notes: vec![format!(
            "killed {} (pid {pid}); fogd had it running again",
            cl.members[i].name
        )],
        ..Outcome::default()
    })
}

// ---------------------------------------------------------------------------------------
// Scenario 3: SIGSTOP / SIGCONT.

fn freeze_secs(s: &Settings) -> u64 {
    if s.quick {
        4
    } else {
        8
    }
}

async fn sigstop_server(cl: &mut Cluster, s: &Settings, primary: bool) -> Result<Outcome> {
    let i = if primary { cl.primary } else { cl.secondary() };
    let dir = cl.members[i].dir.clone();
    let n = signal_server(&dir, Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(freeze_secs(s))).await;
    signal_server(&dir, Signal::SIGCONT);
    let t = now();
    if n == 0 {
        bail!("no process of {} to freeze", cl.members[i].name);
    }
    cl.wait_recovered(s.bound, &[]).await?;
    Ok(Outcome {
        recover_s: Some(now() - t),
        notes: vec![format!(
            "{} processes of {} frozen for {} s",
            n,
            cl.members[i].name,
            freeze_secs(s)
        )],
        ..Outcome::default()
    })
}

async fn sigstop_fogd(cl: &mut Cluster, s: &Settings) -> Result<Outcome> {
    cl.fogd.signal(Signal::SIGSTOP)?;
    tokio::time::sleep(Duration::from_secs(freeze_secs(s))).await;
    cl.fogd.signal(Signal::SIGCONT)?;
    let t = now();
    cl.wait_recovered(s.bound, &[]).await?;
    Ok(Outcome {
        recover_s: Some(now() - t),
        ..Outcome::default()
    })
}

/// The primary freezes for longer than an Automatic policy's grace period: fogd fails
/// over; when the old primary thaws it must never be written to through the listener, and
/// it must come back as the secondary.
async fn sigstop_primary_auto(cl: &mut Cluster, s: &Settings) -> Result<Outcome> {
    cl.set_policy(json!({"failoverPolicy": "Automatic",
                         "failoverWithDataLossGracePeriodMinutes": 2}))
        .await?;
    cl.wait_recovered(s.bound, &[]).await?;
    cl.workload().settle(false);
    let (p, sec) = (cl.primary, cl.secondary());
    let dir = cl.members[p].dir.clone();
    let t_stop = now();
    signal_server(&dir, Signal::SIGSTOP);
    let failed_over = until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            (cl.recorded_primary().await == Some(sec) && cl.writes_on(sec, t_stop)).then_some(())
        },
    )
    .await;
    signal_server(&dir, Signal::SIGCONT);
    let t = now();
    let mut out = Outcome::default();
    if failed_over.is_none() {
        out.failures
            .push("no automatic failover while the primary was frozen (30 s)".into());
    }
    cl.wait_recovered(s.bound, &[]).await?;
    out.recover_s = Some(now() - t);
    out.notes.push(format!(
        "writes on {} {:.1} s after the freeze",
        cl.members[sec].name,
        t - t_stop
    ));
    cl.set_policy(json!({"failoverPolicy": "Manual"})).await?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Scenario 4: failovers under load, automatic failover.

/// A failover while two extra sessions write 200-row transactions. For the forced one the
/// secondary's WAL receiver is frozen for the last second before the request (and half a
/// second after it), so the secondary lags and the failover has something to lose — which
/// fogd must report.
async fn failover_under_load(cl: &mut Cluster, s: &Settings, planned: bool) -> Result<Outcome> {
    let mut out = Outcome::default();
    let load = Load::start(cl.rw.clone(), 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let receiver = if planned {
        None
    } else {
        walreceiver_pid(&cl.members[cl.secondary()].dir)
    };
    let freeze = |sig| {
        if let Some(pid) = receiver {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    };
    if receiver.is_some() {
        freeze(Signal::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let t = now();
    let op = cl
        .request_failover(if planned {
            "failover"
        } else {
            "forceFailoverAllowDataLoss"
        })
        .await;
    if receiver.is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        freeze(Signal::SIGCONT);
    }
    let op = match op {
        Ok(op) => op,
        Err(e) => {
            load.stop().await;
            return Err(e);
        }
    };
    let st = cl.fogd.wait_operation(&op, s.bound).await;
    let done = now();
    if matches!(&st, Ok(v) if v["status"] == "Succeeded") {
        cl.workload().settle(true);
    }
    // Keep writing a little on the new primary.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let txs = load.stop().await;
    let st = st?;
    if st["status"] != "Succeeded" {
        bail!("the failover ended {st}");
    }
    cl.wait_recovered(s.bound, &[]).await?;
    out.recover_s = Some(now() - done);
    let g = cl.fogd.get(&cl.group_url(cl.primary, "")).await?;
    let last = &g["properties"]["lastFailover"];
    let lost_bytes = last["dataLoss"]["bytes"].as_u64().unwrap_or(0);
    out.notes.push(format!(
        "operation {:.2} s; {txs} load transactions of 200 rows{}; lastFailover.dataLoss {} bytes; old primary {}",
        done - t,
        match (planned, receiver) {
            (true, _) => "",
            (false, Some(_)) => "; the secondary's WAL receiver frozen 1 s before the request",
            (false, None) => "; no WAL receiver found to freeze",
        },
        lost_bytes,
        last["oldPrimary"].as_str().unwrap_or("?")
    ));
    if planned && lost_bytes > 0 {
        out.failures.push(format!(
            "a planned failover reported {lost_bytes} bytes lost"
        ));
    }
    Ok(out)
}

async fn automatic_host_gone(cl: &mut Cluster, s: &Settings) -> Result<Outcome> {
    let mut out = Outcome::default();
    cl.set_policy(json!({"failoverPolicy": "Automatic",
                         "failoverWithDataLossGracePeriodMinutes": 2}))
        .await?;
    cl.wait_recovered(s.bound, &[]).await?;
    cl.workload().settle(false);
    let (p, sec) = (cl.primary, cl.secondary());
    cl.kill9_server(p)?;
    cl.host_away(p)?;
    let t_kill = now();
    let failed_over = until(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            (cl.recorded_primary().await == Some(sec) && cl.writes_on(sec, t_kill)).then(now)
        },
    )
    .await;
    let Some(t_writes) = failed_over else {
        cl.host_back(p)?;
        bail!("no automatic failover within 60 s of the primary's host going away (grace 2 s)");
    };
    cl.workload().settle(true);
    // The host stays away a little, then comes back; fogd must re-attach it by itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cl.workload().settle(false);
    cl.host_back(p)?;
    let t_back = now();
    cl.wait_recovered(s.bound, &[]).await?;
    out.recover_s = Some(t_writes - t_kill);
    let g = cl.fogd.get(&cl.group_url(cl.primary, "")).await?;
    let last = &g["properties"]["lastFailover"];
    if !last["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("automatic"))
    {
        out.failures
            .push(format!("lastFailover is not an automatic failover: {last}"));
    }
    out.notes.push(format!(
        "writes on {} {:.1} s after the kill (grace 2 s); {} re-attached {:.1} s after its host came back ({}); dataLoss {} bytes",
        cl.members[sec].name,
        t_writes - t_kill,
        cl.members[p].name,
        now() - t_back,
        last["oldPrimary"].as_str().unwrap_or("?"),
        last["dataLoss"]["bytes"].as_u64().unwrap_or(0)
    ));
    cl.set_policy(json!({"failoverPolicy": "Manual"})).await?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Scenario 5: 50 concurrent conflicting requests.

#[derive(Debug, Clone, Copy)]
enum Conflict {
    Failover,
    Forced,
    Update,
    Delete,
    DbCreate,
}

const CONCURRENT: usize = 50;

/// RFC 3339 UTC (`…Z`, any fraction) → seconds since the epoch.
pub fn rfc3339_secs(ts: &str) -> Option<f64> {
    let body = ts.strip_suffix('Z').or_else(|| ts.strip_suffix("+00:00"))?;
    let n = |r: std::ops::Range<usize>| body.get(r).and_then(|x| x.parse::<i64>().ok());
    let days = crate::days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?);
    let secs = days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?;
    let frac = body.get(20..).unwrap_or("");
    let frac = if frac.is_empty() {
        0.0
    } else {
        frac.parse::<f64>().ok()? / 10f64.powi(i32::try_from(frac.len()).ok()?)
    };
    Some(secs as f64 + frac)
}

async fn conflict(cl: &mut Cluster, s: &Settings, kind: Conflict) -> Result<Outcome> {
    let mut out = Outcome::default();
    let (method, url, body): (Method, String, Option<Value>) = match kind {
        Conflict::Failover => (
            Method::POST,
            cl.group_url(cl.secondary(), "/failover"),
            None,
        ),
        Conflict::Forced => (
            Method::POST,
            cl.group_url(cl.secondary(), "/forceFailoverAllowDataLoss"),
            None,
        ),
        Conflict::Update => (
            Method::PUT,
            cl.group_url(cl.primary, ""),
            Some(cl.group_body(json!({"failoverPolicy": "Manual"}))),
        ),
        Conflict::Delete => (Method::DELETE, cl.group_url(cl.primary, ""), None),
        Conflict::DbCreate => (
            Method::PUT,
            cl.database_url(cl.primary, "conc"),
            Some(json!({})),
        ),
    };
    if matches!(kind, Conflict::Delete) {
        cl.workload().arm(false);
    }
    let client = cl.fogd.client.clone();
    let (base, token) = (cl.fogd.url.clone(), cl.fogd.token.clone());
    // Warm one pooled connection per request, so that they all go out at once.
    let warm: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (client, base, token, path) = (
                client.clone(),
                base.clone(),
                token.clone(),
                cl.group_url(0, ""),
            );
            tokio::spawn(async move {
                send_with(&client, &base, &token, Method::GET, &path, None).await
            })
        })
        .collect();
    for w in warm {
        let _ = w.await;
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(CONCURRENT));
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (client, base, token, url, body, method, barrier) = (
                client.clone(),
                base.clone(),
                token.clone(),
                url.clone(),
                body.clone(),
                method.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                let r = send_with(&client, &base, &token, method, &url, body.as_ref()).await;
                (r, now())
            })
        })
        .collect();
    let mut replies: Vec<(Result<Reply>, f64)> = Vec::new();
    for t in tasks {
        replies.push(t.await.context("request task")?);
    }
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut transport = 0;
    // Each winner's operation, as fogd ran it: [startTime, endTime].
    let mut runs: Vec<(f64, f64, String)> = Vec::new();
    let mut winner_op = None;
    for (r, _) in &replies {
        let Ok(r) = r else {
            transport += 1;
            continue;
        };
        let key = if r.status.is_success() {
            r.status.as_u16().to_string()
        } else {
            format!("{} {}", r.status.as_u16(), r.code())
        };
        *by_status.entry(key).or_default() += 1;
        if !r.status.is_success() {
            continue;
        }
        let Some(op) = r.operation() else {
            runs.push((
                f64::NEG_INFINITY,
                f64::INFINITY,
                "an answer without an operation".into(),
            ));
            continue;
        };
        let st = cl.fogd.wait_operation(&op, s.bound).await?;
        let at = |k: &str| st[k].as_str().and_then(rfc3339_secs);
        runs.push((
            at("startTime").unwrap_or(f64::NEG_INFINITY),
            at("endTime").unwrap_or(f64::INFINITY),
            format!("operation {}", st["status"]),
        ));
        winner_op.get_or_insert(op);
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Two winners are a conflict only if their operations overlapped; a request that
    // arrived after the first operation ended may win in turn (a second update).
    let overlapping = runs.windows(2).filter(|w| w[1].0 < w[0].1).count();
    let first_end = runs.first().map_or(f64::INFINITY, |r| r.1);
    let server_errors: usize = replies
        .iter()
        .filter(|(r, _)| matches!(r, Ok(r) if r.status.is_server_error()))
        .count();
    // Losers answered before the winner's operation ended must be 409s.
    let other_refusals: Vec<String> = replies
        .iter()
        .filter_map(|(r, recv)| match r {
            Ok(r)
                if *recv < first_end
                    && r.status.is_client_error()
                    && r.status != StatusCode::CONFLICT =>
            {
                Some(format!("{} {}", r.status.as_u16(), r.code()))
            }
            _ => None,
        })
        .collect();
    out.notes.push(format!(
        "{CONCURRENT} requests: {}; winners' {}",
        by_status
            .iter()
            .map(|(k, v)| format!("{v} × {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        runs.iter()
            .map(|r| r.2.clone())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if runs.is_empty() {
        out.failures.push("no request won".into());
    }
    if overlapping > 0 {
        out.failures.push(format!(
            "{} winners' operations ran at the same time as another's (want exactly one at a time)",
            overlapping + 1
        ));
    }
    if server_errors > 0 {
        out.failures
            .push(format!("{server_errors} answers were 5xx"));
    }
    if transport > 0 {
        out.failures
            .push(format!("{transport} requests got no HTTP answer"));
    }
    if !other_refusals.is_empty() {
        out.failures.push(format!(
            "{} losers answered while the winner ran were refused with something other than 409: {:?}",
            other_refusals.len(),
            &other_refusals[..other_refusals.len().min(3)]
        ));
    }
    let t = now();
    match kind {
        Conflict::Delete => {
            wait_deleted(cl, s.bound, winner_op.as_deref()).await?;
            cl.grouped = false;
            out.recover_s = Some(now() - t);
            recreate(cl, s, &mut out).await?;
            return Ok(out);
        }
        Conflict::DbCreate => {
            let url = cl.database_url(cl.primary, "conc");
            cl.fogd
                .complete(Method::DELETE, &url, None, "drop database conc")
                .await?;
            cl.wait_recovered(s.bound, &[]).await?;
        }
        _ => {
            cl.wait_recovered(s.bound, &[]).await?;
        }
    }
    out.recover_s = Some(now() - t);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Scenario 6: slow clients, connection flood.

fn attack_secs(s: &Settings) -> u64 {
    if s.quick {
        8
    } else {
        20
    }
}

/// Most a new client may wait for an answer while the API is under attack.
const API_ANSWER_BOUND: f64 = 2.0;

async fn api_attack(cl: &mut Cluster, s: &Settings, slow: bool) -> Result<Outcome> {
    let mut out = Outcome::default();
    let cfg = tls_config(&cl.fogd.ca_pem()?)?;
    let api = cl.fogd.api_addr();
    let fresh = cl.fogd.fresh_client(Duration::from_secs(10))?;
    let (base, token) = (cl.fogd.url.clone(), cl.fogd.token.clone());
    let path = cl.group_url(cl.primary, "");
    enum Attack {
        Slow(SlowClients),
        Flood(Flood),
    }
    let attack = if slow {
        Attack::Slow(SlowClients::start(&api, &cfg, 40)?)
    } else {
        let (api, cfg) = (api.clone(), cfg.clone());
        let f = tokio::task::spawn_blocking(move || Flood::open(&api, &cfg, 250, 250))
            .await
            .context("flood task")??;
        out.notes.push(format!(
            "flood: {} TCP + {} TLS connections held open, {} refused or failed",
            f.tcp_open, f.tls_open, f.refused
        ));
        Attack::Flood(f)
    };
    // A new client every 250 ms must get its answer.
    let mut latencies = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let end = Instant::now() + Duration::from_secs(attack_secs(s));
    while Instant::now() < end {
        let t = Instant::now();
        match send_with(&fresh, &base, &token, Method::GET, &path, None).await {
            Ok(r) if r.status == StatusCode::OK => latencies.push(t.elapsed().as_secs_f64()),
            Ok(r) => failed.push(format!("{}", r.status)),
            Err(e) => failed.push(shorten_err(&e)),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    match attack {
        Attack::Slow(sc) => {
            let outcomes = tokio::task::spawn_blocking(move || sc.stop())
                .await
                .context("slow clients")?;
            let connected = outcomes.iter().filter(|o| o.connected).count();
            let mut closed: Vec<f64> = outcomes.iter().filter_map(|o| o.closed_after).collect();
            closed.sort_by(f64::total_cmp);
            out.notes.push(format!(
                "slow clients: {connected} of {} connected; fogd closed {} of them{}",
                outcomes.len(),
                closed.len(),
                if closed.is_empty() {
                    String::new()
                } else {
                    format!(" (median after {:.1} s)", crate::median(closed.clone()))
                }
            ));
        }
        Attack::Flood(f) => {
            let (tcp, tls) = f.closed_by_server();
            out.notes.push(format!(
                "by the end fogd had closed {tcp} of the {} plain TCP and {tls} of the {} TLS connections",
                f.tcp_open, f.tls_open
            ));
            f.close();
        }
    }
    let n = latencies.len() + failed.len();
    let max = latencies.iter().copied().fold(0.0, f64::max);
    out.notes.push(format!(
        "API during the attack: {} of {n} GETs answered, median {:.0} ms, max {:.0} ms",
        latencies.len(),
        crate::median(latencies.clone()) * 1000.0,
        max * 1000.0
    ));
    if !failed.is_empty() {
        out.failures.push(format!(
            "{} of {n} API requests failed during the attack (first: {})",
            failed.len(),
            failed[0]
        ));
    }
    if max > API_ANSWER_BOUND {
        out.failures.push(format!(
            "an API request took {max:.1} s during the attack (bound {API_ANSWER_BOUND} s)"
        ));
    }
    let t = now();
    cl.wait_recovered(s.bound, &[]).await?;
    out.recover_s = Some(now() - t);
    Ok(out)
}

fn shorten_err(e: &anyhow::Error) -> String {
    super::fogd::shorten(&format!("{e:#}"), 160)
}

// ---------------------------------------------------------------------------------------
// Scenario 7: the secondary's slot overflows.

/// WAL written while the secondary is frozen: more than the slot may keep (fogd sets
/// `max_slot_wal_keep_size = 2GB`).
const OVERFLOW_MB: u32 = 2300;

/// How long the primary's CHECKPOINT after the overflow may take.
const CHECKPOINT_BOUND: u64 = 60;

/// The secondary freezes; the primary writes more WAL than the slot may keep (logical
/// messages, 1 MiB each: WAL without table data) and checkpoints, so the slot is lost. The
/// primary must keep taking writes throughout; when the secondary thaws, its WAL is gone
/// and fogd must re-seed it by itself.
async fn slot_overflow(cl: &mut Cluster, s: &Settings) -> Result<Outcome> {
    let mut out = Outcome::default();
    let (p, sec) = (cl.primary, cl.secondary());
    let dir = cl.members[sec].dir.clone();
    let paddr = cl.members[p].addr.clone();
    if signal_server(&dir, Signal::SIGSTOP) == 0 {
        bail!("no process of {} to freeze", cl.members[sec].name);
    }
    let t_stop = now();
    let acks_at_stop = cl.workload().ack_count();
    // The CHECKPOINT must finish: that is when the primary drops the WAL the lost slot
    // held. It runs on its own connection, bounded.
    let flood = async {
        let c = super::workload::connect(&paddr, "postgres", Duration::from_secs(5)).await?;
        tokio::time::timeout(
            Duration::from_secs(180),
            c.batch_execute(&format!(
                "SELECT pg_logical_emit_message(false, 'campaign', repeat('x', 1048576)) \
                 FROM generate_series(1, {OVERFLOW_MB})"
            )),
        )
        .await
        .context("writing the WAL took more than 180 s")?
        .context("write WAL on the primary")?;
        let checkpoint = tokio::time::timeout(
            Duration::from_secs(CHECKPOINT_BOUND),
            c.batch_execute("CHECKPOINT"),
        )
        .await;
        let c = super::workload::connect(&paddr, "postgres", Duration::from_secs(5)).await?;
        let row = c
            .query_one(
                "SELECT string_agg(slot_name || ' ' || coalesce(wal_status, '?'), ', '), \
                        (SELECT sum(size) FROM pg_ls_waldir())::bigint \
                 FROM pg_replication_slots",
                &[],
            )
            .await?;
        anyhow::Ok((
            row.get::<_, Option<String>>(0).unwrap_or_default(),
            row.get::<_, Option<i64>>(1).unwrap_or(0),
            matches!(checkpoint, Ok(Ok(()))),
        ))
    }
    .await;
    let acks_frozen = cl.workload().ack_count().saturating_sub(acks_at_stop);
    signal_server(&dir, Signal::SIGCONT);
    let t = now();
    let (slots, wal_bytes, checkpointed) = flood?;
    if !checkpointed {
        let log =
            std::fs::read_to_string(cl.members[p].dir.join("postgres.log")).unwrap_or_default();
        let slot_lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("slot") || l.contains("checkpoint"))
            .collect();
        out.failures.push(format!(
            "the primary was harmed: its CHECKPOINT did not finish within {CHECKPOINT_BOUND} s \
             while the secondary was frozen, so it could not drop the WAL the lost slot held \
             (primary's log: {})",
            slot_lines[slot_lines.len().saturating_sub(3)..].join(" | ")
        ));
    }
    out.notes.push(format!(
        "{} frozen {:.0} s while the primary wrote {OVERFLOW_MB} MiB of WAL; slots after the \
         checkpoint: {slots}; pg_wal {:.0} MiB; {acks_frozen} writes acknowledged meanwhile",
        cl.members[sec].name,
        t - t_stop,
        wal_bytes as f64 / 1048576.0
    ));
    if acks_frozen == 0 {
        out.failures
            .push("the primary took no write while the secondary was frozen".into());
    }
    cl.wait_recovered(s.bound.max(Duration::from_secs(240)), &[])
        .await?;
    out.recover_s = Some(now() - t);
    Ok(out)
}

/// Runs a command; its output is the error when it fails.
fn sh(program: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = err.lines().take(2).collect();
        bail!("{program} {args:?}: {}", first.join(" | "));
    }
    Ok(())
}

/// Bytes under `p` (`du -sb`).
fn du(p: &std::path::Path) -> Result<u64> {
    let out = std::process::Command::new("du")
        .arg("-sb")
        .arg(p)
        .output()
        .context("run du")?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("du -sb {}: no size", p.display()))
}

/// Free bytes of the file system holding `p` (`df`'s "available").
fn available(p: &std::path::Path) -> Result<u64> {
    let v = nix::sys::statvfs::statvfs(p).context("statvfs")?;
    Ok(v.blocks_available() as u64 * v.fragment_size() as u64)
}

/// The secondary's data lives on a small file system; a ballast file leaves it 40 MB; the
/// primary writes 300 MB. The secondary runs out of space (the primary must keep taking
/// writes); then the ballast goes, and fogd must bring the secondary back by itself.
async fn disk_full(cl: &mut Cluster, s: &Settings) -> Result<Outcome> {
    use std::ffi::OsStr;
    let mut out = Outcome::default();
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (it mounts a small file system)");
    }
    cl.dispose = true;
    let sec = cl.secondary();
    let p = cl.primary;
    let dir = cl.members[sec].dir.clone();
    let img = s.root.join(format!("{}-disk.img", cl.members[sec].name));
    let mnt = s.root.join(format!("{}-disk", cl.members[sec].name));
    std::fs::create_dir_all(&mnt).context("mount point")?;
    // Room for the server as it is and its WAL to come (ext4 takes its share too).
    let size_mb = (du(&dir)? >> 20) * 5 / 4 + 600;
    sh(
        "truncate",
        &[
            OsStr::new("-s"),
            OsStr::new(&format!("{size_mb}M")),
            img.as_os_str(),
        ],
    )?;
    sh(
        "mkfs.ext4",
        &[OsStr::new("-q"), OsStr::new("-F"), img.as_os_str()],
    )?;
    sh(
        "mount",
        &[
            OsStr::new("-o"),
            OsStr::new("loop"),
            img.as_os_str(),
            mnt.as_os_str(),
        ],
    )?;
    cl.mounts.0.push(mnt.clone());
    std::fs::set_permissions(&mnt, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .context("chmod mount point")?;
    // Behind fogd's back (fogd down, the server stopped): the secondary's directory moves
    // onto the small file system and a symbolic link takes its place.
    cl.fogd.kill9();
    cl.pg_ctl(sec, &["stop", "-m", "fast", "-w"])?;
    let moved = mnt.join(
        dir.file_name()
            .ok_or_else(|| anyhow!("server directory name"))?,
    );
    sh(
        "cp",
        &[OsStr::new("-a"), dir.as_os_str(), moved.as_os_str()],
    )?;
    std::fs::remove_dir_all(&dir).context("remove the old server directory")?;
    std::os::unix::fs::symlink(&moved, &dir).context("symlink the server directory")?;
    cl.fogd.launch(&[]).await?;
    cl.wait_recovered(s.bound, &[])
        .await
        .context("with the secondary on the small file system")?;
    let ballast = mnt.join("ballast");
    let free = available(&mnt)?;
    let fill = free.saturating_sub(40 << 20);
    sh(
        "fallocate",
        &[
            OsStr::new("-l"),
            OsStr::new(&fill.to_string()),
            ballast.as_os_str(),
        ],
    )?;
    let acks_before = cl.workload().ack_count();
    let t_fill = now();
    let c = super::workload::connect(&cl.members[p].addr, DATABASE_NAME, Duration::from_secs(5))
        .await?;
    tokio::time::timeout(
        Duration::from_secs(120),
        c.batch_execute(
            "INSERT INTO load SELECT g, repeat('y', 1000) FROM generate_series(1, 300000) g",
        ),
    )
    .await
    .context("writing 300 MB on the primary took more than 120 s")?
    .context("write 300 MB on the primary")?;
    // What the secondary does with a full disk, seen by fogd.
    let seen = until(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let g = cl.fogd.get(&cl.group_url(p, "")).await.ok()?;
            let h = &g["properties"]["health"]["secondary"];
            (h["status"] != "Healthy" || g["properties"]["replicationState"] != "CATCH_UP")
                .then(|| format!("{} {}", h["status"], h["lastError"]))
        },
    )
    .await;
    let acks_full = cl.workload().ack_count().saturating_sub(acks_before);
    let log = std::fs::read_to_string(moved.join("postgres.log")).unwrap_or_default();
    let no_space = log.lines().filter(|l| l.contains("No space left")).count();
    out.notes.push(format!(
        "{size_mb} MiB file system, {} MiB free left on {}'s; {no_space} 'No space left' lines in its log; \
         fogd saw: {}; {acks_full} writes acknowledged in {:.0} s",
        (free - fill) >> 20,
        cl.members[sec].name,
        seen.as_deref().unwrap_or("nothing wrong within 30 s"),
        now() - t_fill
    ));
    if acks_full == 0 {
        out.failures
            .push("the primary took no write while the secondary's disk was full".into());
    }
    std::fs::remove_file(&ballast).context("remove the ballast")?;
    let t = now();
    cl.wait_recovered(s.bound, &[]).await?;
    out.recover_s = Some(now() - t);
    Ok(out)
}
