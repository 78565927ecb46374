//! The `api-version` values fogd serves, per resource type, and what each version's
//! responses contain.
//!
//! Azure's published OpenAPI documents for Microsoft.Sql define each resource type in a
//! list of versions (the folders of `specification/sql/resource-manager/Microsoft.Sql`
//! that contain `InstanceFailoverGroups.json`, `ManagedInstances.json` or
//! `ManagedDatabases.json`). fogd accepts exactly those versions for each type, the way ARM
//! does: a well-formed version the addressed type is not published in gets ARM's
//! `NoRegisteredProviderFound`, a malformed one `InvalidApiVersionParameter`.
//!
//! A property a version does not define is ignored in a request body, as unknown properties
//! are ([`shape`] removes it before the body is read). Responses follow the version the
//! request named: [`SHAPES`] lists the properties that exist only from some version on, and
//! [`shape`] removes them from a response under a version that does not define them. Properties fogd adds
//! beyond the specification (listeners, health, lag, `postgresEndpoint`, …) are in every
//! version.

use crate::ArmError;

/// A resource type fogd serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// `Microsoft.Sql/managedInstances`
    ManagedInstances,
    /// `Microsoft.Sql/managedInstances/databases`
    ManagedDatabases,
    /// `Microsoft.Sql/locations/instanceFailoverGroups`
    InstanceFailoverGroups,
}

/// Versions that publish all three types: every consolidated Microsoft.Sql version from
/// 2020-02-02-preview on, in date order.
const ALL_THREE: &[&str] = &[
    "2020-02-02-preview",
    "2020-08-01-preview",
    "2020-11-01-preview",
    "2021-02-01-preview",
    "2021-05-01-preview",
    "2021-08-01-preview",
    "2021-11-01-preview",
    "2021-11-01",
    "2022-02-01-preview",
    "2022-05-01-preview",
    "2022-08-01-preview",
    "2022-11-01-preview",
    "2023-02-01-preview",
    "2023-05-01-preview",
    "2023-08-01-preview",
    "2023-08-01",
    "2024-05-01-preview",
    "2024-11-01-preview",
    "2025-01-01",
    "2025-02-01-preview",
];

/// Versions before 2020-02-02-preview that publish the type.
fn earlier(t: ResourceType) -> &'static [&'static str] {
    match t {
        ResourceType::ManagedInstances => &[
            "2015-05-01-preview",
            "2018-06-01-preview",
            "2019-06-01-preview",
        ],
        ResourceType::ManagedDatabases => &[
            "2017-03-01-preview",
            "2018-06-01-preview",
            "2019-06-01-preview",
        ],
        ResourceType::InstanceFailoverGroups => &["2017-10-01-preview"],
    }
}

impl ResourceType {
    /// The type as ARM names it under `Microsoft.Sql`.
    pub fn arm_name(self) -> &'static str {
        match self {
            Self::ManagedInstances => "managedInstances",
            Self::ManagedDatabases => "managedInstances/databases",
            Self::InstanceFailoverGroups => "locations/instanceFailoverGroups",
        }
    }

    /// Every version the specification publishes the type in, oldest first.
    pub fn versions(self) -> impl DoubleEndedIterator<Item = &'static str> {
        earlier(self).iter().chain(ALL_THREE).copied()
    }
}

/// The version fogd uses for operations it starts by itself (automatic failover, rejoin).
pub const LATEST_STABLE: &str = "2025-01-01";

/// Whether `v` has ARM's shape: `YYYY-MM-DD`, optionally followed by `-` and a suffix of
/// letters (`-preview`, `-privatepreview`, `-beta`, …).
pub fn well_formed(v: &str) -> bool {
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() < 10 || !digits(0..4) || b[4] != b'-' || !digits(5..7) || b[7] != b'-' {
        return false;
    }
    if !digits(8..10) {
        return false;
    }
    match &v[10..] {
        "" => true,
        rest => {
            rest.len() > 1
                && rest.starts_with('-')
                && rest[1..].chars().all(|c| c.is_ascii_alphabetic())
        }
    }
}

