//! The embedded backend: one SQLite file, WAL mode, one connection behind a mutex.
//!
//! **Private files.** The store and its companions (`-wal`, `-shm`, `-journal`) are mode
//! 0600: [`SqliteStore::open`] creates the file that way before SQLite opens it (SQLite gives
//! its companions the database file's mode) and restricts existing files, so a store made
//! by an older fogd with mode 0644 is repaired when opened.
//!
//! **No lingering values.** `secure_delete` is on: SQLite zeroes the content of deleted and
//! overwritten rows in the database file. Older page versions still sit in the WAL until it
//! is reset, and a store written without `secure_delete` may keep old values in free pages;
//! [`SqliteStore::compact`] rewrites the file and truncates the WAL.
//!
//! **Leases and watch history** are this process's (`local`): the keys bound to a lease are
//! also listed in the `kv_lease` table, and opening the store deletes them (in one
//! revision), since their leases ended with the process that granted them. The history
//! [`Store::watch_from`] replays starts when the store is opened.

use crate::local::{spawn_reaper, Hub, Leases};
use crate::{Event, LeaseId, Precondition, Record, Store, StoreError, Watcher, Write, WriteOp};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeSet;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// SQLite-backed [`Store`]. Blocking SQLite calls run on tokio's blocking pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    /// Locked after `conn` when both are needed: every change is published while the
    /// connection is still held, so watchers get changes in revision order.
    local: Mutex<Local>,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

struct Local {
    hub: Hub,
    leases: Leases,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the store file at `path`. The file and its companions are
    /// made (or restricted to) mode 0600.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| backend(format!("create {}: {e}", path.display())))?;
        restrict_files(path)?;
        let store = Self::from_connection(Connection::open(path).map_err(backend)?)?;
        // The companions SQLite created just now (WAL, shared memory) have the file's mode
        // already; this covers anything an older version left.
        restrict_files(path)?;
        Ok(store)
    }

    /// A private in-memory store, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::from_connection(Connection::open_in_memory().map_err(backend)?)
    }

    fn from_connection(conn: Connection) -> Result<Self, StoreError> {
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA secure_delete=ON;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY,
                 value BLOB NOT NULL,
                 revision INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta(name, value) VALUES ('revision', 0);
             CREATE TABLE IF NOT EXISTS kv_lease (
                 key TEXT PRIMARY KEY,
                 lease INTEGER NOT NULL
             ) WITHOUT ROWID;",
        )
        .map_err(backend)?;
        let mut local = Local {
            hub: Hub::new(0),
            leases: Leases::default(),
        };
        // Keys bound to leases of an earlier process: their leases are gone.
        let mut conn = conn;
        let orphans = {
            let mut stmt = conn.prepare("SELECT key FROM kv_lease").map_err(backend)?;
            let keys = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            keys.collect::<Result<BTreeSet<_>, _>>().map_err(backend)?
        };
        delete_keys(&mut conn, &mut local, orphans)?;
        let revision = read_revision(&conn)?;
        local.hub = Hub::new(revision);
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                local: Mutex::new(local),
                reaper: Mutex::new(None),
            }),
        })
    }

    /// Rewrites the database file (`VACUUM`) and truncates the WAL, so that no deleted or
    /// overwritten value survives in free pages or old WAL frames — for example clear-text
    /// values replaced by sealed ones. Takes time proportional to the store's size; fogd
    /// runs it at start-up.
    pub async fn compact(&self) -> Result<(), StoreError> {
        self.blocking(|conn| {
            conn.execute_batch("VACUUM;").map_err(backend)?;
            let busy: i64 = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .map_err(backend)?;
            if busy != 0 {
                return Err(backend(
                    "the WAL could not be truncated: the store is in use",
                ));
            }
            Ok(())
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.with_local(move |conn, _| f(conn)).await
    }

    /// Runs `f` on the blocking pool with the connection and the local state locked, after
    /// deleting the keys of expired leases.
    async fn with_local<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &mut Local) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().map_err(backend)?;
            let mut local = inner.local.lock().map_err(backend)?;
            expire(&mut conn, &mut local)?;
            f(&mut conn, &mut local)
        })
        .await
        .map_err(backend)?
    }

    fn local(&self) -> Result<std::sync::MutexGuard<'_, Local>, StoreError> {
        self.inner.local.lock().map_err(backend)
    }
}

fn read_revision(conn: &Connection) -> Result<u64, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|r| r as u64)
    .map_err(backend)
}

/// Deletes the keys of every expired lease (one revision per lease).
fn expire(conn: &mut Connection, local: &mut Local) -> Result<(), StoreError> {
    if local.leases.any_due() {
        for keys in local.leases.take_expired() {
            delete_keys(conn, local, keys)?;
        }
    }
    Ok(())
}

