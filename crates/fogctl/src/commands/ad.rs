//! `fogctl ad sp …`: service principals, like `az ad sp`. fogd is the directory: these
//! drive `/identity/servicePrincipals`, which only the administrator token may use.
//!
//! ```text
//! fogctl ad sp create-for-rbac --name ci        # {"appId","displayName","password","tenant"}
//! fogctl ad sp list
//! fogctl ad sp credential reset --id APPID     # a new password; the old ones stop working
//! fogctl ad sp delete --id APPID
//! ```

use crate::client::{seg, Client};
use crate::output::{self, Format};
use anyhow::Result;
use clap::{Args, Subcommand};
use reqwest::Method;

const PATH: &str = "/identity/servicePrincipals";

#[derive(Subcommand)]
pub enum AdCommand {
    /// Service principals: applications that sign in with a client secret.
    Sp {
        #[command(subcommand)]
        command: SpCommand,
    },
}

#[derive(Subcommand)]
pub enum SpCommand {
    /// Create a service principal with a new secret (an existing one of that name gets a
    /// new secret instead); prints appId, displayName, password and tenant.
    CreateForRbac(CreateArgs),
    /// List service principals (never their secrets).
    List,
    /// Show one service principal.
    Show(IdArgs),
    /// Delete a service principal; its tokens stop working at once.
    Delete(IdArgs),
    /// Manage a service principal's secrets.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
}

#[derive(Subcommand)]
pub enum CredentialCommand {
    /// Give the service principal a new secret, replacing its others unless --append.
    Reset(ResetArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Display name.
    #[arg(long, short = 'n')]
    name: String,
    /// Years the secret is valid.
    #[arg(long, default_value_t = 1)]
    years: u32,
}

#[derive(Args)]
pub struct IdArgs {
    /// Application id, object id or display name.
    #[arg(long)]
    id: String,
}

#[derive(Args)]
pub struct ResetArgs {
    /// Application id, object id or display name.
    #[arg(long)]
    id: String,
    /// Keep the existing secrets.
    #[arg(long)]
    append: bool,
    /// Years the secret is valid.
    #[arg(long, default_value_t = 1)]
    years: u32,
}

pub async fn run(client: &Client, command: AdCommand, format: Format) -> Result<()> {
    let AdCommand::Sp { command } = command;
    let value = match command {
        SpCommand::CreateForRbac(a) => {
            let body = serde_json::json!({ "displayName": a.name, "years": a.years });
            Some(client.call(Method::POST, PATH, Some(&body)).await?.body)
        }
        SpCommand::List => Some(serde_json::Value::Array(client.list(PATH).await?)),
        SpCommand::Show(a) => Some(client.get(&format!("{PATH}/{}", seg(&a.id))).await?),
        SpCommand::Delete(a) => {
            client
                .call(Method::DELETE, &format!("{PATH}/{}", seg(&a.id)), None)
                .await?;
            None
        }
        SpCommand::Credential {
            command: CredentialCommand::Reset(a),
        } => {
            let body = serde_json::json!({ "append": a.append, "years": a.years });
            let path = format!("{PATH}/{}/resetCredential", seg(&a.id));
            Some(client.call(Method::POST, &path, Some(&body)).await?.body)
        }
    };
    output::print(value.as_ref(), format);
    Ok(())
}
