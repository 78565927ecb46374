//! Contract tests: what Azure's published OpenAPI documents for Microsoft.Sql state about
//! instance failover groups, written down here as facts (property names and types, integer
//! formats, required properties, enum values, the version a property first appears in, the
//! success codes of each operation) — not a copy of those files. [`check`] validates every
//! response the end-to-end tests get (through `Fogd::send`) against the api-version the
//! request named; a response that does not validate fails the test.
//!
//! Covered: every operation of `Microsoft.Sql/locations/instanceFailoverGroups` (Get,
//! ListByLocation, CreateOrUpdate, Delete, Failover, ForceFailoverAllowDataLoss, and the
//! `…OperationResults` result of their long-running operations) under every version that
//! publishes the type, and the error envelope (`ErrorResponse`) of every Microsoft.Sql
//! route. Managed instances and databases: error envelopes only, for now.

use serde_json::Value;

/// A JSON type as the specification declares it.
pub enum Ty {
    Str,
    /// `integer`, `format: int32`.
    Int32,
    /// A closed set of values (fogd must emit one of them, in canonical spelling).
    Enum(&'static [&'static str]),
    /// An object: its properties, and which of them are required.
    Obj(&'static [Prop], &'static [&'static str]),
    Arr(&'static Ty),
}

/// One property of an object.
pub struct Prop {
    pub name: &'static str,
    pub ty: Ty,
    /// The first version (by date) that defines it; `None`: every version.
    pub since: Option<&'static str>,
}

const fn p(name: &'static str, ty: Ty) -> Prop {
    Prop {
        name,
        ty,
        since: None,
    }
}

const ROLE: Ty = Ty::Enum(&["Primary", "Secondary"]);

/// `InstanceFailoverGroup` (a `ProxyResource`): the same in every version from
/// 2017-10-01-preview on, except `secondaryType`, defined from 2022-08-01-preview on.
pub const INSTANCE_FAILOVER_GROUP: Ty = Ty::Obj(
    &[
        p("id", Ty::Str),
        p("name", Ty::Str),
        p(
            "type",
            Ty::Enum(&["Microsoft.Sql/locations/instanceFailoverGroups"]),
        ),
        p(
            "properties",
            Ty::Obj(
                &[
                    Prop {
                        name: "secondaryType",
                        ty: Ty::Enum(&["Geo", "Standby"]),
                        since: Some("2022-08-01"),
                    },
                    p(
                        "readWriteEndpoint",
                        Ty::Obj(
                            &[
                                p("failoverPolicy", Ty::Enum(&["Manual", "Automatic"])),
                                p("failoverWithDataLossGracePeriodMinutes", Ty::Int32),
                            ],
                            &["failoverPolicy"],
                        ),
                    ),
                    p(
                        "readOnlyEndpoint",
                        Ty::Obj(
                            &[p("failoverPolicy", Ty::Enum(&["Disabled", "Enabled"]))],
                            &[],
                        ),
                    ),
                    p("replicationRole", ROLE),
                    p("replicationState", Ty::Str),
                    p(
                        "partnerRegions",
                        Ty::Arr(&Ty::Obj(
                            &[p("location", Ty::Str), p("replicationRole", ROLE)],
                            &[],
                        )),
                    ),
                    p(
                        "managedInstancePairs",
                        Ty::Arr(&Ty::Obj(
                            &[
                                p("primaryManagedInstanceId", Ty::Str),
                                p("partnerManagedInstanceId", Ty::Str),
                            ],
                            &[],
                        )),
                    ),
                ],
                &[
                    "readWriteEndpoint",
                    "partnerRegions",
                    "managedInstancePairs",
                ],
            ),
        ),
    ],
    &["properties"],
);

/// `InstanceFailoverGroupListResult`.
pub const INSTANCE_FAILOVER_GROUP_LIST: Ty = Ty::Obj(
    &[
        p("value", Ty::Arr(&INSTANCE_FAILOVER_GROUP)),
        p("nextLink", Ty::Str),
    ],
    &[],
);

/// Properties fogd adds to a group beyond the specification (documented in README); any
/// value is allowed there.
pub const GROUP_EXTENSIONS: &[&str] = &[
    "properties.listeners",
    "properties.lastFailover",
    "properties.seedingProgress",
    "properties.health",
    "properties.replicationLag",
    "properties.lastInSyncTime",
    "properties.automaticFailover",
    "properties.observedAt",
];

/// `ErrorResponse` (common-types): `error` with `code` and `message` required.
pub const ERROR_RESPONSE: Ty = Ty::Obj(
    &[p(
        "error",
        Ty::Obj(
            &[
                p("code", Ty::Str),
                p("message", Ty::Str),
                p("target", Ty::Str),
                p("details", Ty::Arr(&Ty::Obj(&[], &[]))),
                p("additionalInfo", Ty::Arr(&Ty::Obj(&[], &[]))),
            ],
            &["code", "message"],
        ),
    )],
    &["error"],
);

/// Every version that publishes `instanceFailoverGroups`.
pub const GROUP_VERSIONS: &[&str] = &[
    "2017-10-01-preview",
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

/// The group operations, with their success codes (the same in every version).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GroupOp {
    Get,
    ListByLocation,
    CreateOrUpdate,
    Delete,
    Failover,
    ForceFailoverAllowDataLoss,
    /// GET of a `…instanceFailoverGroupOperationResults/{id}` URL.
    OperationResult,
}

impl GroupOp {
    pub fn success_codes(self) -> &'static [u16] {
        match self {
            Self::Get | Self::ListByLocation => &[200],
            Self::CreateOrUpdate => &[200, 201, 202],
            Self::Delete => &[200, 202, 204],
            Self::Failover | Self::ForceFailoverAllowDataLoss => &[200, 202],
            // 202 while running, the final result (200 with the group, 204 after a delete).
            Self::OperationResult => &[200, 202, 204],
        }
    }

    /// The schema of a 200/201 body, if it has one.
    fn body(self) -> Option<&'static Ty> {
        match self {
            Self::ListByLocation => Some(&INSTANCE_FAILOVER_GROUP_LIST),
            Self::Delete => None,
            _ => Some(&INSTANCE_FAILOVER_GROUP),
        }
    }
}

