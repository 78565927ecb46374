//! The files fogd keeps in its data directory.
//!
//! | path | what |
//! | --- | --- |
//! | `ca.pem` | CA certificate clients trust |
//! | `tls/` | CA key, server certificate and key (mode 0700) |
//! | `admin-token` | bearer token for the API (mode 0600) |
//! | `subscription-id` | the default subscription id |
//! | `tenant-id` | the tenant fogd issues tokens for (made on the first start) |
//! | `identity-header` | the secret callers of the managed-identity endpoint show as `X-IDENTITY-HEADER` (mode 0600) |
//! | `keys/token-signing.pem` | the ES256 key that signs access tokens (mode 0600; beside `secrets.key` wherever `secret_key_file` puts it) |
//! | `api-url` | the HTTPS URL the API listens on, written once it is bound |
//! | `client.toml` | [`ClientConfig`] for clients such as fogctl, written once the API is bound |
//! | `store.sqlite` | the embedded metadata store, with `-wal` and `-shm` beside it (mode 0600; credentials in it are sealed) |
//! | `keys/secrets.key` | the key that seals the credentials in the store (directory 0700, file 0600; `secret_key_file` moves it) |
//! | `instances/{uid}/` | one directory per managed instance's PostgreSQL server |
//! | `fogd.lock` | held (`flock`, exclusive) by the fogd serving the directory; holds its pid |

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Takes `DIR/fogd.lock` (an exclusive `flock`, released when the returned value is
/// dropped or the process ends, however it ends) and writes fogd's pid into it. A second
/// fogd on the same data directory is refused: two would drive the same PostgreSQL servers
/// and store.
pub fn lock(dir: &Path) -> Result<Flock<std::fs::File>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("fogd.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            let mut f: &std::fs::File = &lock;
            f.set_len(0)
                .and_then(|()| writeln!(f, "{}", std::process::id()))
                .with_context(|| format!("write {}", path.display()))?;
            Ok(lock)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            bail!(
                "another fogd{holder} is already serving the data directory {}: {} is locked. \
                 Stop it first, or give this one another --data-dir",
                dir.display(),
                path.display()
            )
        }
        Err((_, e)) => Err(anyhow::Error::new(e).context(format!("lock {}", path.display()))),
    }
}

/// Waits for and takes `DIR/cluster.lock` (an exclusive `flock`): the nodes of one machine
/// that share a cluster directory create its files (certificates, token, key) one at a
/// time. Released when the returned value is dropped.
pub fn lock_shared(dir: &Path) -> Result<Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("cluster.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::Error::new(e).context(format!("lock {}", path.display())))
}

/// Sets `path`'s mode.
pub fn restrict(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Writes a file readable only by fogd's user (mode 0600 from its creation on).
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .with_context(|| format!("write {}", tmp.display()))?;
    restrict(&tmp, 0o600)?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

/// Reads a one-line value, or creates it with `make` when absent or empty.
pub fn load_or_create(path: &Path, secret: bool, make: impl FnOnce() -> String) -> Result<String> {
    if path.exists() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        if !text.trim().is_empty() {
            return Ok(text.trim().to_string());
        }
    }
    let value = make();
    if secret {
        write_secret(path, &format!("{value}\n"))?;
    } else {
        write_public(path, &format!("{value}\n"))?;
    }
    Ok(value)
}

/// Writes a world-readable file (mode 0644) atomically: readers see the old contents or
/// the new, never a half-written file.
pub fn write_public(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("write {}", tmp.display()))?;
    restrict(&tmp, 0o644)?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

/// How a client reaches this fogd: `DIR/client.toml`. The token itself stays in
/// `admin-token` (mode 0600); this file only names it.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
pub struct ClientConfig {
    /// Base URL of the API (`public_url`, else `https://` + the bound address).
    pub endpoint: String,
    /// Absolute path of the CA certificate to trust (`DIR/ca.pem`).
    pub ca_file: PathBuf,
    /// Absolute path of the file holding the bearer token (`DIR/admin-token`).
    pub token_file: PathBuf,
    /// The default subscription id (`DIR/subscription-id`).
    pub subscription_id: String,
}

/// Writes `client.toml` atomically, mode 0644.
pub fn write_client_config(path: &Path, client: &ClientConfig) -> Result<()> {
    let body = toml::to_string(client).context("render client.toml")?;
    write_public(
        path,
        &format!(
            "# Written by fogd on every start: how clients (fogctl) reach this fogd.\n\
             # The bearer token is in token_file (readable by fogd's user only).\n{body}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn client_toml_round_trips_with_mode_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        let c = ClientConfig {
            endpoint: "https://127.0.0.1:8443".into(),
            ca_file: dir.path().join("ca.pem"),
            token_file: dir.path().join("admin-token"),
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
        };
        write_client_config(&path, &c).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(toml::from_str::<ClientConfig>(&text).unwrap(), c);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn the_lock_is_exclusive_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let pid = std::process::id().to_string();
        let text = std::fs::read_to_string(dir.path().join("fogd.lock")).unwrap();
        assert_eq!(text.trim(), pid);
        let err = format!("{:#}", lock(dir.path()).unwrap_err());
        assert!(
            err.contains("already serving") && err.contains(&pid),
            "{err}"
        );
        drop(held);
        lock(dir.path()).unwrap();
    }
}
