//! The report of the last rewind, persisted beside the data directory (`rewind-report`).
//!
//! A rewind cannot be repeated to learn what it did: once pg_rewind has run, the server is
//! on the new history and a second pg_rewind finds nothing to do. So the agent writes the
//! report down (with the generation it ran under) as soon as the rewind happened, before it
//! starts the server as a standby, and a repeated `rewind_and_follow` of the same generation
//! — the controller lost the reply, e.g. fogd crashed meanwhile — returns it again. A newer
//! generation (another failover) never reads an older report.

use crate::{EngineError, Generation, RewindReport};
use std::io::Write as _;
use std::path::Path;

const FILE: &str = "rewind-report";

/// The report saved under `gen`, if the last rewind ran under exactly that generation.
pub fn load(dir: &Path, gen: Generation) -> Result<Option<RewindReport>, EngineError> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EngineError::Io {
                context: format!("read {}", path.display()),
                source,
            })
        }
    };
    Ok(parse(&text).filter(|(g, _)| *g == gen).map(|(_, r)| r))
}

/// Saves `report` as the rewind of generation `gen` (write, fsync, rename: never torn).
pub fn save(dir: &Path, gen: Generation, report: &RewindReport) -> Result<(), EngineError> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let io = |what: &str, p: &Path| {
        let context = format!("{what} {}", p.display());
        move |source| EngineError::Io { context, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(format(gen, report).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))
}

fn format(gen: Generation, r: &RewindReport) -> String {
    format!(
        "generation={gen}\ndiverged_at={}\nold_end={}\nlost_bytes={}\nreseeded={}\n",
        r.diverged_at.as_deref().unwrap_or(""),
        r.old_end.as_deref().unwrap_or(""),
        r.lost_bytes,
        r.reseeded
    )
}

/// `None` for a file that is not a complete report (it is then ignored).
fn parse(text: &str) -> Option<(Generation, RewindReport)> {
    let mut fields = std::collections::HashMap::new();
    for line in text.lines() {
        let (k, v) = line.split_once('=')?;
        fields.insert(k.trim(), v.trim());
    }
    let text_of = |k: &str| -> Option<Option<String>> {
        let v = fields.get(k)?;
        Some((!v.is_empty()).then(|| v.to_string()))
    };
    Some((
        fields.get("generation")?.parse().ok()?,
        RewindReport {
            diverged_at: text_of("diverged_at")?,
            old_end: text_of("old_end")?,
            lost_bytes: fields.get("lost_bytes")?.parse().ok()?,
            reseeded: fields.get("reseeded")?.parse().ok()?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_under_its_generation_only() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(d.path(), 3).expect("load"), None);
        let r = RewindReport {
            diverged_at: Some("0/3000148".into()),
            old_end: Some("0/3002148".into()),
            lost_bytes: 0x2000,
            reseeded: false,
        };
        save(d.path(), 3, &r).expect("save");
        assert_eq!(load(d.path(), 3).expect("load"), Some(r.clone()));
        assert_eq!(load(d.path(), 4).expect("load"), None);
        assert_eq!(load(d.path(), 2).expect("load"), None);
        let reseeded = RewindReport {
            diverged_at: None,
            old_end: None,
            lost_bytes: 0,
            reseeded: true,
        };
        save(d.path(), 4, &reseeded).expect("save");
        assert_eq!(load(d.path(), 4).expect("load"), Some(reseeded));
        std::fs::write(d.path().join(FILE), "generation=4\nlost_bytes=").expect("torn");
        assert_eq!(load(d.path(), 4).expect("load"), None);
    }
}