/// Checks the `api-version` query value for a request to `t`: a missing one gets
/// `MissingApiVersionParameter`, a malformed one `InvalidApiVersionParameter`, a well-formed
/// one `t` is not published in `NoRegisteredProviderFound`. Returns the canonical spelling.
pub fn check(value: Option<&str>, t: ResourceType) -> Result<&'static str, ArmError> {
    let v = match value {
        None | Some("") => return Err(ArmError::missing_api_version()),
        Some(v) => v,
    };
    if let Some(known) = t.versions().find(|s| s.eq_ignore_ascii_case(v)) {
        return Ok(known);
    }
    let supported = t.versions().rev().collect::<Vec<_>>().join(", ");
    if well_formed(v) {
        Err(ArmError::no_registered_provider(v, t.arm_name(), supported))
    } else {
        Err(ArmError::invalid_api_version(v, supported))
    }
}

/// A response property that exists only from some version on.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub resource: ResourceType,
    /// Path of the property in the resource's JSON.
    pub path: &'static [&'static str],
    /// The first version (by date) that defines it; later versions do too, except those in
    /// `except`.
    pub since: &'static str,
    /// Versions dated on or after `since` that do not define it (exact spellings: a stable
    /// version can lag a preview of the same date).
    pub except: &'static [&'static str],
}

/// Which properties exist from which version on (facts from the published specification).
pub const SHAPES: &[Shape] = &[
    // `secondaryType` (Geo / Standby) first appears in 2022-08-01-preview; 2021-11-01 and
    // 2022-05-01-preview do not define it.
    Shape {
        resource: ResourceType::InstanceFailoverGroups,
        path: &["properties", "secondaryType"],
        since: "2022-08-01",
        except: &[],
    },
    // `createTime` and `databaseFormat` first appear in 2023-05-01-preview (not in
    // 2023-02-01-preview); the stable 2023-08-01 does not define them, 2023-08-01-preview
    // and every later version does.
    Shape {
        resource: ResourceType::ManagedInstances,
        path: &["properties", "createTime"],
        since: "2023-05-01",
        except: &["2023-08-01"],
    },
    Shape {
        resource: ResourceType::ManagedInstances,
        path: &["properties", "databaseFormat"],
        since: "2023-05-01",
        except: &["2023-08-01"],
    },
    // `isLedgerOn` first appears in 2022-08-01-preview (not in 2022-05-01-preview nor
    // 2021-11-01).
    Shape {
        resource: ResourceType::ManagedDatabases,
        path: &["properties", "isLedgerOn"],
        since: "2022-08-01",
        except: &[],
    },
];

impl Shape {
    /// Whether `version` defines the property.
    pub fn defined_in(&self, version: &str) -> bool {
        date(version) >= self.since && !self.except.iter().any(|e| e.eq_ignore_ascii_case(version))
    }
}

/// The date part of a version, for ordering (`2022-08-01-preview` → `2022-08-01`).
fn date(v: &str) -> &str {
    v.get(..10).unwrap_or(v)
}

/// Whether the property at `path` of `t` exists under `version`.
pub fn has(t: ResourceType, path: &[&str], version: &str) -> bool {
    SHAPES
        .iter()
        .filter(|s| s.resource == t && s.path == path)
        .all(|s| s.defined_in(version))
}