fn date(v: &str) -> &str {
    v.get(..10).unwrap_or(v)
}

/// Checks `v` against `ty` under `version`; problems are appended to `errs`.
pub fn validate(ty: &Ty, v: &Value, path: &str, version: &str, errs: &mut Vec<String>) {
    let at = |p: &str| {
        if p.is_empty() {
            "(root)".to_string()
        } else {
            p.to_string()
        }
    };
    match (ty, v) {
        (Ty::Str, Value::String(_)) => {}
        (Ty::Int32, Value::Number(n)) => {
            if n.as_i64().is_none_or(|i| i32::try_from(i).is_err()) {
                errs.push(format!("{}: {n} is not an int32", at(path)));
            }
        }
        (Ty::Enum(values), Value::String(s)) => {
            if !values.contains(&s.as_str()) {
                errs.push(format!("{}: {s:?} is not one of {values:?}", at(path)));
            }
        }
        (Ty::Arr(item), Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                validate(item, it, &format!("{path}[{i}]"), version, errs);
            }
        }
        (Ty::Obj(props, required), Value::Object(m)) => {
            let defined = |p: &&Prop| p.since.is_none_or(|s| date(version) >= s);
            for r in *required {
                if !m.contains_key(*r) {
                    errs.push(format!("{}: required property {r:?} missing", at(path)));
                }
            }
            for (k, val) in m {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match props.iter().filter(defined).find(|p| p.name == k) {
                    Some(p) => validate(&p.ty, val, &child, version, errs),
                    // An extension, on a resource or on a list's item (`value[i].…`).
                    None if GROUP_EXTENSIONS
                        .iter()
                        .any(|e| child == *e || child.ends_with(&format!("].{e}"))) => {}
                    // Objects declared without properties (error details) are open.
                    None if props.is_empty() => {}
                    None => errs.push(format!("{child}: not defined by api-version {version}")),
                }
            }
        }
        (_, other) => errs.push(format!("{}: unexpected {other}", at(path))),
    }
}

/// Which group operation a request is, if any.
fn group_op(method: &reqwest::Method, segments: &[&str]) -> Option<GroupOp> {
    let i = segments
        .iter()
        .position(|s| s.eq_ignore_ascii_case("locations"))?;
    let rest = &segments[i + 1..];
    let is = |s: &str, l: &str| s.eq_ignore_ascii_case(l);
    use reqwest::Method as M;
    match (method.clone(), rest) {
        (M::GET, [_, kind, _]) if is(kind, "instanceFailoverGroupOperationResults") => {
            Some(GroupOp::OperationResult)
        }
        (m, [_, kind, tail @ ..]) if is(kind, "instanceFailoverGroups") => match (m, tail) {
            (M::GET, []) => Some(GroupOp::ListByLocation),
            (M::GET, [_]) => Some(GroupOp::Get),
            (M::PUT, [_]) => Some(GroupOp::CreateOrUpdate),
            (M::DELETE, [_]) => Some(GroupOp::Delete),
            (M::POST, [_, a]) if is(a, "failover") => Some(GroupOp::Failover),
            (M::POST, [_, a]) if is(a, "forceFailoverAllowDataLoss") => {
                Some(GroupOp::ForceFailoverAllowDataLoss)
            }
            _ => None,
        },
        _ => None,
    }
}

/// Validates one response of fogd's API; panics with every problem found.
pub fn check(method: &reqwest::Method, url: &str, status: u16, body: &Value) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let path = match path.find("/subscriptions/") {
        Some(i) => &path[i..],
        None => return,
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if !segments
        .iter()
        .any(|s| s.eq_ignore_ascii_case("Microsoft.Sql"))
    {
        return;
    }
    let what = format!("{method} {url} → {status}");
    let mut errs = Vec::new();
    if status >= 400 {
        // hyper's own refusals (malformed request, URI or headers too long) carry no body.
        if !(body.is_null() && matches!(status, 400 | 414 | 431)) {
            validate(&ERROR_RESPONSE, body, "", "", &mut errs);
        }
    } else if let Some(op) = group_op(method, &segments) {
        let version = query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.eq_ignore_ascii_case("api-version").then_some(v)
        });
        let version = match version {
            Some(v) if GROUP_VERSIONS.iter().any(|g| g.eq_ignore_ascii_case(v)) => v,
            // A version the specification does not publish the type in is answered
            // with an error; nothing to check a success against.
            _ => {
                assert!(
                    op == GroupOp::OperationResult,
                    "{what}: success under an api-version that does not publish the type"
                );
                return;
            }
        };
        if !op.success_codes().contains(&status) {
            errs.push(format!(
                "status {status} is not one of {:?} ({op:?})",
                op.success_codes()
            ));
        }
        match (status, op.body()) {
            (200 | 201, Some(schema)) => validate(schema, body, "", version, &mut errs),
            (_, _) if !body.is_null() => {
                errs.push(format!("a {status} of {op:?} has no body, got {body}"))
            }
            _ => {}
        }
    }
    assert!(
        errs.is_empty(),
        "{what}: the response does not follow the specification:\n  {}\nbody: {body}",
        errs.join("\n  ")
    );
}
