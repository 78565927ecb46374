//! `Microsoft.Sql/managedInstances`: request bodies, their validation, the persisted record
//! and the JSON view clients see.

use crate::body::{enum_value, required};
use crate::{names, ArmError, ManagedInstanceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

pub const RESOURCE_TYPE: &str = "Microsoft.Sql/managedInstances";

/// Allowed `sku.name` values, canonical spelling.
pub const SKU_NAMES: &[&str] = &[
    "GP_Gen5", "GP_G8IM", "GP_G8IH", "BC_Gen5", "BC_G8IM", "BC_G8IH",
];
/// Allowed `vCores`.
pub const V_CORES: &[i32] = &[4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 128];
/// `databaseFormat` (the update policy).
pub const DATABASE_FORMATS: &[&str] = &["AlwaysUpToDate", "SQLServer2022", "SQLServer2025"];
pub const LICENSE_TYPES: &[&str] = &["LicenseIncluded", "BasePrice"];
pub const DEFAULT_COLLATION: &str = "SQL_Latin1_General_CP1_CI_AS";
/// Logins that cannot be the administrator (Azure's reserved names plus fogd's own roles).
const RESERVED_LOGINS: &[&str] = &[
    "admin",
    "administrator",
    "sa",
    "root",
    "dbmanager",
    "loginmanager",
    "dbo",
    "guest",
    "public",
    "postgres",
    "fogd_superuser",
    "fogd_replicator",
];

/// Body of PUT (create or replace) and PATCH on a managed instance. Unknown and read-only
/// properties are accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceBody {
    pub location: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub sku: Option<SkuBody>,
    pub properties: Option<InstancePropertiesBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkuBody {
    pub name: Option<String>,
    pub tier: Option<String>,
    pub family: Option<String>,
    pub capacity: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancePropertiesBody {
    pub administrator_login: Option<String>,
    pub administrator_login_password: Option<String>,
    pub v_cores: Option<i32>,
    #[serde(rename = "storageSizeInGB")]
    pub storage_size_in_gb: Option<i32>,
    pub dns_zone_partner: Option<String>,
    pub database_format: Option<String>,
    pub license_type: Option<String>,
    pub collation: Option<String>,
}

/// The service objective: `name` (e.g. `GP_Gen5`), derived `tier` and `family`, `capacity` = vCores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sku {
    pub name: String,
    pub tier: String,
    pub family: String,
    pub capacity: i32,
}

impl Sku {
    /// Builds a sku from a canonical name; tier and family follow from it.
    pub fn from_name(name: &str, capacity: i32) -> Self {
        let (prefix, family) = name.split_once('_').unwrap_or((name, ""));
        let tier = if prefix == "BC" {
            "BusinessCritical"
        } else {
            "GeneralPurpose"
        };
        Self {
            name: name.to_string(),
            tier: tier.to_string(),
            family: family.to_string(),
            capacity,
        }
    }
}

/// A validated create request: everything needed to provision the instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub sku: Sku,
    pub administrator_login: String,
    pub administrator_login_password: String,
    pub storage_size_in_gb: i32,
    pub dns_zone_partner: Option<ManagedInstanceId>,
    pub database_format: String,
    pub license_type: String,
    pub collation: String,
}

/// A validated change to an existing instance (PATCH, or PUT on an existing name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceChanges {
    pub tags: Option<BTreeMap<String, String>>,
    pub sku_name: Option<String>,
    pub v_cores: Option<i32>,
    pub storage_size_in_gb: Option<i32>,
    pub database_format: Option<String>,
    pub license_type: Option<String>,
    pub administrator_login_password: Option<String>,
    /// Restated on a repeated PUT; accepted only if that instance's zone is this one's.
    pub dns_zone_partner: Option<ManagedInstanceId>,
}

fn sku_name(sku: &SkuBody) -> Result<Option<&'static str>, ArmError> {
    let Some(name) = sku.name.as_deref() else {
        return if sku.tier.is_some() || sku.capacity.is_some() || sku.family.is_some() {
            Err(ArmError::invalid_sku().with_target("sku.name"))
        } else {
            Ok(None)
        };
    };
    let canonical = SKU_NAMES
        .iter()
        .copied()
        .find(|s| s.eq_ignore_ascii_case(name))
        .ok_or_else(|| ArmError::invalid_sku().with_target("sku.name"))?;
    let expected = Sku::from_name(canonical, 0);
    if let Some(tier) = &sku.tier {
        if !tier.eq_ignore_ascii_case(&expected.tier) {
            return Err(ArmError::invalid_sku().with_target("sku.tier"));
        }
    }
    if let Some(family) = &sku.family {
        if !family.eq_ignore_ascii_case(&expected.family) {
            return Err(ArmError::invalid_sku().with_target("sku.family"));
        }
    }
    Ok(Some(canonical))
}

