//! # fogctl — az-style command-line client for fogd
//!
//! fogctl talks to fogd only through its public HTTPS API, like any other ARM client. Its
//! commands carry `az`'s names and parameters, so scripts written for
//! `az sql mi|midb|instance-failover-group` read the same:
//!
//! ```text
//! fogctl sql mi create -g rg -n mi-a -l eastus -u fogadmin -p '…' --capacity 4 --storage 64GB
//! fogctl sql mi create -g rg -n mi-b -l westus -u fogadmin -p '…' --dns-zone-partner <mi-a id>
//! fogctl sql midb create -g rg --mi mi-a -n appdb
//! fogctl sql instance-failover-group create -g rg -n fg --mi mi-a --partner-mi mi-b --failover-policy Manual
//! fogctl sql instance-failover-group set-primary -g rg -l westus -n fg
//! fogctl sql instance-failover-group watch
//! fogctl ad sp create-for-rbac --name ci   # appId, password, tenant for az login
//! fogctl rest -m get -u '/subscriptions/{subscriptionId}/providers/Microsoft.Sql/managedInstances?api-version=2025-01-01'
//! ```
//!
//! Global options: `-o json|table|tsv` (JSON by default), `--subscription`, and where fogd is
//! (`--endpoint`, `--ca`, `--token`, `--config`, `--data-dir`; see [`config`]). Long-running
//! commands wait for the operation, showing its progress on stderr, unless `--no-wait` is
//! given. Errors print `ERROR: (Code) message` on stderr; the exit code is 1 for errors the
//! API (or an operation) reported and for failures to reach it, 2 for usage errors.
//!
//! ## Layout
//!
//! - [`config`]: resolving endpoint, CA, token and subscription;
//! - [`client`]: HTTPS requests, ARM errors, long-running-operation polling with progress;
//! - [`output`]: `json`, `table` and `tsv` rendering;
//! - [`commands`]: one module per command group (`mi`, `midb`, `group`, `watch`, `rest`,
//!   `cluster`, `ad`).

mod client;
mod commands;
mod config;
mod output;

use clap::{Args, Parser, Subcommand};
use client::ApiError;
use output::Format;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fogctl",
    version,
    about = "az-style command-line client for fogd's Microsoft.Sql ARM API",
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalArgs {
    /// Output format (default json; `watch` defaults to table).
    #[arg(short = 'o', long, value_enum, global = true, ignore_case = true)]
    output: Option<Format>,
    /// Subscription id (default: the client config's subscription_id, else DATA_DIR/subscription-id).
    #[arg(long, env = "FOGCTL_SUBSCRIPTION", global = true)]
    subscription: Option<String>,
    /// fogd's data directory: client.toml, or api-url, ca.pem, admin-token, subscription-id
    /// [default: /var/lib/fogd].
    #[arg(long, env = "FOGD_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Client config file (default: DATA_DIR/client.toml).
    #[arg(long, env = "FOGCTL_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// API base URL, e.g. https://127.0.0.1:8443. Repeat it (or separate URLs with commas)
    /// to name every node of a cluster: fogctl uses the first that answers.
    #[arg(long, env = "FOGCTL_ENDPOINT", global = true, value_delimiter = ',')]
    endpoint: Vec<String>,
    /// CA certificate (PEM) to trust.
    #[arg(long, env = "FOGCTL_CA", global = true)]
    ca: Option<PathBuf>,
    /// Bearer token.
    #[arg(long, env = "FOGCTL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Azure SQL commands: managed instances, their databases, instance failover groups.
    Sql {
        #[command(subcommand)]
        command: Box<commands::SqlCommand>,
    },
    /// Send one request to the API, like `az rest`; prints the JSON response.
    Rest(commands::rest::RestArgs),
    /// The fogd nodes sharing one store: `fogctl cluster status`.
    Cluster {
        #[command(subcommand)]
        command: commands::cluster::ClusterCommand,
    },
    /// fogd's directory: service principals that sign in with `az login --service-principal`.
    Ad {
        #[command(subcommand)]
        command: commands::ad::AdCommand,
    },
}

/// fogd's default data directory.
const DEFAULT_DATA_DIR: &str = "/var/lib/fogd";

/// A mistake in how fogctl was called that clap cannot see (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let overrides = config::Overrides {
        data_dir: cli
            .global
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        config: cli.global.config,
        endpoint: cli.global.endpoint,
        ca: cli.global.ca,
        token: cli.global.token,
        subscription: cli.global.subscription,
    };
    let settings = config::Settings::resolve(&overrides)?;
    let client = client::Client::new(settings)?;
    match cli.command {
        Command::Rest(args) => commands::rest::run(&client, args).await,
        Command::Cluster { command } => {
            commands::cluster::run(&client, command, cli.global.output.unwrap_or(Format::Table))
                .await
        }
        Command::Ad { command } => {
            commands::ad::run(&client, command, cli.global.output.unwrap_or(Format::Json)).await
        }
        Command::Sql { command } => commands::run(&client, *command, cli.global.output).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ERROR: start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(api) = e.downcast_ref::<ApiError>() {
                eprintln!("ERROR: {api}");
                ExitCode::from(1)
            } else if let Some(usage) = e.downcast_ref::<UsageError>() {
                eprintln!("ERROR: {usage}");
                ExitCode::from(2)
            } else {
                eprintln!("ERROR: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}
