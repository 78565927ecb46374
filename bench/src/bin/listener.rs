//! # listener — what the read-write listener costs a PostgreSQL client
//!
//! `cargo run --release -p fog-bench --bin listener` (as root, or as a user that may run
//! PostgreSQL; the kernel data path needs root or `CAP_BPF` + `CAP_NET_ADMIN`).
//!
//! One PostgreSQL 15 server (a fresh `initdb` in a temporary directory, `pgbench -i`), and
//! four ways to reach it, all on 127.0.0.1:
//!
//! - **direct**: the server's own port;
//! - **kernel**: a fog-listener [`Listener`] forwarding to it on the kernel data path (eBPF
//!   sockmap), hosted in this process on a multi-threaded tokio runtime as in fogd;
//! - **userspace**: the same listener on the user-space copy path;
//! - **pgbouncer**: Debian's PgBouncer in session mode.
//!
//! For each round, every cell — select-only (`-S`) and TPC-B-like at 1, 8 and 32 clients,
//! and select-only at 8 clients with a new connection per transaction (`-C`) — is run
//! against all four targets back to back, the target order rotating from round to round, so
//! the targets share the machine's conditions. Figures are ratios to direct within the same
//! round (median over rounds, with the range), and p50/p99 transaction latency from
//! pgbench's per-transaction log (`-l`) pooled over the rounds.
//!
//! The harness checks its preconditions and stops rather than report nonsense: tools
//! present, the kernel path really in use, every pgbench run exits 0, reports no failed
//! transactions, and logs (within 2 %) as many transactions as it reports.
//!
//! Writes its section of `BENCHMARKS.md` (between `<!-- listener:start -->` and
//! `<!-- listener:end -->`) unless `--no-write`.

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use fog_bench::{from_root, git_commit, machine, median, pg_user, utc_now, write_section, PgUser};
use fog_listener::{DataPath, Listener, ListenerConfig, Route, Target};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    about = "pgbench through the listener (kernel and user-space paths) vs direct vs PgBouncer"
)]
struct Args {
    /// Rounds; every cell runs once per target per round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// pgbench scale factor (`-i -s`).
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// PostgreSQL 15 binaries.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin: PathBuf,
    /// PgBouncer binary.
    #[arg(long, default_value = "/usr/sbin/pgbouncer")]
    pgbouncer: PathBuf,
    /// Only these cells (e.g. `select-8`, `tpcb-32`, `connect-8`); all when empty.
    #[arg(long)]
    only: Vec<String>,
    /// Only these targets (for profiling one path; the report needs all four).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Where the results go.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Print the section instead of writing it.
    #[arg(long)]
    no_write: bool,
}

const TARGETS: [&str; 4] = ["direct", "kernel", "userspace", "pgbouncer"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    Select,
    Tpcb,
    Connect,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Select => "select-only (-S)",
            Workload::Tpcb => "TPC-B-like",
            Workload::Connect => "select-only, new connection per transaction (-S -C)",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Workload::Select => "select",
            Workload::Tpcb => "tpcb",
            Workload::Connect => "connect",
        }
    }
}

/// One pgbench run's outcome.
#[derive(Debug, Clone)]
struct Run {
    tps: f64,
    /// Per-transaction latencies in microseconds, from the `-l` log.
    latencies_us: Vec<u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.rounds >= 1 && args.seconds >= 1,
        "--rounds and --seconds must be at least 1"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    for tool in ["initdb", "pg_ctl", "pgbench"] {
        let p = args.pg_bin.join(tool);
        ensure!(
            p.exists(),
            "{} is missing (install postgresql-15)",
            p.display()
        );
    }
    ensure!(
        args.pgbouncer.exists(),
        "{} is missing (apt-get install pgbouncer)",
        args.pgbouncer.display()
    );
    fog_listener::kernel_data_path_available()
        .map_err(|e| anyhow::anyhow!("the kernel data path is unavailable: {e}"))?;
    let user = pg_user("postgres")?;
    let dir = tempfile::Builder::new()
        .prefix("fog-bench-listener-")
        .tempdir_in("/var/tmp")
        .context("temporary directory")?;
    chown(dir.path(), &user)?;

