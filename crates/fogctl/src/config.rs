//! Where fogctl finds fogd: endpoint, CA certificate, bearer token and subscription.
//!
//! Each setting is taken from the first source that has it:
//!
//! 1. the command-line flag (`--endpoint`, `--ca`, `--token`, `--subscription`);
//! 2. the environment (`FOGCTL_ENDPOINT`, `FOGCTL_CA`, `FOGCTL_TOKEN`, `FOGCTL_SUBSCRIPTION`)
//!    — clap merges 1 and 2;
//! 3. the client config file: `--config` / `FOGCTL_CONFIG`, else `DATA_DIR/client.toml`
//!    (keys `endpoint` or `endpoints`, `ca_file`, `token_file`, `subscription_id`; relative
//!    paths are relative to the file's directory);
//!
//! Several endpoints (`--endpoint` repeated or comma-separated, `endpoints = [...]` in the
//! file, each node of a cluster) are tried in order: the client uses the first that
//! answers.
//! 4. the files fogd writes into its data directory: `api-url`, `ca.pem`, `admin-token`,
//!    `subscription-id`.
//!
//! `DATA_DIR` is `--data-dir`, else `FOGD_DATA_DIR`, else `/var/lib/fogd`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What the command line and environment said (clap has already merged the two).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: PathBuf,
    pub config: Option<PathBuf>,
    /// Empty: from the config file or the data directory.
    pub endpoint: Vec<String>,
    pub ca: Option<PathBuf>,
    pub token: Option<String>,
    pub subscription: Option<String>,
}

/// The client config file fogd writes on first start (`DATA_DIR/client.toml`).
/// Unknown keys are ignored, so a newer fogd may add some.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientFile {
    pub endpoint: Option<String>,
    /// Every node of a cluster, tried in order (after `endpoint`, if both are given).
    pub endpoints: Option<Vec<String>>,
    pub ca_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub subscription_id: Option<String>,
}

impl ClientFile {
    /// Parses a config file; relative paths in it become relative to its directory.
    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        let mut f: ClientFile = toml::from_str(text).context("parse the client config")?;
        let anchor = |p: PathBuf| if p.is_relative() { dir.join(p) } else { p };
        f.ca_file = f.ca_file.map(anchor);
        f.token_file = f.token_file.map(anchor);
        Ok(f)
    }
}

/// Resolved connection settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL without a trailing slash, e.g. `https://127.0.0.1:8443`: the first of
    /// `endpoints`.
    pub endpoint: String,
    /// Every endpoint to try, in order (at least one).
    pub endpoints: Vec<String>,
    /// CA to trust; `None` = the platform's roots.
    pub ca: Option<PathBuf>,
    pub token: String,
    /// `None` when no source names one (only `rest` without `{subscriptionId}` works then).
    pub subscription: Option<String>,
}

/// Reads a small text file, trimmed; `Ok(None)` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

fn read_required(path: &Path, what: &str) -> Result<String> {
    read_optional(path)?
        .filter(|s| !s.is_empty())
        .with_context(|| format!("{what}: {} is missing or empty", path.display()))
}

