//! Contract tests: what Azure's published OpenAPI documents for Microsoft.Sql state about
//! the three resource types fogd serves, written down here as facts (property names and
//! types, integer formats, required and read-only properties, enum values, the versions a
//! property is defined in, the success codes of each operation) — not a copy of those
//! files. [`check`] validates every response the end-to-end tests get (through
//! `Fogd::send`) against the api-version the request named; a response that does not
//! validate fails the test.
//!
//! Covered:
//! - `Microsoft.Sql/locations/instanceFailoverGroups` (`InstanceFailoverGroups.json`): Get,
//!   ListByLocation, CreateOrUpdate, Delete, Failover, ForceFailoverAllowDataLoss and the
//!   `…OperationResults` of their long-running operations, under every version that
//!   publishes the type;
//! - `Microsoft.Sql/managedInstances` (`ManagedInstances.json`): Get, List,
//!   ListByResourceGroup, CreateOrUpdate, Update, Delete and their `…OperationResults`,
//!   under every consolidated version (2020-02-02-preview … 2025-02-01-preview);
//! - `Microsoft.Sql/managedInstances/databases` (`ManagedDatabases.json`): Get,
//!   ListByInstance, CreateOrUpdate, Update, Delete and their `…OperationResults`, likewise;
//! - the error envelope (`ErrorResponse`) of every Microsoft.Sql route.
//!
//! The instance and database versions before 2020-02-02-preview (2015-05-01-preview,
//! 2017-03-01-preview, 2018-06-01-preview, 2019-06-01-preview), which fogd serves too, are
//! not in this table: a success under them is not checked.
//!
//! Enums marked `modelAsString` in the specification are extensible: clients accept values
//! beyond the list (Azure's own examples answer `provisioningState: Creating` under
//! 2025-01-01, whose list lacks it). Where fogd answers values of the list in every
//! version, the table checks them as a closed [`Ty::Enum`]; where it answers a value some
//! versions do not list, as an [`Ty::OpenEnum`] (any string).

use serde_json::Value;

