//! [`LocalAgent`]: runs PostgreSQL servers on this machine with the PostgreSQL 15 tools.
//!
//! When fogd runs as root, every tool runs as an unprivileged OS user (`postgres` by
//! default), because `initdb` refuses root. Node-local settings (port, listen address, no
//! Unix sockets) are passed on the `pg_ctl` command line rather than stored in the data
//! directory, so copies of a data directory (base backups, rewinds) never carry them.
//!
//! **Passwords never reach a child's arguments or environment** (both are visible to every
//! local user through `ps` and `/proc`): a tool that connects gets a libpq password file
//! ([`PassFile`], `PGPASSFILE`) for the length of its run, `initdb` a `--pwfile`, and a
//! standby's `primary_conninfo` names a password file (`passfile=`) beside its data
//! directory instead of holding the password. All of them are mode 0600, owned by the
//! servers' OS user, inside the server's own directory (mode 0700).

use crate::rewind;
use crate::sql::{self, ident, literal};
use crate::{
    fence, parse_lsn, EngineError, Generation, HealthProbe, InstanceAgent, ProgressFn,
    ReplicationSource, ReplicationStatus, RewindReport, SeedProgress, ServerSpec, ServerStatus,
    ShutdownState, REPLICATOR, SUPERUSER,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

/// Settings every managed server gets (they suit replication and many small servers on
/// one machine).
const SERVER_SETTINGS: &str = "\
# Written by fogd. Node-local settings (port, listen_addresses) come from pg_ctl -o.
wal_level = replica
wal_log_hints = on
hot_standby = on
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
max_slot_wal_keep_size = '2GB'
synchronous_commit = local
# Base backups and rewinds are already fsynced: sync the file system once at start-up
# instead of every file of the data directory.
recovery_init_sync_method = syncfs
wal_retrieve_retry_interval = '1s'
wal_receiver_status_interval = '1s'
# A standby that stops answering (frozen, its network gone) is disconnected after 10 s
# rather than PostgreSQL's 60: until then its walsender holds the slot, and a checkpoint
# that must invalidate that slot (past max_slot_wal_keep_size) waits for it.
wal_sender_timeout = '10s'
# Data a peer has not acknowledged for 10 s means the peer is gone (a frozen standby, a
# cut network): the kernel drops the connection, so a walsender blocked sending to it
# exits and lets go of its slot.
tcp_user_timeout = '10s'

shared_buffers = '32MB'
max_connections = 100
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
";

const HBA: &str = "\
# Written by fogd: password (SCRAM) authentication for everything over TCP.
host all all all scram-sha-256
host replication all all scram-sha-256
";

/// Where the PostgreSQL binaries are and who runs them.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Directory with `initdb`, `pg_ctl`, … (Debian: `/usr/lib/postgresql/15/bin`).
    pub bin_dir: PathBuf,
    /// OS user that runs the servers when fogd is root.
    pub os_user: String,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            bin_dir: PathBuf::from("/usr/lib/postgresql/15/bin"),
            os_user: "postgres".into(),
        }
    }
}

/// Runs servers as local processes.
pub struct LocalAgent {
    settings: PgSettings,
    /// `(uid, gid)` to drop to when running as root.
    run_as: Option<(u32, u32)>,
    /// Per-server locks held by fenced commands (see `hold`).
    locks: ServerLocks,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let context = context.into();
    move |source| EngineError::Io { context, source }
}

