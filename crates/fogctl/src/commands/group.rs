//! `fogctl sql instance-failover-group create|show|update|delete|set-primary|list|watch`,
//! with `az sql instance-failover-group`'s parameters and behaviour:
//!
//! - the group lives at `…/resourceGroups/{rg}/providers/Microsoft.Sql/locations/{location}/
//!   instanceFailoverGroups/{name}` and can be read at either member's (rg, location);
//!   `-g -l -n` therefore names one group even when groups of the same name exist in other
//!   resource groups and DNS zones (`watch` shows each of them);
//! - `create` reads both instances, addresses the primary's location and names the
//!   partner's location in `partnerRegions`; the read-only endpoint policy is `Disabled`;
//! - `--grace-period` is in hours (sent as minutes), and dropped with `--failover-policy Manual`;
//! - `set-primary -g -l` names the side that should become primary; if it already is,
//!   nothing is done.

use super::mi_path;
use super::watch::{self, WatchArgs};
use crate::client::{seg, Client, Final, Lro};
use crate::output::{self, Format};
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create an instance failover group between two managed instances.
    Create(CreateArgs),
    /// Show a failover group as seen from one member's location.
    Show(Target),
    /// List the failover groups that have a member at a location.
    List(AtLocation),
    /// Update a failover group's policies (at the primary's location).
    Update(UpdateArgs),
    /// Delete a failover group; the secondary becomes a stand-alone instance.
    Delete(DeleteArgs),
    /// Make the instance at this location the primary (planned or forced failover).
    SetPrimary(SetPrimaryArgs),
    /// Live view of failover groups: roles, replication, lag, health, listeners, events.
    Watch(WatchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailoverPolicy {
    #[value(name = "Automatic")]
    Automatic,
    #[value(name = "Manual")]
    Manual,
}

impl FailoverPolicy {
    fn as_str(self) -> &'static str {
        match self {
            Self::Automatic => "Automatic",
            Self::Manual => "Manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecondaryType {
    #[value(name = "Geo")]
    Geo,
    #[value(name = "Standby")]
    Standby,
}

impl SecondaryType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Geo => "Geo",
            Self::Standby => "Standby",
        }
    }
}

#[derive(Args)]
pub struct AtLocation {
    /// Resource group of the member instance at this location.
    #[arg(short = 'g', long)]
    pub resource_group: String,
    /// Location of that member instance.
    #[arg(short = 'l', long)]
    pub location: String,
}

