//! Validation of the names that appear in ARM paths and bodies, and ARM's case rules.
//!
//! ARM compares subscription ids, resource-group names and resource names
//! case-insensitively but echoes names as they were created. [`key`] gives the canonical
//! form used for lookups and store keys.

use crate::ArmError;

/// Canonical lookup form of a name: ASCII lower case.
pub fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Canonical form of a region label: lower case with spaces removed (`Japan East` → `japaneast`).
pub fn location_key(location: &str) -> String {
    location
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Rejects NUL and control characters the way the catalogue's `InvalidIdentifier` describes.
fn check_identifier(name: &str) -> Result<(), ArmError> {
    if name
        .chars()
        .any(|c| c == '\0' || c == '\u{fffd}' || c.is_control())
    {
        return Err(ArmError::invalid_identifier());
    }
    Ok(())
}

/// Managed instance names: 1–63 characters of lower-case letters, digits and hyphens, not
/// starting or ending with a hyphen (they become DNS labels).
pub fn validate_instance_name(name: &str) -> Result<(), ArmError> {
    check_identifier(name)?;
    if name.len() > 63 {
        return Err(ArmError::token_too_long().with_target("managedInstanceName"));
    }
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ArmError::invalid_server_name().with_target("managedInstanceName"))
    }
}

/// Database names that can never be created through the API.
pub const RESERVED_DATABASE_NAMES: &[&str] = &[
    "postgres",
    "template0",
    "template1",
    "master",
    "model",
    "msdb",
    "tempdb",
];

/// Managed database names: 1–128 characters, no NUL or control characters, none of
/// `<>*%&:\/?"'`, not ending in a space or a period; reserved names are refused.
pub fn validate_database_name(name: &str) -> Result<(), ArmError> {
    check_identifier(name)?;
    if name.chars().count() > 128 {
        return Err(ArmError::token_too_long().with_target("databaseName"));
    }
    let bad = name.is_empty()
        || name.ends_with(' ')
        || name.ends_with('.')
        || name.chars().any(|c| "<>*%&:\\/?\"'".contains(c));
    if bad {
        return Err(
            ArmError::invalid_parameter_value("databaseName", name).with_target("databaseName")
        );
    }
    if RESERVED_DATABASE_NAMES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(ArmError::reserved_database_name().with_target("databaseName"));
    }
    Ok(())
}

/// Resource group names: 1–90 of letters, digits, `_-.()`, not ending with `.`.
pub fn validate_resource_group(name: &str) -> Result<(), ArmError> {
    check_identifier(name)?;
    let ok = !name.is_empty()
        && name.chars().count() <= 90
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "_-.()".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ArmError::invalid_resource_group_name(name))
    }
}

/// Subscription ids are GUIDs; returns the canonical lower-case form.
pub fn validate_subscription(id: &str) -> Result<String, ArmError> {
    uuid::Uuid::parse_str(id)
        .ok()
        .filter(|_| id.len() == 36)
        .map(|u| u.hyphenated().to_string())
        .ok_or_else(|| ArmError::invalid_subscription_id(id))
}

/// Region labels: 1–64 letters, digits and spaces.
pub fn validate_location(location: &str) -> Result<(), ArmError> {
    let ok = !location.trim().is_empty()
        && location.len() <= 64
        && location
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ');
    if ok {
        Ok(())
    } else {
        Err(ArmError::invalid_parameter_value("location", location).with_target("location"))
    }
}

/// Azure's regional pairs (Microsoft's published list of cross-region replication pairs):
/// each region with the region its disaster-recovery pair is. A few pairs are one-way
/// (Brazil South → South Central US, West US 3 → East US, West India → South India, US Gov
/// Arizona → US Gov Texas).
const DR_PAIRS: &[(&str, &str)] = &[
    ("eastus", "westus"),
    ("westus", "eastus"),
    ("eastus2", "centralus"),
    ("centralus", "eastus2"),
    ("northcentralus", "southcentralus"),
    ("southcentralus", "northcentralus"),
    ("westus2", "westcentralus"),
    ("westcentralus", "westus2"),
    ("westus3", "eastus"),
    ("brazilsouth", "southcentralus"),
    ("canadacentral", "canadaeast"),
    ("canadaeast", "canadacentral"),
    ("northeurope", "westeurope"),
    ("westeurope", "northeurope"),
    ("uksouth", "ukwest"),
    ("ukwest", "uksouth"),
    ("francecentral", "francesouth"),
    ("francesouth", "francecentral"),
    ("germanywestcentral", "germanynorth"),
    ("germanynorth", "germanywestcentral"),
    ("norwayeast", "norwaywest"),
    ("norwaywest", "norwayeast"),
    ("switzerlandnorth", "switzerlandwest"),
    ("switzerlandwest", "switzerlandnorth"),
    ("swedencentral", "swedensouth"),
    ("swedensouth", "swedencentral"),
    ("japaneast", "japanwest"),
    ("japanwest", "japaneast"),
    ("koreacentral", "koreasouth"),
    ("koreasouth", "koreacentral"),
    ("eastasia", "southeastasia"),
    ("southeastasia", "eastasia"),
    ("australiaeast", "australiasoutheast"),
    ("australiasoutheast", "australiaeast"),
    ("australiacentral", "australiacentral2"),
    ("australiacentral2", "australiacentral"),
    ("centralindia", "southindia"),
    ("southindia", "centralindia"),
    ("westindia", "southindia"),
    ("southafricanorth", "southafricawest"),
    ("southafricawest", "southafricanorth"),
    ("uaenorth", "uaecentral"),
    ("uaecentral", "uaenorth"),
    ("chinanorth", "chinaeast"),
    ("chinaeast", "chinanorth"),
    ("chinanorth2", "chinaeast2"),
    ("chinaeast2", "chinanorth2"),
    ("chinanorth3", "chinaeast3"),
    ("chinaeast3", "chinanorth3"),
    ("usgovvirginia", "usgovtexas"),
    ("usgovtexas", "usgovvirginia"),
    ("usgovarizona", "usgovtexas"),
];