/// Deletes `keys` in one revision (none if none of them exists) and tells the watchers.
fn delete_keys(
    conn: &mut Connection,
    local: &mut Local,
    keys: BTreeSet<String>,
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction().map_err(backend)?;
    let revision = read_revision(&tx)? + 1;
    let mut events = Vec::new();
    for key in keys {
        tx.execute("DELETE FROM kv_lease WHERE key = ?1", [&key])
            .map_err(backend)?;
        if tx
            .execute("DELETE FROM kv WHERE key = ?1", [&key])
            .map_err(backend)?
            > 0
        {
            events.push(Event {
                key,
                value: None,
                revision,
            });
        }
    }
    if !events.is_empty() {
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'revision'",
            [revision as i64],
        )
        .map_err(backend)?;
    }
    tx.commit().map_err(backend)?;
    local.hub.publish(events);
    Ok(())
}

/// The store file and the companion files SQLite may keep beside it.
fn store_files(path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    files
}

/// Restricts the store file and its existing companions to mode 0600.
fn restrict_files(path: &Path) -> Result<(), StoreError> {
    for f in store_files(path) {
        match std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(backend(format!("chmod {}: {e}", f.display()))),
        }
    }
    Ok(())
}

fn range_records(conn: &Connection, prefix: &str) -> Result<Vec<Record>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT key, value, revision FROM kv WHERE substr(key, 1, ?2) = ?1 ORDER BY key")
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![prefix, prefix.chars().count() as i64], |r| {
            Ok(Record {
                key: r.get(0)?,
                value: r.get(1)?,
                revision: r.get::<_, i64>(2)? as u64,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(backend)
}

fn current_revision(tx: &rusqlite::Transaction<'_>, key: &str) -> Result<Option<u64>, StoreError> {
    tx.query_row("SELECT revision FROM kv WHERE key = ?1", [key], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|o| o.map(|r| r as u64))
    .map_err(backend)
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let key = key.to_string();
        self.blocking(move |conn| {
            conn.query_row(
                "SELECT value, revision FROM kv WHERE key = ?1",
                [&key],
                |r| {
                    Ok(Record {
                        key: key.clone(),
                        value: r.get(0)?,
                        revision: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |conn| range_records(conn, &prefix))
            .await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<u64, StoreError> {
        self.with_local(move |conn, local| {
                let tx = conn.transaction().map_err(backend)?;
                for w in &writes {
                    let key = w.key.as_str();
                    let current = current_revision(&tx, key)?;
                    let ok = match w.precondition {
                        Precondition::Any => true,
                        Precondition::Absent => current.is_none(),
                        Precondition::Revision(r) => current == Some(r),
                    };
                    if !ok {
                        return Err(StoreError::Conflict {
                            key: key.to_string(),
                        });
                    }
                }
                for w in &writes {
                    if let (WriteOp::Put(_), Some(lease)) = (&w.op, w.lease) {
                        if !local.leases.is_live(lease) {
                            return Err(StoreError::LeaseNotFound(lease));
                        }
                    }
                }
                let revision: u64 = tx
                    .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map_err(backend)? as u64
                    + 1;
                let mut events = Vec::new();
                let mut bindings = Vec::new();
                for w in writes {
                    let key = w.key.as_str();
                    let value = match w.op {
                        WriteOp::Check => continue,
                        WriteOp::Put(v) => {
                            tx.execute(
                                "INSERT INTO kv(key, value, revision) VALUES (?1, ?2, ?3)
                                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, revision = excluded.revision",
                                params![key, v, revision as i64],
                            )
                            .map_err(backend)?;
                            match w.lease {
                                Some(lease) => tx.execute(
                                    "INSERT OR REPLACE INTO kv_lease(key, lease) VALUES (?1, ?2)",
                                    params![key, lease.0],
                                ),
                                None => tx.execute("DELETE FROM kv_lease WHERE key = ?1", [key]),
                            }
                            .map_err(backend)?;
                            bindings.push((w.key.clone(), w.lease));
                            Some(v)
                        }
                        WriteOp::Delete => {
                            let deleted = tx
                                .execute("DELETE FROM kv WHERE key = ?1", [key])
                                .map_err(backend)?;
                            tx.execute("DELETE FROM kv_lease WHERE key = ?1", [key])
                                .map_err(backend)?;
                            bindings.push((w.key.clone(), None));
                            if deleted == 0 {
                                continue;
                            }
                            None
                        }
                    };
                    events.push(Event {
                        key: w.key,
                        value,
                        revision,
                    });
                }
                tx.execute(
                    "UPDATE meta SET value = ?1 WHERE name = 'revision'",
                    [revision as i64],
                )
                .map_err(backend)?;
                tx.commit().map_err(backend)?;
                for (key, lease) in bindings {
                    local.leases.bind(&key, lease);
                }
                local.hub.publish(events);
                Ok(revision)
            })
            .await
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        self.blocking(|conn| read_revision(conn)).await
    }

    fn watch(&self, prefix: &str) -> Watcher {
        match self.local() {
            Ok(mut local) => local.hub.watch(prefix),
            // A closed channel: the watcher sees the end at once.
            Err(_) => tokio::sync::mpsc::unbounded_channel().1,
        }
    }

    async fn range_with_revision(&self, prefix: &str) -> Result<(Vec<Record>, u64), StoreError> {
        let prefix = prefix.to_string();
        // Every write goes through this connection, which is held for both reads.
        self.blocking(move |conn| Ok((range_records(conn, &prefix)?, read_revision(conn)?)))
            .await
    }

    async fn watch_from(&self, prefix: &str, after: u64) -> Result<Watcher, StoreError> {
        self.local()?.hub.watch_from(prefix, after)
    }

    async fn compact_history(&self, revision: u64) -> Result<(), StoreError> {
        self.with_local(move |conn, local| {
            let current = read_revision(conn)?;
            local.hub.compact(revision, current)
        })
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let id = self.local()?.leases.grant(ttl);
        let weak = Arc::downgrade(&self.inner);
        spawn_reaper(&self.inner.reaper, move || {
            let inner = weak.upgrade()?;
            Some(async move {
                let store = SqliteStore { inner };
                let next: Result<Option<Instant>, _> = store
                    .with_local(|_, local| Ok(local.leases.next_deadline()))
                    .await;
                next.ok().flatten()
            })
        });
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.with_local(move |_, local| local.leases.keep_alive(lease))
            .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.with_local(move |conn, local| {
            let keys = local.leases.take(lease)?;
            delete_keys(conn, local, keys)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_in_memory_passes_conformance() {
        crate::conformance::run(&SqliteStore::in_memory().expect("open")).await;
    }

    #[tokio::test]
    async fn sqlite_file_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.sqlite");
        let rev = {
            let s = SqliteStore::open(&path).expect("open");
            crate::conformance::run(&s).await;
            s.commit(vec![Write::put(
                "persist/a",
                b"1".to_vec(),
                Precondition::Any,
            )])
            .await
            .expect("put")
        };
        let s = SqliteStore::open(&path).expect("reopen");
        let rec = s.get("persist/a").await.expect("get").expect("present");
        assert_eq!((rec.value.as_slice(), rec.revision), (&b"1"[..], rev));
        assert_eq!(s.revision().await.expect("rev"), rev);
    }

    #[tokio::test]
    async fn reopening_ends_the_leases_of_the_process_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.sqlite");
        let before = {
            let s = SqliteStore::open(&path).expect("open");
            let lease = s
                .grant_lease(std::time::Duration::from_secs(600))
                .await
                .expect("grant");
            s.commit(vec![
                Write::put("owned", b"1".to_vec(), Precondition::Absent).with_lease(lease),
                Write::put("kept", b"1".to_vec(), Precondition::Absent),
            ])
            .await
            .expect("put")
        };
        let s = SqliteStore::open(&path).expect("reopen");
        assert!(s.get("owned").await.expect("get").is_none());
        assert!(s.get("kept").await.expect("get").is_some());
        let now = s.revision().await.expect("rev");
        assert_eq!(now, before + 1, "the orphans are deleted in one revision");
        // The history starts at the open: older revisions count as compacted.
        assert!(matches!(
            s.watch_from("", before).await,
            Err(StoreError::Compacted { requested, compacted }) if requested == before && compacted == now
        ));
        assert!(s.watch_from("", now).await.is_ok());
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn store_files_are_private_and_old_ones_are_repaired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.sqlite");
        let s = SqliteStore::open(&path).expect("open");
        s.commit(vec![Write::put("k", b"v".to_vec(), Precondition::Any)])
            .await
            .expect("put");
        let existing: Vec<PathBuf> = store_files(&path)
            .into_iter()
            .filter(|f| f.exists())
            .collect();
        assert!(
            existing.len() >= 3,
            "store, WAL and shared memory: {existing:?}"
        );
        for f in &existing {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        // A store left world-readable by an older version is restricted when opened (another
        // connection keeps the WAL and shared memory files in place meanwhile).
        let other = Connection::open(&path).expect("open");
        let n: i64 = other
            .query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
            .expect("read");
        assert_eq!(n, 1);
        drop(s);
        for f in &existing {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        let _s = SqliteStore::open(&path).expect("reopen");
        for f in store_files(&path).iter().filter(|f| f.exists()) {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }

    #[tokio::test]
    async fn compact_leaves_no_trace_of_overwritten_or_deleted_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.sqlite");
        let s = SqliteStore::open(&path).expect("open");
        let needle = b"Overwritten-Value-0123456789";
        s.commit(vec![
            Write::put("a", needle.to_vec(), Precondition::Any),
            Write::put("b", needle.to_vec(), Precondition::Any),
        ])
        .await
        .expect("put");
        s.commit(vec![
            Write::put("a", b"replacement".to_vec(), Precondition::Any),
            Write::delete("b", Precondition::Any),
        ])
        .await
        .expect("overwrite");
        s.compact().await.expect("compact");
        for f in store_files(&path).iter().filter(|f| f.exists()) {
            let bytes = std::fs::read(f).expect("read");
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} still holds the old value",
                f.display()
            );
        }
        let rec = s.get("a").await.expect("get").expect("present");
        assert_eq!(rec.value, b"replacement");
        assert!(s.get("b").await.expect("get").is_none());
    }
}