    let pg_port = free_port()?;
    let server = Postgres::start(&args.pg_bin, dir.path(), pg_port, &user)?;
    let direct: SocketAddr = ([127, 0, 0, 1], pg_port).into();
    eprintln!("PostgreSQL 15 on {direct}; pgbench -i -s {}", args.scale);
    let init = Command::new(args.pg_bin.join("pgbench"))
        .args(["-i", "-q", "-s", &args.scale.to_string()])
        .args(conn_args(direct))
        .arg("bench")
        .output()
        .context("pgbench -i")?;
    ensure!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    let listener = |path| {
        Listener::bind(
            "127.0.0.1:0".parse().expect("a socket address"),
            Route::new(Target::Forward(direct), 1),
            ListenerConfig {
                data_path: path,
                ..Default::default()
            },
        )
    };
    let kernel = listener(DataPath::Kernel)
        .await
        .context("kernel listener")?;
    ensure!(
        kernel.data_path() == DataPath::Kernel,
        "kernel listener is not on the kernel path"
    );
    let userspace = listener(DataPath::Userspace)
        .await
        .context("user-space listener")?;
    let bouncer_port = free_port()?;
    let bouncer = PgBouncer::start(&args.pgbouncer, dir.path(), bouncer_port, pg_port, &user)?;
    let addr_of = |t: &str| -> SocketAddr {
        match t {
            "direct" => direct,
            "kernel" => kernel.local_addr(),
            "userspace" => userspace.local_addr(),
            _ => ([127, 0, 0, 1], bouncer_port).into(),
        }
    };

    let mut cells: Vec<(Workload, u32)> = Vec::new();
    for w in [Workload::Select, Workload::Tpcb] {
        for c in [1, 8, 32] {
            cells.push((w, c));
        }
    }
    cells.push((Workload::Connect, 8));
    if !args.only.is_empty() {
        cells.retain(|(w, c)| args.only.iter().any(|o| *o == format!("{}-{c}", w.key())));
        ensure!(!cells.is_empty(), "--only matched no cell");
    }

    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        let t: Vec<&str> = TARGETS
            .iter()
            .copied()
            .filter(|t| args.targets.iter().any(|a| a == t))
            .collect();
        ensure!(!t.is_empty(), "--targets matched none of {TARGETS:?}");
        t
    };
    // results[(workload, clients)][target] = one Run per round.
    let mut results: BTreeMap<(Workload, u32), BTreeMap<&str, Vec<Run>>> = BTreeMap::new();
    let started = utc_now();
    let mut n = 0;
    for round in 0..args.rounds {
        for &(w, c) in &cells {
            for i in 0..targets.len() {
                let target = targets[(i + round) % targets.len()];
                n += 1;
                let log = dir.path().join(format!("run{n}"));
                let r = pgbench(&args, addr_of(target), w, c, &log).with_context(|| {
                    format!("round {round}, {} {c} clients via {target}", w.key())
                })?;
                eprintln!(
                    "round {} {:>7} c={c:<2} {target:<9} {:>9.0} tps  p50 {:>6} us",
                    round + 1,
                    w.key(),
                    r.tps,
                    percentile(&r.latencies_us, 0.5)
                );
                results
                    .entry((w, c))
                    .or_default()
                    .entry(target)
                    .or_default()
                    .push(r);
            }
        }
    }
    let kstats = kernel.stats();
    ensure!(
        !targets.contains(&"kernel")
            || (kstats.kernel_sessions_total == kstats.connections_total
                && kstats.bytes_client_to_server > 0
                && kstats.bytes_server_to_client > 0),
        "the kernel listener did not forward every session in the kernel: {kstats:?}"
    );

    if targets.len() < TARGETS.len() {
        eprintln!("--targets given: no report");
        return Ok(());
    }
    let section = report(&args, &results, &started, dir.path());
    drop(bouncer);
    drop(server);
    kernel.shutdown().await;
    userspace.shutdown().await;
    if args.no_write {
        println!("{section}");
    } else {
        let out = from_root(&args.out);
        write_section(
            &out,
            "<!-- listener:start -->",
            "<!-- listener:end -->",
            &section,
        )?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn conn_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "-h".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
        "-U".into(),
        "bench".into(),
    ]
}