/// Azure regions that have no regional pair.
const UNPAIRED: &[&str] = &[
    "qatarcentral",
    "polandcentral",
    "italynorth",
    "israelcentral",
    "mexicocentral",
    "spaincentral",
    "newzealandnorth",
];

/// Whether `a` and `b` (canonical keys) are an Azure disaster-recovery pair, in either
/// direction; `None` when either is not an Azure region fogd knows (a self-hosted
/// deployment's own region names), where the rule has nothing to say.
pub fn dr_paired(a: &str, b: &str) -> Option<bool> {
    let known = |r: &str| UNPAIRED.contains(&r) || DR_PAIRS.iter().any(|(x, _)| *x == r);
    if !known(a) || !known(b) {
        return None;
    }
    Some(
        DR_PAIRS
            .iter()
            .any(|&(x, y)| (x == a && y == b) || (x == b && y == a)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_pairs() {
        assert_eq!(dr_paired("eastus", "westus"), Some(true));
        assert_eq!(dr_paired("westus", "eastus"), Some(true));
        assert_eq!(dr_paired("eastus", "westus3"), Some(true));
        assert_eq!(dr_paired("japaneast", "japanwest"), Some(true));
        assert_eq!(dr_paired("eastus", "westeurope"), Some(false));
        assert_eq!(dr_paired("eastus", "centralus"), Some(false));
        assert_eq!(dr_paired("qatarcentral", "uaenorth"), Some(false));
        assert_eq!(dr_paired("dc1", "dc2"), None);
        assert_eq!(dr_paired("eastus", "dc2"), None);
    }

    #[test]
    fn instance_names() {
        for good in ["a", "mi-1", "x2", &"a".repeat(63)] {
            assert!(validate_instance_name(good).is_ok(), "{good}");
        }
        let cases = [
            ("", "InvalidServerName"),
            ("-a", "InvalidServerName"),
            ("a-", "InvalidServerName"),
            ("Upper", "InvalidServerName"),
            ("a_b", "InvalidServerName"),
            ("a\0b", "InvalidIdentifier"),
        ];
        for (bad, code) in cases {
            assert_eq!(
                validate_instance_name(bad).unwrap_err().code,
                code,
                "{bad:?}"
            );
        }
        let long = "a".repeat(64);
        assert_eq!(
            validate_instance_name(&long).unwrap_err().code,
            "TokenTooLong"
        );
    }

    #[test]
    fn database_names() {
        assert!(validate_database_name("app db-1").is_ok());
        for r in ["postgres", "Template0", "template1", "master"] {
            assert_eq!(
                validate_database_name(r).unwrap_err().code,
                "CannotUseReservedDatabaseName"
            );
        }
        assert_eq!(
            validate_database_name("a/b").unwrap_err().code,
            "InvalidParameterValue"
        );
        assert_eq!(
            validate_database_name("x\u{1}").unwrap_err().code,
            "InvalidIdentifier"
        );
        assert_eq!(
            validate_database_name(&"d".repeat(129)).unwrap_err().code,
            "TokenTooLong"
        );
    }

    #[test]
    fn subscriptions_and_groups() {
        assert_eq!(
            validate_subscription("0000AAAA-1111-2222-3333-444444444444").unwrap(),
            "0000aaaa-1111-2222-3333-444444444444"
        );
        assert!(validate_subscription("not-a-guid").is_err());
        assert!(validate_subscription("0000aaaa111122223333444444444444").is_err());
        assert!(validate_resource_group("rg-1_(x).y").is_ok());
        assert!(validate_resource_group("rg.").is_err());
        assert!(validate_resource_group("r g").is_err());
    }

    #[test]
    fn locations_normalise() {
        assert_eq!(location_key("Japan East"), "japaneast");
        assert_eq!(location_key("japaneast"), "japaneast");
        assert!(validate_location("Japan East").is_ok());
        assert!(validate_location("").is_err());
        assert!(validate_location("east/us").is_err());
    }
}
