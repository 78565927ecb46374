//! The credentials under `secrets/{uid}` never reach the disk in clear text, the store files
//! are private, and start-up (`secrets::unlock`) migrates clear-text records and refuses a
//! missing or wrong key with a clear error.

use fog_orchestrator::catalog::{self, InstanceSecret};
use fog_orchestrator::secrets::{self, OpenError, SecretCipher, SecretsError};
use fog_store::{Precondition, SqliteStore, Store, StoreError, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const SUPERUSER_PASSWORD: &str = "Sup3rUser-Plaintext-Needle-4711";
const REPLICATION_PASSWORD: &str = "Repl1cation-Plaintext-Needle-0815";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// `store.sqlite` and the companions that exist beside it.
fn store_files(path: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", path.display())))
        .filter(|p| p.exists())
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn assert_no_plaintext(path: &Path, needles: &[&str]) {
    for f in store_files(path) {
        let bytes = std::fs::read(&f).expect("read store file");
        for n in needles {
            assert!(!contains(&bytes, n), "{} holds {n} in clear", f.display());
        }
    }
}

fn secret() -> InstanceSecret {
    InstanceSecret {
        superuser_password: SUPERUSER_PASSWORD.into(),
        replication_password: REPLICATION_PASSWORD.into(),
        previous_superuser_password: None,
    }
}

#[tokio::test]
async fn a_secret_written_through_the_catalog_is_sealed_in_private_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.sqlite");
    let store = SqliteStore::open(&path).expect("open");
    let cipher = SecretCipher::generate();
    store
        .commit(vec![catalog::secret_put(
            &cipher,
            "uid-1",
            &secret(),
            Precondition::Absent,
        )])
        .await
        .expect("commit");

    // The store is still open: the record is in the WAL (and the shared-memory index).
    let files = store_files(&path);
    assert!(
        files.iter().any(|f| f.ends_with("store.sqlite-wal")),
        "{files:?}"
    );
    for f in &files {
        assert_eq!(mode(f), 0o600, "{} must be private", f.display());
    }
    assert_no_plaintext(&path, &[SUPERUSER_PASSWORD, REPLICATION_PASSWORD]);
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        assert!(!contains(&bytes, "superuser_password"), "{}", f.display());
    }

    // It reads back with the key, and only with it.
    let back = catalog::secret(&store, &cipher, "uid-1")
        .await
        .expect("read")
        .expect("present");
    assert_eq!(back, secret());
    let other = SecretCipher::generate();
    match catalog::secret(&store, &other, "uid-1").await {
        Err(StoreError::Decode { key, reason }) => {
            assert_eq!(key, "secrets/uid-1");
            assert!(reason.contains(cipher.key_id()), "{reason}");
        }
        other => panic!("a wrong key must not open the record: {other:?}"),
    }
    // Debug output never shows the passwords.
    assert!(!format!("{back:?}").contains("Needle"));
}

#[tokio::test]
async fn start_up_seals_clear_text_records_and_refuses_a_missing_or_wrong_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.sqlite");
    let store = SqliteStore::open(&path).expect("open");
    // A record as fogd wrote it before encryption at rest (format 1, clear text).
    let legacy = serde_json::json!({"format": 1, "data": {
        "superuser_password": SUPERUSER_PASSWORD,
        "replication_password": REPLICATION_PASSWORD,
    }});
    store
        .commit(vec![Write::put(
            "secrets/old",
            serde_json::to_vec(&legacy).expect("json"),
            Precondition::Absent,
        )])
        .await
        .expect("commit");

    // Without a key file and without sealed records: a key is made, the record sealed.
    let key_file = dir.path().join("keys/secrets.key");
    let first = secrets::unlock(&store, &key_file).await.expect("unlock");
    assert!(first.created);
    assert_eq!((first.resealed, first.sealed), (1, 0));
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(key_file.parent().expect("dir")), 0o700);
    assert_eq!(
        catalog::secret(&store, &first.cipher, "old")
            .await
            .expect("read")
            .expect("present"),
        secret()
    );
    store.compact().await.expect("compact");
    assert_no_plaintext(&path, &[SUPERUSER_PASSWORD, REPLICATION_PASSWORD]);

    // The next start finds the key and nothing left to seal.
    let again = secrets::unlock(&store, &key_file).await.expect("unlock");
    assert!(!again.created);
    assert_eq!((again.resealed, again.sealed), (0, 1));
    assert_eq!(again.cipher.key_id(), first.cipher.key_id());

    // A missing key file is an error naming it and the key it should hold; none is made.
    let missing = dir.path().join("elsewhere/secrets.key");
    let e = secrets::unlock(&store, &missing).await.unwrap_err();
    assert!(matches!(e, SecretsError::Missing { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains(first.cipher.key_id()), "{text}");
    assert!(!missing.exists());

    // Another key is recognised as the wrong one.
    let wrong = dir.path().join("wrong.key");
    SecretCipher::create(&wrong).expect("create");
    let e = secrets::unlock(&store, &wrong).await.unwrap_err();
    match &e {
        SecretsError::Unopenable {
            record,
            reason: OpenError::WrongKey { .. },
            ..
        } => assert_eq!(record, "secrets/old"),
        other => panic!("expected a wrong-key error, got {other}"),
    }
    assert!(e.to_string().contains("wrong.key"), "{e}");
}
