//! `Microsoft.Sql/locations/instanceFailoverGroups`: body validation, the persisted record
//! and the view from either member's side.
//!
//! A group is one record, addressed from two places: the primary's and the secondary's
//! `(subscription, resource group, location)`. [`FailoverGroupRecord::side`] tells which
//! member an address names; [`FailoverGroupRecord::view`] renders the group as seen from
//! there (`replicationRole` local, `partnerRegions` the other side, pair with the current
//! primary first).

use crate::api_version::{self, ResourceType};
use crate::body::{enum_value, required};
use crate::{names, ArmError, ManagedInstanceId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const RESOURCE_TYPE: &str = "Microsoft.Sql/locations/instanceFailoverGroups";
pub const READ_WRITE_POLICIES: &[&str] = &["Manual", "Automatic"];
pub const READ_ONLY_POLICIES: &[&str] = &["Disabled", "Enabled"];
pub const SECONDARY_TYPES: &[&str] = &["Geo", "Standby"];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupBody {
    pub properties: Option<GroupPropertiesBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupPropertiesBody {
    pub read_write_endpoint: Option<ReadWriteEndpointBody>,
    pub read_only_endpoint: Option<ReadOnlyEndpointBody>,
    pub partner_regions: Option<Vec<PartnerRegionBody>>,
    pub managed_instance_pairs: Option<Vec<PairBody>>,
    pub secondary_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadWriteEndpointBody {
    pub failover_policy: Option<String>,
    /// `int32` in every version of the specification: larger values are refused when the
    /// body is read.
    pub failover_with_data_loss_grace_period_minutes: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadOnlyEndpointBody {
    pub failover_policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartnerRegionBody {
    pub location: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairBody {
    pub primary_managed_instance_id: Option<String>,
    pub partner_managed_instance_id: Option<String>,
}

/// `readWriteEndpoint.failoverPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadWritePolicy {
    Manual,
    Automatic,
}

/// `readOnlyEndpoint.failoverPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadOnlyPolicy {
    Disabled,
    Enabled,
}

/// `secondaryType`: a readable geo-secondary, or a DR-only standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecondaryType {
    Geo,
    Standby,
}

macro_rules! wire_names {
    ($($t:ident { $($v:ident),+ })+) => {$(
        impl $t {
            /// The value as the API spells it.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => stringify!($v)),+ }
            }
            /// Parses the API's spelling (any case, as ARM does).
            pub fn parse(s: &str) -> Option<Self> {
                $(if s.eq_ignore_ascii_case(stringify!($v)) { return Some(Self::$v); })+
                None
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}
wire_names! {
    ReadWritePolicy { Manual, Automatic }
    ReadOnlyPolicy { Disabled, Enabled }
    SecondaryType { Geo, Standby }
}

/// Group-wide policies (identical in both views). Persisted with the API's spellings, so
/// records written when these were strings read the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    pub read_write: ReadWritePolicy,
    pub grace_period_minutes: Option<i64>,
    pub read_only: ReadOnlyPolicy,
    pub secondary_type: SecondaryType,
}

/// A validated request body.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    pub policies: Policies,
    pub primary: ManagedInstanceId,
    pub partner: ManagedInstanceId,
    /// `partnerRegions[0].location` as supplied.
    pub partner_region: String,
    /// Whether the request stated `secondaryType` (under a version that defines it). An
    /// update that does not keeps the group's current type; a create defaults to `Geo`.
    pub secondary_type_stated: bool,
}

/// Group names become DNS labels: like instance names, but a bad name is 409
/// `InvalidFailoverGroupName`, as the catalogue says.
pub fn validate_name(name: &str) -> Result<(), ArmError> {
    names::validate_instance_name(name).map_err(|e| match e.code.as_str() {
        "InvalidServerName" => ArmError::invalid_failover_group_name(),
        _ => e,
    })
}

fn instance_id(
    value: Option<&str>,
    missing: fn() -> ArmError,
    target: &str,
) -> Result<ManagedInstanceId, ArmError> {
    match value.map(str::trim).filter(|s| !s.is_empty()) {
        None => Err(missing().with_target(target)),
        Some(s) => ManagedInstanceId::parse(s).map_err(|_| missing().with_target(target)),
    }
}

impl GroupBody {
    /// [`GroupBody::into_spec_for`] under the newest stable version.
    pub fn into_spec(self, min_grace_minutes: i64) -> Result<GroupSpec, ArmError> {
        self.into_spec_for(min_grace_minutes, api_version::LATEST_STABLE)
    }

    /// Validates the body (rules that need no stored state), in the order Azure reports
    /// them. `min_grace_minutes` is the server's minimum grace period; `api_version` is the
    /// request's (a property the version does not define is ignored, like any unknown one).
    pub fn into_spec_for(
        self,
        min_grace_minutes: i64,
        api_version: &str,
    ) -> Result<GroupSpec, ArmError> {
        let props = self.properties.ok_or_else(ArmError::ifog_invalid_request)?;
        let rw = props
            .read_write_endpoint
            .ok_or_else(ArmError::ifog_missing_read_write_endpoint)?;
        let policy = rw
            .failover_policy
            .as_deref()
            .and_then(|p| enum_value(p, READ_WRITE_POLICIES, "").ok())
            .ok_or_else(|| {
                ArmError::ifog_invalid_policy()
                    .with_target("properties.readWriteEndpoint.failoverPolicy")
            })?;
        let grace = rw
            .failover_with_data_loss_grace_period_minutes
            .map(i64::from);
        let grace_target = "properties.readWriteEndpoint.failoverWithDataLossGracePeriodMinutes";
        let policy = ReadWritePolicy::parse(policy).ok_or_else(ArmError::ifog_invalid_policy)?;
        match (policy, grace) {
            (_, Some(g)) if g < 0 => {
                return Err(ArmError::ifog_negative_grace().with_target(grace_target))
            }
            (ReadWritePolicy::Manual, Some(_)) => {
                return Err(ArmError::ifog_grace_with_manual().with_target(grace_target))
            }
            (ReadWritePolicy::Automatic, None) => {
                return Err(ArmError::ifog_grace_required().with_target(grace_target))
            }
            (ReadWritePolicy::Automatic, Some(g)) if g < min_grace_minutes => {
                return Err(
                    ArmError::ifog_grace_below_minimum(min_grace_minutes).with_target(grace_target)
                )
            }
            _ => {}
        }
        let read_only = match props.read_only_endpoint.and_then(|r| r.failover_policy) {
            Some(p) => enum_value(
                &p,
                READ_ONLY_POLICIES,
                "properties.readOnlyEndpoint.failoverPolicy",
            )?,
            None => "Disabled",
        };
        let stated = props.secondary_type.filter(|_| {
            api_version::has(
                ResourceType::InstanceFailoverGroups,
                &["properties", "secondaryType"],
                api_version,
            )
        });
        let secondary_type_stated = stated.is_some();
        let secondary_type = match stated {
            Some(t) => enum_value(&t, SECONDARY_TYPES, "properties.secondaryType")?,
            None => "Geo",
        };
        // Both lists are required by the specification: a body without one is told which.
        let regions = required(props.partner_regions, "properties.partnerRegions")?;
        if regions.len() != 1 {
            return Err(ArmError::ifog_partner_count().with_target("properties.partnerRegions"));
        }
        let pairs = required(
            props.managed_instance_pairs,
            "properties.managedInstancePairs",
        )?;
        if pairs.len() != 1 {
            return Err(ArmError::ifog_pair_count().with_target("properties.managedInstancePairs"));
        }
        let pair = &pairs[0];
        let primary = instance_id(
            pair.primary_managed_instance_id.as_deref(),
            ArmError::ifog_invalid_primary,
            "properties.managedInstancePairs[0].primaryManagedInstanceId",
        )?;
        let partner = instance_id(
            pair.partner_managed_instance_id.as_deref(),
            ArmError::ifog_invalid_partner,
            "properties.managedInstancePairs[0].partnerManagedInstanceId",
        )?;
        if primary.key() == partner.key() {
            return Err(ArmError::ifog_duplicate_partner()
                .with_target("properties.managedInstancePairs[0].partnerManagedInstanceId"));
        }
        let partner_region = regions[0]
            .location
            .clone()
            .filter(|l| names::validate_location(l).is_ok())
            .ok_or_else(|| {
                ArmError::ifog_invalid_region().with_target("properties.partnerRegions[0].location")
            })?;
        Ok(GroupSpec {
            policies: Policies {
                read_write: policy,
                grace_period_minutes: grace,
                read_only: ReadOnlyPolicy::parse(read_only)
                    .ok_or_else(|| ArmError::internal("read-only policy"))?,
                secondary_type: SecondaryType::parse(secondary_type)
                    .ok_or_else(|| ArmError::internal("secondary type"))?,
            },
            primary,
            partner,
            partner_region,
            secondary_type_stated,
        })
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub instance: ManagedInstanceId,
    pub uid: String,
    /// Canonical region key.
    pub location: String,
    /// Region as the client spelled it (path segment or `partnerRegions[].location`).
    pub location_label: String,
}

/// Replication state as `replicationState` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationState {
    #[serde(rename = "PENDING")]
    Pending,
    #[serde(rename = "SEEDING")]
    Seeding,
    #[serde(rename = "CATCH_UP")]
    CatchUp,
    #[serde(rename = "SUSPENDED")]
    Suspended,
}

impl ReplicationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Seeding => "SEEDING",
            Self::CatchUp => "CATCH_UP",
            Self::Suspended => "SUSPENDED",
        }
    }
}

/// TCP ports of the group's two listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerPorts {
    pub read_write: u16,
    pub read_only: u16,
}

