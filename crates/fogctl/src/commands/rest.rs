//! `fogctl rest`: one raw request, like `az rest`.

use crate::client::Client;
use anyhow::{Context, Result};
use clap::Args;
use reqwest::Method;

#[derive(Args)]
pub struct RestArgs {
    /// HTTP method.
    #[arg(long, short = 'm', default_value = "get")]
    method: String,
    /// Path (with query) or absolute URL, e.g.
    /// /subscriptions/{subscriptionId}/providers/Microsoft.Sql/managedInstances?api-version=2025-01-01.
    /// `{subscriptionId}` is replaced by the configured subscription.
    #[arg(long, short = 'u')]
    uri: String,
    /// JSON request body.
    #[arg(long, short = 'b')]
    body: Option<String>,
}

pub async fn run(client: &Client, args: RestArgs) -> Result<()> {
    let uri = if args.uri.contains("{subscriptionId}") {
        args.uri
            .replace("{subscriptionId}", client.settings.subscription()?)
    } else {
        args.uri
    };
    let method =
        Method::from_bytes(args.method.to_uppercase().as_bytes()).context("HTTP method")?;
    let body = args
        .body
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .context("--body is not JSON")?;
    let reply = client.call(method, &uri, body.as_ref()).await?;
    if !reply.body.is_null() {
        println!("{}", serde_json::to_string_pretty(&reply.body)?);
    } else if !reply.text.trim().is_empty() {
        println!("{}", reply.text.trim_end());
    }
    Ok(())
}
