//! End to end: the credentials fogd keeps are readable by no other local user — not in the
//! store, its WAL, the data directory, the log, nor the PostgreSQL processes' arguments or
//! environment — and they are sealed at rest under a key kept in a file of its own.

mod common;
use common::*;
use fog_orchestrator::catalog::{self, InstanceSecret};
use fog_orchestrator::secrets::SecretCipher;
use fog_store::{Precondition, SqliteStore, Store, Write};
use reqwest::{Method, StatusCode};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Files in the data directory any local user may read: nothing in them is secret.
const PUBLIC: &[&str] = &[
    "ca.pem",
    "client.toml",
    "api-url",
    "subscription-id",
    // In every token and in `create-for-rbac`'s output.
    "tenant-id",
    "fogd.lock",
];

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

fn store_files(data: &Path) -> Vec<PathBuf> {
    ["store.sqlite", "store.sqlite-wal", "store.sqlite-shm"]
        .iter()
        .map(|n| data.join(n))
        .filter(|p| p.exists())
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every file another user could open: reachable through directories they may traverse
/// (o+x) and itself readable by them (o+r).
fn readable_by_others(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let m = md.permissions().mode();
        if md.is_dir() {
            if m & 0o001 != 0 {
                readable_by_others(&path, out);
            }
        } else if md.is_file() && m & 0o004 != 0 {
            out.push(path);
        }
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `cat` as user nobody: succeeds only if another user can read the file.
fn nobody_can_read(path: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "nobody", "--", "cat"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runuser")
        .success()
}

/// The uid of the only instance (its server directory's name).
fn only_uid(data: &Path) -> String {
    let uids: Vec<String> = std::fs::read_dir(data.join("instances"))
        .expect("instances")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(uids.len(), 1, "{uids:?}");
    uids[0].clone()
}

/// Opens the store beside the running (or stopped) fogd and the key, and reads the secret.
async fn read_secret(data: &Path, uid: &str) -> InstanceSecret {
    let store = SqliteStore::open(&data.join("store.sqlite")).expect("open the store");
    let cipher = SecretCipher::load(&data.join("keys/secrets.key")).expect("load the key");
    catalog::secret(&store, &cipher, uid)
        .await
        .expect("read")
        .expect("present")
}

/// Runs `fogd serve` on `data` expecting it to refuse to start; returns its output.
fn failed_start(data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fogd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("FOGD_FAILPOINTS")
        .env_remove("FOGD_SECRET_KEY_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run fogd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "fogd started: {text}");
    text
}

#[tokio::test]
async fn credentials_are_sealed_and_private_to_fogd() {
    let mut f = Fogd::start().await;
    let mi = f.create_instance("rg-sec", "mi-sec", "westeurope").await;
    let data = f.data.clone();

    // Store files and the key: private. The store is open, so its WAL exists.
    let files = store_files(&data);
    assert!(
        files.iter().any(|p| p.ends_with("store.sqlite-wal")),
        "{files:?}"
    );
    for p in &files {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    let key_file = data.join("keys/secrets.key");
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&data.join("keys")), 0o700);
    assert_eq!(mode(&data.join("admin-token")), 0o600);

    // Nothing else in the data directory is readable by other users.
    let mut open = Vec::new();
    readable_by_others(&data, &mut open);
    let secret_files: Vec<_> = open
        .iter()
        .filter(|p| {
            !(p.parent() == Some(data.as_path())
                && PUBLIC.contains(&p.file_name().and_then(|n| n.to_str()).unwrap_or("")))
        })
        .collect();
    assert!(
        secret_files.is_empty(),
        "readable by other users: {secret_files:?}"
    );
    if is_root() {
        for p in files.iter().chain([&key_file, &data.join("admin-token")]) {
            assert!(!nobody_can_read(p), "nobody can read {}", p.display());
        }
        assert!(nobody_can_read(&data.join("ca.pem")), "ca.pem is public");
    }

    // The store holds the secret sealed: with the key it opens, and the password it holds
    // is the server's. Without the key, none of it is in the store's files.
    let uid = only_uid(&data);
    let raw: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    let secret = read_secret(&data, &uid).await;
    let (host, port) = endpoint(&mi, &["properties", "postgresEndpoint"]);
    let su = pg(
        &host,
        port,
        "fogd_superuser",
        &secret.superuser_password,
        "postgres",
        Duration::from_secs(5),
    )
    .await
    .expect("the sealed password is the server's");
    drop(su);
    let needles = [
        secret.superuser_password.as_str(),
        secret.replication_password.as_str(),
        "superuser_password",
    ];
    for (p, bytes) in files.iter().zip(&raw) {
        for n in needles {
            assert!(!contains(bytes, n), "{} holds {n} in clear", p.display());
        }
    }
    let log = f.log();
    assert!(!log.contains(&secret.superuser_password), "the log");
    assert!(!log.contains(&secret.replication_password), "the log");

    // Nor in the PostgreSQL server's arguments or environment.
    let pid: u32 = std::fs::read_to_string(
        data.join("instances")
            .join(&uid)
            .join("pgdata/postmaster.pid"),
    )
    .expect("postmaster.pid")
    .lines()
    .next()
    .and_then(|l| l.trim().parse().ok())
    .expect("pid");
    for what in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{what}")).expect("proc");
        for n in &needles[..2] {
            assert!(!contains(&bytes, n), "postmaster {what}");
        }
    }

    // A store written by an older fogd (clear text, mode 0644) is sealed and repaired on
    // the next start, and its servers are still managed with the credentials it held.
    f.terminate();
    {
        let store = SqliteStore::open(&data.join("store.sqlite")).expect("open");
        let legacy = serde_json::json!({"format": 1, "data": {
            "superuser_password": secret.superuser_password,
            "replication_password": secret.replication_password,
        }});
        store
            .commit(vec![Write::put(
                catalog::secret_key(&uid),
                serde_json::to_vec(&legacy).expect("json"),
                Precondition::Any,
            )])
            .await
            .expect("write a clear-text record");
    }
    for p in store_files(&data) {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    assert!(
        contains(
            &std::fs::read(data.join("store.sqlite")).expect("read"),
            &secret.superuser_password
        ),
        "the old store holds the password in clear"
    );

    f.launch(&[]).await;
    let got = f
        .send(
            Method::GET,
            &format!("{}?{API}", f.mi_path("rg-sec", "mi-sec")),
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    // Started again (in the background) with the credentials the record held.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Err(e) = admin_at(&mi, &["properties", "postgresEndpoint"], "postgres").await {
        assert!(
            std::time::Instant::now() < deadline,
            "the server does not run again: {e}; log:\n{}",
            f.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in store_files(&data) {
        assert_eq!(mode(&p), 0o600, "{} repaired", p.display());
        let bytes = std::fs::read(&p).expect("read");
        for n in needles {
            assert!(
                !contains(&bytes, n),
                "{} holds {n} after start-up",
                p.display()
            );
        }
    }
    assert_eq!(read_secret(&data, &uid).await, secret);

    // Another key file is refused, naming it; so is a missing one (no new key replaces a
    // lost one while sealed records exist).
    f.terminate();
    let kept = data.join("kept.key");
    std::fs::rename(&key_file, &kept).expect("move the key away");
    SecretCipher::create(&key_file).expect("another key");
    let out = failed_start(&data);
    assert!(
        out.contains("cannot be opened") && out.contains("secrets.key"),
        "{out}"
    );
    std::fs::rename(&kept, &key_file).expect("restore the key");
    std::fs::rename(&key_file, &kept).expect("move the key away");
    let out = failed_start(&data);
    assert!(
        out.contains("is missing") && out.contains("secrets.key"),
        "{out}"
    );
    assert!(!key_file.exists(), "no new key replaces a lost one");
    std::fs::rename(&kept, &key_file).expect("restore the key");
    f.launch(&[]).await;
}

#[tokio::test]
async fn the_key_can_live_apart_from_the_data_directory() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let key = elsewhere.path().join("fogd-keys/secrets.key");
    let f = Fogd::start_with(&[("FOGD_SECRET_KEY_FILE", key.to_str().expect("utf-8"))]).await;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(key.parent().expect("dir")), 0o700);
    assert!(
        !f.data.join("keys").exists(),
        "no key in the data directory"
    );
    // The token-signing key lives beside it.
    let signing = key.parent().expect("dir").join("token-signing.pem");
    assert_eq!(mode(&signing), 0o600);
    assert_eq!(
        SecretCipher::load(&key).expect("a key").key_id().len(),
        16,
        "a readable key"
    );
}
