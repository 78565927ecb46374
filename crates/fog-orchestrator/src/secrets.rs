//! Encryption at rest of the credentials fogd keeps for each server.
//!
//! `secrets/{uid}` ([`InstanceSecret`](crate::catalog::InstanceSecret)) holds the passwords of
//! a server's internal superuser and replication role: whoever reads them owns the server. So
//! they never reach the store in clear text:
//!
//! * **Sealed.** Each record's JSON is encrypted and authenticated with XChaCha20-Poly1305
//!   ([`SecretCipher::seal`]) under a 256-bit key, with a fresh random 192-bit nonce per write
//!   (random nonces of that size never repeat in practice) and the record's store key
//!   (`secrets/{uid}`) as associated data, so a sealed value copied under another key does
//!   not open. The store holds only a [`Sealed`] value: algorithm, key id, nonce, ciphertext.
//! * **A key apart from the store.** The key is a file of its own (default
//!   `DATA_DIR/keys/secrets.key`: directory 0700, file 0600, 64 hex digits), so the store, its
//!   WAL or a backup of them reveal nothing without it. A key file that other users may read
//!   or write is refused ([`SecretCipher::load`]). Back the key up separately: without it the
//!   sealed records cannot be read, and the servers can no longer be managed.
//! * **Named keys.** Every sealed record carries its key's [`SecretCipher::key_id`] (a
//!   fingerprint, not the key), so a wrong key file is reported as such, not as damage.
//! * **Checked at start-up.** [`unlock`] loads the key (creating it on first start — but
//!   never when the store already holds sealed records, which only the lost key could open),
//!   re-seals the clear-text records older fogd versions wrote, and opens every sealed
//!   record once: a missing or wrong key stops fogd with an error naming the file, instead of
//!   failing the first operation that needs a password.
//!
//! What this does not protect against: a user who can read both the key file and the store
//! (root, or fogd's own user), and fogd's memory while it runs.

use crate::catalog::{self, StoredSecret};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use fog_store::{typed, Precondition, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

/// Length of a key in bytes (256 bits).
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce in bytes (192 bits).
const NONCE_LEN: usize = 24;
/// The [`Sealed::cipher`] this build writes (and the only one it reads).
pub const CIPHER: &str = "xchacha20poly1305";

/// A value sealed by a [`SecretCipher`], as it is stored. Nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The algorithm ([`CIPHER`]).
    pub cipher: String,
    /// [`SecretCipher::key_id`] of the key that sealed it.
    pub key_id: String,
    /// The nonce, hex.
    pub nonce: String,
    /// Ciphertext followed by the 16-byte authentication tag, hex.
    pub ciphertext: String,
}

/// Why a [`Sealed`] value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// It was sealed with another key than the one loaded.
    #[error("sealed with key {sealed_with}, but the loaded secret key is {loaded}")]
    WrongKey { sealed_with: String, loaded: String },
    /// The right key, but the value does not authenticate (damaged or tampered with).
    #[error("does not authenticate with key {key_id}: the record is damaged")]
    Damaged { key_id: String },
    /// Sealed by an algorithm this build does not know.
    #[error("sealed with unknown cipher '{0}'")]
    UnknownCipher(String),
}

/// Problems with the secret key or with the records it protects, at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret key file {} does not hold a key: expected 64 hexadecimal digits (256 bits)", path.display())]
    Malformed { path: PathBuf },
    #[error("secret key file {} may be read or written by other users (mode {mode:03o}); restrict it with: chmod 600 {}", path.display(), path.display())]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("secret key file {} is missing, but the store holds secrets sealed with key {key_id}; restore that key file, or point secret_key_file (--secret-key-file, FOGD_SECRET_KEY_FILE) at it", path.display())]
    Missing { path: PathBuf, key_id: String },
    #[error("{record} cannot be opened with the secret key file {}: {reason}", path.display())]
    Unopenable {
        path: PathBuf,
        record: String,
        reason: OpenError,
    },
    #[error("the metadata store failed: {0}")]
    Store(#[from] StoreError),
}