/// Run pgbench once and check that it really ran.
fn pgbench(args: &Args, addr: SocketAddr, w: Workload, clients: u32, log: &Path) -> Result<Run> {
    let mut cmd = Command::new(args.pg_bin.join("pgbench"));
    cmd.args(conn_args(addr))
        .args(["-n", "-T", &args.seconds.to_string()])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .arg("-l")
        .arg(format!("--log-prefix={}", log.display()));
    match w {
        Workload::Select => {
            cmd.arg("-S");
        }
        Workload::Tpcb => {}
        Workload::Connect => {
            cmd.args(["-S", "-C"]);
        }
    }
    let out = cmd.arg("bench").output().context("run pgbench")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "pgbench failed ({}): {stderr}{stdout}",
        out.status
    );
    let field = |prefix: &str| -> Option<&str> {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let processed: u64 = field("number of transactions actually processed:")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.parse().ok())
        .context("pgbench printed no transaction count")?;
    ensure!(processed > 0, "pgbench processed no transactions: {stdout}");
    if let Some(failed) = field("number of failed transactions:") {
        ensure!(
            failed.starts_with("0 "),
            "pgbench reports failed transactions: {failed}"
        );
    }
    let tps: f64 = field("tps =")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("pgbench printed no tps")?;
    // Per-transaction log: one file per thread, `<prefix>.<pid>[.<thread>]`; the third
    // column is the transaction's latency in microseconds.
    let mut latencies_us = Vec::with_capacity(processed as usize);
    let parent = log.parent().context("log directory")?;
    let stem = log
        .file_name()
        .and_then(|s| s.to_str())
        .context("log prefix")?;
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(&format!("{stem}.")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())?;
        for line in text.lines() {
            let lat = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("bad pgbench log line: {line:?}"))?;
            latencies_us.push(lat);
        }
        std::fs::remove_file(entry.path())?;
    }
    // pgbench now and then logs about 1 % fewer transactions than it counts at the end of
    // a `-T` run; more than 2 % missing (or any extra) means the log is not this run's.
    let logged = latencies_us.len() as u64;
    ensure!(
        logged <= processed && logged * 100 >= processed * 98,
        "pgbench logged {logged} transactions but reports {processed}"
    );
    Ok(Run { tps, latencies_us })
}

