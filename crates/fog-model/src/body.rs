//! Turning request bytes into typed bodies with ARM's errors.

use crate::ArmError;
use serde::de::DeserializeOwned;

/// Parses a JSON body into `T`. Wrong types, out-of-range numbers and missing required
/// properties become `InvalidRequestContent` naming the JSON path (as `target`); a body
/// that is not JSON at all — empty, malformed or cut short — gets `InvalidRequestContent`
/// without a target, whatever point the parser reached. Unknown properties are ignored.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ArmError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ArmError::invalid_request_content(
            "The request body is empty",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // Syntax errors have no meaningful path: a truncated body is as unreadable as an
        // empty one, wherever it stops.
        let unreadable = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax
                | serde_json::error::Category::Eof
                | serde_json::error::Category::Io
        );
        if unreadable || path.is_empty() || path == "." || path.contains('?') {
            return ArmError::invalid_request_content(inner);
        }
        ArmError::invalid_request_content(format!("{inner}. Path '{path}'")).with_target(path)
    })
}

/// [`parse`] under an api-version: properties `version` does not define for resource type
/// `t` ([`crate::api_version::SHAPES`]) are ignored, as unknown properties are.
pub fn parse_for<T: DeserializeOwned>(
    bytes: &[u8],
    t: crate::api_version::ResourceType,
    version: &str,
) -> Result<T, ArmError> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(mut value) if value.is_object() => {
            crate::api_version::shape(t, version, &mut value);
            parse(&serde_json::to_vec(&value).unwrap_or_default())
        }
        _ => parse(bytes),
    }
}

/// A required property, or `InvalidRequestContent` naming it.
pub fn required<T>(value: Option<T>, path: &str) -> Result<T, ArmError> {
    value.ok_or_else(|| {
        ArmError::invalid_request_content(format!("Required property '{path}' not found in JSON"))
            .with_target(path)
    })
}

/// Matches `value` case-insensitively against `allowed`, returning the canonical spelling.
pub fn enum_value(
    value: &str,
    allowed: &'static [&'static str],
    path: &str,
) -> Result<&'static str, ArmError> {
    allowed
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(value))
        .ok_or_else(|| ArmError::invalid_parameter_value(path, value).with_target(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Probe {
        properties: Option<Inner>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Inner {
        v_cores: Option<i32>,
    }

    #[test]
    fn bad_json_wrong_types_and_empty_bodies() {
        assert_eq!(
            parse::<Probe>(b"{").unwrap_err().code,
            "InvalidRequestContent"
        );
        assert_eq!(
            parse::<Probe>(b"  ").unwrap_err().code,
            "InvalidRequestContent"
        );
        let e = parse::<Probe>(br#"{"properties":{"vCores":"eight"}}"#).unwrap_err();
        assert_eq!(e.code, "InvalidRequestContent");
        assert_eq!(e.target.as_deref(), Some("properties.vCores"));
        assert!(parse::<Probe>(br#"{"unknown":1,"properties":{"other":true}}"#).is_ok());
        // Out of int32's range: the path is named.
        let e = parse::<Probe>(br#"{"properties":{"vCores":3000000000}}"#).unwrap_err();
        assert_eq!(e.target.as_deref(), Some("properties.vCores"));
    }

    #[test]
    fn a_truncated_body_is_reported_like_an_empty_one() {
        for cut in [
            &br#"{"properties":{"vCores":"#[..],
            br#"{"properties":{"vCo"#,
            br#"{"properties":"#,
            br#"{"properties":{"vCores":8,} }"#,
        ] {
            let e = parse::<Probe>(cut).unwrap_err();
            assert_eq!(
                (e.code.as_str(), e.target.as_deref()),
                ("InvalidRequestContent", None),
                "{}",
                String::from_utf8_lossy(cut)
            );
        }
    }

    #[test]
    fn enums_are_case_insensitive_and_canonical() {
        assert_eq!(
            enum_value("manual", &["Manual", "Automatic"], "p").unwrap(),
            "Manual"
        );
        let e = enum_value("Sometimes", &["Manual", "Automatic"], "p").unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.target.as_deref()),
            ("InvalidParameterValue", Some("p"))
        );
    }

    #[test]
    fn a_property_the_version_does_not_define_is_ignored() {
        use crate::api_version::ResourceType::ManagedInstances;
        use crate::instance::InstanceBody;
        let body = br#"{"location":"eastus","properties":{"administratorLogin":"fogadmin","administratorLoginPassword":"S0me-Str0ng-Pass!","databaseFormat":"AlwaysUpToDate"}}"#;
        let under = |v: &str| {
            parse_for::<InstanceBody>(body, ManagedInstances, v)
                .and_then(InstanceBody::into_create_spec)
                .unwrap()
                .database_format
        };
        assert_eq!(under("2025-01-01"), "AlwaysUpToDate");
        assert_eq!(
            under("2021-11-01"),
            "SQLServer2022",
            "not defined: the default"
        );
        // Errors are those of the body as sent.
        let e = parse_for::<InstanceBody>(b"{", ManagedInstances, "2021-11-01").unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.target.as_deref()),
            ("InvalidRequestContent", None)
        );
        let e = parse_for::<InstanceBody>(
            br#"{"properties":{"vCores":"x"}}"#,
            ManagedInstances,
            "2021-11-01",
        )
        .unwrap_err();
        assert_eq!(e.target.as_deref(), Some("properties.vCores"));
    }

    #[test]
    fn required_names_the_path() {
        let e = required::<i32>(None, "properties.administratorLogin").unwrap_err();
        assert_eq!(e.target.as_deref(), Some("properties.administratorLogin"));
    }
}
