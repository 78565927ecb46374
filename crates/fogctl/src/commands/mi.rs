//! `fogctl sql mi create|show|list|update|delete` — managed instances, with `az sql mi`'s
//! parameter names.

use super::{confirm, mi_path, rg_path};
use crate::client::{Client, Final, Lro};
use crate::output::{self, Format};
use crate::UsageError;
use anyhow::Result;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

#[derive(Subcommand)]
pub enum MiCommand {
    /// Create a managed instance (a PostgreSQL 15 server).
    Create(CreateArgs),
    /// Show a managed instance.
    Show(Target),
    /// List managed instances of a resource group, or of the subscription without -g.
    List(ListArgs),
    /// Update a managed instance (vCores, storage, tier, password, …).
    Update(UpdateArgs),
    /// Delete a managed instance.
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct Target {
    /// Resource group.
    #[arg(short = 'g', long)]
    pub resource_group: String,
    /// Managed instance name.
    #[arg(short = 'n', long)]
    pub name: String,
}

#[derive(Args)]
pub struct ListArgs {
    /// Resource group (default: every instance of the subscription).
    #[arg(short = 'g', long)]
    resource_group: Option<String>,
}

/// Properties `create` and `update` share.
#[derive(Args)]
pub struct Sizing {
    /// Number of vCores (4, 6, 8, …, 128).
    #[arg(short = 'c', long, visible_alias = "vcores")]
    capacity: Option<i32>,
    /// Storage size, e.g. 64GB, 1TB or 64 (GB); a multiple of 32 GB.
    #[arg(long)]
    storage: Option<String>,
    /// Edition: GeneralPurpose (GP) or BusinessCritical (BC).
    #[arg(short = 'e', long, visible_alias = "edition")]
    tier: Option<String>,
    /// Hardware family (default Gen5).
    #[arg(short = 'f', long)]
    family: Option<String>,
    /// License type: LicenseIncluded or BasePrice.
    #[arg(long)]
    license_type: Option<String>,
    /// Update policy: AlwaysUpToDate, SQLServer2022 or SQLServer2025.
    #[arg(long)]
    database_format: Option<String>,
    /// Tags, `key=value` (space-separated; "" clears them on update).
    #[arg(long, num_args = 0..)]
    tags: Option<Vec<String>>,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    target: Target,
    /// Location (region), e.g. eastus.
    #[arg(short = 'l', long)]
    location: String,
    /// Administrator login.
    #[arg(short = 'u', long)]
    admin_user: String,
    /// Administrator password (16–128 characters, three character classes).
    #[arg(
        short = 'p',
        long,
        env = "FOGCTL_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    admin_password: String,
    /// Resource id (or, in the same resource group, the name) of the managed instance whose
    /// DNS zone this one shares — required for a later failover group between them.
    #[arg(long)]
    dns_zone_partner: Option<String>,
    /// Server collation.
    #[arg(long)]
    collation: Option<String>,
    #[command(flatten)]
    sizing: Sizing,
    /// Do not wait for the operation to finish.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    target: Target,
    /// New administrator password.
    #[arg(short = 'p', long)]
    admin_password: Option<String>,
    #[command(flatten)]
    sizing: Sizing,
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

/// Parses az's storage sizes: `32`, `32GB`, `1TB`, `32768MB` → GB.
pub fn parse_storage_gb(s: &str) -> Result<i32, UsageError> {
    let t = s.trim().to_ascii_uppercase().replace(' ', "");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| UsageError(format!("--storage: cannot read {s:?} as a size")))?;
    let gb = match unit {
        "" | "G" | "GB" => Some(n),
        "T" | "TB" => n.checked_mul(1024),
        "M" | "MB" if n % 1024 == 0 => Some(n / 1024),
        _ => None,
    };
    gb.and_then(|g| i32::try_from(g).ok()).ok_or_else(|| {
        UsageError(format!(
            "--storage: {s:?} is not a whole number of GB (e.g. 32GB, 1TB)"
        ))
    })
}

/// The sku name for an edition and hardware family: `GeneralPurpose` + `Gen5` → `GP_Gen5`.
pub fn sku_name(tier: &str, family: &str) -> Result<String, UsageError> {
    let prefix = match tier.to_ascii_lowercase().replace([' ', '_'], "").as_str() {
        "generalpurpose" | "gp" => "GP",
        "businesscritical" | "bc" => "BC",
        _ => {
            return Err(UsageError(format!(
                "--tier: {tier:?} is not GeneralPurpose or BusinessCritical"
            )))
        }
    };
    Ok(format!("{prefix}_{family}"))
}

fn tags(list: &[String]) -> Result<Value, UsageError> {
    let mut m = Map::new();
    for t in list.iter().filter(|t| !t.is_empty()) {
        let (k, v) = t.split_once('=').unwrap_or((t.as_str(), ""));
        if k.is_empty() {
            return Err(UsageError(format!("--tags: {t:?} has no key")));
        }
        m.insert(k.to_string(), v.into());
    }
    Ok(Value::Object(m))
}

impl Sizing {
    /// Fills `properties` (and `tags`) of a body with what was given.
    fn apply(&self, body: &mut Value) -> Result<(), UsageError> {
        if let Some(c) = self.capacity {
            body["properties"]["vCores"] = c.into();
        }
        if let Some(s) = &self.storage {
            body["properties"]["storageSizeInGB"] = parse_storage_gb(s)?.into();
        }
        if let Some(l) = &self.license_type {
            body["properties"]["licenseType"] = l.as_str().into();
        }
        if let Some(f) = &self.database_format {
            body["properties"]["databaseFormat"] = f.as_str().into();
        }
        if let Some(t) = &self.tags {
            body["tags"] = tags(t)?;
        }
        Ok(())
    }
}

/// A partner given by name means an instance of the same resource group.
fn partner_id(client: &Client, rg: &str, partner: &str) -> Result<String> {
    if partner.starts_with('/') {
        Ok(partner.to_string())
    } else {
        mi_path(client, rg, partner)
    }
}

pub async fn run(client: &Client, command: MiCommand, format: Format) -> Result<()> {
    let result = match command {
        MiCommand::Create(a) => {
            let t = &a.target;
            let mut body = json!({
                "location": a.location,
                "properties": {
                    "administratorLogin": a.admin_user,
                    "administratorLoginPassword": a.admin_password,
                },
            });
            if a.sizing.tier.is_some() || a.sizing.family.is_some() {
                let tier = a.sizing.tier.as_deref().unwrap_or("GeneralPurpose");
                let family = a.sizing.family.as_deref().unwrap_or("Gen5");
                body["sku"] = json!({ "name": sku_name(tier, family)? });
            }
            a.sizing.apply(&mut body)?;
            if let Some(p) = &a.dns_zone_partner {
                body["properties"]["dnsZonePartner"] =
                    partner_id(client, &t.resource_group, p)?.into();
            }
            if let Some(c) = &a.collation {
                body["properties"]["collation"] = c.as_str().into();
            }
            client
                .lro(Lro {
                    method: Method::PUT,
                    path: mi_path(client, &t.resource_group, &t.name)?,
                    body: Some(body),
                    label: format!("Creating managed instance {}", t.name),
                    final_state: Final::Resource,
                    no_wait: a.no_wait,
                    observe_group: None,
                })
                .await?
        }
        MiCommand::Show(t) => Some(
            client
                .get(&mi_path(client, &t.resource_group, &t.name)?)
                .await?,
        ),
        MiCommand::List(a) => {
            let path = match &a.resource_group {
                Some(rg) => format!("{}/managedInstances", rg_path(client, rg)?),
                None => format!(
                    "{}/providers/Microsoft.Sql/managedInstances",
                    client.sub_path()?
                ),
            };
            Some(Value::Array(client.list(&path).await?))
        }
        MiCommand::Update(a) => {
            let t = &a.target;
            let path = mi_path(client, &t.resource_group, &t.name)?;
            let mut body = json!({ "properties": {} });
            if a.sizing.tier.is_some() || a.sizing.family.is_some() {
                // The sku name combines edition and family; keep whichever is not changing.
                let current = client.get(&path).await?;
                let tier = a
                    .sizing
                    .tier
                    .clone()
                    .or_else(|| current["sku"]["tier"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "GeneralPurpose".into());
                let family = a
                    .sizing
                    .family
                    .clone()
                    .or_else(|| current["sku"]["family"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "Gen5".into());
                body["sku"] = json!({ "name": sku_name(&tier, &family)? });
            }
            a.sizing.apply(&mut body)?;
            if let Some(p) = &a.admin_password {
                body["properties"]["administratorLoginPassword"] = p.as_str().into();
            }
            client
                .lro(Lro {
                    method: Method::PATCH,
                    path,
                    body: Some(body),
                    label: format!("Updating managed instance {}", t.name),
                    final_state: Final::Resource,
                    no_wait: a.no_wait,
                    observe_group: None,
                })
                .await?
        }
        MiCommand::Delete(a) => {
            let t = &a.target;
            confirm(
                a.yes,
                &format!("Delete managed instance {} and all its data?", t.name),
            )?;
            client
                .lro(Lro {
                    method: Method::DELETE,
                    path: mi_path(client, &t.resource_group, &t.name)?,
                    body: None,
                    label: format!("Deleting managed instance {}", t.name),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_sizes_as_az_reads_them() {
        assert_eq!(parse_storage_gb("32").ok(), Some(32));
        assert_eq!(parse_storage_gb("64GB").ok(), Some(64));
        assert_eq!(parse_storage_gb("64 gb").ok(), Some(64));
        assert_eq!(parse_storage_gb("1TB").ok(), Some(1024));
        assert_eq!(parse_storage_gb("32768MB").ok(), Some(32));
        assert!(parse_storage_gb("1.5TB").is_err());
        assert!(parse_storage_gb("lots").is_err());
        assert!(parse_storage_gb("100MB").is_err());
    }

    #[test]
    fn sku_names() {
        assert_eq!(
            sku_name("GeneralPurpose", "Gen5").ok().as_deref(),
            Some("GP_Gen5")
        );
        assert_eq!(sku_name("BC", "G8IM").ok().as_deref(), Some("BC_G8IM"));
        assert!(sku_name("Hyperscale", "Gen5").is_err());
    }

    #[test]
    fn tags_parse() {
        assert_eq!(
            tags(&["a=1".into(), "b".into()]).ok(),
            Some(json!({"a": "1", "b": ""}))
        );
        assert_eq!(tags(&["".into()]).ok(), Some(json!({})));
        assert!(tags(&["=x".into()]).is_err());
    }
}
