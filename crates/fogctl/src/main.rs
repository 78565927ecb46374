//! # fogctl — command-line client for fogd
//!
//! fogctl talks to fogd only through its public HTTPS API, like any other client. It finds
//! the endpoint, CA and token in fogd's data directory (`api-url`, `ca.pem`, `admin-token`),
//! overridable by flags and environment variables. Today it offers `rest` (like `az rest`);
//! the az-style `sql mi|midb|instance-failover-group` commands build on it.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "fogctl",
    version,
    about = "Command-line client for fogd's ARM API"
)]
struct Cli {
    /// fogd's data directory, where api-url, ca.pem and admin-token are read from.
    #[arg(
        long,
        env = "FOGD_DATA_DIR",
        default_value = "/var/lib/fogd",
        global = true
    )]
    data_dir: PathBuf,
    /// API base URL (default: DATA_DIR/api-url).
    #[arg(long, env = "FOGCTL_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// CA certificate to trust (default: DATA_DIR/ca.pem).
    #[arg(long, env = "FOGCTL_CA", global = true)]
    ca: Option<PathBuf>,
    /// Bearer token (default: contents of DATA_DIR/admin-token).
    #[arg(long, env = "FOGCTL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send one request to the API, like `az rest`; prints the JSON response.
    Rest {
        /// HTTP method.
        #[arg(long, short = 'm', default_value = "get")]
        method: String,
        /// Path (with query), e.g. /subscriptions/{sub}/providers/Microsoft.Sql/managedInstances?api-version=2025-01-01.
        /// `{subscriptionId}` is replaced by DATA_DIR/subscription-id.
        #[arg(long, short = 'u')]
        uri: String,
        /// JSON request body.
        #[arg(long, short = 'b')]
        body: Option<String>,
    },
}

fn read(path: &std::path::Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("read {}", path.display()))?
        .trim()
        .to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let endpoint = match cli.endpoint {
        Some(e) => e,
        None => read(&cli.data_dir.join("api-url"))?,
    };
    let token = match cli.token {
        Some(t) => t,
        None => read(&cli.data_dir.join("admin-token"))?,
    };
    let ca_path = cli.ca.unwrap_or_else(|| cli.data_dir.join("ca.pem"));
    let ca = reqwest::Certificate::from_pem(
        &std::fs::read(&ca_path).with_context(|| format!("read {}", ca_path.display()))?,
    )
    .context("parse the CA certificate")?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .context("build the HTTPS client")?;
    match cli.command {
        Command::Rest { method, uri, body } => {
            let uri = if uri.contains("{subscriptionId}") {
                uri.replace(
                    "{subscriptionId}",
                    &read(&cli.data_dir.join("subscription-id"))?,
                )
            } else {
                uri
            };
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                .context("HTTP method")?;
            let mut req = client
                .request(method, format!("{}{}", endpoint.trim_end_matches('/'), uri))
                .bearer_auth(token);
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b);
            }
            let resp = req.send().await.context("send the request")?;
            let status = resp.status();
            let text = resp.text().await.context("read the response")?;
            if !text.is_empty() {
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
                    Err(_) => println!("{text}"),
                }
            }
            if !status.is_success() {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                bail!(
                    "({}) {}",
                    v["error"]["code"].as_str().unwrap_or(status.as_str()),
                    v["error"]["message"].as_str().unwrap_or("request failed")
                );
            }
        }
    }
    Ok(())
}
