//! `fogctl cluster status`: the fogd nodes sharing the store, their leases, which node owns
//! what, and the health of the store's members (etcd), from `GET /cluster` on the first
//! endpoint that answers.

use crate::client::Client;
use crate::output::Format;
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Nodes and their leases, owners, and the store's members with their health.
    Status,
}

pub async fn run(client: &Client, command: ClusterCommand, format: Format) -> Result<()> {
    match command {
        ClusterCommand::Status => {
            let mut status = client.call(Method::GET, "/cluster", None).await?.body;
            status["answeredBy"] = Value::String(client.endpoint().to_string());
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                Format::Table | Format::Tsv => print!("{}", render(&status, format)),
            }
            Ok(())
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Three sections (nodes, owners, store members), tab- or space-separated.
fn render(status: &Value, format: Format) -> String {
    let sep = if format == Format::Tsv { "\t" } else { "  " };
    let mut out = String::new();
    let mut section = |title: &str, header: &[&str], rows: Vec<Vec<String>>| {
        if format == Format::Table {
            out.push_str(&format!("{title}\n"));
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>| -> String {
            if format == Format::Tsv {
                cells.join(sep)
            } else {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                    .collect::<Vec<_>>()
                    .join(sep)
                    .trim_end()
                    .to_string()
            }
        };
        out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
        out.push('\n');
        for r in rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        if format == Format::Table {
            out.push('\n');
        }
    };
    let list = |k: &str| status[k].as_array().cloned().unwrap_or_default();
    let this = s(&status["node"]);
    section(
        "Nodes",
        &[
            "Name",
            "Api",
            "ListenerHost",
            "Lease",
            "LeaseTtlMs",
            "StartedAt",
            "This",
        ],
        list("nodes")
            .iter()
            .map(|n| {
                let name = s(&n["name"]);
                let me = if name == this { "*" } else { "" };
                vec![
                    name,
                    s(&n["apiUrl"]),
                    s(&n["listenerHost"]),
                    s(&n["lease"]),
                    s(&n["leaseTtlMs"]),
                    s(&n["startedAt"]),
                    me.to_string(),
                ]
            })
            .collect(),
    );
    section(
        "Owners",
        &["Key", "Node", "Lease", "Since"],
        list("owners")
            .iter()
            .map(|o| vec![s(&o["key"]), s(&o["node"]), s(&o["lease"]), s(&o["since"])])
            .collect(),
    );
    section(
        "Store members",
        &["Name", "Endpoint", "Healthy", "Leader", "Error"],
        list("members")
            .iter()
            .map(|m| {
                vec![
                    s(&m["name"]),
                    s(&m["endpoint"]),
                    s(&m["healthy"]),
                    s(&m["leader"]),
                    s(&m["error"]),
                ]
            })
            .collect(),
    );
    out
}
