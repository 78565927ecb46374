//! # campaign: attacks on a real release fogd, as repeatable trials → `RELIABILITY.md`
//!
//! ```sh
//! cargo build --release -p fogd -p fog-bench && ./target/release/campaign [--quick] [--runs N] [--only SCENARIO]
//! ```
//!
//! Starts `target/release/fogd serve --listen 127.0.0.1:0` on a fresh data directory (with
//! `FOGD_GRACE_PERIOD_UNIT_MS=1000` and short health-probe settings, see
//! `campaign::fogd::BASE_ENV`), creates instances `ca-east` (eastus) and `ca-west` (westus,
//! its DNS-zone partner), database `app` and failover group `camp-fog`, starts the workload
//! checker (`campaign::workload`), and runs the scenarios (`campaign::scenarios`) — each a
//! series of trials: one fault, hands-off recovery, data check. A group that does not
//! recover is replaced by a fresh one for the next trial. fogd is stopped at the end (also
//! on Ctrl-C). The results go between `<!-- campaign:start -->` and `<!-- campaign:end -->`
//! in `RELIABILITY.md`; the exit status is 1 when any trial failed.
//!
//! The `crash-*` scenarios need a fogd built with the `failpoints` feature; the bench
//! crate asks for it, so building `-p fogd -p fog-bench` together gives one.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use fog_bench::campaign::report::{section, RunInfo, END_MARKER, INTRO, START_MARKER};
use fog_bench::campaign::scenarios::{cases, selected, Campaign, Settings, SCENARIOS};
use fog_bench::{from_root, git_commit, machine, pg_user, utc_now, write_section};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Attacks a release fogd scenario by scenario and writes RELIABILITY.md.
#[derive(Parser, Debug)]
#[command(name = "campaign")]
struct Args {
    /// A representative subset, bounded to a few minutes (fewer crash steps, shorter
    /// freezes and attacks).
    #[arg(long)]
    quick: bool,
    /// How many times each trial runs.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Only these scenarios (a key, or a prefix such as `crash`, `conflict`, `sigstop`);
    /// repeatable or comma-separated. `--list` shows them.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// List the scenarios and their trials, then exit.
    #[arg(long)]
    list: bool,
    /// How long fogd may take to recover from one fault, in seconds.
    #[arg(long, default_value_t = 90)]
    bound_secs: u64,
    /// The fogd binary; a relative path is taken from the workspace root.
    #[arg(long, default_value = "target/release/fogd")]
    fogd: PathBuf,
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin_dir: PathBuf,
    /// OS user that runs PostgreSQL when this runs as root.
    #[arg(long, default_value = "postgres")]
    pg_os_user: String,
    /// Where the report goes; a relative path is taken from the workspace root.
    #[arg(long, default_value = "RELIABILITY.md")]
    output: PathBuf,
    /// Print the report only; leave the output file alone.
    #[arg(long)]
    no_write: bool,
    /// Keep the temporary directory (fogd's log and data directories).
    #[arg(long)]
    keep: bool,
}

fn command_line(args: &Args) -> String {
    let mut c = String::from("./target/release/campaign");
    if args.quick {
        c.push_str(" --quick");
    }
    if args.runs != 1 {
        c.push_str(&format!(" --runs {}", args.runs));
    }
    if !args.only.is_empty() {
        c.push_str(&format!(" --only {}", args.only.join(",")));
    }
    c
}

async fn run(args: &Args) -> Result<bool> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    for o in &args.only {
        if !SCENARIOS
            .iter()
            .any(|s| s.key == o || s.key.starts_with(&format!("{o}-")))
        {
            bail!("--only {o}: no such scenario (see --list)");
        }
    }
    let bin = from_root(&args.fogd);
    let user = pg_user(&args.pg_os_user)?;
    let root = tempfile::Builder::new()
        .prefix("fog-campaign-")
        .tempdir()
        .context("create temporary directory")?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
        .context("chmod temporary directory")?;
    let settings = Settings {
        quick: args.quick,
        runs: args.runs,
        only: args.only.clone(),
        bin: bin.clone(),
        pg_bin_dir: args.pg_bin_dir.clone(),
        user,
        root: root.path().to_path_buf(),
        bound: Duration::from_secs(args.bound_secs),
    };
    if args.list {
        for sc in selected(&settings) {
            let cs = cases(&sc, settings.quick);
            println!(
                "{:<22} ({}) {}{}",
                sc.key,
                sc.number,
                sc.title,
                if cs.len() > 1 || !cs[0].is_empty() {
                    format!(": {}", cs.join(", "))
                } else {
                    String::new()
                }
            );
        }
        return Ok(true);
    }
    if !bin.exists() {
        bail!(
            "{} not found; build it first: cargo build --release -p fogd -p fog-bench",
            bin.display()
        );
    }
    let pg_version = std::process::Command::new(args.pg_bin_dir.join("postgres"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "PostgreSQL (unknown version)".into());
    let uname = std::process::Command::new("uname")
        .arg("-srmo")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let commit = git_commit();
    let started = Instant::now();
    let date = utc_now();
    if args.keep {
        eprintln!("keeping {}", root.path().display());
    }
    let mut campaign = Campaign::new(settings);
    campaign.run().await;
    let secs = started.elapsed().as_secs_f64();
    let report = section(
        &campaign,
        &RunInfo {
            command: command_line(args),
            machine: machine(root.path()),
            uname,
            pg: pg_version,
            secs,
            commit,
            date,
        },
    );
    if args.keep {
        let _ = root.keep();
    }
    // Summary.
    let failed: Vec<_> = campaign
        .trials
        .iter()
        .filter(|t| !t.failures.is_empty())
        .collect();
    eprintln!("\n== campaign summary ({:.1} min)", secs / 60.0);
    for (sc, trials) in campaign.by_scenario().into_values() {
        let f = trials.iter().filter(|t| !t.failures.is_empty()).count();
        let max = trials
            .iter()
            .filter_map(|t| t.recover_s)
            .fold(0.0, f64::max);
        eprintln!(
            "{:<22} {:>3} runs {:>3} failed  lost {:>4}  reported {:>5}  two-primary {:>3}  max recover {:>5.1} s",
            sc.key,
            trials.len(),
            f,
            trials.iter().map(|t| t.lost).sum::<usize>(),
            trials.iter().map(|t| t.reported).sum::<usize>(),
            trials.iter().map(|t| t.two_primaries).sum::<usize>(),
            max
        );
    }
    eprintln!(
        "{} passed, {} failed",
        campaign.trials.len() - failed.len(),
        failed.len()
    );
    for t in &failed {
        eprintln!(
            "FAILED {} {}: {}",
            t.scenario,
            t.case,
            t.failures.join("; ")
        );
    }
    if args.no_write {
        print!("{report}");
    } else {
        let out = from_root(&args.output);
        if !out.exists() {
            std::fs::write(&out, format!("{INTRO}\n{START_MARKER}\n{END_MARKER}\n"))
                .with_context(|| format!("write {}", out.display()))?;
        }
        write_section(&out, START_MARKER, END_MARKER, &report)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(failed.is_empty())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    // Leaving `run` early drops the cluster: fogd and its servers are stopped.
    let ok = tokio::select! {
        r = run(&args) => r?,
        _ = tokio::signal::ctrl_c() => return Err(anyhow!("interrupted; fogd and its servers were stopped")),
        _ = term.recv() => return Err(anyhow!("terminated; fogd and its servers were stopped")),
    };
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