fn v_cores(props: Option<i32>, sku: Option<i32>) -> Result<Option<i32>, ArmError> {
    let (value, path) = match (props, sku) {
        (Some(p), Some(s)) if p != s => {
            return Err(ArmError::invalid_parameter_value("properties.vCores", p)
                .with_target("properties.vCores"))
        }
        (Some(p), _) => (p, "properties.vCores"),
        (None, Some(s)) => (s, "sku.capacity"),
        (None, None) => return Ok(None),
    };
    if V_CORES.contains(&value) {
        Ok(Some(value))
    } else {
        Err(ArmError::invalid_parameter_value(path, value).with_target(path))
    }
}

fn storage(value: Option<i32>) -> Result<Option<i32>, ArmError> {
    match value {
        Some(v) if !(32..=32768).contains(&v) || v % 32 != 0 => Err(
            ArmError::invalid_parameter_value("properties.storageSizeInGB", v)
                .with_target("properties.storageSizeInGB"),
        ),
        other => Ok(other),
    }
}

/// Azure's password policy: 16–128 characters from at least three of upper case, lower
/// case, digits and symbols.
pub fn validate_password(password: &str) -> Result<(), ArmError> {
    let target = "properties.administratorLoginPassword";
    if password.chars().count() < 16 {
        return Err(ArmError::new(
            400,
            "PasswordTooShort",
            "The provided password is too short. It must be at least 16 characters long.",
        )
        .with_target(target));
    }
    if password.chars().count() > 128 {
        return Err(ArmError::new(
            400,
            "PasswordTooLong",
            "The provided password is too long. It must be at most 128 characters long.",
        )
        .with_target(target));
    }
    let classes = [
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ];
    if classes.iter().filter(|b| **b).count() < 3 || password.contains('\0') {
        return Err(ArmError::new(
            400,
            "PasswordNotComplex",
            "The provided password is not complex enough. It must contain characters from three of: upper case, lower case, digits and symbols.",
        )
        .with_target(target));
    }
    Ok(())
}

fn parse_partner(value: Option<&str>) -> Result<Option<ManagedInstanceId>, ArmError> {
    value
        .filter(|s| !s.is_empty())
        .map(|p| {
            ManagedInstanceId::parse(p).map_err(|e| e.with_target("properties.dnsZonePartner"))
        })
        .transpose()
}

/// The administrator login becomes a PostgreSQL role name.
pub fn validate_login(login: &str) -> Result<(), ArmError> {
    let target = "properties.administratorLogin";
    let ok = !login.is_empty()
        && login.len() <= 63
        && login.starts_with(|c: char| c.is_ascii_alphabetic())
        && login.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !login.to_ascii_lowercase().starts_with("pg_")
        && !RESERVED_LOGINS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(login));
    if ok {
        Ok(())
    } else {
        Err(ArmError::invalid_parameter_value(target, login).with_target(target))
    }
}

impl InstanceBody {
    /// Validates a create. `location` and the administrator credentials are required; the
    /// rest default as Azure does (GP_Gen5, 8 vCores, 32 GB, SQLServer2022 policy).
    pub fn into_create_spec(self) -> Result<InstanceSpec, ArmError> {
        let location = self.location.ok_or_else(ArmError::location_required)?;
        names::validate_location(&location)?;
        let props = self.properties.unwrap_or_default();
        let sku = self.sku.unwrap_or_default();
        let name = sku_name(&sku)?.unwrap_or("GP_Gen5");
        let cores = v_cores(props.v_cores, sku.capacity)?.unwrap_or(8);
        let login = required(props.administrator_login, "properties.administratorLogin")?;
        validate_login(&login)?;
        let password = required(
            props.administrator_login_password,
            "properties.administratorLoginPassword",
        )?;
        validate_password(&password)?;
        let dns_zone_partner = parse_partner(props.dns_zone_partner.as_deref())?;
        let collation = props.collation.unwrap_or_else(|| DEFAULT_COLLATION.into());
        if collation.is_empty() || collation.len() > 128 {
            return Err(
                ArmError::invalid_parameter_value("properties.collation", &collation)
                    .with_target("properties.collation"),
            );
        }
        Ok(InstanceSpec {
            location: names::location_key(&location),
            tags: self.tags.unwrap_or_default(),
            sku: Sku::from_name(name, cores),
            administrator_login: login,
            administrator_login_password: password,
            storage_size_in_gb: storage(props.storage_size_in_gb)?.unwrap_or(32),
            dns_zone_partner,
            database_format: props
                .database_format
                .as_deref()
                .map(|f| enum_value(f, DATABASE_FORMATS, "properties.databaseFormat"))
                .transpose()?
                .unwrap_or("SQLServer2022")
                .to_string(),
            license_type: props
                .license_type
                .as_deref()
                .map(|l| enum_value(l, LICENSE_TYPES, "properties.licenseType"))
                .transpose()?
                .unwrap_or("LicenseIncluded")
                .to_string(),
            collation,
        })
    }