/// A JSON type as the specification declares it.
pub enum Ty {
    Str,
    /// `string`, `format: date-time` (RFC 3339).
    DateTime,
    Bool,
    /// `integer`, `format: int32`.
    Int32,
    /// A closed set of values (fogd must emit one of them, in canonical spelling).
    Enum(&'static [&'static str]),
    /// An extensible enum (`modelAsString: true`): the listed values are the published
    /// ones, any string is accepted.
    OpenEnum(&'static [&'static str]),
    /// An object: its properties, and which of them are required.
    Obj(&'static [Prop], &'static [&'static str]),
    /// An object with any keys (`additionalProperties`), each value of this type.
    Map(&'static Ty),
    Arr(&'static Ty),
}

/// One property of an object.
pub struct Prop {
    pub name: &'static str,
    pub ty: Ty,
    /// The first version (by date) that defines it; `None`: every version.
    pub since: Option<&'static str>,
    /// Versions dated on or after `since` that do not define it (exact spellings).
    pub except: &'static [&'static str],
    /// `readOnly` in the specification: set by the service, never by a client.
    pub read_only: bool,
}

impl Prop {
    fn defined_in(&self, version: &str) -> bool {
        self.since.is_none_or(|s| date(version) >= s)
            && !self.except.iter().any(|e| e.eq_ignore_ascii_case(version))
    }
}

/// A property every version defines.
const fn p(name: &'static str, ty: Ty) -> Prop {
    Prop {
        name,
        ty,
        since: None,
        except: &[],
        read_only: false,
    }
}

/// A read-only property every version defines.
const fn ro(name: &'static str, ty: Ty) -> Prop {
    Prop {
        read_only: true,
        ..p(name, ty)
    }
}

const ROLE: Ty = Ty::Enum(&["Primary", "Secondary"]);

/// `InstanceFailoverGroup` (a `ProxyResource`): the same in every version from
/// 2017-10-01-preview on, except `secondaryType`, defined from 2022-08-01-preview on.
pub const INSTANCE_FAILOVER_GROUP: Ty = Ty::Obj(
    &[
        ro("id", Ty::Str),
        ro("name", Ty::Str),
        ro(
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
                        except: &[],
                        read_only: false,
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
                    ro("replicationRole", ROLE),
                    ro("replicationState", Ty::Str),
                    p(
                        "partnerRegions",
                        Ty::Arr(&Ty::Obj(
                            &[p("location", Ty::Str), ro("replicationRole", ROLE)],
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
        ro("value", Ty::Arr(&INSTANCE_FAILOVER_GROUP)),
        ro("nextLink", Ty::Str),
    ],
    &[],
);

/// `Sku` (common types v1): `name` required; `capacity` int32.
const SKU: Ty = Ty::Obj(
    &[
        p("name", Ty::Str),
        p("tier", Ty::Str),
        p("size", Ty::Str),
        p("family", Ty::Str),
        p("capacity", Ty::Int32),
    ],
    &["name"],
);

/// `ManagedInstance` (a `TrackedResource`: `location` required, `tags` a string map), as
/// far as fogd answers it. Facts per version:
/// - `provisioningState`: a closed enum of `Creating, Deleting, Updating, Unknown,
///   Succeeded, Failed` in 2020-02-02-preview; 2021-11-01 … 2023-08-01 add `Accepted,
///   Created, Deleted, Unrecognized, Running, Canceled, NotSpecified, Registering,
///   TimedOut`; 2025-01-01 makes it `modelAsString` with `Created, InProgress, Succeeded,
///   Failed, Canceled` (its examples still answer `Creating`). fogd answers one of the six
///   of 2020-02-02-preview under every version.
/// - `licenseType`: `LicenseIncluded, BasePrice` (`modelAsString`) in every version.
/// - `vCores`, `storageSizeInGB`, `sku.capacity`: int32.
/// - `createTime` (date-time, read-only) and `databaseFormat` (`AlwaysUpToDate,
///   SQLServer2022`; `SQLServer2025` too from 2024-11-01-preview; `modelAsString`): from
///   2023-05-01-preview on, except the stable 2023-08-01.
pub const MANAGED_INSTANCE: Ty = Ty::Obj(
    &[
        ro("id", Ty::Str),
        ro("name", Ty::Str),
        ro("type", Ty::Enum(&["Microsoft.Sql/managedInstances"])),
        p("location", Ty::Str),
        p("tags", Ty::Map(&Ty::Str)),
        p("sku", SKU),
        p(
            "properties",
            Ty::Obj(
                &[
                    ro(
                        "provisioningState",
                        Ty::Enum(&[
                            "Creating",
                            "Deleting",
                            "Updating",
                            "Unknown",
                            "Succeeded",
                            "Failed",
                        ]),
                    ),
                    ro("fullyQualifiedDomainName", Ty::Str),
                    p("administratorLogin", Ty::Str),
                    ro("state", Ty::Str),
                    p("licenseType", Ty::Enum(&["LicenseIncluded", "BasePrice"])),
                    p("vCores", Ty::Int32),
                    p("storageSizeInGB", Ty::Int32),
                    p("collation", Ty::Str),
                    ro("dnsZone", Ty::Str),
                    Prop {
                        since: Some("2023-05-01"),
                        except: &["2023-08-01"],
                        ..ro("createTime", Ty::DateTime)
                    },
                    Prop {
                        since: Some("2023-05-01"),
                        except: &["2023-08-01"],
                        ..p(
                            "databaseFormat",
                            Ty::Enum(&["AlwaysUpToDate", "SQLServer2022", "SQLServer2025"]),
                        )
                    },
                ],
                &[],
            ),
        ),
    ],
    &["location"],
);

/// `ManagedInstanceListResult`.
pub const MANAGED_INSTANCE_LIST: Ty = Ty::Obj(
    &[
        ro("value", Ty::Arr(&MANAGED_INSTANCE)),
        ro("nextLink", Ty::Str),
    ],
    &[],
);

/// `ManagedDatabase` (a `TrackedResource`), as far as fogd answers it. Facts per version:
/// - `status` (read-only, `modelAsString`): `Online, Offline, Shutdown, Creating,
///   Inaccessible, Restoring, Updating` up to 2022-05-01-preview; from 2022-08-01-preview
///   also `Stopping, Stopped, Starting, DbMoving, DbCopying`. fogd answers `Stopping` under
///   every version, so it is checked as an open enum.
/// - `creationDate`, `earliestRestorePoint`: date-time, read-only.
/// - `failoverGroupId`: read-only string.
/// - `isLedgerOn` (boolean): from 2022-08-01-preview on.
pub const MANAGED_DATABASE: Ty = Ty::Obj(
    &[
        ro("id", Ty::Str),
        ro("name", Ty::Str),
        ro(
            "type",
            Ty::Enum(&["Microsoft.Sql/managedInstances/databases"]),
        ),
        p("location", Ty::Str),
        p("tags", Ty::Map(&Ty::Str)),
        p(
            "properties",
            Ty::Obj(
                &[
                    p("collation", Ty::Str),
                    ro(
                        "status",
                        Ty::OpenEnum(&[
                            "Online",
                            "Offline",
                            "Shutdown",
                            "Creating",
                            "Inaccessible",
                            "Restoring",
                            "Updating",
                            "Stopping",
                            "Stopped",
                            "Starting",
                            "DbMoving",
                            "DbCopying",
                        ]),
                    ),
                    ro("creationDate", Ty::DateTime),
                    ro("earliestRestorePoint", Ty::DateTime),
                    ro("failoverGroupId", Ty::Str),
                    Prop {
                        since: Some("2022-08-01"),
                        ..p("isLedgerOn", Ty::Bool)
                    },
                ],
                &[],
            ),
        ),
    ],
    &["location"],
);

/// `ManagedDatabaseListResult`.
pub const MANAGED_DATABASE_LIST: Ty = Ty::Obj(
    &[
        ro("value", Ty::Arr(&MANAGED_DATABASE)),
        ro("nextLink", Ty::Str),
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

/// What fogd adds to a managed instance: where clients reach its PostgreSQL server.
pub const INSTANCE_EXTENSIONS: &[&str] = &["properties.postgresEndpoint"];

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

/// Every consolidated Microsoft.Sql version from 2020-02-02-preview on: each publishes all
/// three types.
const CONSOLIDATED: &[&str] = &[
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

/// Older versions that publish managed instances or databases, served by fogd but not in
/// this table.
const UNCOVERED: &[&str] = &[
    "2015-05-01-preview",
    "2017-03-01-preview",
    "2018-06-01-preview",
    "2019-06-01-preview",
];

/// Which resource type an operation is on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Group,
    Instance,
    Database,
}

impl Kind {
    fn versions(self) -> &'static [&'static str] {
        match self {
            Self::Group => GROUP_VERSIONS,
            Self::Instance | Self::Database => CONSOLIDATED,
        }
    }

    fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::Group => GROUP_EXTENSIONS,
            Self::Instance => INSTANCE_EXTENSIONS,
            Self::Database => &[],
        }
    }

    fn resource(self) -> &'static Ty {
        match self {
            Self::Group => &INSTANCE_FAILOVER_GROUP,
            Self::Instance => &MANAGED_INSTANCE,
            Self::Database => &MANAGED_DATABASE,
        }
    }

    fn list(self) -> &'static Ty {
        match self {
            Self::Group => &INSTANCE_FAILOVER_GROUP_LIST,
            Self::Instance => &MANAGED_INSTANCE_LIST,
            Self::Database => &MANAGED_DATABASE_LIST,
        }
    }
}

/// The operations, with their success codes (the same in every version).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Get,
    /// ListByLocation (groups), List and ListByResourceGroup (instances), ListByInstance
    /// (databases).
    List,
    CreateOrUpdate,
    /// PATCH (instances and databases).
    Update,
    Delete,
    Failover,
    ForceFailoverAllowDataLoss,
    /// GET of a `…{kind}OperationResults/{id}` URL.
    OperationResult,
}

/// The group operations (kept under the name the first table used).
pub type GroupOp = Op;

impl Op {
    pub fn success_codes(self) -> &'static [u16] {
        match self {
            Self::Get | Self::List => &[200],
            Self::CreateOrUpdate => &[200, 201, 202],
            Self::Update => &[200, 202],
            Self::Delete => &[200, 202, 204],
            Self::Failover | Self::ForceFailoverAllowDataLoss => &[200, 202],
            // 202 while running, the final result (200 with the resource, 204 after a
            // delete).
            Self::OperationResult => &[200, 202, 204],
        }
    }

    /// The schema of a 200/201 body of `kind`, if it has one.
    fn body(self, kind: Kind) -> Option<&'static Ty> {
        match self {
            Self::List => Some(kind.list()),
            Self::Delete => None,
            _ => Some(kind.resource()),
        }
    }
}

