//! The files fogd keeps in its data directory.
//!
//! | path | what |
//! | --- | --- |
//! | `ca.pem` | CA certificate clients trust |
//! | `tls/` | CA key, server certificate and key (mode 0700) |
//! | `admin-token` | bearer token for the API (mode 0600) |
//! | `subscription-id` | the default subscription id |
//! | `api-url` | the HTTPS URL the API listens on, written once it is bound |
//! | `store.sqlite` | the embedded metadata store |
//! | `instances/{uid}/` | one directory per managed instance's PostgreSQL server |

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Sets `path`'s mode.
pub fn restrict(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Writes a file readable only by fogd's user.
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("write {}", tmp.display()))?;
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
        std::fs::write(path, format!("{value}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(value)
}