/// Seals and opens values under one 256-bit key. The key is wiped from memory when the
/// cipher is dropped; `Debug` shows only the key id.
#[derive(Clone)]
pub struct SecretCipher {
    aead: XChaCha20Poly1305,
    key_id: String,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCipher")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SecretsError + '_ {
    move |source| SecretsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl SecretCipher {
    /// A cipher under `key`.
    pub fn from_key(mut key: [u8; KEY_LEN]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(b"fogd secret key id\0")
            .chain_update(key)
            .finalize();
        let aead = XChaCha20Poly1305::new(&Key::from(key));
        key.zeroize();
        Self {
            aead,
            key_id: hex::encode(&digest[..8]),
        }
    }

    /// A cipher under a new random key (kept nowhere: for tests and throw-away stores).
    pub fn generate() -> Self {
        Self::from_key(random_key())
    }

    /// A short public fingerprint of the key (16 hex digits of a SHA-256 of it), stored
    /// with every sealed value so that a wrong key is recognised.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypts and authenticates `plaintext`, bound to `aad` (the store key it goes under).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Sealed {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ciphertext = self
            .aead
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message shorter than 256 GiB");
        Sealed {
            cipher: CIPHER.into(),
            key_id: self.key_id.clone(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        }
    }

    /// Authenticates and decrypts `sealed`, which must have been sealed with the same `aad`.
    /// The plaintext is wiped from memory when dropped.
    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.cipher != CIPHER {
            return Err(OpenError::UnknownCipher(sealed.cipher.clone()));
        }
        if sealed.key_id != self.key_id {
            return Err(OpenError::WrongKey {
                sealed_with: sealed.key_id.clone(),
                loaded: self.key_id.clone(),
            });
        }
        let damaged = || OpenError::Damaged {
            key_id: self.key_id.clone(),
        };
        let nonce: [u8; NONCE_LEN] = hex::decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(damaged)?;
        let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| damaged())?;
        self.aead
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| damaged())
    }

    /// Loads the key from `path`: 64 hex digits (surrounding white space ignored). Refuses a
    /// file that users other than its owner may read or write.
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let mode = std::fs::metadata(path)
            .map_err(io_err(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SecretsError::TooOpen {
                path: path.to_path_buf(),
                mode: mode & 0o777,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io_err(path))?);
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text.trim(), &mut bytes[..]).map_err(|_| SecretsError::Malformed {
            path: path.to_path_buf(),
        })?;
        Ok(Self::from_key(*bytes))
    }

    /// Creates a new random key at `path` (mode 0600; missing parent directories are made
    /// with mode 0700) and returns its cipher. Fails if the file exists.
    pub fn create(path: &Path) -> Result<Self, SecretsError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err(parent))?;
        }
        let key = Zeroizing::new(random_key());
        let text = Zeroizing::new(format!("{}\n", hex::encode(*key)));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path))?;
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(path);
            return Err(io_err(path)(e));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(dir) = std::fs::File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok(Self::from_key(*key))
    }
}

fn random_key() -> [u8; KEY_LEN] {
    use rand::TryRngCore;
    let mut key = [0u8; KEY_LEN];
    if rand::rngs::OsRng.try_fill_bytes(&mut key).is_err() {
        // The thread generator is a CSPRNG seeded from the OS as well.
        key = rand::random();
    }
    key
}

/// What [`unlock`] did.
#[derive(Debug)]
pub struct Unlocked {
    pub cipher: SecretCipher,
    /// The key file was created now (first start).
    pub created: bool,
    /// Clear-text records (written by an older fogd) that were sealed now.
    pub resealed: usize,
    /// Records that were already sealed (and opened with the key).
    pub sealed: usize,
}

