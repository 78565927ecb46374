//! The command groups. Each module holds its clap arguments and what they do; all of them
//! reach fogd only through [`Client`].

pub mod ad;
pub mod cluster;
pub mod group;
pub mod mi;
pub mod midb;
pub mod rest;
pub mod watch;

use crate::client::{seg, Client};
use crate::output::Format;
use crate::UsageError;
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum SqlCommand {
    /// Manage SQL managed instances (PostgreSQL servers).
    Mi {
        #[command(subcommand)]
        command: mi::MiCommand,
    },
    /// Manage databases of a managed instance.
    Midb {
        #[command(subcommand)]
        command: midb::MidbCommand,
    },
    /// Manage instance failover groups.
    #[command(name = "instance-failover-group")]
    InstanceFailoverGroup {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
}

pub async fn run(client: &Client, command: SqlCommand, output: Option<Format>) -> Result<()> {
    match command {
        SqlCommand::Mi { command } => {
            mi::run(client, command, output.unwrap_or(Format::Json)).await
        }
        SqlCommand::Midb { command } => {
            midb::run(client, command, output.unwrap_or(Format::Json)).await
        }
        SqlCommand::InstanceFailoverGroup { command } => group::run(client, command, output).await,
    }
}

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Sql`.
pub fn rg_path(client: &Client, rg: &str) -> Result<String> {
    Ok(format!(
        "{}/resourceGroups/{}/providers/Microsoft.Sql",
        client.sub_path()?,
        seg(rg)
    ))
}

/// The path of a managed instance.
pub fn mi_path(client: &Client, rg: &str, name: &str) -> Result<String> {
    Ok(format!(
        "{}/managedInstances/{}",
        rg_path(client, rg)?,
        seg(name)
    ))
}

/// Asks "Are you sure?" on a terminal unless `yes`; a refusal ends the command.
pub fn confirm(yes: bool, question: &str) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    eprint!("{question} (y/n): ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(UsageError("operation cancelled".into()).into())
    }
}