    /// Validates a change against the existing record: mutable properties become
    /// [`InstanceChanges`]; a different value for a create-only property is refused.
    pub fn into_changes(self, existing: &InstanceRecord) -> Result<InstanceChanges, ArmError> {
        if let Some(loc) = &self.location {
            if names::location_key(loc) != existing.location {
                return Err(ArmError::invalid_resource_location(
                    &existing.id.name,
                    &existing.location,
                    loc,
                ));
            }
        }
        let props = self.properties.unwrap_or_default();
        if let Some(login) = &props.administrator_login {
            if login != &existing.administrator_login {
                return Err(ArmError::property_change_not_allowed("administratorLogin")
                    .with_target("properties.administratorLogin"));
            }
        }
        if let Some(c) = &props.collation {
            if !c.eq_ignore_ascii_case(&existing.collation) {
                return Err(ArmError::property_change_not_allowed("collation")
                    .with_target("properties.collation"));
            }
        }
        let dns_zone_partner = parse_partner(props.dns_zone_partner.as_deref())?;
        if let Some(p) = &props.administrator_login_password {
            validate_password(p)?;
        }
        let sku = self.sku.unwrap_or_default();
        // Scaling within or across tiers is allowed: the guide's scaling order implies
        // temporary mismatches between the members of a group.
        let sku_name = sku_name(&sku)?;
        let database_format = props
            .database_format
            .as_deref()
            .map(|f| enum_value(f, DATABASE_FORMATS, "properties.databaseFormat"))
            .transpose()?;
        if existing.database_format == "AlwaysUpToDate"
            && database_format.is_some_and(|f| f != "AlwaysUpToDate")
        {
            return Err(ArmError::new(
                400,
                "ManagedInstanceUpdatePolicyDowngradeNotAllowed",
                "The update policy cannot be changed back once it is AlwaysUpToDate.",
            )
            .with_target("properties.databaseFormat"));
        }
        Ok(InstanceChanges {
            tags: self.tags,
            sku_name: sku_name.map(str::to_string),
            v_cores: v_cores(props.v_cores, sku.capacity)?,
            storage_size_in_gb: storage(props.storage_size_in_gb)?,
            database_format: database_format.map(str::to_string),
            license_type: props
                .license_type
                .as_deref()
                .map(|l| enum_value(l, LICENSE_TYPES, "properties.licenseType"))
                .transpose()?
                .map(str::to_string),
            administrator_login_password: props.administrator_login_password,
            dns_zone_partner,
        })
    }
}

/// Lifecycle of an instance as `provisioningState` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProvisioningState {
    Creating,
    Updating,
    Deleting,
    Succeeded,
    Failed,
}

impl ProvisioningState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::Updating => "Updating",
            Self::Deleting => "Deleting",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    /// The `state` property that goes with it.
    pub fn state(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::Updating => "Updating",
            Self::Deleting => "Deleting",
            Self::Succeeded => "Ready",
            Self::Failed => "Failed",
        }
    }
}

/// Where a client reaches the instance's PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEndpoint {
    pub host: String,
    pub port: u16,
}

/// The persisted managed instance (format [`InstanceRecord::FORMAT`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Internal id; names the server's directory and never changes.
    pub uid: String,
    pub id: ManagedInstanceId,
    /// Canonical region key (`japaneast`).
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub sku: Sku,
    pub administrator_login: String,
    pub storage_size_in_gb: i32,
    pub dns_zone: String,
    pub database_format: String,
    pub license_type: String,
    pub collation: String,
    pub provisioning_state: ProvisioningState,
    pub endpoint: ServerEndpoint,
    #[serde(with = "time::serde::rfc3339")]
    pub create_time: OffsetDateTime,
    /// The long-running operation that currently owns this instance, if any.
    pub active_operation: Option<String>,
    /// Fencing generation for commands sent to this instance's agent.
    pub generation: u64,
    /// The uid of the instance failover group this instance belongs to
    /// ([`crate::FailoverGroupRecord::uid`]; format 1 stored the group's name, which the
    /// start-up migration replaces).
    #[serde(default)]
    pub failover_group: Option<String>,
}