impl LocalAgent {
    /// Checks the binaries and, when root, resolves the OS user.
    pub fn new(settings: PgSettings) -> Result<Self, EngineError> {
        for tool in [
            "initdb",
            "pg_ctl",
            "postgres",
            "pg_basebackup",
            "psql",
            "pg_controldata",
            "pg_rewind",
            "pg_waldump",
        ] {
            if !settings.bin_dir.join(tool).exists() {
                return Err(EngineError::Config(format!(
                    "{tool} not found in {} (install PostgreSQL 15 server binaries or set the PostgreSQL bin directory)",
                    settings.bin_dir.display()
                )));
            }
        }
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name(&settings.os_user)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    EngineError::Config(format!(
                        "fogd runs as root, so PostgreSQL must run as an unprivileged OS user, but user '{}' does not exist",
                        settings.os_user
                    ))
                })?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        Ok(Self {
            settings,
            run_as,
            locks: Default::default(),
        })
    }

    /// Prepares `root` (the directory that will hold server directories): creates it and,
    /// when servers run as another user, checks that user can reach it.
    pub fn prepare_root(&self, root: &Path) -> Result<(), EngineError> {
        std::fs::create_dir_all(root).map_err(io(format!("create {}", root.display())))?;
        if let Some((uid, gid)) = self.run_as {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))
                .map_err(io(format!("chmod {}", root.display())))?;
            let mut p = Some(root);
            while let Some(dir) = p {
                let md = std::fs::metadata(dir).map_err(io(format!("stat {}", dir.display())))?;
                let mode = md.mode();
                let ok = mode & 0o001 != 0
                    || (md.uid() == uid && mode & 0o100 != 0)
                    || (md.gid() == gid && mode & 0o010 != 0);
                if !ok {
                    return Err(EngineError::Config(format!(
                        "directory {} is not traversable by OS user '{}' (mode {:o}); PostgreSQL data under it would be unreachable. Use a data directory whose parents are world-executable, e.g. chmod o+x {}",
                        dir.display(),
                        self.settings.os_user,
                        mode & 0o7777,
                        dir.display()
                    )));
                }
                p = dir.parent();
            }
        }
        Ok(())
    }

    fn tool(&self, name: &str, cwd: &Path) -> Command {
        let mut cmd = Command::new(self.settings.bin_dir.join(name));
        cmd.current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C.UTF-8")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST")
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid).env("HOME", cwd);
        }
        cmd
    }

    async fn run(&self, mut cmd: Command, tool: &str) -> Result<String, EngineError> {
        let out = cmd.output().await.map_err(io(format!("run {tool}")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(EngineError::Tool {
                tool: tool.to_string(),
                status: out.status.to_string(),
                output: text.trim().chars().take(2000).collect(),
            })
        }
    }

    fn own(&self, path: &Path, mode: u32) -> Result<(), EngineError> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", path.display())))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    /// Writes a file only its owner may read (mode 0600 from its creation on, never wider
    /// for an instant), owned by the servers' OS user: password files.
    fn write_private(&self, path: &Path, contents: &[u8]) -> Result<(), EngineError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let context = || format!("write {}", path.display());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io(context()))?;
        f.write_all(contents).map_err(io(context()))?;
        // An existing file keeps its mode on open: make sure.
        self.own(path, 0o600)
    }

    /// A password file for one tool run in `dir` (a server's own directory), holding
    /// `user`'s `password` for any host; removed when the returned guard is dropped.
    fn passfile(&self, dir: &Path, user: &str, password: &str) -> Result<PassFile, EngineError> {
        // Absolute: the child runs in another working directory.
        let path = std::path::absolute(dir.join(format!(".pgpass-{:016x}", rand::random::<u64>())))
            .map_err(io(format!("resolve {}", dir.display())))?;
        let file = PassFile(path);
        self.write_private(&file.0, pgpass_line(user, password).as_bytes())?;
        Ok(file)
    }

    fn marker(spec: &ServerSpec) -> PathBuf {
        spec.dir.join("initialized")
    }

    /// The password file a standby's `primary_conninfo` names (outside the data directory,
    /// so base backups and rewinds never copy it).
    fn standby_passfile(spec: &ServerSpec) -> Result<PathBuf, EngineError> {
        std::path::absolute(spec.dir.join("standby.pgpass"))
            .map_err(io(format!("resolve {}", spec.dir.display())))
    }

    /// Whether the server's postmaster runs: what `pg_ctl status` checks (the pid in
    /// `postmaster.pid` is alive), without starting a process — the supervisor asks this of
    /// every server every probe interval. A pid reused by another program after a crash
    /// does not count: the process must be a `postgres`.
    async fn is_running(&self, spec: &ServerSpec) -> Result<bool, EngineError> {
        if !spec.pgdata().join("PG_VERSION").exists() {
            return Ok(false);
        }
        let pid_file = match std::fs::read_to_string(spec.pgdata().join("postmaster.pid")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io("read postmaster.pid")(e)),
        };
        let Some(pid) = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
        else {
            return Ok(false);
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        let postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres");
        Ok(alive && postgres)
    }

    /// Kills what a previous fogd left running on this server's data: a `pg_rewind`,
    /// `pg_basebackup`, `initdb` or `pg_waldump` started from the server's directory by a
    /// fogd that was killed while it ran. Such an orphan goes on writing into the data
    /// directory, by path, after the resumed step has replaced it — so it must be gone
    /// before any command touches the data again. (The postmaster is never one of them: it
    /// runs from its data directory, and its name is not on the list.)
    async fn reap_orphans(&self, spec: &ServerSpec) {
        const TOOLS: [&str; 4] = ["pg_rewind", "pg_basebackup", "initdb", "pg_waldump"];
        let me = std::process::id();
        let Ok(dir) = std::fs::canonicalize(&spec.dir) else {
            return;
        };
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut killed = Vec::new();
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if pid as u32 == me {
                continue;
            }
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            if !TOOLS.contains(&comm.trim()) {
                continue;
            }
            if std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd == dir) {
                let pid = nix::unistd::Pid::from_raw(pid);
                if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                    tracing::warn!(uid = %spec.uid, tool = comm.trim(), pid = %pid, "killed a tool left running by an earlier fogd");
                    killed.push(pid);
                }
            }
        }
        // Wait (bounded) until they are gone; their parent is gone, so init reaps them.
        for _ in 0..200 {
            if killed
                .iter()
                .all(|pid| nix::sys::signal::kill(*pid, None).is_err())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL to the postmaster named in `postmaster.pid` and to every process it
    /// started, then waits (bounded) until `pg_ctl status` no longer sees it.
    async fn sigkill_server(&self, spec: &ServerSpec) -> Result<(), EngineError> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid_file = std::fs::read_to_string(spec.pgdata().join("postmaster.pid"))
            .map_err(io("read postmaster.pid"))?;
        let Some(postmaster) = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return Err(EngineError::Config(format!(
                "server {}: postmaster.pid names no process",
                spec.uid
            )));
        };
        let children: Vec<i32> = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|p| {
                        let pid = p.file_name().to_str()?.parse::<i32>().ok()?;
                        let stat = std::fs::read_to_string(p.path().join("stat")).ok()?;
                        // `pid (comm) state ppid …`; comm may hold spaces, so split after ')'.
                        let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
                        (ppid.parse::<i32>().ok()? == postmaster).then_some(pid)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let _ = kill(Pid::from_raw(postmaster), Signal::SIGKILL);
        for c in &children {
            let _ = kill(Pid::from_raw(*c), Signal::SIGKILL);
        }
        for _ in 0..500 {
            if !self.is_running(spec).await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(EngineError::Tool {
            tool: "kill".into(),
            status: "timed out".into(),
            output: format!("server {} survived SIGKILL", spec.uid),
        })
    }

    fn ensure_dir(&self, spec: &ServerSpec) -> Result<(), EngineError> {
        std::fs::create_dir_all(&spec.dir).map_err(io(format!("create {}", spec.dir.display())))?;
        self.own(&spec.dir, 0o700)
    }
}

/// Where each user database records its geo-replication partner.
const GEO_LINK_SCHEMA: &str = "\
CREATE SCHEMA IF NOT EXISTS fogd;
CREATE TABLE IF NOT EXISTS fogd.geo_link (
    partner_server text NOT NULL,
    partner_zone text NOT NULL,
    application_name text NOT NULL
);";

