//! # fog-bench — shared pieces of fogd's benchmarks
//!
//! The benchmark programs live in `src/bin/` (`seeding`, `failover`, `campaign`); each
//! drives a release fogd over its HTTPS API and writes its own section of `BENCHMARKS.md`
//! (or `RELIABILITY.md`). This library holds what they share: the fogd harness ([`fogd`]:
//! launching fogd on a fresh data directory, its API client, operations polled to their
//! end, the group's event history, stopping it and its servers), the managed servers
//! ([`servers`]: addresses, directories, processes), locating the workspace, running
//! PostgreSQL tools as the right OS user, describing the machine and commit a figure was
//! measured on, medians, and replacing one marked section of `BENCHMARKS.md`.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The OS user PostgreSQL tools run as: `Some((name, uid, gid))` when we are root.
pub type PgUser = Option<(String, u32, u32)>;

pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

pub fn from_root(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        workspace_root().join(p)
    }
}

pub fn pg_user(name: &str) -> Result<PgUser> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(name)
        .with_context(|| format!("look up OS user {name}"))?
        .ok_or_else(|| anyhow!("running as root, but OS user '{name}' does not exist"))?;
    Ok(Some((
        name.to_string(),
        user.uid.as_raw(),
        user.gid.as_raw(),
    )))
}

/// `YYYY-MM-DD HH:MM UTC` without a date library (days → civil date, H. Hinnant).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `nproc`, memory, CPU model and the file system holding `dir`.
pub fn machine(dir: &Path) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let fs = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && canonical.starts_with(f[1])).then(|| (f[1].len(), f[2], f[0]))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, ty, dev)| format!("{ty} ({dev})"))
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{cores} CPUs ({model}), {mem_gib:.1} GiB memory; data on {fs} under `{}`",
        canonical.parent().unwrap_or(&canonical).display()
    )
}

pub fn git_commit() -> String {
    let root = workspace_root();
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(c) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("`{c}` (with uncommitted changes)")
            } else {
                format!("`{c}`")
            }
        }
        // A source snapshot (`git archive`) has no repository; `.snapshot-commit` at its
        // root names the commit it was taken from.
        None => match std::fs::read_to_string(root.join(".snapshot-commit")) {
            Ok(c) if !c.trim().is_empty() => format!("`{}` (source snapshot)", c.trim()),
            _ => "unknown commit".into(),
        },
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Replaces the seeding section of `path` (or appends it; or creates the file).
pub fn write_section(
    path: &Path,
    start_marker: &str,
    end_marker: &str,
    section: &str,
) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::from(
            "# Benchmarks\n\nFigures measured by the programs under `bench/` (see `bench/README.md`). \
             Each benchmark owns the section between its `<!-- name:start -->` and \
             `<!-- name:end -->` markers and replaces only that section when re-run.\n",
        ),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let updated = match (existing.find(start_marker), existing.find(end_marker)) {
        (Some(a), Some(b)) if a < b => {
            let end = b + end_marker.len();
            let rest = existing[end..]
                .strip_prefix('\n')
                .unwrap_or(&existing[end..]);
            format!("{}{section}{rest}", &existing[..a])
        }
        (None, None) => {
            let sep = if existing.ends_with("\n\n") {
                ""
            } else if existing.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{existing}{sep}{section}")
        }
        _ => bail!(
            "{} has unbalanced {start_marker} / {end_marker} markers; fix them by hand",
            path.display()
        ),
    };
    std::fs::write(path, updated).with_context(|| format!("write {}", path.display()))
}

/// Waits (up to 60 s, polling every `poll`) until a fogd started as `child` on the data
/// directory `data` has written its API URL, and returns it. Fails when fogd exits first
/// (taking it out of `child`) or never writes it; callers add the end of fogd's log.
pub async fn wait_for_api_url(
    data: &Path,
    child: &mut Option<std::process::Child>,
    poll: std::time::Duration,
) -> Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(u) = std::fs::read_to_string(data.join("api-url")) {
            if !u.trim().is_empty() {
                return Ok(u.trim().to_string());
            }
        }
        if let Some(c) = child.as_mut() {
            if let Some(status) = c.try_wait().context("wait for fogd")? {
                *child = None;
                bail!("fogd exited during start-up ({status})");
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("fogd did not write api-url within 60 s");
        }
        tokio::time::sleep(poll).await;
    }
}

pub mod campaign;
pub mod fogd;
pub mod servers;
pub mod writer;