impl InstanceRecord {
    /// Format 2: `failover_group` is a group uid; format 1 named the group.
    pub const FORMAT: u32 = 2;

    /// The JSON clients see. `administratorLoginPassword` is never part of it.
    pub fn view(&self, dns_suffix: &str) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.to_string(),
            "name": self.id.name,
            "type": RESOURCE_TYPE,
            "location": self.location,
            "tags": self.tags,
            "sku": {
                "name": self.sku.name,
                "tier": self.sku.tier,
                "family": self.sku.family,
                "capacity": self.sku.capacity,
            },
            "properties": {
                "provisioningState": self.provisioning_state.as_str(),
                "state": self.provisioning_state.state(),
                "administratorLogin": self.administrator_login,
                "vCores": self.sku.capacity,
                "storageSizeInGB": self.storage_size_in_gb,
                "dnsZone": self.dns_zone,
                "fullyQualifiedDomainName": format!("{}.{}.{}", self.id.name, self.dns_zone, dns_suffix),
                "databaseFormat": self.database_format,
                "licenseType": self.license_type,
                "collation": self.collation,
                "createTime": self.create_time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "postgresEndpoint": { "host": self.endpoint.host, "port": self.endpoint.port },
            }
        })
    }

    /// Applies validated changes to the metadata (the password is applied by the engine).
    pub fn apply(&mut self, changes: &InstanceChanges) {
        if let Some(tags) = &changes.tags {
            self.tags = tags.clone();
        }
        let cores = changes.v_cores.unwrap_or(self.sku.capacity);
        let name = changes
            .sku_name
            .clone()
            .unwrap_or_else(|| self.sku.name.clone());
        self.sku = Sku::from_name(&name, cores);
        if let Some(s) = changes.storage_size_in_gb {
            self.storage_size_in_gb = s;
        }
        if let Some(f) = &changes.database_format {
            self.database_format = f.clone();
        }
        if let Some(l) = &changes.license_type {
            self.license_type = l.clone();
        }
    }
}