/// Azure's `sp_wait_for_database_copy_sync`, for PostgreSQL: returns once all WAL flushed on
/// the primary before the call (so every transaction committed before it) has been flushed
/// by the geo-secondary — hardened, not necessarily replayed. Runs as its owner (a
/// superuser) so any user who may connect can call it and read the walsender state.
/// Interruptible, so `statement_timeout` applies.
const WAIT_PROCEDURE: &str = r#"
CREATE OR REPLACE PROCEDURE public.sp_wait_for_database_copy_sync(target_server text, target_database text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $proc$
DECLARE
    app text;
    partners text;
    target pg_lsn;
BEGIN
    IF target_database IS DISTINCT FROM current_database() THEN
        RAISE EXCEPTION 'sp_wait_for_database_copy_sync: target database "%" is not this database ("%"); the geo link pairs a database with its copy of the same name', target_database, current_database()
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'sp_wait_for_database_copy_sync: this is the geo-secondary; call it on the primary (the read-write listener)'
            USING ERRCODE = 'read_only_sql_transaction';
    END IF;
    SELECT l.application_name INTO app FROM fogd.geo_link l
     WHERE lower(target_server) = lower(l.partner_server)
        OR lower(target_server) LIKE lower(l.partner_server || '.' || l.partner_zone || '.%')
     LIMIT 1;
    IF app IS NULL THEN
        SELECT string_agg(partner_server, ', ') INTO partners FROM fogd.geo_link;
        IF partners IS NULL THEN
            RAISE EXCEPTION 'sp_wait_for_database_copy_sync: database "%" has no geo-replication link (its instance is not the primary of a failover group)', current_database()
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RAISE EXCEPTION 'sp_wait_for_database_copy_sync: "%" is not the geo-secondary of database "%" (its geo-secondary is %)', target_server, current_database(), partners
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    target := pg_current_wal_flush_lsn();
    LOOP
        -- Without clearing, a walsender that reconnected stays invisible for the call.
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_replication r
                           WHERE r.application_name = app AND r.flush_lsn >= target);
        PERFORM pg_sleep(0.001);
    END LOOP;
END
$proc$;
"#;

/// A libpq password file given to one child process through `PGPASSFILE` (see the module
/// docs); the file is removed when this is dropped. A fogd killed while the child runs
/// leaves it behind inside the server's own directory (mode 0700), where it is as private
/// as the server's data, and removed with it.
struct PassFile(PathBuf);

impl PassFile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PassFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One `~/.pgpass` line matching any host, port and database for `user`; `:` and `\` in
/// the fields are escaped with `\`.
fn pgpass_line(user: &str, password: &str) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    format!("*:*:*:{}:{}\n", esc(user), esc(password))
}

/// A libpq connection-string value in single quotes (`\` and `'` escaped).
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The libpq connection string a standby uses to reach its source.
fn source_conninfo(source: &ReplicationSource) -> String {
    format!(
        "host={} port={} user={} application_name={} connect_timeout=5",
        source.host, source.port, REPLICATOR, source.application_name
    )
}

/// Parses pg_basebackup's `--progress` lines (`1234/5678 kB (21%), 0/1 tablespace`).
pub(crate) fn parse_progress(line: &str) -> Option<SeedProgress> {
    let kb = line.find(" kB")?;
    let head = &line[..kb];
    let start = head
        .rfind(|c: char| !(c.is_ascii_digit() || c == '/'))
        .map(|i| i + 1)
        .unwrap_or(0);
    let (done, total) = head[start..].split_once('/')?;
    Some(SeedProgress {
        done: done.parse::<u64>().ok()? * 1024,
        total: total.parse::<u64>().ok()? * 1024,
    })
}

impl LocalAgent {
    /// Copies `source` into `target`. Without `-R`: pg_basebackup would write the password
    /// it used into the copy's `primary_conninfo`; [`Self::configure_standby`] writes the
    /// standby settings instead.
    async fn basebackup(
        &self,
        spec: &ServerSpec,
        target: &Path,
        source: &ReplicationSource,
        progress: &ProgressFn,
    ) -> Result<(), EngineError> {
        use tokio::io::AsyncBufReadExt;
        let pass = self.passfile(&spec.dir, REPLICATOR, &source.password)?;
        let mut cmd = self.tool("pg_basebackup", &spec.dir);
        cmd.arg("-D")
            .arg(target)
            .args(["-X", "stream", "-c", "fast", "--progress", "-S"])
            .arg(&source.slot)
            .arg("-d")
            .arg(source_conninfo(source))
            .env("PGPASSFILE", pass.path())
            .stdout(Stdio::null());
        let mut child = cmd.spawn().map_err(io("run pg_basebackup"))?;
        let mut tail = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match parse_progress(&line) {
                    Some(p) => progress(p),
                    None => tail.push(line),
                }
            }
        }
        let status = child.wait().await.map_err(io("wait for pg_basebackup"))?;
        if status.success() {
            Ok(())
        } else {
            Err(EngineError::Tool {
                tool: "pg_basebackup".into(),
                status: status.to_string(),
                output: tail.join("\n").chars().take(2000).collect(),
            })
        }
    }

    /// `pg_controldata` as `key: value` pairs.
    async fn controldata(&self, spec: &ServerSpec) -> Result<Vec<(String, String)>, EngineError> {
        let mut cmd = self.tool("pg_controldata", &spec.dir);
        cmd.arg("-D").arg(spec.pgdata());
        let out = self.run(cmd, "pg_controldata").await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect())
    }

    /// The end of the server's valid WAL, found by reading it from the last checkpoint's
    /// redo point until the first invalid record.
    async fn wal_end(&self, spec: &ServerSpec) -> Option<String> {
        let cd = self.controldata(spec).await.ok()?;
        let get = |k: &str| cd.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let redo = get("Latest checkpoint's REDO location")?;
        let tli = get("Latest checkpoint's TimeLineID")?;
        let mut cmd = self.tool("pg_waldump", &spec.dir);
        cmd.arg("-p")
            .arg(spec.pgdata().join("pg_wal"))
            .args(["-t", &tli, "-s", &redo, "-q"]);
        let out = cmd.output().await.ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        // "... invalid record length at 0/30001C0: wanted 24, got 0"
        let tail = text.rsplit(" at ").next()?;
        let lsn: String = tail
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '/')
            .collect();
        parse_lsn(&lsn).map(|_| lsn)
    }

    /// Writes the standby configuration into a stopped server's data directory:
    /// `primary_conninfo`, `primary_slot_name`, `standby.signal`, and the `seeded-from`
    /// marker.
    ///
    /// The replication password is not in `primary_conninfo` (which a superuser can read
    /// with `SHOW`, and which base backups and rewinds copy): it names a password file,
    /// `standby.pgpass` beside the data directory (mode 0600, owned by the server's user),
    /// which the WAL receiver reads on every connection attempt. A `primary_conninfo` with
    /// a password written by an earlier fogd (or by `pg_basebackup -R`) is replaced here.
    fn configure_standby(
        &self,
        spec: &ServerSpec,
        source: &ReplicationSource,
    ) -> Result<(), EngineError> {
        let passfile = Self::standby_passfile(spec)?;
        self.write_private(
            &passfile,
            pgpass_line(REPLICATOR, &source.password).as_bytes(),
        )?;
        let auto = spec.pgdata().join("postgresql.auto.conf");
        let text = std::fs::read_to_string(&auto).unwrap_or_default();
        let mut kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !l.starts_with("primary_conninfo") && !l.starts_with("primary_slot_name")
            })
            .collect();
        let conninfo = format!(
            "{} passfile={}",
            source_conninfo(source),
            conninfo_value(&passfile.to_string_lossy())
        );
        let conninfo_line = format!("primary_conninfo = {}", literal(&conninfo));
        let slot_line = format!("primary_slot_name = {}", literal(&source.slot));
        kept.push(&conninfo_line);
        kept.push(&slot_line);
        std::fs::write(&auto, kept.join("\n") + "\n").map_err(io("write postgresql.auto.conf"))?;
        self.own(&auto, 0o600)?;
        let signal = spec.pgdata().join("standby.signal");
        std::fs::write(&signal, b"").map_err(io("write standby.signal"))?;
        self.own(&signal, 0o600)?;
        std::fs::write(spec.dir.join("seeded-from"), &source.slot)
            .map_err(io("write seeded-from marker"))
    }

    /// Creates or alters a role with `options` and a SCRAM verifier as its password. The
    /// verifier is a salted hash, so a clear password never reaches the server or its logs.
    async fn ensure_role(
        &self,
        spec: &ServerSpec,
        role: &str,
        options: &str,
        scram_verifier: &str,
    ) -> Result<(), EngineError> {
        let c = sql::connect(spec, "postgres").await?;
        let exists = c
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .map_err(|e| sql::err(spec, e))?
            .is_some();
        let verb = if exists { "ALTER" } else { "CREATE" };
        let stmt = format!(
            "{verb} ROLE {} WITH {options} PASSWORD {}",
            ident(role),
            literal(scram_verifier)
        );
        c.batch_execute(&stmt).await.map_err(|e| sql::err(spec, e))
    }

    fn remove_dir(path: &Path) -> Result<(), EngineError> {
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("remove {}", path.display()))(e)),
        }
    }
}