/// Start-up: loads the key in `key_file` (creating it when absent and the store holds no
/// sealed record), seals every clear-text record under `secrets/`, and checks that the key
/// opens every sealed one. Errors name the key file and what to do.
///
/// Sealing rewrites a record, but the clear text it replaces may survive in the store's
/// free pages or write-ahead log until the backend compacts (`SqliteStore::compact`).
pub async fn unlock(store: &dyn Store, key_file: &Path) -> Result<Unlocked, SecretsError> {
    let records = store.range(catalog::SECRETS_PREFIX).await?;
    let mut stored = Vec::with_capacity(records.len());
    for r in &records {
        stored.push(typed::decode::<StoredSecret>(r)?);
    }
    let (cipher, created) = match std::fs::symlink_metadata(key_file) {
        Ok(_) => (SecretCipher::load(key_file)?, false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(key_id) = stored.iter().find_map(|s| match &s.value {
                StoredSecret::Sealed { sealed } => Some(sealed.key_id.clone()),
                StoredSecret::Plain(_) => None,
            }) {
                return Err(SecretsError::Missing {
                    path: key_file.to_path_buf(),
                    key_id,
                });
            }
            (SecretCipher::create(key_file)?, true)
        }
        Err(e) => return Err(io_err(key_file)(e)),
    };
    let mut resealed = 0;
    let mut sealed = 0;
    for (r, s) in records.iter().zip(stored) {
        match s.value {
            StoredSecret::Sealed { sealed: value } => {
                cipher.open(r.key.as_bytes(), &value).map_err(|reason| {
                    SecretsError::Unopenable {
                        path: key_file.to_path_buf(),
                        record: r.key.clone(),
                        reason,
                    }
                })?;
                sealed += 1;
            }
            StoredSecret::Plain(secret) => {
                let uid = r.key.trim_start_matches(catalog::SECRETS_PREFIX);
                // Compare-and-swap: a record changed meanwhile is left for its writer, who
                // seals it anyway.
                match store
                    .commit(vec![catalog::secret_put(
                        &cipher,
                        uid,
                        &secret,
                        Precondition::Revision(r.revision),
                    )])
                    .await
                {
                    Ok(_) => resealed += 1,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(Unlocked {
        cipher,
        created,
        resealed,
        sealed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_bound_to_its_key_and_aad() {
        let c = SecretCipher::generate();
        let s = c.seal(b"secrets/a", b"hunter2-hunter2");
        assert_eq!(s.cipher, CIPHER);
        assert!(!s.ciphertext.contains(&hex::encode(b"hunter2")));
        assert_eq!(
            c.open(b"secrets/a", &s).unwrap().as_slice(),
            b"hunter2-hunter2"
        );
        assert_ne!(
            c.seal(b"secrets/a", b"x").nonce,
            c.seal(b"secrets/a", b"x").nonce
        );
        // Another record's key (associated data) does not open it.
        assert!(matches!(
            c.open(b"secrets/b", &s),
            Err(OpenError::Damaged { .. })
        ));
        // A flipped bit does not open it.
        let mut bad = s.clone();
        bad.ciphertext.replace_range(
            0..2,
            if &s.ciphertext[0..2] == "00" {
                "01"
            } else {
                "00"
            },
        );
        assert!(matches!(
            c.open(b"secrets/a", &bad),
            Err(OpenError::Damaged { .. })
        ));
        // Another key is recognised as such.
        let other = SecretCipher::generate();
        let e = other.open(b"secrets/a", &s).unwrap_err();
        assert!(matches!(e, OpenError::WrongKey { .. }), "{e}");
        assert!(e.to_string().contains(c.key_id()), "{e}");
        assert!(!format!("{c:?}").contains("aead"));
    }

    #[test]
    fn key_file_is_created_private_and_loads_back() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("keys/secrets.key");
        let c = SecretCipher::create(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        let again = SecretCipher::load(&path).unwrap();
        assert_eq!(again.key_id(), c.key_id());
        assert!(
            SecretCipher::create(&path).is_err(),
            "never overwrites a key"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = SecretCipher::load(&path).unwrap_err();
        assert!(
            matches!(e, SecretsError::TooOpen { mode: 0o640, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");

        let bad = d.path().join("bad.key");
        std::fs::write(&bad, "not a key\n").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = SecretCipher::load(&bad).unwrap_err();
        assert!(matches!(e, SecretsError::Malformed { .. }), "{e}");
        assert!(matches!(
            SecretCipher::load(&d.path().join("none")),
            Err(SecretsError::Io { .. })
        ));
    }
}