/// Progress of the size-of-data seeding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedingProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// The persisted group (format [`FailoverGroupRecord::FORMAT`]).
///
/// A group's identity is its resource id — subscription, resource group, location and name
/// — from either member's side; its DNS record is `{name}.{dns_zone}`. Two groups may share
/// a name when their addresses and DNS zones differ. The record is stored under its `uid`,
/// which never changes; the store indexes it by both addresses and by its DNS record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverGroupRecord {
    pub name: String,
    /// Stable internal id: the record's store key, and what instances, observations,
    /// events, operations and listeners refer to the group by. Records of format 1 (keyed
    /// by name) have none; the start-up migration gives them [`legacy_uid`].
    #[serde(default)]
    pub uid: String,
    pub primary: Member,
    pub secondary: Member,
    pub policies: Policies,
    /// State set by operations (PENDING, SEEDING); once established, observation decides.
    pub replication_state: ReplicationState,
    /// Fencing generation: bumped by every role change.
    pub generation: u64,
    pub active_operation: Option<String>,
    pub listeners: ListenerPorts,
    pub dns_zone: String,
    /// Physical replication slot on the primary that the secondary streams from.
    pub slot: String,
    pub seeding: Option<SeedingProgress>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// A role switch in progress: while set and not yet routed, the read-write listener
    /// holds new connections and has closed the old ones.
    #[serde(default)]
    pub switch: Option<Switch>,
    /// The secondary is a former primary that must be rewound before it may run again.
    #[serde(default)]
    pub secondary_needs_rejoin: bool,
    /// What the last failover did.
    #[serde(default)]
    pub last_failover: Option<FailoverReport>,
}