impl Settings {
    /// Resolves every setting by the precedence described in the module docs.
    pub fn resolve(o: &Overrides) -> Result<Self> {
        let file = match &o.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read the client config {}", path.display()))?;
                ClientFile::parse(&text, path.parent().unwrap_or(Path::new(".")))
                    .with_context(|| path.display().to_string())?
            }
            None => {
                let path = o.data_dir.join("client.toml");
                match read_optional(&path)? {
                    Some(text) => ClientFile::parse(&text, &o.data_dir)
                        .with_context(|| path.display().to_string())?,
                    None => ClientFile::default(),
                }
            }
        };
        let dir = &o.data_dir;
        let mut listed: Vec<String> = if o.endpoint.is_empty() {
            file.endpoint
                .into_iter()
                .chain(file.endpoints.unwrap_or_default())
                .collect()
        } else {
            o.endpoint.clone()
        };
        if listed.is_empty() {
            listed.push(read_optional(&dir.join("api-url"))?.with_context(|| {
                format!(
                    "no fogd endpoint: pass --endpoint, set FOGCTL_ENDPOINT, or point --data-dir \
                     (FOGD_DATA_DIR) at fogd's data directory ({} has neither client.toml nor api-url)",
                    dir.display()
                )
            })?);
        }
        let mut endpoints: Vec<String> = Vec::new();
        for e in listed {
            let e = e.trim().trim_end_matches('/').to_string();
            if e.is_empty() {
                continue;
            }
            if !e.starts_with("https://") && !e.starts_with("http://") {
                bail!("the endpoint must be an http(s) URL, got {e:?}");
            }
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
        let endpoint = endpoints
            .first()
            .cloned()
            .context("no fogd endpoint: every one given is empty")?;
        let ca = match o.ca.clone().or(file.ca_file) {
            Some(p) => Some(p),
            None => Some(dir.join("ca.pem")).filter(|p| p.exists()),
        };
        let token = match (o.token.clone(), file.token_file) {
            (Some(t), _) => t,
            (None, Some(p)) => read_required(&p, "token_file")?,
            (None, None) => read_required(&dir.join("admin-token"), "no bearer token")?,
        };
        let subscription = match o.subscription.clone().or(file.subscription_id) {
            Some(s) => Some(s),
            None => read_optional(&dir.join("subscription-id"))?.filter(|s| !s.is_empty()),
        };
        Ok(Settings {
            endpoint,
            endpoints,
            ca,
            token: token.trim().to_string(),
            subscription,
        })
    }

    /// The subscription, or an error saying how to set one.
    pub fn subscription(&self) -> Result<&str> {
        self.subscription.as_deref().context(
            "no subscription: pass --subscription, set FOGCTL_SUBSCRIPTION, or add \
             subscription_id to the client config",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write");
    }

    #[test]
    fn data_dir_files_are_the_fallback() {
        let d = tempfile::tempdir().expect("tempdir");
        write(d.path(), "api-url", "https://127.0.0.1:1234/\n");
        write(d.path(), "admin-token", "tok\n");
        write(d.path(), "subscription-id", "sub\n");
        write(d.path(), "ca.pem", "x");
        let s = Settings::resolve(&Overrides {
            data_dir: d.path().into(),
            ..Default::default()
        })
        .expect("resolve");
        assert_eq!(s.endpoint, "https://127.0.0.1:1234");
        assert_eq!(s.token, "tok");
        assert_eq!(s.subscription.as_deref(), Some("sub"));
        assert_eq!(s.ca, Some(d.path().join("ca.pem")));
    }

    #[test]
    fn config_file_beats_data_dir_files_and_flags_beat_both() {
        let d = tempfile::tempdir().expect("tempdir");
        write(d.path(), "api-url", "https://old:1\n");
        write(d.path(), "admin-token", "old\n");
        write(d.path(), "subscription-id", "old-sub\n");
        write(d.path(), "tok", "new\n");
        write(
            d.path(),
            "client.toml",
            "endpoint = \"https://new:2\"\nca_file = \"my-ca.pem\"\ntoken_file = \"tok\"\nsubscription_id = \"new-sub\"\n",
        );
        let mut o = Overrides {
            data_dir: d.path().into(),
            ..Default::default()
        };
        let s = Settings::resolve(&o).expect("resolve");
        assert_eq!(s.endpoint, "https://new:2");
        assert_eq!(s.token, "new");
        assert_eq!(s.subscription.as_deref(), Some("new-sub"));
        assert_eq!(s.ca, Some(d.path().join("my-ca.pem")));
        o.endpoint = vec!["https://flag:3".into()];
        o.token = Some("flag".into());
        o.subscription = Some("flag-sub".into());
        let s = Settings::resolve(&o).expect("resolve");
        assert_eq!(
            (s.endpoint.as_str(), s.token.as_str()),
            ("https://flag:3", "flag")
        );
        assert_eq!(s.subscription.as_deref(), Some("flag-sub"));
    }

    #[test]
    fn several_endpoints_keep_their_order_without_duplicates() {
        let d = tempfile::tempdir().expect("tempdir");
        write(d.path(), "admin-token", "tok\n");
        write(
            d.path(),
            "client.toml",
            "endpoint = \"https://a:1/\"\nendpoints = [\"https://b:2\", \"https://a:1\", \"https://c:3\"]\n",
        );
        let mut o = Overrides {
            data_dir: d.path().into(),
            ..Default::default()
        };
        let s = Settings::resolve(&o).expect("resolve");
        assert_eq!(s.endpoint, "https://a:1");
        assert_eq!(s.endpoints, ["https://a:1", "https://b:2", "https://c:3"]);
        // Flags replace the file's list.
        o.endpoint = vec!["https://x:9".into(), "https://y:8".into()];
        let s = Settings::resolve(&o).expect("resolve");
        assert_eq!(s.endpoints, ["https://x:9", "https://y:8"]);
        o.endpoint = vec!["https://x:9".into(), "ftp://y".into()];
        assert!(Settings::resolve(&o).is_err());
    }

    #[test]
    fn explicit_config_must_exist_and_missing_endpoint_is_explained() {
        let d = tempfile::tempdir().expect("tempdir");
        let e = Settings::resolve(&Overrides {
            data_dir: d.path().into(),
            config: Some(d.path().join("nope.toml")),
            ..Default::default()
        })
        .expect_err("missing config");
        assert!(format!("{e:#}").contains("nope.toml"));
        let e = Settings::resolve(&Overrides {
            data_dir: d.path().into(),
            ..Default::default()
        })
        .expect_err("nothing");
        assert!(format!("{e:#}").contains("no fogd endpoint"));
    }
}