impl LocalAgent {
    // The commands themselves, run with the server's lock held and its fence admitted
    // (see `hold`); the `InstanceAgent` methods below are their fenced entry points.

    async fn ensure_initialized_held(
        &self,
        spec: &ServerSpec,
        gen: Generation,
    ) -> Result<(), EngineError> {
        self.ensure_dir(spec)?;
        fence::admit(&spec.dir, &spec.uid, gen)?;
        if Self::marker(spec).exists() {
            return Ok(());
        }
        self.reap_orphans(spec).await;
        let pgdata = spec.pgdata();
        if pgdata.exists() {
            tracing::info!(uid = %spec.uid, "removing half-initialised data directory from an interrupted run");
            std::fs::remove_dir_all(&pgdata).map_err(io(format!("remove {}", pgdata.display())))?;
        }
        let pwfile = spec.dir.join("initdb.pw");
        self.write_private(&pwfile, spec.superuser_password.as_bytes())?;
        let mut cmd = self.tool("initdb", &spec.dir);
        cmd.arg("-D")
            .arg(&pgdata)
            .arg("-U")
            .arg(SUPERUSER)
            .arg("--pwfile")
            .arg(&pwfile)
            .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]);
        let result = self.run(cmd, "initdb").await;
        let _ = std::fs::remove_file(&pwfile);
        result?;
        let conf = pgdata.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io("read postgresql.conf"))?;
        text.push_str("\ninclude 'fogd.conf'\n");
        std::fs::write(&conf, text).map_err(io("write postgresql.conf"))?;
        let fogd_conf = pgdata.join("fogd.conf");
        std::fs::write(&fogd_conf, SERVER_SETTINGS).map_err(io("write fogd.conf"))?;
        self.own(&fogd_conf, 0o600)?;
        let hba = pgdata.join("pg_hba.conf");
        std::fs::write(&hba, HBA).map_err(io("write pg_hba.conf"))?;
        self.own(&hba, 0o600)?;
        // Durable before it counts as initialised (initdb ran with --no-sync).
        let mut sync = self.tool("initdb", &spec.dir);
        sync.arg("-D").arg(&pgdata).arg("--sync-only");
        self.run(sync, "initdb --sync-only").await?;
        std::fs::write(Self::marker(spec), b"1").map_err(io("write initialized marker"))?;
        Ok(())
    }

    async fn ensure_running_held(
        &self,
        spec: &ServerSpec,
        gen: Generation,
    ) -> Result<(), EngineError> {
        self.start_held(spec, gen).await?;
        self.wait_ready(spec).await
    }

    /// Starts the postmaster if it is not running (does not wait for it to accept).
    async fn start_held(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        fence::admit(&spec.dir, &spec.uid, gen)?;
        if !self.is_running(spec).await? {
            let mut cmd = self.tool("pg_ctl", &spec.dir);
            cmd.arg("start")
                .arg("-D")
                .arg(spec.pgdata())
                .arg("-l")
                .arg(spec.log_file())
                // -W: fogd waits itself, polling every 10 ms (pg_ctl -w polls every 100 ms).
                .args(["-W", "-o"])
                .arg(format!(
                    "-p {} -c listen_addresses={} -c unix_socket_directories=''",
                    spec.port,
                    literal(&spec.host)
                ));
            // pg_ctl leaves the postmaster running in its own session; it outlives fogd.
            self.run(cmd, "pg_ctl start").await?;
        }
        Ok(())
    }

    /// Waits until the server answers SQL (bounded). Changes nothing, so it runs without
    /// the server's lock: a fence may act on the server meanwhile.
    async fn wait_ready(&self, spec: &ServerSpec) -> Result<(), EngineError> {
        // Ready means it answers SQL, not just that the postmaster exists. A standby may
        // replay for a while before it accepts connections; a postmaster that died (bad
        // port, bad data) is reported with the end of its log.
        let started = tokio::time::Instant::now();
        let mut checked = started;
        loop {
            match sql::accepts_connections(spec).await {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() >= Duration::from_secs(120) => return Err(e),
                Err(e) => {
                    if checked.elapsed() >= Duration::from_millis(500) {
                        checked = tokio::time::Instant::now();
                        if !self.is_running(spec).await? {
                            let log = std::fs::read_to_string(spec.log_file()).unwrap_or_default();
                            let tail: Vec<&str> = log.lines().rev().take(5).collect();
                            return Err(EngineError::Tool {
                                tool: "postgres".into(),
                                status: format!("not running ({e})"),
                                output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                            });
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    async fn stop_held(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        if !spec.dir.exists() {
            return Ok(());
        }
        fence::admit(&spec.dir, &spec.uid, gen)?;
        if !self.is_running(spec).await? {
            return Ok(());
        }
        let mut cmd = self.tool("pg_ctl", &spec.dir);
        cmd.arg("stop")
            .arg("-D")
            .arg(spec.pgdata())
            .args(["-m", "fast", "-w", "-t", "60"]);
        if let Err(e) = self.run(cmd, "pg_ctl stop").await {
            tracing::warn!(uid = %spec.uid, error = %e, "fast stop failed; stopping immediately");
            let mut cmd = self.tool("pg_ctl", &spec.dir);
            cmd.arg("stop").arg("-D").arg(spec.pgdata()).args([
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
            ]);
            self.run(cmd, "pg_ctl stop -m immediate").await?;
        }
        Ok(())
    }

    async fn destroy_held(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        self.stop_held(spec, gen).await?;
        match std::fs::remove_dir_all(&spec.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("remove {}", spec.dir.display()))(e)),
        }
    }

    async fn status_ro(&self, spec: &ServerSpec) -> Result<ServerStatus, EngineError> {
        Ok(ServerStatus {
            initialized: Self::marker(spec).exists(),
            running: self.is_running(spec).await?,
            has_data: spec.pgdata().join("PG_VERSION").exists(),
        })
    }

    async fn ensure_login_held(
        &self,
        spec: &ServerSpec,
        login: &str,
        scram_verifier: &str,
    ) -> Result<(), EngineError> {
        self.ensure_role(spec, login, "SUPERUSER LOGIN", scram_verifier)
            .await
    }

    async fn create_database_held(&self, spec: &ServerSpec, name: &str) -> Result<(), EngineError> {
        let c = sql::connect(spec, "postgres").await?;
        match c
            .batch_execute(&format!("CREATE DATABASE {}", ident(name)))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
                Ok(())
            }
            Err(e) => Err(sql::err(spec, e)),
        }
    }

    async fn drop_database_held(&self, spec: &ServerSpec, name: &str) -> Result<(), EngineError> {
        let c = sql::connect(spec, "postgres").await?;
        c.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            ident(name)
        ))
        .await
        .map_err(|e| sql::err(spec, e))
    }

    async fn list_databases_ro(&self, spec: &ServerSpec) -> Result<Vec<String>, EngineError> {
        let c = sql::connect(spec, "postgres").await?;
        let rows = c
            .query(
                "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| sql::err(spec, e))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    async fn ensure_replication_role_held(
        &self,
        spec: &ServerSpec,
        scram_verifier: &str,
    ) -> Result<(), EngineError> {
        // Superuser too: pg_rewind reads the source's files through it.
        self.ensure_role(
            spec,
            REPLICATOR,
            "REPLICATION LOGIN SUPERUSER",
            scram_verifier,
        )
        .await
    }

    async fn check_replication_source_ro(
        &self,
        from: &ServerSpec,
        source: &ReplicationSource,
    ) -> Result<(), EngineError> {
        let pass = self.passfile(&from.dir, REPLICATOR, &source.password)?;
        let mut cmd = self.tool("psql", &from.dir);
        cmd.arg(format!(
            "{} dbname=replication replication=true",
            source_conninfo(source)
        ))
        .args(["-X", "-At", "-c", "IDENTIFY_SYSTEM"])
        .env("PGPASSFILE", pass.path());
        self.run(cmd, "psql IDENTIFY_SYSTEM").await.map(|_| ())
    }

    async fn ensure_slot_held(&self, spec: &ServerSpec, slot: &str) -> Result<(), EngineError> {
        let c = sql::connect(spec, "postgres").await?;
        c.execute(
            "SELECT pg_create_physical_replication_slot($1, true)
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .map_err(|e| sql::err(spec, e))?;
        Ok(())
    }

    async fn drop_slot_held(&self, spec: &ServerSpec, slot: &str) -> Result<(), EngineError> {
        let c = sql::connect(spec, "postgres").await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let r = c
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                     WHERE slot_name = $1 AND NOT active",
                    &[&slot],
                )
                .await
                .map_err(|e| sql::err(spec, e))?;
            let left = c
                .query_opt(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .map_err(|e| sql::err(spec, e))?;
            if left.is_none() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Sql {
                    uid: spec.uid.clone(),
                    message: format!("replication slot {slot} stayed active ({r} dropped)"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn seed_standby_held(
        &self,
        spec: &ServerSpec,
        source: &ReplicationSource,
        progress: &ProgressFn,
        gen: Generation,
    ) -> Result<(), EngineError> {
        fence::admit(&spec.dir, &spec.uid, gen)?;
        self.reap_orphans(spec).await;
        let marker = spec.dir.join("seeded-from");
        let seeded = std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == source.slot)
            && spec.pgdata().join("standby.signal").exists();
        if !seeded {
            let staging = spec.dir.join("pgdata.seeding");
            Self::remove_dir(&staging)?;
            // The server's own data is about to be replaced, so it is stopped while the copy
            // runs rather than after it. If the copy fails it is started again — but only if
            // it was running: a stopped server (a former primary being re-seeded because it
            // could not be rewound) must never come back as it was.
            let was_running = self.is_running(spec).await?;
            let (copied, stopped) = tokio::join!(
                self.basebackup(spec, &staging, source, progress),
                self.stop_held(spec, gen)
            );
            if let Err(e) = copied {
                if was_running && stopped.is_ok() && spec.pgdata().join("PG_VERSION").exists() {
                    if let Err(restart) = self.ensure_running_held(spec, gen).await {
                        tracing::warn!(uid = %spec.uid, error = %restart, "restarting after a failed seed failed");
                    }
                }
                return Err(e);
            }
            stopped?;
            // Swap the data directories only once the copy is complete.
            let old = spec.dir.join("pgdata.old");
            Self::remove_dir(&old)?;
            if spec.pgdata().exists() {
                std::fs::rename(spec.pgdata(), &old)
                    .map_err(io("set aside the old data directory"))?;
            }
            std::fs::rename(&staging, spec.pgdata())
                .map_err(io("install the seeded data directory"))?;
            // Standby settings (and the marker, last) once the copy is in place.
            self.configure_standby(spec, source)?;
        }
        self.ensure_running_held(spec, gen).await?;
        // The replaced data directory goes in the background, off the critical path; a
        // leftover is removed by the next seed.
        let old = spec.dir.join("pgdata.old");
        tokio::task::spawn_blocking(move || {
            if let Err(e) = Self::remove_dir(&old) {
                tracing::warn!(error = %e, "removing a replaced data directory failed");
            }
        });
        Ok(())
    }

    async fn promote_held(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        fence::admit(&spec.dir, &spec.uid, gen)?;
        let c = sql::connect(spec, "postgres").await?;
        let in_recovery = |c: tokio_postgres::Client| async move {
            c.query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map(|r| (r.get::<_, bool>(0), c))
        };
        let (mut recovering, mut c) = in_recovery(c).await.map_err(|e| sql::err(spec, e))?;
        if recovering {
            c.execute("SELECT pg_promote(wait => false)", &[])
                .await
                .map_err(|e| sql::err(spec, e))?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while recovering {
                if tokio::time::Instant::now() >= deadline {
                    return Err(EngineError::Sql {
                        uid: spec.uid.clone(),
                        message: "promotion did not finish within 60 s".into(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                (recovering, c) = in_recovery(c).await.map_err(|e| sql::err(spec, e))?;
            }
        }
        // Move pg_control to the new timeline now (pg_rewind reads it), and forget the
        // old upstream.
        // One statement per call: ALTER SYSTEM refuses the implicit transaction of a
        // multi-statement query.
        for stmt in [
            "CHECKPOINT",
            "ALTER SYSTEM RESET primary_conninfo",
            "ALTER SYSTEM RESET primary_slot_name",
            "SELECT pg_reload_conf()",
        ] {
            c.batch_execute(stmt).await.map_err(|e| sql::err(spec, e))?;
        }
        // A primary keeps no replication password.
        let _ = std::fs::remove_file(spec.dir.join("standby.pgpass"));
        Ok(())
    }

    async fn install_geo_link_held(
        &self,
        spec: &ServerSpec,
        database: &str,
        partner: &str,
        zone: &str,
        application_name: &str,
    ) -> Result<(), EngineError> {
        let c = sql::connect(spec, database).await?;
        let e = |e| sql::err(spec, e);
        c.batch_execute(GEO_LINK_SCHEMA).await.map_err(e)?;
        c.batch_execute("DELETE FROM fogd.geo_link")
            .await
            .map_err(e)?;
        c.execute(
            "INSERT INTO fogd.geo_link(partner_server, partner_zone, application_name) VALUES ($1, $2, $3)",
            &[&partner, &zone, &application_name],
        )
        .await
        .map_err(e)?;
        c.batch_execute(WAIT_PROCEDURE).await.map_err(e)?;
        c.batch_execute(
            "GRANT EXECUTE ON PROCEDURE public.sp_wait_for_database_copy_sync(text, text) TO PUBLIC",
        )
        .await
        .map_err(e)
    }

    async fn clear_geo_link_held(
        &self,
        spec: &ServerSpec,
        database: &str,
    ) -> Result<(), EngineError> {
        let c = sql::connect(spec, database).await?;
        c.batch_execute(GEO_LINK_SCHEMA)
            .await
            .map_err(|e| sql::err(spec, e))?;
        c.batch_execute("DELETE FROM fogd.geo_link")
            .await
            .map_err(|e| sql::err(spec, e))
    }

    async fn set_sync_standby_held(
        &self,
        spec: &ServerSpec,
        application_name: Option<&str>,
    ) -> Result<(), EngineError> {
        let c = sql::connect(spec, "postgres").await?;
        let stmt = match application_name {
            Some(name) => format!(
                "ALTER SYSTEM SET synchronous_standby_names = {}",
                literal(&ident(name))
            ),
            None => "ALTER SYSTEM RESET synchronous_standby_names".to_string(),
        };
        c.batch_execute(&stmt)
            .await
            .map_err(|e| sql::err(spec, e))?;
        c.batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(|e| sql::err(spec, e))
    }

    async fn stop_and_inspect_held(
        &self,
        spec: &ServerSpec,
        gen: Generation,
    ) -> Result<ShutdownState, EngineError> {
        self.stop_held(spec, gen).await?;
        let cd = self.controldata(spec).await?;
        let get = |k: &str| {
            cd.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Ok(ShutdownState {
            clean: get("Database cluster state") == "shut down",
            checkpoint_lsn: get("Latest checkpoint location"),
        })
    }

    async fn kill_held(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        if !spec.dir.exists() {
            return Ok(());
        }
        fence::admit(&spec.dir, &spec.uid, gen)?;
        if self.is_running(spec).await? {
            let mut cmd = self.tool("pg_ctl", &spec.dir);
            cmd.arg("stop")
                .arg("-D")
                .arg(spec.pgdata())
                .args(["-m", "immediate", "-w", "-t", "2"]);
            if let Err(e) = self.run(cmd, "pg_ctl stop -m immediate").await {
                // A postmaster that does not act on SIGQUIT (frozen: SIGSTOP, a hung
                // kernel call) still dies of SIGKILL, and its processes with it.
                tracing::warn!(uid = %spec.uid, error = %e, "immediate stop did not finish; killing the server's processes");
                self.sigkill_server(spec).await?;
            }
        }
        Ok(())
    }

    async fn replayed_past_ro(&self, spec: &ServerSpec, lsn: &str) -> Result<bool, EngineError> {
        let c = sql::connect(spec, "postgres").await?;
        let row = c
            .query_one(
                "SELECT pg_last_wal_replay_lsn() > $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .map_err(|e| sql::err(spec, e))?;
        Ok(row.get::<_, Option<bool>>(0).unwrap_or(false))
    }

    async fn reseed_standby_held(
        &self,
        spec: &ServerSpec,
        source: &ReplicationSource,
        gen: Generation,
    ) -> Result<(), EngineError> {
        fence::admit(&spec.dir, &spec.uid, gen)?;
        self.kill_held(spec, gen).await?;
        // Without the marker, seeding replaces the data instead of only starting it.
        match std::fs::remove_file(spec.dir.join("seeded-from")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove seeded-from marker")(e)),
        }
        self.seed_standby_held(spec, source, &|_| {}, gen).await
    }

    async fn follow_held(
        &self,
        spec: &ServerSpec,
        source: &ReplicationSource,
        gen: Generation,
    ) -> Result<(), EngineError> {
        fence::admit(&spec.dir, &spec.uid, gen)?;
        if self.is_running(spec).await? {
            let st = self.stop_and_inspect_held(spec, gen).await?;
            if !st.clean {
                return Err(EngineError::Config(format!(
                    "server {} did not stop cleanly; it must be rewound, not followed",
                    spec.uid
                )));
            }
        }
        self.configure_standby(spec, source)?;
        self.ensure_running_held(spec, gen).await
    }

    async fn rewind_and_follow_held(
        &self,
        spec: &ServerSpec,
        source_server: &ServerSpec,
        source: &ReplicationSource,
        gen: Generation,
    ) -> Result<RewindReport, EngineError> {
        fence::admit(&spec.dir, &spec.uid, gen)?;
        self.reap_orphans(spec).await;
        // Rewound already under this generation (its reply was lost: fogd crashed, or the
        // connection broke): a second pg_rewind would find nothing to do, so the saved
        // report answers — as long as the server is still on the history the rewind gave
        // it (a standby, running or not); one that came up writable since is rewound anew.
        let saved = rewind::load(&spec.dir, gen)?;
        if let Some(report) = &saved {
            if self.still_rewound(spec).await {
                self.kill_held(spec, gen).await?;
                self.configure_standby(spec, source)?;
                self.ensure_running_held(spec, gen).await?;
                return Ok(report.clone());
            }
        }
        self.kill_held(spec, gen).await?;
        let old_end = self.wal_end(spec).await;
        let pass = self.passfile(&spec.dir, SUPERUSER, &source_server.superuser_password)?;
        let mut cmd = self.tool("pg_rewind", &spec.dir);
        cmd.arg("--target-pgdata")
            .arg(spec.pgdata())
            .arg(format!(
                "--source-server=host={} port={} user={} dbname=postgres connect_timeout=5",
                source_server.host, source_server.port, SUPERUSER
            ))
            .env("PGPASSFILE", pass.path());
        let mut report = RewindReport {
            diverged_at: None,
            old_end: old_end.clone(),
            lost_bytes: 0,
            reseeded: false,
        };
        match self.run(cmd, "pg_rewind").await {
            Ok(out) => {
                // "servers diverged at WAL location 0/3000148 on timeline 1"
                if let Some(rest) = out.split("diverged at WAL location ").nth(1) {
                    let lsn: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    report.diverged_at = Some(lsn);
                }
            }
            Err(e) => {
                tracing::warn!(uid = %spec.uid, error = %e, "pg_rewind failed; re-seeding from a base backup");
                let _ = std::fs::remove_file(spec.dir.join("seeded-from"));
                self.seed_standby_held(spec, source, &|_| {}, gen).await?;
                // What an earlier rewind of this generation lost stays lost.
                let mut report = saved.unwrap_or(report);
                report.reseeded = true;
                rewind::save(&spec.dir, gen, &report)?;
                return Ok(report);
            }
        }
        if let (Some(d), Some(e)) = (
            report.diverged_at.as_deref().and_then(parse_lsn),
            old_end.as_deref().and_then(parse_lsn),
        ) {
            report.lost_bytes = e.saturating_sub(d);
        }
        // Nothing to rewind although this generation rewound the server before: it has not
        // diverged since, and that rewind's report is the answer.
        if report.diverged_at.is_none() {
            if let Some(earlier) = saved {
                report = earlier;
            }
        }
        // Written down before anything else: the rewind cannot be repeated to learn it.
        rewind::save(&spec.dir, gen, &report)?;
        // pg_rewind copied the source's configuration files; the standby settings go on top.
        self.configure_standby(spec, source)?;
        self.ensure_running_held(spec, gen).await?;
        Ok(report)
    }

    /// Whether the server is a standby by its control file — running or not, and also
    /// while a standby still starts up and refuses connections ("in archive recovery", as
    /// pg_rewind leaves it, or "shut down in recovery"): still on the history a rewind gave
    /// it. A server that came up writable since says "in production".
    async fn still_rewound(&self, spec: &ServerSpec) -> bool {
        self.controldata(spec).await.is_ok_and(|cd| {
            cd.iter().any(|(k, v)| {
                k == "Database cluster state"
                    && (v == "in archive recovery" || v == "shut down in recovery")
            })
        })
    }

    async fn probe_ro(&self, spec: &ServerSpec, write: bool) -> Result<HealthProbe, EngineError> {
        let c = sql::connect(spec, "postgres").await?;
        // The position is read before the heartbeat is written, so a secondary that has
        // replayed everything up to now compares as fully in sync.
        let role = c
            .query_one(
                "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
                        CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                             ELSE pg_current_wal_lsn() END::text,
                        (extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint,
                        (SELECT sender_port FROM pg_stat_wal_receiver LIMIT 1)",
                &[],
            )
            .await
            .map_err(|e| sql::err(spec, e))?;
        let in_recovery: bool = role.get(0);
        let mut wrote = false;
        if write && !in_recovery {
            const BEAT: &str = "SET synchronous_commit = local; \
                INSERT INTO fogd.heartbeat VALUES (1, now()) \
                ON CONFLICT (id) DO UPDATE SET at = excluded.at";
            if c.batch_execute(BEAT).await.is_err() {
                // First probe of this server: make the table, then beat.
                c.batch_execute(
                    "CREATE SCHEMA IF NOT EXISTS fogd; \
                     CREATE TABLE IF NOT EXISTS fogd.heartbeat \
                       (id int PRIMARY KEY, at timestamptz NOT NULL)",
                )
                .await
                .map_err(|e| sql::err(spec, e))?;
                c.batch_execute(BEAT).await.map_err(|e| sql::err(spec, e))?;
            }
            wrote = true;
        }
        let age: Option<i64> = role.get(3);
        let sender_port: Option<i32> = role.get(4);
        Ok(HealthProbe {
            in_recovery,
            receiver_status: role.get(1),
            wal_lsn: role.get(2),
            replay_age_ms: age.filter(|_| in_recovery).map(|a| a.max(0) as u64),
            wrote,
            sender_port: sender_port.and_then(|p| u16::try_from(p).ok()),
        })
    }

    async fn replication_status_ro(
        &self,
        spec: &ServerSpec,
    ) -> Result<ReplicationStatus, EngineError> {
        let c = sql::connect(spec, "postgres").await?;
        let row = c
            .query_one(
                "SELECT pg_is_in_recovery(),
                        (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
                        ARRAY(SELECT application_name FROM pg_stat_replication WHERE state = 'streaming')",
                &[],
            )
            .await
            .map_err(|e| sql::err(spec, e))?;
        Ok(ReplicationStatus {
            in_recovery: row.get(0),
            receiver_status: row.get(1),
            streaming_standbys: row.get(2),
        })
    }
}

/// One lock per server: a fenced command admits its generation and acts while holding it,
/// so a command of an older generation can never interleave with a newer one on the same
/// server (check-then-act is atomic per server).
type ServerLocks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

impl LocalAgent {
    /// Takes the server's lock and admits `gen` at its fence (refusing an older one).
    async fn hold(
        &self,
        spec: &ServerSpec,
        gen: Generation,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, EngineError> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .map_err(|_| EngineError::Config("server lock table poisoned".into()))?;
            locks.entry(spec.uid.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        if spec.dir.exists() {
            fence::admit(&spec.dir, &spec.uid, gen)?;
        }
        Ok(guard)
    }
}

#[async_trait]
impl InstanceAgent for LocalAgent {
    async fn ensure_initialized(
        &self,
        spec: &ServerSpec,
        gen: Generation,
    ) -> Result<(), EngineError> {
        self.ensure_dir(spec)?;
        let _held = self.hold(spec, gen).await?;
        self.ensure_initialized_held(spec, gen).await
    }

    async fn ensure_running(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        {
            let _held = self.hold(spec, gen).await?;
            self.start_held(spec, gen).await?;
        }
        self.wait_ready(spec).await
    }

    async fn fence(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        Ok(())
    }

    async fn stop(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.stop_held(spec, gen).await
    }

    async fn destroy(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.destroy_held(spec, gen).await
    }

    async fn status(&self, spec: &ServerSpec) -> Result<ServerStatus, EngineError> {
        self.status_ro(spec).await
    }

    async fn ensure_login(
        &self,
        spec: &ServerSpec,
        login: &str,
        scram_verifier: &str,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.ensure_login_held(spec, login, scram_verifier).await
    }

    async fn create_database(
        &self,
        spec: &ServerSpec,
        name: &str,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.create_database_held(spec, name).await
    }

    async fn drop_database(
        &self,
        spec: &ServerSpec,
        name: &str,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.drop_database_held(spec, name).await
    }

    async fn list_databases(&self, spec: &ServerSpec) -> Result<Vec<String>, EngineError> {
        self.list_databases_ro(spec).await
    }

    async fn ensure_replication_role(
        &self,
        spec: &ServerSpec,
        scram_verifier: &str,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.ensure_replication_role_held(spec, scram_verifier)
            .await
    }

    async fn check_replication_source(
        &self,
        from: &ServerSpec,
        source: &ReplicationSource,
    ) -> Result<(), EngineError> {
        self.check_replication_source_ro(from, source).await
    }

    async fn ensure_slot(
        &self,
        spec: &ServerSpec,
        slot: &str,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.ensure_slot_held(spec, slot).await
    }

    async fn drop_slot(
        &self,
        spec: &ServerSpec,
        slot: &str,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.drop_slot_held(spec, slot).await
    }

    async fn seed_standby(
        &self,
        spec: &ServerSpec,
        source: &ReplicationSource,
        progress: &ProgressFn,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.seed_standby_held(spec, source, progress, gen).await
    }

    async fn promote(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.promote_held(spec, gen).await
    }

    async fn probe(&self, spec: &ServerSpec, write: bool) -> Result<HealthProbe, EngineError> {
        self.probe_ro(spec, write).await
    }

    async fn replication_status(
        &self,
        spec: &ServerSpec,
    ) -> Result<ReplicationStatus, EngineError> {
        self.replication_status_ro(spec).await
    }

    async fn install_geo_link(
        &self,
        spec: &ServerSpec,
        database: &str,
        partner: &str,
        zone: &str,
        application_name: &str,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.install_geo_link_held(spec, database, partner, zone, application_name)
            .await
    }

    async fn clear_geo_link(
        &self,
        spec: &ServerSpec,
        database: &str,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.clear_geo_link_held(spec, database).await
    }

    async fn set_sync_standby(
        &self,
        spec: &ServerSpec,
        application_name: Option<&str>,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.set_sync_standby_held(spec, application_name).await
    }

    async fn stop_and_inspect(
        &self,
        spec: &ServerSpec,
        gen: Generation,
    ) -> Result<ShutdownState, EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.stop_and_inspect_held(spec, gen).await
    }

    async fn kill(&self, spec: &ServerSpec, gen: Generation) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.kill_held(spec, gen).await
    }

    async fn replayed_past(&self, spec: &ServerSpec, lsn: &str) -> Result<bool, EngineError> {
        self.replayed_past_ro(spec, lsn).await
    }

    async fn reseed_standby(
        &self,
        spec: &ServerSpec,
        source: &ReplicationSource,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.reseed_standby_held(spec, source, gen).await
    }

    async fn follow(
        &self,
        spec: &ServerSpec,
        source: &ReplicationSource,
        gen: Generation,
    ) -> Result<(), EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.follow_held(spec, source, gen).await
    }

    async fn rewind_and_follow(
        &self,
        spec: &ServerSpec,
        source_server: &ServerSpec,
        source: &ReplicationSource,
        gen: Generation,
    ) -> Result<RewindReport, EngineError> {
        let _held = self.hold(spec, gen).await?;
        self.rewind_and_follow_held(spec, source_server, source, gen)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress("   1234/5678 kB (21%), 0/1 tablespace"),
            Some(SeedProgress {
                done: 1234 * 1024,
                total: 5678 * 1024
            })
        );
        assert_eq!(
            parse_progress(
                "5678/5678 kB (100%), 1/1 tablespace (...data/pgdata.seeding/global/pg_control)"
            ),
            Some(SeedProgress {
                done: 5678 * 1024,
                total: 5678 * 1024
            })
        );
        assert_eq!(parse_progress("pg_basebackup: checkpoint completed"), None);
    }

    #[test]
    fn password_file_lines_and_conninfo_values_are_escaped() {
        assert_eq!(
            pgpass_line("fogd_replicator", "abc"),
            "*:*:*:fogd_replicator:abc\n"
        );
        assert_eq!(pgpass_line("u", r"a:b\c"), "*:*:*:u:a\\:b\\\\c\n");
        assert_eq!(conninfo_value("/srv/my dir/it's"), r"'/srv/my dir/it\'s'");
        assert_eq!(conninfo_value(r"C:\x"), r"'C:\\x'");
    }
}