/// Removes from `value` (one resource of type `t`, a response or a request body) what
/// `version` does not define.
pub fn shape(t: ResourceType, version: &str, value: &mut serde_json::Value) {
    for s in SHAPES.iter().filter(|s| s.resource == t) {
        if s.defined_in(version) {
            continue;
        }
        let Some((last, parents)) = s.path.split_last() else {
            continue;
        };
        let parent = parents.iter().try_fold(&mut *value, |v, p| v.get_mut(*p));
        if let Some(serde_json::Value::Object(m)) = parent {
            m.remove(*last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResourceType::*;

    #[test]
    fn accepts_every_published_version_of_each_type() {
        for v in [
            "2021-11-01",
            "2022-08-01-preview",
            "2022-11-01-preview",
            "2023-02-01-preview",
            "2023-08-01-preview",
            "2024-11-01-preview",
            "2025-01-01",
            "2025-02-01-preview",
        ] {
            for t in [ManagedInstances, ManagedDatabases, InstanceFailoverGroups] {
                assert_eq!(check(Some(v), t).unwrap(), v, "{v} {t:?}");
            }
        }
        assert_eq!(InstanceFailoverGroups.versions().count(), 21);
        assert_eq!(
            check(Some("2017-10-01-PREVIEW"), InstanceFailoverGroups).unwrap(),
            "2017-10-01-preview"
        );
        assert!(check(Some("2015-05-01-preview"), ManagedInstances).is_ok());
        assert!(check(Some("2017-03-01-preview"), ManagedDatabases).is_ok());
    }

    #[test]
    fn missing_malformed_and_unpublished_versions() {
        assert_eq!(
            check(None, ManagedInstances).unwrap_err().code,
            "MissingApiVersionParameter"
        );
        assert_eq!(
            check(Some(""), ManagedInstances).unwrap_err().code,
            "MissingApiVersionParameter"
        );
        for bad in [
            "2019-1-01",
            "latest",
            "2025-01-01-",
            "2025-01-01preview",
            "2025-01-01-pre1",
        ] {
            let e = check(Some(bad), ManagedInstances).unwrap_err();
            assert_eq!(
                (e.status, e.code.as_str()),
                (400, "InvalidApiVersionParameter"),
                "{bad}"
            );
        }
        // Well-formed but not published for the type.
        let e = check(Some("2017-10-01-preview"), ManagedInstances).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str()),
            (400, "NoRegisteredProviderFound")
        );
        assert!(e.message.contains("managedInstances"), "{}", e.message);
        assert!(
            e.message.contains("2025-02-01-preview, 2025-01-01"),
            "{}",
            e.message
        );
        let e = check(Some("2019-01-01"), InstanceFailoverGroups).unwrap_err();
        assert_eq!(e.code, "NoRegisteredProviderFound");
    }

    #[test]
    fn responses_follow_the_version() {
        let full = serde_json::json!({"properties": {"secondaryType": "Geo", "replicationRole": "Primary"}});
        let mut old = full.clone();
        shape(InstanceFailoverGroups, "2021-11-01", &mut old);
        assert!(old["properties"].get("secondaryType").is_none());
        assert_eq!(old["properties"]["replicationRole"], "Primary");
        let mut old = full.clone();
        shape(InstanceFailoverGroups, "2022-05-01-preview", &mut old);
        assert!(old["properties"].get("secondaryType").is_none());
        for v in ["2022-08-01-preview", "2023-08-01", "2025-01-01"] {
            let mut new = full.clone();
            shape(InstanceFailoverGroups, v, &mut new);
            assert_eq!(new, full, "{v}");
        }
        assert!(!has(
            InstanceFailoverGroups,
            &["properties", "secondaryType"],
            "2021-11-01"
        ));
        assert!(has(
            InstanceFailoverGroups,
            &["properties", "secondaryType"],
            "2024-11-01-preview"
        ));
        // Other types are untouched.
        let mut mi = full.clone();
        shape(ManagedInstances, "2021-11-01", &mut mi);
        assert_eq!(mi, full);
    }

    #[test]
    fn instance_and_database_properties_follow_the_version() {
        let mi = serde_json::json!({"properties": {"createTime": "t", "databaseFormat": "SQLServer2022", "vCores": 4}});
        for (v, defined) in [
            ("2021-11-01", false),
            ("2022-08-01-preview", false),
            ("2023-02-01-preview", false),
            ("2023-05-01-preview", true),
            // The stable 2023-08-01 lags its preview.
            ("2023-08-01", false),
            ("2023-08-01-preview", true),
            ("2024-11-01-preview", true),
            ("2025-01-01", true),
        ] {
            let mut shaped = mi.clone();
            shape(ManagedInstances, v, &mut shaped);
            assert_eq!(
                shaped["properties"].get("createTime").is_some(),
                defined,
                "{v}"
            );
            assert_eq!(
                shaped["properties"].get("databaseFormat").is_some(),
                defined,
                "{v}"
            );
            assert_eq!(shaped["properties"]["vCores"], 4, "{v}");
        }
        let db = serde_json::json!({"properties": {"isLedgerOn": false, "collation": "c"}});
        for (v, defined) in [
            ("2021-11-01", false),
            ("2022-05-01-preview", false),
            ("2022-08-01-preview", true),
            ("2023-08-01", true),
            ("2025-01-01", true),
        ] {
            let mut shaped = db.clone();
            shape(ManagedDatabases, v, &mut shaped);
            assert_eq!(
                shaped["properties"].get("isLedgerOn").is_some(),
                defined,
                "{v}"
            );
        }
    }
}
