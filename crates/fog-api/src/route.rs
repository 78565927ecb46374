//! ARM path parsing. ARM matches its fixed path segments case-insensitively
//! (`resourcegroups` ≡ `resourceGroups`, `microsoft.sql` ≡ `Microsoft.Sql`), which a
//! case-sensitive router cannot express, so paths are parsed here into a [`Route`].

use fog_model::api_version::ResourceType;
use fog_model::{names, ArmError, ManagedInstanceId, OperationKind, Scope};

/// Whether an operation URL is the status resource or the result resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationView {
    /// `…AzureAsyncOperation/{id}`: always 200 with the status body.
    Status,
    /// `…OperationResults/{id}`: 202 while running, the final result when done.
    Result,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Managed instances of a resource group, or of a subscription when `resource_group` is `None`.
    Instances {
        subscription: String,
        scope: Option<Scope>,
    },
    Instance(ManagedInstanceId),
    Databases(ManagedInstanceId),
    Database(ManagedInstanceId, String),
    /// Failover groups visible at a member's (subscription, resource group, location).
    FailoverGroups {
        scope: Scope,
        location: String,
    },
    FailoverGroup {
        scope: Scope,
        location: String,
        name: String,
    },
    /// POST `…/{name}/failover` (`planned`) or `…/{name}/forceFailoverAllowDataLoss`.
    FailoverGroupFailover {
        scope: Scope,
        location: String,
        name: String,
        planned: bool,
    },
    /// GET `…/{name}/events`: the group's history (a fogd extension).
    FailoverGroupEvents {
        scope: Scope,
        location: String,
        name: String,
    },
    Operation {
        subscription: String,
        kind: OperationKind,
        view: OperationView,
        id: String,
    },
}

impl Route {
    /// The resource type a route addresses (whose api-versions apply); `None` for the
    /// polling URLs, which are dereferenced whatever their api-version.
    pub fn resource_type(&self) -> Option<ResourceType> {
        match self {
            Route::Instances { .. } | Route::Instance(_) => Some(ResourceType::ManagedInstances),
            Route::Databases(_) | Route::Database(..) => Some(ResourceType::ManagedDatabases),
            Route::FailoverGroups { .. }
            | Route::FailoverGroup { .. }
            | Route::FailoverGroupFailover { .. }
            | Route::FailoverGroupEvents { .. } => Some(ResourceType::InstanceFailoverGroups),
            Route::Operation { .. } => None,
        }
    }
}

fn decode(seg: &str) -> Result<String, ArmError> {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ArmError::invalid_identifier())
}

fn is(seg: &str, literal: &str) -> bool {
    seg.eq_ignore_ascii_case(literal)
}

