//! fogd's token-signing key: an ECDSA P-256 key (ES256) in a PKCS#8 PEM file in the data
//! directory (`keys/token-signing.pem`, mode 0600), created on the first start.
//!
//! Its public half is served as a JSON Web Key Set (`jwks_uri` of the OpenID discovery
//! document); its key id (`kid`) is the first 16 hex digits of the SHA-256 of the public key.

use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::Digest as _;
use std::path::Path;

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a usable ES256 key: {reason}")]
    Invalid { path: String, reason: String },
}

/// The signing key with its public half.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    x: String,
    y: String,
}

impl SigningKey {
    /// Loads `path`, or creates a new key there (mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            let pair = rcgen::KeyPair::generate().map_err(|e| KeyError::Invalid {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            write_private(path, pair.serialize_pem().as_bytes()).map_err(io)?;
        }
        let pem = std::fs::read_to_string(path).map_err(io)?;
        Self::from_pem(&pem).map_err(|reason| KeyError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    /// A fresh key that lives only in memory (tests).
    pub fn generate() -> Result<Self, String> {
        let pair = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        Self::from_pem(&pair.serialize_pem())
    }

    /// A key from its PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| e.to_string())?;
        if !pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err("not an ECDSA P-256 key".into());
        }
        let raw = pair.public_key_raw();
        // An uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
        if raw.len() != 65 || raw[0] != 4 {
            return Err("unexpected public key encoding".into());
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        let decoding = DecodingKey::from_ec_pem(pair.public_key_pem().as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(Self {
            encoding,
            decoding,
            kid: hex::encode(sha2::Sha256::digest(raw))[..16].to_string(),
            x: b64.encode(&raw[1..33]),
            y: b64.encode(&raw[33..]),
        })
    }

    /// The key id (`kid` of every token header).
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public key as a JSON Web Key Set.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "EC",
                "crv": "P-256",
                "use": "sig",
                "alg": "ES256",
                "kid": self.kid,
                "x": self.x,
                "y": self.y,
            }]
        })
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_is_created_private_and_reloaded_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/token-signing.pem");
        let first = SigningKey::load_or_create(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = SigningKey::load_or_create(&path).expect("load");
        assert_eq!(first.key_id(), again.key_id());
        assert_eq!(first.jwks(), again.jwks());
        assert_eq!(first.jwks()["keys"][0]["alg"], "ES256");
    }

    #[test]
    fn a_file_that_is_no_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token-signing.pem");
        std::fs::write(&path, "not a key").expect("write");
        assert!(matches!(
            SigningKey::load_or_create(&path),
            Err(KeyError::Invalid { .. })
        ));
    }
}