fn percentile(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

fn report(
    args: &Args,
    results: &BTreeMap<(Workload, u32), BTreeMap<&str, Vec<Run>>>,
    started: &str,
    dir: &Path,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "<!-- listener:start -->");
    let _ = writeln!(
        s,
        "## Listener data path: pgbench direct vs listener vs PgBouncer\n"
    );
    let _ = writeln!(
        s,
        "Measured {started} on {} at commit {}, by `cargo run --release -p fog-bench --bin \
         listener -- --rounds {} --seconds {}` ({} rounds × {} s per run, pgbench scale {}, \
         PostgreSQL 15 with `synchronous_commit=off` so that TPC-B-like measures CPU, not \
         the disk). The machine is shared with other engineers' builds: every figure is a \
         ratio to direct within the same round, the target order rotating each round; \
         median over rounds with the range in brackets. Latencies are pgbench's \
         per-transaction log pooled over rounds; \"+p50\" is the listener's added median \
         latency over direct.\n",
        machine(dir),
        git_commit(),
        args.rounds,
        args.seconds,
        args.rounds,
        args.seconds,
        args.scale
    );
    let _ = writeln!(
        s,
        "| workload | clients | direct TPS | kernel ×direct | userspace ×direct | PgBouncer ×direct | p50 / p99 µs direct | kernel | userspace | PgBouncer |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for ((w, c), by_target) in results {
        let direct = &by_target["direct"];
        let direct_tps: Vec<f64> = direct.iter().map(|r| r.tps).collect();
        let mut row = format!("| {} | {c} | {:.0} |", w.name(), median(direct_tps.clone()));
        for t in ["kernel", "userspace", "pgbouncer"] {
            let ratios: Vec<f64> = by_target[t]
                .iter()
                .zip(&direct_tps)
                .map(|(r, d)| r.tps / d)
                .collect();
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let _ = write!(row, " **{:.2}** [{lo:.2}–{hi:.2}] |", median(ratios));
        }
        let lat = |t: &str| -> (u64, u64) {
            let all: Vec<u64> = by_target[t]
                .iter()
                .flat_map(|r| r.latencies_us.iter().copied())
                .collect();
            (percentile(&all, 0.5), percentile(&all, 0.99))
        };
        let (d50, d99) = lat("direct");
        let _ = write!(row, " {d50} / {d99} |");
        for t in ["kernel", "userspace", "pgbouncer"] {
            let (p50, p99) = lat(t);
            let added = p50 as i64 - d50 as i64;
            let _ = write!(row, " {p50} / {p99} ({added:+}) |");
        }
        let _ = writeln!(s, "{row}");
    }
    let _ = writeln!(s, "\n<!-- listener:end -->");
    s
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(l.local_addr()?.port())
}

fn chown(path: &Path, user: &PgUser) -> Result<()> {
    if let Some((_, uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

fn as_user(cmd: &mut Command, user: &PgUser) {
    if let Some((_, uid, gid)) = user {
        cmd.uid(*uid).gid(*gid);
    }
}

/// Wait until `port` on 127.0.0.1 accepts connections.
fn wait_port(port: u16, what: &str, child: &mut Child) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during start-up ({status})");
        }
        if std::time::Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Postgres {
    child: Child,
}

impl Postgres {
    fn start(bin: &Path, dir: &Path, port: u16, user: &PgUser) -> Result<Postgres> {
        let data = dir.join("pg");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-U", "bench", "--auth=trust", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null());
        as_user(&mut initdb, user);
        let out = initdb.output().context("initdb")?;
        ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=256MB",
                "-c",
                "synchronous_commit=off",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("postgres.log"))?);
        as_user(&mut cmd, user);
        let mut child = cmd.spawn().context("start postgres")?;
        wait_port(port, "postgres", &mut child)?;
        // The port answers before the server accepts sessions: wait for a real one.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "bench",
                    "-d",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "postgres not ready within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let created = Command::new(bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "bench",
                "bench",
            ])
            .output()
            .context("createdb")?;
        ensure!(
            created.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        Ok(Postgres { child })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }
}

struct PgBouncer {
    child: Child,
}

impl PgBouncer {
    fn start(bin: &Path, dir: &Path, port: u16, pg_port: u16, user: &PgUser) -> Result<PgBouncer> {
        let ini = dir.join("pgbouncer.ini");
        let users = dir.join("userlist.txt");
        std::fs::write(&users, "\"bench\" \"\"\n")?;
        std::fs::write(
            &ini,
            format!(
                "[databases]\nbench = host=127.0.0.1 port={pg_port} dbname=bench\n\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
                 pool_mode = session\nmax_client_conn = 200\ndefault_pool_size = 100\n\
                 logfile = {}\npidfile = {}\n",
                users.display(),
                dir.join("pgbouncer.log").display(),
                dir.join("pgbouncer.pid").display()
            ),
        )?;
        chown(&ini, user)?;
        chown(&users, user)?;
        let mut cmd = Command::new(bin);
        cmd.arg(&ini).stdout(Stdio::null()).stderr(Stdio::null());
        as_user(&mut cmd, user);
        let mut child = cmd.spawn().context("start pgbouncer")?;
        wait_port(port, "pgbouncer", &mut child)?;
        Ok(PgBouncer { child })
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }
}