#[derive(Args)]
pub struct Target {
    #[command(flatten)]
    pub at: AtLocation,
    /// Failover group name.
    #[arg(short = 'n', long)]
    pub name: String,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Resource group of the primary managed instance.
    #[arg(short = 'g', long)]
    resource_group: String,
    /// Failover group name.
    #[arg(short = 'n', long)]
    name: String,
    /// The primary managed instance.
    #[arg(long = "mi", visible_alias = "source-mi")]
    mi: String,
    /// The secondary (partner) managed instance.
    #[arg(long)]
    partner_mi: String,
    /// Resource group of the partner instance (default: -g).
    #[arg(long)]
    partner_resource_group: Option<String>,
    /// Read-write endpoint failover policy.
    #[arg(long, value_enum, ignore_case = true, default_value = "Automatic")]
    failover_policy: FailoverPolicy,
    /// Hours to wait before an automatic failover that may lose data (Automatic only).
    #[arg(long, default_value_t = 1)]
    grace_period: i64,
    /// Secondary type: Geo (readable) or Standby (DR only).
    #[arg(long, value_enum, ignore_case = true, default_value = "Geo")]
    secondary_type: SecondaryType,
    /// Do not wait for the operation to finish.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    target: Target,
    /// Read-write endpoint failover policy.
    #[arg(long, value_enum, ignore_case = true)]
    failover_policy: Option<FailoverPolicy>,
    /// Hours to wait before an automatic failover that may lose data (Automatic only).
    #[arg(long)]
    grace_period: Option<i64>,
    /// Secondary type: Geo or Standby.
    #[arg(long, value_enum, ignore_case = true)]
    secondary_type: Option<SecondaryType>,
    /// Do not wait for the operation to finish.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    target: Target,
    /// Do not wait for the operation to finish.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Args)]
pub struct SetPrimaryArgs {
    /// Resource group of the instance that should become primary (the current secondary).
    #[arg(short = 'g', long)]
    resource_group: String,
    /// Location of the instance that should become primary.
    #[arg(short = 'l', long)]
    location: String,
    /// Failover group name.
    #[arg(short = 'n', long)]
    name: String,
    /// Fail over at once even if that loses data the secondary has not received.
    #[arg(long)]
    allow_data_loss: bool,
    /// Do not wait for the operation to finish.
    #[arg(long)]
    no_wait: bool,
}

/// `…/resourceGroups/{rg}/providers/Microsoft.Sql/locations/{location}/instanceFailoverGroups`.
pub fn groups_path(client: &Client, rg: &str, location: &str) -> Result<String> {
    Ok(format!(
        "{}/locations/{}/instanceFailoverGroups",
        super::rg_path(client, rg)?,
        seg(location)
    ))
}

pub fn group_path(client: &Client, rg: &str, location: &str, name: &str) -> Result<String> {
    Ok(format!(
        "{}/{}",
        groups_path(client, rg, location)?,
        seg(name)
    ))
}

/// The read-write endpoint az sends: the grace period only with Automatic.
fn read_write_endpoint(policy: &str, grace_minutes: i64) -> Value {
    let mut rw = json!({ "failoverPolicy": policy });
    if policy.eq_ignore_ascii_case("Automatic") {
        rw["failoverWithDataLossGracePeriodMinutes"] = grace_minutes.into();
    }
    rw
}

/// `--grace-period` is in hours.
fn hours_to_minutes(hours: i64) -> i64 {
    hours.saturating_mul(60)
}

/// The PUT body for an update: the group's current writable properties with the changes.
/// Without a new `--grace-period`, the current one is kept (1 hour if there is none).
fn update_body(
    current: &Value,
    policy: Option<FailoverPolicy>,
    grace_hours: Option<i64>,
    secondary_type: Option<SecondaryType>,
) -> Value {
    let p = &current["properties"];
    let rw_now = &p["readWriteEndpoint"];
    let policy = policy
        .map(|p| p.as_str().to_string())
        .or_else(|| rw_now["failoverPolicy"].as_str().map(str::to_string))
        .unwrap_or_else(|| "Manual".into());
    let grace_minutes = grace_hours
        .map(hours_to_minutes)
        .or_else(|| rw_now["failoverWithDataLossGracePeriodMinutes"].as_i64())
        .unwrap_or(60);
    let rw = read_write_endpoint(&policy, grace_minutes);
    let mut props = json!({
        "readWriteEndpoint": rw,
        "readOnlyEndpoint": p.get("readOnlyEndpoint").cloned().unwrap_or(json!({"failoverPolicy": "Disabled"})),
        "partnerRegions": [{ "location": p["partnerRegions"][0]["location"] }],
        "managedInstancePairs": [{
            "primaryManagedInstanceId": p["managedInstancePairs"][0]["primaryManagedInstanceId"],
            "partnerManagedInstanceId": p["managedInstancePairs"][0]["partnerManagedInstanceId"],
        }],
    });
    match secondary_type {
        Some(t) => props["secondaryType"] = t.as_str().into(),
        None => {
            if let Some(t) = p.get("secondaryType").filter(|t| !t.is_null()) {
                props["secondaryType"] = t.clone();
            }
        }
    }
    json!({ "properties": props })
}

pub async fn run(client: &Client, command: GroupCommand, output: Option<Format>) -> Result<()> {
    let format = output.unwrap_or(Format::Json);
    let result = match command {
        GroupCommand::Create(a) => {
            let partner_rg = a
                .partner_resource_group
                .as_deref()
                .unwrap_or(&a.resource_group);
            let primary_path = mi_path(client, &a.resource_group, &a.mi)?;
            let partner_path = mi_path(client, partner_rg, &a.partner_mi)?;
            let (primary, partner) =
                tokio::try_join!(client.get(&primary_path), client.get(&partner_path))?;
            let location = primary["location"].as_str().unwrap_or_default().to_string();
            let policy = a.failover_policy.as_str();
            let body = json!({ "properties": {
                "readWriteEndpoint": read_write_endpoint(policy, hours_to_minutes(a.grace_period)),
                "readOnlyEndpoint": { "failoverPolicy": "Disabled" },
                "partnerRegions": [{ "location": partner["location"] }],
                "managedInstancePairs": [{
                    "primaryManagedInstanceId": primary["id"],
                    "partnerManagedInstanceId": partner["id"],
                }],
                "secondaryType": a.secondary_type.as_str(),
            }});
            let path = group_path(client, &a.resource_group, &location, &a.name)?;
            client
                .lro(Lro {
                    method: Method::PUT,
                    path: path.clone(),
                    body: Some(body),
                    label: format!("Creating failover group {}", a.name),
                    final_state: Final::Resource,
                    no_wait: a.no_wait,
                    observe_group: Some(path),
                })
                .await?
        }
        GroupCommand::Show(t) => Some(
            client
                .get(&group_path(
                    client,
                    &t.at.resource_group,
                    &t.at.location,
                    &t.name,
                )?)
                .await?,
        ),
        GroupCommand::List(at) => Some(Value::Array(
            client
                .list(&groups_path(client, &at.resource_group, &at.location)?)
                .await?,
        )),
        GroupCommand::Update(a) => {
            let t = &a.target;
            let path = group_path(client, &t.at.resource_group, &t.at.location, &t.name)?;
            let current = client.get(&path).await?;
            let body = update_body(
                &current,
                a.failover_policy,
                a.grace_period,
                a.secondary_type,
            );
            client
                .lro(Lro {
                    method: Method::PUT,
                    path: path.clone(),
                    body: Some(body),
                    label: format!("Updating failover group {}", t.name),
                    final_state: Final::Resource,
                    no_wait: a.no_wait,
                    observe_group: Some(path),
                })
                .await?
        }
        GroupCommand::Delete(a) => {
            let t = &a.target;
            client
                .lro(Lro {
                    method: Method::DELETE,
                    path: group_path(client, &t.at.resource_group, &t.at.location, &t.name)?,
                    body: None,
                    label: format!("Deleting failover group {}", t.name),
                    final_state: Final::Nothing,
                    no_wait: a.no_wait,
                    observe_group: None,
                })
                .await?
        }
        GroupCommand::SetPrimary(a) => {
            let path = group_path(client, &a.resource_group, &a.location, &a.name)?;
            let current = client.get(&path).await?;
            if current["properties"]["replicationRole"].as_str() == Some("Primary") {
                eprintln!(
                    "{} is already primary at {}; nothing to do.",
                    a.name, a.location
                );
                None
            } else {
                let (action, label) = if a.allow_data_loss {
                    (
                        "forceFailoverAllowDataLoss",
                        "Forced failover (data loss allowed) of",
                    )
                } else {
                    ("failover", "Failing over")
                };
                client
                    .lro(Lro {
                        method: Method::POST,
                        path: format!("{path}/{action}"),
                        body: None,
                        label: format!("{label} {} to {}", a.name, a.location),
                        final_state: Final::Location,
                        no_wait: a.no_wait,
                        observe_group: Some(path),
                    })
                    .await?
            }
        }
        GroupCommand::Watch(a) => {
            return watch::run(client, a, output.unwrap_or(Format::Table)).await
        }
    };
    output::print(result.as_ref(), format);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(policy: &str, grace: Option<i64>) -> Value {
        let mut rw = json!({"failoverPolicy": policy});
        if let Some(g) = grace {
            rw["failoverWithDataLossGracePeriodMinutes"] = g.into();
        }
        json!({"properties": {
            "readWriteEndpoint": rw,
            "readOnlyEndpoint": {"failoverPolicy": "Disabled"},
            "replicationRole": "Primary",
            "partnerRegions": [{"location": "westus", "replicationRole": "Secondary"}],
            "managedInstancePairs": [{"primaryManagedInstanceId": "/a", "partnerManagedInstanceId": "/b"}],
            "secondaryType": "Geo",
            "listeners": {}
        }})
    }

    #[test]
    fn grace_period_is_hours_and_only_with_automatic() {
        assert_eq!(
            read_write_endpoint("Automatic", hours_to_minutes(2)),
            json!({"failoverPolicy": "Automatic", "failoverWithDataLossGracePeriodMinutes": 120})
        );
        assert_eq!(
            read_write_endpoint("Manual", 120),
            json!({"failoverPolicy": "Manual"})
        );
    }

    #[test]
    fn update_keeps_what_is_not_changed() {
        let b = update_body(
            &group("Manual", None),
            Some(FailoverPolicy::Automatic),
            Some(3),
            None,
        );
        assert_eq!(
            b["properties"]["readWriteEndpoint"],
            json!({"failoverPolicy": "Automatic", "failoverWithDataLossGracePeriodMinutes": 180})
        );
        assert_eq!(
            b["properties"]["partnerRegions"],
            json!([{"location": "westus"}])
        );
        assert_eq!(b["properties"]["secondaryType"], "Geo");
        assert!(b["properties"].get("replicationRole").is_none());
        // Only the secondary type changes: an odd grace period (90 min) is kept as is.
        let b = update_body(
            &group("Automatic", Some(90)),
            None,
            None,
            Some(SecondaryType::Standby),
        );
        assert_eq!(
            b["properties"]["readWriteEndpoint"]["failoverWithDataLossGracePeriodMinutes"],
            90
        );
        assert_eq!(b["properties"]["secondaryType"], "Standby");
        // Back to Manual drops the grace period.
        let b = update_body(
            &group("Automatic", Some(60)),
            Some(FailoverPolicy::Manual),
            None,
            None,
        );
        assert_eq!(
            b["properties"]["readWriteEndpoint"],
            json!({"failoverPolicy": "Manual"})
        );
    }
}