/// State of a failover between its steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub planned: bool,
    /// The old primary's shutdown checkpoint (planned failovers).
    pub checkpoint_lsn: Option<String>,
    /// The old primary could not be stopped: it is fenced by generation and by routing, and
    /// must be rewound before it runs again.
    pub old_primary_stale: bool,
    /// Roles have been swapped in this record (the new primary is `primary`).
    pub routed: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
}

/// WAL the old primary had that the new primary never received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataLoss {
    pub from_lsn: String,
    pub to_lsn: String,
    pub bytes: u64,
}

/// The outcome of a failover, reported in the group's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverReport {
    pub planned: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub from: String,
    pub to: String,
    pub generation: u64,
    pub duration_ms: u64,
    pub data_loss: Option<DataLoss>,
    /// How the old primary came back: `followed`, `rewound`, `reseeded`, or the error.
    pub old_primary: String,
    /// Why the failover happened (requested through the API, or the automatic policy).
    #[serde(default)]
    pub reason: Option<String>,
}

impl FailoverReport {
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "type": if self.planned { "Planned" } else { "ForcedAllowDataLoss" },
            "time": self.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "from": self.from,
            "to": self.to,
            "generation": self.generation,
            "durationMs": self.duration_ms,
            "oldPrimary": self.old_primary,
        });
        if let Some(r) = &self.reason {
            v["reason"] = r.clone().into();
        }
        if let Some(l) = &self.data_loss {
            v["dataLoss"] =
                serde_json::json!({ "fromLsn": l.from_lsn, "toLsn": l.to_lsn, "bytes": l.bytes });
        }
        v
    }
}

