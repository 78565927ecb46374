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

use crate::{Event, Precondition, Record, Store, StoreError, Watcher, Write, WriteOp};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;

/// SQLite-backed [`Store`]. Blocking SQLite calls run on tokio's blocking pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    watchers: Mutex<Vec<(String, UnboundedSender<Event>)>>,
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
             INSERT OR IGNORE INTO meta(name, value) VALUES ('revision', 0);",
        )
        .map_err(backend)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                watchers: Mutex::new(Vec::new()),
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
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().map_err(backend)?;
            f(&mut conn)
        })
        .await
        .map_err(backend)?
    }

    fn notify(&self, events: Vec<Event>) {
        let Ok(mut watchers) = self.inner.watchers.lock() else {
            return;
        };
        watchers.retain(|(prefix, tx)| {
            events
                .iter()
                .filter(|e| e.key.starts_with(prefix.as_str()))
                .all(|e| tx.send(e.clone()).is_ok())
                && !tx.is_closed()
        });
    }
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
        self.blocking(move |conn| {
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
        })
        .await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<u64, StoreError> {
        let (revision, events) = self
            .blocking(move |conn| {
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
                let revision: u64 = tx
                    .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map_err(backend)? as u64
                    + 1;
                let mut events = Vec::new();
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
                            Some(v)
                        }
                        WriteOp::Delete => {
                            tx.execute("DELETE FROM kv WHERE key = ?1", [key])
                                .map_err(backend)?;
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
                Ok((revision, events))
            })
            .await?;
        self.notify(events);
        Ok(revision)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        self.blocking(|conn| {
            conn.query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|r| r as u64)
            .map_err(backend)
        })
        .await
    }

    fn watch(&self, prefix: &str) -> Watcher {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if let Ok(mut w) = self.inner.watchers.lock() {
            w.push((prefix.to_string(), tx));
        }
        rx
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