fn date(v: &str) -> &str {
    v.get(..10).unwrap_or(v)
}

/// Checks `v` against `ty` under `version`; fogd's own properties at the paths in `ext`
/// (relative to a resource, also inside a list's items) may hold anything. Problems are
/// appended to `errs`.
pub fn validate(
    ty: &Ty,
    v: &Value,
    path: &str,
    version: &str,
    ext: &[&str],
    errs: &mut Vec<String>,
) {
    let at = |p: &str| {
        if p.is_empty() {
            "(root)".to_string()
        } else {
            p.to_string()
        }
    };
    match (ty, v) {
        (Ty::Str | Ty::OpenEnum(_), Value::String(_)) => {}
        (Ty::Bool, Value::Bool(_)) => {}
        (Ty::DateTime, Value::String(s)) => {
            if time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .is_err()
            {
                errs.push(format!("{}: {s:?} is not an RFC 3339 date-time", at(path)));
            }
        }
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
                validate(item, it, &format!("{path}[{i}]"), version, ext, errs);
            }
        }
        (Ty::Map(item), Value::Object(m)) => {
            for (k, val) in m {
                validate(item, val, &format!("{path}.{k}"), version, ext, errs);
            }
        }
        (Ty::Obj(props, required), Value::Object(m)) => {
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
                match props.iter().find(|p| p.name == k && p.defined_in(version)) {
                    Some(p) => validate(&p.ty, val, &child, version, ext, errs),
                    // An extension, on a resource or on a list's item (`value[i].…`).
                    None if ext
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

/// The `…OperationResults` URL of each resource type's long-running operations.
const RESULTS: &[(&str, Kind)] = &[
    ("instanceFailoverGroupOperationResults", Kind::Group),
    ("managedInstanceOperationResults", Kind::Instance),
    ("managedDatabaseOperationResults", Kind::Database),
];

/// Which operation a request is, on which resource type, if any.
fn operation(method: &reqwest::Method, segments: &[&str]) -> Option<(Kind, Op)> {
    let provider = segments
        .iter()
        .position(|s| s.eq_ignore_ascii_case("Microsoft.Sql"))?;
    let rest = &segments[provider + 1..];
    let is = |s: &str, l: &str| s.eq_ignore_ascii_case(l);
    use reqwest::Method as M;
    let crud = |m: &M, listing: bool| match (m.clone(), listing) {
        (M::GET, true) => Some(Op::List),
        (M::GET, false) => Some(Op::Get),
        (M::PUT, false) => Some(Op::CreateOrUpdate),
        (M::PATCH, false) => Some(Op::Update),
        (M::DELETE, false) => Some(Op::Delete),
        _ => None,
    };
    match rest {
        [kind] if is(kind, "managedInstances") => Some((Kind::Instance, crud(method, true)?)),
        [kind, _] if is(kind, "managedInstances") => Some((Kind::Instance, crud(method, false)?)),
        [kind, _, dbs] if is(kind, "managedInstances") && is(dbs, "databases") => {
            Some((Kind::Database, crud(method, true)?))
        }
        [kind, _, dbs, _] if is(kind, "managedInstances") && is(dbs, "databases") => {
            Some((Kind::Database, crud(method, false)?))
        }
        [loc, _, kind, _]
            if is(loc, "locations")
                && *method == M::GET
                && RESULTS.iter().any(|(k, _)| is(kind, k)) =>
        {
            let kind = RESULTS.iter().find(|(k, _)| is(kind, k))?.1;
            Some((kind, Op::OperationResult))
        }
        [loc, _, kind, tail @ ..] if is(loc, "locations") && is(kind, "instanceFailoverGroups") => {
            let op = match (method.clone(), tail) {
                (M::GET, []) => Op::List,
                (M::GET, [_]) => Op::Get,
                (M::PUT, [_]) => Op::CreateOrUpdate,
                (M::DELETE, [_]) => Op::Delete,
                (M::POST, [_, a]) if is(a, "failover") => Op::Failover,
                (M::POST, [_, a]) if is(a, "forceFailoverAllowDataLoss") => {
                    Op::ForceFailoverAllowDataLoss
                }
                _ => return None,
            };
            Some((Kind::Group, op))
        }
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
            validate(&ERROR_RESPONSE, body, "", "", &[], &mut errs);
        }
    } else if let Some((kind, op)) = operation(method, &segments) {
        let version = query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.eq_ignore_ascii_case("api-version").then_some(v)
        });
        let version = match version {
            Some(v) if kind.versions().iter().any(|g| g.eq_ignore_ascii_case(v)) => v,
            Some(v) if UNCOVERED.iter().any(|u| u.eq_ignore_ascii_case(v)) => return,
            // A version the specification does not publish the type in is answered
            // with an error; nothing to check a success against.
            _ => {
                assert!(
                    op == Op::OperationResult,
                    "{what}: success under an api-version that does not publish the type"
                );
                return;
            }
        };
        if !op.success_codes().contains(&status) {
            errs.push(format!(
                "status {status} is not one of {:?} ({kind:?} {op:?})",
                op.success_codes()
            ));
        }
        match (status, op.body(kind)) {
            (200 | 201, Some(schema)) => {
                validate(schema, body, "", version, kind.extensions(), &mut errs)
            }
            (_, _) if !body.is_null() => errs.push(format!(
                "a {status} of {kind:?} {op:?} has no body, got {body}"
            )),
            _ => {}
        }
    }
    assert!(
        errs.is_empty(),
        "{what}: the response does not follow the specification:\n  {}\nbody: {body}",
        errs.join("\n  ")
    );
}
