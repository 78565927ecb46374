//! The `api-version` values fogd serves.
//!
//! The JSON shapes of managed instances, managed databases and instance failover groups are
//! the same in every version listed here (see `shared/reference/arm-api.md` §1), so the
//! version only gates acceptance; responses never vary by version.

use crate::ArmError;

/// Versions real clients send: Python SDK 4.x, az CLI, Terraform, the JS SDK, older stables.
pub const SUPPORTED: &[&str] = &[
    "2025-02-01-preview",
    "2025-01-01",
    "2024-11-01-preview",
    "2024-05-01-preview",
    "2023-08-01",
    "2023-08-01-preview",
    "2023-05-01-preview",
    "2022-05-01-preview",
    "2021-11-01",
];

/// The version fogd uses for operations it starts by itself (automatic failover, rejoin).
pub const LATEST_STABLE: &str = "2025-01-01";

/// Checks the `api-version` query value; a missing one and an unknown one get ARM's errors.
pub fn check(value: Option<&str>) -> Result<&str, ArmError> {
    match value {
        None | Some("") => Err(ArmError::missing_api_version()),
        Some(v) if SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(v)) => Ok(v),
        Some(v) => Err(ArmError::invalid_api_version(v, SUPPORTED.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_versions_clients_send() {
        for v in [
            "2023-08-01-preview",
            "2024-11-01-preview",
            "2025-01-01",
            "2025-02-01-preview",
        ] {
            assert_eq!(check(Some(v)).unwrap(), v);
        }
    }

    #[test]
    fn rejects_missing_and_unknown() {
        assert_eq!(check(None).unwrap_err().code, "MissingApiVersionParameter");
        assert_eq!(
            check(Some("")).unwrap_err().code,
            "MissingApiVersionParameter"
        );
        let e = check(Some("2019-01-01")).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str()),
            (400, "InvalidApiVersionParameter")
        );
        assert!(e.message.contains("2025-01-01"));
    }
}
