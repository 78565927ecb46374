//! `fogctl sql midb create|show|list|delete` — databases of a managed instance, with
//! `az sql midb`'s parameter names.

use super::{confirm, mi_path};
use crate::client::{seg, Client, Final, Lro};
use crate::output::{self, Format};
use anyhow::Result;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum MidbCommand {
    /// Create a database on a managed instance.
    Create(CreateArgs),
    /// Show a database.
    Show(Target),
    /// List the databases of a managed instance.
    List(Instance),
    /// Delete a database.
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct Instance {
    /// Resource group.
    #[arg(short = 'g', long)]
    resource_group: String,
    /// Managed instance name.
    #[arg(long = "managed-instance", visible_alias = "mi")]
    mi: String,
}

#[derive(Args)]
pub struct Target {
    #[command(flatten)]
    instance: Instance,
    /// Database name.
    #[arg(short = 'n', long)]
    name: String,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    target: Target,
    /// Collation (default SQL_Latin1_General_CP1_CI_AS).
    #[arg(long)]
    collation: Option<String>,
    /// Do not wait for the operation to finish.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    target: Target,
    /// Do not prompt for confirmation.
    #[arg(short = 'y', long)]
    yes: bool,
    /// Do not wait for the operation to finish.
    #[arg(long)]
    no_wait: bool,
}

fn dbs_path(client: &Client, i: &Instance) -> Result<String> {
    Ok(format!(
        "{}/databases",
        mi_path(client, &i.resource_group, &i.mi)?
    ))
}

fn db_path(client: &Client, t: &Target) -> Result<String> {
    Ok(format!(
        "{}/{}",
        dbs_path(client, &t.instance)?,
        seg(&t.name)
    ))
}

pub async fn run(client: &Client, command: MidbCommand, format: Format) -> Result<()> {
    let result = match command {
        MidbCommand::Create(a) => {
            let mut body = json!({ "properties": { "createMode": "Default" } });
            if let Some(c) = &a.collation {
                body["properties"]["collation"] = c.as_str().into();
            }
            client
                .lro(Lro {
                    method: Method::PUT,
                    path: db_path(client, &a.target)?,
                    body: Some(body),
                    label: format!("Creating database {}", a.target.name),
                    final_state: Final::Resource,
                    no_wait: a.no_wait,
                    observe_group: None,
                })
                .await?
        }
        MidbCommand::Show(t) => Some(client.get(&db_path(client, &t)?).await?),
        MidbCommand::List(i) => Some(Value::Array(client.list(&dbs_path(client, &i)?).await?)),
        MidbCommand::Delete(a) => {
            confirm(
                a.yes,
                &format!("Delete database {} and all its data?", a.target.name),
            )?;
            client
                .lro(Lro {
                    method: Method::DELETE,
                    path: db_path(client, &a.target)?,
                    body: None,
                    label: format!("Deleting database {}", a.target.name),
                    final_state: Final::Nothing,
                    no_wait: a.no_wait,
                    observe_group: None,
                })
                .await?
        }
    };
    output::print(result.as_ref(), format);
    Ok(())
}