/// Parses a request path. Unknown shapes get `InvalidResourceType` (404); malformed
/// subscription, resource-group or instance names get their validation errors.
pub fn parse(path: &str) -> Result<Route, ArmError> {
    let raw: Vec<&str> = path.trim_matches('/').split('/').collect();
    let segs = raw
        .iter()
        .map(|s| decode(s))
        .collect::<Result<Vec<_>, _>>()?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let unknown = || ArmError::invalid_resource_type(path);
    if s.len() < 4 || !is(s[0], "subscriptions") {
        return Err(unknown());
    }
    let subscription = names::validate_subscription(s[1])?;
    // Optional `resourceGroups/{rg}`, then `providers/Microsoft.Sql`.
    let (scope, rest) = if is(s[2], "resourceGroups") {
        let rg = s.get(3).ok_or_else(unknown)?;
        (Some(Scope::parse(&subscription, rg)?), &s[4..])
    } else {
        (None, &s[2..])
    };
    if rest.len() < 3 || !is(rest[0], "providers") || !is(rest[1], "Microsoft.Sql") {
        return Err(unknown());
    }
    let rest = &rest[2..];
    if is(rest[0], "managedInstances") {
        let instance = |name: &str| {
            let scope = scope.clone().ok_or_else(unknown)?;
            ManagedInstanceId::new(scope, name)
        };
        return match rest {
            [_] => Ok(Route::Instances {
                subscription,
                scope,
            }),
            [_, name] => Ok(Route::Instance(instance(name)?)),
            [_, name, dbs] if is(dbs, "databases") => Ok(Route::Databases(instance(name)?)),
            [_, name, dbs, db] if is(dbs, "databases") => {
                Ok(Route::Database(instance(name)?, db.to_string()))
            }
            _ => Err(unknown()),
        };
    }
    if rest.len() >= 3 && is(rest[0], "locations") && is(rest[2], "instanceFailoverGroups") {
        let scope = scope.clone().ok_or_else(unknown)?;
        let location = rest[1].to_string();
        names::validate_location(&location)?;
        return match rest {
            [_, _, _] => Ok(Route::FailoverGroups { scope, location }),
            [_, _, _, name] => Ok(Route::FailoverGroup {
                scope,
                location,
                name: name.to_string(),
            }),
            [_, _, _, name, events] if is(events, "events") => Ok(Route::FailoverGroupEvents {
                scope,
                location,
                name: name.to_string(),
            }),
            [_, _, _, name, action]
                if is(action, "failover") || is(action, "forceFailoverAllowDataLoss") =>
            {
                Ok(Route::FailoverGroupFailover {
                    scope,
                    location,
                    name: name.to_string(),
                    planned: is(action, "failover"),
                })
            }
            _ => Err(unknown()),
        };
    }
    if let [loc, _location, what, id] = rest {
        if is(loc, "locations") {
            let lower = what.to_ascii_lowercase();
            let (prefix, view) = if let Some(p) = lower.strip_suffix("azureasyncoperation") {
                (p, OperationView::Status)
            } else if let Some(p) = lower.strip_suffix("operationresults") {
                (p, OperationView::Result)
            } else {
                return Err(unknown());
            };
            let kind = OperationKind::from_url_prefix(prefix).ok_or_else(unknown)?;
            return Ok(Route::Operation {
                subscription,
                kind,
                view,
                id: id.to_string(),
            });
        }
    }
    Err(unknown())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-1111-2222-3333-444444444444";

    #[test]
    fn parses_instances_databases_and_operations() {
        let r = parse(&format!("/subscriptions/{SUB}/resourcegroups/RG/providers/microsoft.sql/MANAGEDINSTANCES/mi-1/Databases/my%20db")).unwrap();
        match r {
            Route::Database(id, db) => {
                assert_eq!(id.scope.resource_group, "RG");
                assert_eq!(id.name, "mi-1");
                assert_eq!(db, "my db");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&format!(
                "/subscriptions/{SUB}/providers/Microsoft.Sql/managedInstances"
            ))
            .unwrap(),
            Route::Instances { scope: None, .. }
        ));
        assert!(matches!(
            parse(&format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Sql/managedInstances"
            ))
            .unwrap(),
            Route::Instances { scope: Some(_), .. }
        ));
        let r = parse(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Sql/locations/Japan%20East/managedInstanceAzureAsyncOperation/abc")).unwrap();
        assert_eq!(
            r,
            Route::Operation {
                subscription: SUB.into(),
                kind: OperationKind::ManagedInstance,
                view: OperationView::Status,
                id: "abc".into()
            }
        );
        let r = parse(&format!("/subscriptions/{SUB}/providers/Microsoft.Sql/locations/eastus/instanceFailoverGroupOperationResults/x")).unwrap();
        assert!(matches!(
            r,
            Route::Operation {
                kind: OperationKind::InstanceFailoverGroup,
                view: OperationView::Result,
                ..
            }
        ));
    }

    #[test]
    fn parses_failover_group_paths() {
        let r = parse(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Sql/locations/Japan%20East/instanceFailoverGroups/fg-1")).unwrap();
        match r {
            Route::FailoverGroup { location, name, .. } => {
                assert_eq!((location.as_str(), name.as_str()), ("Japan East", "fg-1"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Sql/locations/eastus/INSTANCEFAILOVERGROUPS")).unwrap(),
            Route::FailoverGroups { .. }
        ));
        assert_eq!(
            parse(&format!("/subscriptions/{SUB}/providers/Microsoft.Sql/locations/eastus/instanceFailoverGroups/x")).unwrap_err().code,
            "InvalidResourceType"
        );
    }

    #[test]
    fn errors_for_unknown_and_malformed_paths() {
        let code = |p: &str| parse(p).unwrap_err().code;
        assert_eq!(code("/"), "InvalidResourceType");
        assert_eq!(code("/foo/bar/baz/qux"), "InvalidResourceType");
        assert_eq!(
            code("/subscriptions/nope/providers/Microsoft.Sql/managedInstances"),
            "InvalidSubscriptionId"
        );
        assert_eq!(
            code(&format!(
                "/subscriptions/{SUB}/resourceGroups/bad./providers/Microsoft.Sql/managedInstances"
            )),
            "ResourceGroupNameInvalid"
        );
        assert_eq!(code(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/Bad_Name")), "InvalidServerName");
        assert_eq!(code(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/a%00b")), "InvalidIdentifier");
        assert_eq!(
            code(&format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Sql/servers/x"
            )),
            "InvalidResourceType"
        );
        assert_eq!(
            code(&format!(
                "/subscriptions/{SUB}/providers/Microsoft.Sql/managedInstances/x"
            )),
            "InvalidResourceType"
        );
    }
}