pub use crate::health::ObservedGroup;

/// Which member an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Primary,
    Secondary,
}

/// Where clients reach the listeners: DNS-style names and the actual address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAddresses {
    pub host: String,
    pub dns_suffix: String,
}

/// A new group's uid.
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The uid of a group a fogd before uids created (stored under `failover-groups/{name}`,
/// when names were global): derived from the name, so an operation record of that time,
/// which names its group only by name, still finds it. A `.` never occurs in a group name
/// nor in a [`new_uid`], so it collides with neither.
pub fn legacy_uid(name: &str) -> String {
    format!("legacy.{}", name.to_ascii_lowercase())
}

impl FailoverGroupRecord {
    /// Format 2: stored under `failover-groups/{uid}` with a `uid`; format 1 was stored
    /// under `failover-groups/{name}` without one (migrated at start-up).
    pub const FORMAT: u32 = 2;

    /// The DNS record the group's listener names are built on: `{name}.{dnsZone}`, lower
    /// case. At most one group has a given record.
    pub fn dns_record(&self) -> String {
        format!("{}.{}", self.name, self.dns_zone).to_ascii_lowercase()
    }

    /// The member that an address `(subscription, resource group, location)` names.
    pub fn side(&self, subscription: &str, resource_group: &str, location: &str) -> Option<Side> {
        let matches = |m: &Member| {
            m.instance.scope.subscription == subscription
                && m.instance
                    .scope
                    .resource_group
                    .eq_ignore_ascii_case(resource_group)
                && m.location == names::location_key(location)
        };
        if matches(&self.primary) {
            Some(Side::Primary)
        } else if matches(&self.secondary) {
            Some(Side::Secondary)
        } else {
            None
        }
    }

    pub fn member(&self, side: Side) -> &Member {
        match side {
            Side::Primary => &self.primary,
            Side::Secondary => &self.secondary,
        }
    }

    /// DNS-style listener names: `{fog}.{zone}.{suffix}` and `{fog}.secondary.{zone}.{suffix}`.
    pub fn listener_names(&self, dns_suffix: &str) -> (String, String) {
        (
            format!("{}.{}.{}", self.name, self.dns_zone, dns_suffix),
            format!("{}.secondary.{}.{}", self.name, self.dns_zone, dns_suffix),
        )
    }

    /// The group as seen from `side`. `state` is the replication state to report (the
    /// stored one while an operation sets it, otherwise the observed one).
    pub fn view(
        &self,
        side: Side,
        state: ReplicationState,
        listeners: &ListenerAddresses,
    ) -> serde_json::Value {
        let (me, other, my_role, other_role) = match side {
            Side::Primary => (&self.primary, &self.secondary, "Primary", "Secondary"),
            Side::Secondary => (&self.secondary, &self.primary, "Secondary", "Primary"),
        };
        let mut rw = serde_json::json!({ "failoverPolicy": self.policies.read_write.as_str() });
        if let Some(g) = self.policies.grace_period_minutes {
            rw["failoverWithDataLossGracePeriodMinutes"] = g.into();
        }
        let (rw_name, ro_name) = self.listener_names(&listeners.dns_suffix);
        let mut props = serde_json::json!({
            "readWriteEndpoint": rw,
            "readOnlyEndpoint": { "failoverPolicy": self.policies.read_only.as_str() },
            "replicationRole": my_role,
            "replicationState": state.as_str(),
            "partnerRegions": [{ "location": other.location_label, "replicationRole": other_role }],
            "managedInstancePairs": [{
                "primaryManagedInstanceId": self.primary.instance.to_string(),
                "partnerManagedInstanceId": self.secondary.instance.to_string(),
            }],
            "secondaryType": self.policies.secondary_type.as_str(),
            "listeners": {
                "readWrite": { "hostName": rw_name, "host": listeners.host, "port": self.listeners.read_write },
                "readOnly": { "hostName": ro_name, "host": listeners.host, "port": self.listeners.read_only },
            },
        });
        if let Some(r) = &self.last_failover {
            props["lastFailover"] = r.view();
        }
        if let Some(p) = &self.seeding {
            props["seedingProgress"] =
                serde_json::json!({ "bytesDone": p.bytes_done, "bytesTotal": p.bytes_total });
        }
        serde_json::json!({
            "id": format!(
                "{}/providers/Microsoft.Sql/locations/{}/instanceFailoverGroups/{}",
                me.instance.scope.path(),
                me.location_label.replace(' ', ""),
                self.name
            ),
            "name": self.name,
            "type": RESOURCE_TYPE,
            "properties": props,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse;

    const P: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/a";
    const S: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg2/providers/Microsoft.Sql/managedInstances/b";

    fn body(rw: &str, extra: &str, regions: &str, pairs: &str) -> String {
        format!(
            r#"{{"properties":{{{rw}{extra}"partnerRegions":{regions},"managedInstancePairs":{pairs}}}}}"#
        )
    }
    fn pair(p: &str, s: &str) -> String {
        format!(r#"[{{"primaryManagedInstanceId":"{p}","partnerManagedInstanceId":"{s}"}}]"#)
    }
    const RW: &str = r#""readWriteEndpoint":{"failoverPolicy":"Manual"},"#;
    const REG: &str = r#"[{"location":"West US"}]"#;

    fn check(json: &str) -> Result<GroupSpec, ArmError> {
        parse::<GroupBody>(json.as_bytes())?.into_spec(60)
    }

    #[test]
    fn valid_body_gets_defaults() {
        let s = check(&body(RW, "", REG, &pair(P, S))).unwrap();
        assert_eq!(s.policies.read_only, ReadOnlyPolicy::Disabled);
        assert_eq!(s.policies.secondary_type, SecondaryType::Geo);
        assert_eq!(s.partner_region, "West US");
        assert_eq!(s.partner.name, "b");
        let s = check(&body(r#""readWriteEndpoint":{"failoverPolicy":"automatic","failoverWithDataLossGracePeriodMinutes":60},"#,
            r#""readOnlyEndpoint":{"failoverPolicy":"enabled"},"secondaryType":"standby","#, REG, &pair(P, S))).unwrap();
        assert_eq!(
            (s.policies.read_write, s.policies.grace_period_minutes),
            (ReadWritePolicy::Automatic, Some(60))
        );
        assert_eq!(
            (s.policies.read_only, s.policies.secondary_type),
            (ReadOnlyPolicy::Enabled, SecondaryType::Standby)
        );
    }

    #[test]
    fn every_body_rule_has_its_code() {
        let p = pair(P, S);
        let cases: Vec<(String, &str)> = vec![
            ("{}".into(), "InstanceFailoverGroupCreateOrUpdateRequestInvalid"),
            (body("", "", REG, &p), "InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteEndpoint"),
            (body(r#""readWriteEndpoint":{},"#, "", REG, &p), "InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteFailoverPolicy"),
            (body(r#""readWriteEndpoint":{"failoverPolicy":"Sometimes"},"#, "", REG, &p), "InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteFailoverPolicy"),
            (body(r#""readWriteEndpoint":{"failoverPolicy":"Automatic","failoverWithDataLossGracePeriodMinutes":-1},"#, "", REG, &p), "InstanceFailoverGroupCreateOrUpdateRequestNegativeGracePeriodValues"),
            (body(r#""readWriteEndpoint":{"failoverPolicy":"Automatic","failoverWithDataLossGracePeriodMinutes":59},"#, "", REG, &p), "InstanceFailoverGroupCreateOrUpdateRequestLessThanMinimumGracePeriodValues"),
            (body(r#""readWriteEndpoint":{"failoverPolicy":"Automatic"},"#, "", REG, &p), "InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteEndpointFields"),
            (body(r#""readWriteEndpoint":{"failoverPolicy":"Manual","failoverWithDataLossGracePeriodMinutes":60},"#, "", REG, &p), "InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteEndpointFieldsForManualPolicy"),
            (body(RW, "", "[]", &p), "InstanceFailoverGroupCreateOrUpdateRequestUnsupportedPartnerCount"),
            (body(RW, "", r#"[{"location":"a"},{"location":"b"}]"#, &p), "InstanceFailoverGroupCreateOrUpdateRequestUnsupportedPartnerCount"),
            (body(RW, "", REG, "[]"), "InstanceFailoverGroupCreateOrUpdateRequestUnsupportedPairCount"),
            (body(RW, "", REG, &format!("[{0},{0}]", &p[1..p.len() - 1])), "InstanceFailoverGroupCreateOrUpdateRequestUnsupportedPairCount"),
            (body(RW, "", REG, &pair("", S)), "InstanceFailoverGroupCreateOrUpdateRequestInvalidPrimary"),
            (body(RW, "", REG, &pair("/not/an/id", S)), "InstanceFailoverGroupCreateOrUpdateRequestInvalidPrimary"),
            (body(RW, "", REG, &pair(P, "")), "InstanceFailoverGroupCreateOrUpdateRequestInvalidPartner"),
            (body(RW, "", REG, &pair(P, &P.to_uppercase().replace("SUBSCRIPTIONS", "subscriptions"))), "InstanceFailoverGroupCreateOrUpdateRequestDuplicatePartner"),
            (body(RW, "", r#"[{}]"#, &p), "InstanceFailoverGroupCreateOrUpdateRequestInvalidManagedInstanceRegion"),
            (body(RW, "", r#"[{"location":"west/us"}]"#, &p), "InstanceFailoverGroupCreateOrUpdateRequestInvalidManagedInstanceRegion"),
            (body(RW, r#""readOnlyEndpoint":{"failoverPolicy":"Maybe"},"#, REG, &p), "InvalidParameterValue"),
            (body(RW, r#""secondaryType":"Warm","#, REG, &p), "InvalidParameterValue"),
            // int32 in the specification: one more than its largest value is refused.
            (body(r#""readWriteEndpoint":{"failoverPolicy":"Automatic","failoverWithDataLossGracePeriodMinutes":3000000000},"#, "", REG, &p), "InvalidRequestContent"),
            (body(r#""readWriteEndpoint":{"failoverPolicy":"Automatic","failoverWithDataLossGracePeriodMinutes":2147483648},"#, "", REG, &p), "InvalidRequestContent"),
            (body(r#""readWriteEndpoint":{"failoverPolicy":"Automatic","failoverWithDataLossGracePeriodMinutes":60.5},"#, "", REG, &p), "InvalidRequestContent"),
        ];
        // Verbatim from the REST reference's error catalogue.
        let messages: &[(&str, &str)] = &[
            ("InstanceFailoverGroupCreateOrUpdateRequestInvalid", "The create or update instance failover group request body is empty or invalid."),
            ("InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteEndpoint", "The readWriteEndpoint field is required for create or update requests."),
            ("InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteFailoverPolicy", "The failoverPolicy field for the read-write endpoint is required for create or update requests."),
            ("InstanceFailoverGroupCreateOrUpdateRequestNegativeGracePeriodValues", "Grace period value for the read-write endpoint must be non-negative."),
            ("InstanceFailoverGroupCreateOrUpdateRequestLessThanMinimumGracePeriodValues", "Grace period value for the instance failover group must be greater than or equal to the '60' minutes minimum grace period"),
            ("InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteEndpointFields", "The property failoverWithDataLossGracePeriodMinutes must be provided when failover policy Automatic is selected for the read-write endpoint."),
            ("InstanceFailoverGroupCreateOrUpdateRequestInvalidReadWriteEndpointFieldsForManualPolicy", "Grace period value should not be provided when failover policy Manual is selected for the read-write endpoint."),
            ("InstanceFailoverGroupCreateOrUpdateRequestUnsupportedPartnerCount", "Only one partner region is supported."),
            ("InstanceFailoverGroupCreateOrUpdateRequestUnsupportedPairCount", "Only one managed instance pair is supported."),
            ("InstanceFailoverGroupCreateOrUpdateRequestInvalidPrimary", "The given primary field in create or update instance failover group request body is empty or invalid."),
            ("InstanceFailoverGroupCreateOrUpdateRequestInvalidPartner", "The given partners field in create or update instance failover group request body is empty or invalid."),
            ("InstanceFailoverGroupCreateOrUpdateRequestDuplicatePartner", "One or more of the provided partner servers are already part of the instance failover group. Please make sure the primary server and all of the given partner servers are unique."),
            ("InstanceFailoverGroupCreateOrUpdateRequestInvalidManagedInstanceRegion", "The provided partner managed instance region in the instance failover group request body is empty or invalid."),
        ];
        for (json, code) in cases {
            let e = check(&json).expect_err(&json);
            assert_eq!(e.code, code, "{json}");
            assert_eq!(e.status, 400, "{json}");
            if let Some((_, m)) = messages.iter().find(|(c, _)| *c == code) {
                assert_eq!(e.message, *m, "{code}");
            }
        }
        let e = check(&body(r#""readWriteEndpoint":{"failoverPolicy":"Automatic","failoverWithDataLossGracePeriodMinutes":5},"#, "", REG, &pair(P, S))).unwrap_err();
        assert!(e.message.contains("'60' minutes minimum"), "{}", e.message);
        let e = check(&body(r#""readWriteEndpoint":{"failoverPolicy":"Automatic","failoverWithDataLossGracePeriodMinutes":3000000000},"#, "", REG, &pair(P, S))).unwrap_err();
        assert_eq!(
            e.target.as_deref(),
            Some("properties.readWriteEndpoint.failoverWithDataLossGracePeriodMinutes")
        );
        let s = check(&body(r#""readWriteEndpoint":{"failoverPolicy":"Automatic","failoverWithDataLossGracePeriodMinutes":2147483647},"#, "", REG, &pair(P, S))).unwrap();
        assert_eq!(s.policies.grace_period_minutes, Some(i64::from(i32::MAX)));
    }

    #[test]
    fn a_missing_list_is_named() {
        let p = pair(P, S);
        for (json, missing) in [
            (
                format!(r#"{{"properties":{{{RW}"managedInstancePairs":{p}}}}}"#),
                "properties.partnerRegions",
            ),
            (
                format!(r#"{{"properties":{{{RW}"partnerRegions":{REG}}}}}"#),
                "properties.managedInstancePairs",
            ),
        ] {
            let e = check(&json).unwrap_err();
            assert_eq!(e.code, "InvalidRequestContent", "{json}");
            assert_eq!(e.target.as_deref(), Some(missing), "{json}");
            assert!(e.message.contains(missing), "{}", e.message);
        }
    }

    #[test]
    fn secondary_type_is_read_only_under_versions_that_define_it() {
        let b = body(RW, r#""secondaryType":"Standby","#, REG, &pair(P, S));
        let under = |v: &str| {
            parse::<GroupBody>(b.as_bytes())
                .unwrap()
                .into_spec_for(60, v)
                .unwrap()
        };
        let s = under("2025-01-01");
        assert!(s.secondary_type_stated);
        assert_eq!(s.policies.secondary_type, SecondaryType::Standby);
        let s = under("2021-11-01");
        assert!(!s.secondary_type_stated);
        assert_eq!(s.policies.secondary_type, SecondaryType::Geo);
        assert!(
            !check(&body(RW, "", REG, &pair(P, S)))
                .unwrap()
                .secondary_type_stated
        );
    }

    #[test]
    fn names() {
        assert!(validate_name("fog-1").is_ok());
        assert_eq!(
            validate_name("Fog_1").unwrap_err().code,
            "InvalidFailoverGroupName"
        );
        assert_eq!(validate_name("Fog_1").unwrap_err().status, 409);
        assert_eq!(
            validate_name(&"a".repeat(64)).unwrap_err().code,
            "TokenTooLong"
        );
        assert_eq!(validate_name("a\0").unwrap_err().code, "InvalidIdentifier");
    }

    #[test]
    fn views_mirror_each_other() {
        let m = |id: &str, loc: &str, label: &str| Member {
            instance: ManagedInstanceId::parse(id).unwrap(),
            uid: "u".into(),
            location: loc.into(),
            location_label: label.into(),
        };
        let g = FailoverGroupRecord {
            name: "fg".into(),
            uid: "u1".into(),
            primary: m(P, "japaneast", "Japan East"),
            secondary: m(S, "japanwest", "Japan West"),
            policies: Policies {
                read_write: ReadWritePolicy::Manual,
                grace_period_minutes: None,
                read_only: ReadOnlyPolicy::Disabled,
                secondary_type: SecondaryType::Geo,
            },
            replication_state: ReplicationState::CatchUp,
            generation: 1,
            active_operation: None,
            listeners: ListenerPorts {
                read_write: 1,
                read_only: 2,
            },
            dns_zone: "zone".into(),
            slot: "s".into(),
            seeding: None,
            created: OffsetDateTime::UNIX_EPOCH,
            switch: None,
            secondary_needs_rejoin: false,
            last_failover: None,
        };
        assert_eq!(
            g.side("00000000-1111-2222-3333-444444444444", "RG", "Japan East"),
            Some(Side::Primary)
        );
        assert_eq!(
            g.side("00000000-1111-2222-3333-444444444444", "rg2", "japanwest"),
            Some(Side::Secondary)
        );
        assert_eq!(
            g.side("00000000-1111-2222-3333-444444444444", "rg", "japanwest"),
            None
        );
        let addr = ListenerAddresses {
            host: "127.0.0.1".into(),
            dns_suffix: "x".into(),
        };
        let p = g.view(Side::Primary, ReplicationState::CatchUp, &addr);
        let s = g.view(Side::Secondary, ReplicationState::CatchUp, &addr);
        assert!(p["id"].as_str().unwrap().ends_with("/resourceGroups/rg/providers/Microsoft.Sql/locations/JapanEast/instanceFailoverGroups/fg"));
        assert!(s["id"]
            .as_str()
            .unwrap()
            .contains("/resourceGroups/rg2/providers/Microsoft.Sql/locations/JapanWest/"));
        assert_eq!(p["properties"]["replicationRole"], "Primary");
        assert_eq!(s["properties"]["replicationRole"], "Secondary");
        assert_eq!(
            p["properties"]["partnerRegions"][0],
            serde_json::json!({"location": "Japan West", "replicationRole": "Secondary"})
        );
        assert_eq!(
            s["properties"]["partnerRegions"][0],
            serde_json::json!({"location": "Japan East", "replicationRole": "Primary"})
        );
        assert_eq!(
            p["properties"]["managedInstancePairs"],
            s["properties"]["managedInstancePairs"]
        );
        assert_eq!(
            p["properties"]["listeners"]["readOnly"]["hostName"],
            "fg.secondary.zone.x"
        );
        assert!(p["properties"]["readWriteEndpoint"]
            .get("failoverWithDataLossGracePeriodMinutes")
            .is_none());
    }
}
