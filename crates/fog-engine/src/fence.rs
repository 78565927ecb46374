//! The per-server generation fence, persisted beside the data directory.

use crate::{EngineError, Generation};
use std::path::Path;

/// Accepts `gen` if it is at least the stored generation, and stores it; refuses older ones.
/// The file is replaced atomically (write + rename) so a crash never leaves it torn.
pub fn admit(dir: &Path, uid: &str, gen: Generation) -> Result<(), EngineError> {
    let path = dir.join("fence");
    let current = read(&path)?;
    if gen < current {
        return Err(EngineError::StaleGeneration {
            uid: uid.to_string(),
            got: gen,
            current,
        });
    }
    if gen > current {
        let tmp = dir.join("fence.tmp");
        std::fs::write(&tmp, gen.to_string()).map_err(|source| EngineError::Io {
            context: format!("write {}", tmp.display()),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| EngineError::Io {
            context: format!("rename {}", path.display()),
            source,
        })?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<Generation, EngineError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(EngineError::Io {
            context: format!("read {}", path.display()),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_older_generations_and_remembers_across_calls() {
        let d = tempfile::tempdir().expect("tempdir");
        admit(d.path(), "i", 1).expect("first");
        admit(d.path(), "i", 3).expect("newer");
        admit(d.path(), "i", 3).expect("same again");
        match admit(d.path(), "i", 2) {
            Err(EngineError::StaleGeneration {
                got: 2, current: 3, ..
            }) => {}
            other => panic!("expected stale, got {other:?}"),
        }
    }
}