/// A DNS zone id like Azure's: 13 lower-case hex characters.
pub fn new_dns_zone() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..13].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse;

    fn create(json: &str) -> Result<InstanceSpec, ArmError> {
        parse::<InstanceBody>(json.as_bytes())?.into_create_spec()
    }

    const OK: &str = r#"{"location":"Japan East","sku":{"name":"gp_gen5","tier":"GeneralPurpose"},
        "properties":{"administratorLogin":"fogadmin","administratorLoginPassword":"S0me-Str0ng-Pass!","vCores":4,"storageSizeInGB":64}}"#;

    #[test]
    fn create_normalises_and_defaults() {
        let s = create(OK).unwrap();
        assert_eq!(s.location, "japaneast");
        assert_eq!(s.sku, Sku::from_name("GP_Gen5", 4));
        assert_eq!(s.sku.tier, "GeneralPurpose");
        assert_eq!(s.storage_size_in_gb, 64);
        assert_eq!(s.database_format, "SQLServer2022");
        assert_eq!(s.collation, DEFAULT_COLLATION);
        let bc = Sku::from_name("BC_G8IM", 8);
        assert_eq!(
            (bc.tier.as_str(), bc.family.as_str()),
            ("BusinessCritical", "G8IM")
        );
    }

    #[test]
    fn create_errors_name_code_and_target() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (r#"{"properties":{}}"#, "LocationRequired", None),
            (
                r#"{"location":"eastus","properties":{"administratorLoginPassword":"S0me-Str0ng-Pass!"}}"#,
                "InvalidRequestContent",
                Some("properties.administratorLogin"),
            ),
            (
                r#"{"location":"eastus","sku":{"name":"XX_Gen5"},"properties":{"administratorLogin":"a","administratorLoginPassword":"S0me-Str0ng-Pass!"}}"#,
                "InvalidSku",
                Some("sku.name"),
            ),
            (
                r#"{"location":"eastus","sku":{"name":"GP_Gen5","tier":"BusinessCritical"},"properties":{"administratorLogin":"a","administratorLoginPassword":"S0me-Str0ng-Pass!"}}"#,
                "InvalidSku",
                Some("sku.tier"),
            ),
            (
                r#"{"location":"eastus","properties":{"administratorLogin":"a","administratorLoginPassword":"S0me-Str0ng-Pass!","vCores":5}}"#,
                "InvalidParameterValue",
                Some("properties.vCores"),
            ),
            (
                r#"{"location":"eastus","properties":{"administratorLogin":"a","administratorLoginPassword":"S0me-Str0ng-Pass!","storageSizeInGB":33}}"#,
                "InvalidParameterValue",
                Some("properties.storageSizeInGB"),
            ),
            (
                r#"{"location":"eastus","properties":{"administratorLogin":"a","administratorLoginPassword":"S0me-Str0ng-Pass!","storageSizeInGB":32800}}"#,
                "InvalidParameterValue",
                Some("properties.storageSizeInGB"),
            ),
            (
                r#"{"location":"eastus","properties":{"administratorLogin":"a","administratorLoginPassword":"S0me-Str0ng-Pass!","databaseFormat":"Latest"}}"#,
                "InvalidParameterValue",
                Some("properties.databaseFormat"),
            ),
            (
                r#"{"location":"eastus","properties":{"administratorLogin":"a","administratorLoginPassword":"short"}}"#,
                "PasswordTooShort",
                Some("properties.administratorLoginPassword"),
            ),
            (
                r#"{"location":"eastus","properties":{"administratorLogin":"a","administratorLoginPassword":"alllowercaseletters"}}"#,
                "PasswordNotComplex",
                Some("properties.administratorLoginPassword"),
            ),
            (
                r#"{"location":"eastus","properties":{"administratorLogin":"postgres","administratorLoginPassword":"S0me-Str0ng-Pass!"}}"#,
                "InvalidParameterValue",
                Some("properties.administratorLogin"),
            ),
            (
                r#"{"location":"eastus","properties":{"administratorLogin":"a","administratorLoginPassword":"S0me-Str0ng-Pass!","dnsZonePartner":"/bad"}}"#,
                "InvalidServerName",
                Some("properties.dnsZonePartner"),
            ),
            (
                r#"{"location":"eastus","properties":{"vCores":"four"}}"#,
                "InvalidRequestContent",
                Some("properties.vCores"),
            ),
        ];
        for (json, code, target) in cases {
            let e = create(json).unwrap_err();
            assert_eq!(e.code, *code, "{json}");
            assert_eq!(e.target.as_deref(), *target, "{json}");
            assert_eq!(e.status, 400, "{json}");
        }
    }

    #[test]
    fn changes_refuse_create_only_properties() {
        let spec = create(OK).unwrap();
        let rec = InstanceRecord {
            uid: "u".into(),
            id: ManagedInstanceId::parse("/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi").unwrap(),
            location: spec.location.clone(),
            tags: Default::default(),
            sku: spec.sku.clone(),
            administrator_login: spec.administrator_login.clone(),
            storage_size_in_gb: 64,
            dns_zone: "abc".into(),
            database_format: spec.database_format.clone(),
            license_type: spec.license_type.clone(),
            collation: spec.collation.clone(),
            provisioning_state: ProvisioningState::Succeeded,
            endpoint: ServerEndpoint { host: "127.0.0.1".into(), port: 1 },
            create_time: OffsetDateTime::UNIX_EPOCH,
            active_operation: None,
            generation: 1,
            failover_group: None,
        };
        let change =
            |json: &str| parse::<InstanceBody>(json.as_bytes()).and_then(|b| b.into_changes(&rec));
        assert_eq!(
            change(r#"{"location":"westus"}"#).unwrap_err().code,
            "InvalidResourceLocation"
        );
        assert_eq!(
            change(r#"{"properties":{"administratorLogin":"other"}}"#)
                .unwrap_err()
                .code,
            "PropertyChangeNotAllowed"
        );
        let c = change(r#"{"location":"Japan East","tags":{"a":"b"},"properties":{"vCores":16,"databaseFormat":"alwaysuptodate"}}"#).unwrap();
        let mut updated = rec.clone();
        updated.apply(&c);
        assert_eq!(updated.sku.capacity, 16);
        assert_eq!(updated.database_format, "AlwaysUpToDate");
        let e = parse::<InstanceBody>(br#"{"properties":{"databaseFormat":"SQLServer2022"}}"#)
            .and_then(|b| b.into_changes(&updated))
            .unwrap_err();
        assert_eq!(e.code, "ManagedInstanceUpdatePolicyDowngradeNotAllowed");
        assert_eq!(updated.tags.get("a").map(String::as_str), Some("b"));
        let v = updated.view("database.fogd.local");
        assert_eq!(
            v["properties"]["fullyQualifiedDomainName"],
            "mi.abc.database.fogd.local"
        );
        assert!(v["properties"].get("administratorLoginPassword").is_none());
    }
}
