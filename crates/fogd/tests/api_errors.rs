//! Every bad request gets the ARM envelope with the right code and status — never a panic,
//! a 500 or a hang.

mod common;
use common::*;
use reqwest::{Method, StatusCode};

/// method, path, body, expected status, code and target.
type Case<'a> = (
    Method,
    String,
    Option<String>,
    u16,
    &'a str,
    Option<&'a str>,
);

#[tokio::test]
async fn error_envelopes_codes_and_statuses() {
    let f = Fogd::start().await;
    let mi = f.mi_path("rg", "mi-err");
    f.create_instance("rg", "mi-err", "eastus").await;
    let good = Fogd::instance_body("eastus");
    let huge = format!(
        r#"{{"location":"eastus","tags":{{"x":"{}"}}}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    let sub = f.sub.clone();
    let cases: Vec<Case> = vec![
        // api-version
        (Method::GET, mi.clone(), None, 400, "MissingApiVersionParameter", None),
        // A malformed version; a well-formed one the type is not published in (ARM's code).
        (Method::GET, format!("{mi}?api-version=2019-6-1"), None, 400, "InvalidApiVersionParameter", None),
        (Method::GET, format!("{mi}?api-version=latest"), None, 400, "InvalidApiVersionParameter", None),
        (Method::GET, format!("{mi}?api-version=2019-01-01"), None, 400, "NoRegisteredProviderFound", None),
        (Method::GET, format!("{mi}?api-version=2017-10-01-preview"), None, 400, "NoRegisteredProviderFound", None),
        (Method::GET, format!("{mi}/databases?api-version=2015-05-01-preview"), None, 400, "NoRegisteredProviderFound", None),
        (Method::GET, format!("{}?api-version=2018-06-01-preview", f.ifog_path("rg", "eastus", "fg")), None, 400, "NoRegisteredProviderFound", None),
        // Every published version is served (here: nothing there, so 404).
        (Method::GET, format!("{}?api-version=2022-08-01-preview", f.mi_path("rg", "nope")), None, 404, "ResourceNotFound", None),
        (Method::GET, format!("{}?api-version=2021-11-01-preview", f.mi_path("rg", "nope")), None, 404, "ResourceNotFound", None),
        (Method::GET, format!("{}?api-version=2023-02-01-preview", f.ifog_path("rg", "eastus", "fg")), None, 404, "ResourceNotFound", None),
        (Method::GET, format!("{}?api-version=2017-10-01-preview", f.ifog_path("rg", "eastus", "fg")), None, 404, "ResourceNotFound", None),
        // routes and methods
        (Method::GET, format!("/nothing/here?{API}"), None, 404, "InvalidResourceType", None),
        (Method::GET, format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Sql/servers/x?{API}"), None, 404, "InvalidResourceType", None),
        (Method::POST, format!("{mi}?{API}"), None, 405, "MethodNotAllowed", None),
        // names
        (Method::GET, format!("/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/x?{API}"), None, 400, "InvalidSubscriptionId", None),
        (Method::GET, format!("/subscriptions/{sub}/resourceGroups/bad%20rg/providers/Microsoft.Sql/managedInstances/x?{API}"), None, 400, "ResourceGroupNameInvalid", None),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "Bad_Name")), Some(good.clone()), 400, "InvalidServerName", Some("managedInstanceName")),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "UpperCase")), Some(good.clone()), 400, "InvalidServerName", Some("managedInstanceName")),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", &"a".repeat(64))), Some(good.clone()), 400, "TokenTooLong", Some("managedInstanceName")),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "a%00b")), Some(good.clone()), 400, "InvalidIdentifier", None),
        // bodies
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some("{not json".into()), 400, "InvalidRequestContent", None),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some("".into()), 400, "InvalidRequestContent", None),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(r#"{"location":"eastus","properties":{"vCores":"four"}}"#.into()), 400, "InvalidRequestContent", Some("properties.vCores")),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(r#"{"location":5}"#.into()), 400, "InvalidRequestContent", Some("location")),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(r#"{"properties":{}}"#.into()), 400, "LocationRequired", None),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(r#"{"location":"eastus","properties":{"administratorLoginPassword":"S0me-Str0ng-Pass!"}}"#.into()), 400, "InvalidRequestContent", Some("properties.administratorLogin")),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(r#"{"location":"eastus","sku":{"name":"Premium"},"properties":{"administratorLogin":"a","administratorLoginPassword":"S0me-Str0ng-Pass!"}}"#.into()), 400, "InvalidSku", Some("sku.name")),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(r#"{"location":"eastus","properties":{"administratorLogin":"a","administratorLoginPassword":"S0me-Str0ng-Pass!","licenseType":"Free"}}"#.into()), 400, "InvalidParameterValue", Some("properties.licenseType")),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(r#"{"location":"eastus","properties":{"administratorLogin":"a","administratorLoginPassword":"S0me-Str0ng-Pass!","dnsZonePartner":"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/nope"}}"#.into()), 400, "ServerNotFound", Some("properties.dnsZonePartner")),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(huge), 413, "RequestEntityTooLarge", None),
        // Integers are bounded by their spec format (int32).
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(r#"{"location":"eastus","properties":{"storageSizeInGB":4294967328}}"#.into()), 400, "InvalidRequestContent", Some("properties.storageSizeInGB")),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(r#"{"location":"eastus","sku":{"name":"GP_Gen5","capacity":3000000000}}"#.into()), 400, "InvalidRequestContent", Some("sku.capacity")),
        (Method::PUT, format!("{}?{API}", f.ifog_path("rg", "eastus", "fg")), Some(group_body(r#"{"failoverPolicy":"Automatic","failoverWithDataLossGracePeriodMinutes":3000000000}"#, true, true)), 400, "InvalidRequestContent", Some("properties.readWriteEndpoint.failoverWithDataLossGracePeriodMinutes")),
        // A group body without one of the required lists names it.
        (Method::PUT, format!("{}?{API}", f.ifog_path("rg", "eastus", "fg")), Some(group_body(r#"{"failoverPolicy":"Manual"}"#, false, true)), 400, "InvalidRequestContent", Some("properties.partnerRegions")),
        (Method::PUT, format!("{}?{API}", f.ifog_path("rg", "eastus", "fg")), Some(group_body(r#"{"failoverPolicy":"Manual"}"#, true, false)), 400, "InvalidRequestContent", Some("properties.managedInstancePairs")),
        // A group body cut short is as invalid as an empty one.
        (Method::PUT, format!("{}?{API}", f.ifog_path("rg", "eastus", "fg")), Some("".into()), 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalid", None),
        (Method::PUT, format!("{}?{API}", f.ifog_path("rg", "eastus", "fg")), Some(r#"{"properties":{"readWriteEndpoint":{"failoverPolicy":"Man"#.into()), 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalid", None),
        (Method::PUT, format!("{}?{API}", f.ifog_path("rg", "eastus", "fg")), Some(r#"{"properties":{"partnerRegions":[{"location":"westus"}"#.into()), 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalid", None),
        (Method::PUT, format!("{}?{API}", f.mi_path("rg", "mi-new")), Some(r#"{"location":"eastus","properties":{"vCores":4"#.into()), 400, "InvalidRequestContent", None),
        // existing resource: create-only properties
        (Method::PUT, format!("{mi}?{API}"), Some(Fogd::instance_body("westus")), 400, "InvalidResourceLocation", None),
        (Method::PATCH, format!("{mi}?{API}"), Some(r#"{"properties":{"administratorLogin":"someoneelse"}}"#.into()), 409, "PropertyChangeNotAllowed", Some("properties.administratorLogin")),
        (Method::PATCH, format!("{mi}?{API}"), Some(r#"{"properties":{"storageSizeInGB":100}}"#.into()), 400, "InvalidParameterValue", Some("properties.storageSizeInGB")),
        // missing resources
        (Method::GET, format!("{}?{API}", f.mi_path("rg", "nope")), None, 404, "ResourceNotFound", None),
        (Method::PATCH, format!("{}?{API}", f.mi_path("rg", "nope")), Some("{}".into()), 404, "ResourceNotFound", None),
        (Method::GET, format!("{mi}/databases/nope?{API}"), None, 404, "ResourceNotFound", None),
        (Method::PATCH, format!("{mi}/databases/nope?{API}"), Some(r#"{"tags":{}}"#.into()), 404, "ResourceNotFound", None),
        // A child under a missing parent.
        (Method::GET, format!("{}/databases?{API}", f.mi_path("rg", "nope")), None, 404, "ParentResourceNotFound", None),
        (Method::GET, format!("{}/databases/db1?{API}", f.mi_path("rg", "nope")), None, 404, "ParentResourceNotFound", None),
        (Method::PUT, format!("{}/databases/db1?{API}", f.mi_path("rg", "nope")), Some("{}".into()), 404, "ParentResourceNotFound", None),
        (Method::PATCH, format!("{}/databases/db1?{API}", f.mi_path("rg", "nope")), Some("{}".into()), 404, "ParentResourceNotFound", None),
        // Groups: nothing of that name anywhere.
        (Method::GET, format!("{}?{API}", f.ifog_path("rg", "eastus", "nope")), None, 404, "ResourceNotFound", None),
        (Method::POST, format!("{}/failover?{API}", f.ifog_path("rg", "eastus", "nope")), None, 404, "ResourceNotFound", None),
        (Method::POST, format!("{}/forceFailoverAllowDataLoss?{API}", f.ifog_path("rg", "eastus", "nope")), None, 404, "ResourceNotFound", None),
        (Method::GET, format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Sql/locations/eastus/managedInstanceAzureAsyncOperation/00000000-0000-0000-0000-000000000000"), None, 404, "OperationIdNotFound", None),
        // databases
        (Method::PUT, format!("{mi}/databases/postgres?{API}"), Some("{}".into()), 400, "CannotUseReservedDatabaseName", Some("databaseName")),
        (Method::PUT, format!("{mi}/databases/template1?{API}"), Some("{}".into()), 400, "CannotUseReservedDatabaseName", Some("databaseName")),
        (Method::PUT, format!("{mi}/databases/a%2Fb?{API}"), Some("{}".into()), 400, "InvalidParameterValue", Some("databaseName")),
        (Method::PUT, format!("{mi}/databases/db1?{API}"), Some(r#"{"location":"westus"}"#.into()), 400, "InvalidParameterValue", Some("location")),
        (Method::PUT, format!("{mi}/databases/db1?{API}"), Some(r#"{"properties":{"createMode":"PointInTimeRestore"}}"#.into()), 400, "InvalidParameterValue", Some("properties.createMode")),
    ];
    for (method, path, body, status, code, target) in cases {
        let r = f.send(method.clone(), &path, body.as_deref()).await;
        let what = format!("{method} {}", &path[..path.len().min(150)]);
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.body);
        assert_eq!(r.code(), code, "{what}: {}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert_eq!(
            r.body["error"]["target"].as_str(),
            target,
            "{what}: {}",
            r.body
        );
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json; charset=utf-8"),
            "{what}"
        );
        assert!(
            r.header("retry-after").is_none(),
            "{what}: never Retry-After on an error"
        );
    }

    // Authentication: missing and wrong tokens.
    let path = format!("{mi}?{API}");
    let r = f.send_with(Method::GET, &path, None, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "AuthenticationFailed")
    );
    let r = f.send_with(Method::GET, &path, None, Some("wrong")).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken")
    );

    // Unknown properties are ignored, read-only ones tolerated.
    let body = serde_json::json!({
        "location": "eastus", "somethingNew": {"a": 1}, "id": "ignored",
        "properties": {"administratorLogin": "fogadmin", "administratorLoginPassword": PASSWORD,
                        "provisioningState": "Whatever", "futureProperty": true}
    })
    .to_string();
    let r = f
        .send(
            Method::PUT,
            &format!("{}?{API}", f.mi_path("rg", "mi-tolerant")),
            Some(&body),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");

    // Duplicate create: PUT on an existing instance is an idempotent update (202, same
    // resource), and a concurrent second mutation is refused while the first runs.
    let first = f
        .send(Method::PUT, &format!("{mi}?{API}"), Some(&good))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = f
        .send(
            Method::PATCH,
            &format!("{mi}?{API}"),
            Some(r#"{"tags":{"a":"b"}}"#),
        )
        .await;
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::CONFLICT, "ConflictingManagedInstanceOperation")
    );
    assert_eq!(f.wait_operation(&first).await["status"], "Succeeded");
    let all = f
        .send(
            Method::GET,
            &format!("{}/managedInstances?{API}", f.rg_path("rg")),
            None,
        )
        .await;
    assert_eq!(all.body["value"].as_array().map(Vec::len), Some(2));

    // Deleting what does not exist: 204, no body.
    let r = f
        .send(
            Method::DELETE,
            &format!("{}?{API}", f.mi_path("rg", "never-was")),
            None,
        )
        .await;
    assert_eq!((r.status, r.body.is_null()), (StatusCode::NO_CONTENT, true));
    let r = f
        .send(
            Method::DELETE,
            &format!("{mi}/databases/never-was?{API}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // …under an instance that does not exist either, or a group nowhere to be found.
    for path in [
        format!("{}/databases/never-was?{API}", f.mi_path("rg", "never-was")),
        format!("{}?{API}", f.ifog_path("rg", "eastus", "never-was")),
    ] {
        let r = f.send(Method::DELETE, &path, None).await;
        assert_eq!(
            (r.status, r.body.is_null()),
            (StatusCode::NO_CONTENT, true),
            "{path}"
        );
    }
}

/// A group body with the given read-write endpoint, with or without `partnerRegions` and
/// `managedInstancePairs` (the instances need not exist: body rules come first).
fn group_body(read_write: &str, regions: bool, pairs: bool) -> String {
    let id = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Sql/managedInstances";
    let mut props = vec![format!(r#""readWriteEndpoint":{read_write}"#)];
    if regions {
        props.push(r#""partnerRegions":[{"location":"westus"}]"#.into());
    }
    if pairs {
        props.push(format!(
            r#""managedInstancePairs":[{{"primaryManagedInstanceId":"{id}/a","partnerManagedInstanceId":"{id}/b"}}]"#
        ));
    }
    format!(r#"{{"properties":{{{}}}}}"#, props.join(","))
}

#[tokio::test]
async fn long_running_operation_protocol() {
    let f = Fogd::start().await;
    let path = format!("{}?{API}", f.mi_path("rg-lro", "mi-lro"));
    let r = f
        .send(Method::PUT, &path, Some(&Fogd::instance_body("Japan East")))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.body.is_null(), "202 has an empty body");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    let status_url = r
        .header("azure-asyncoperation")
        .expect("Azure-AsyncOperation");
    let result_url = r.header("location").expect("Location");
    let prefix = format!(
        "{}/subscriptions/{}/resourceGroups/rg-lro/providers/Microsoft.Sql/locations/japaneast/",
        f.url, f.sub
    );
    assert!(
        status_url.starts_with(&format!("{prefix}managedInstanceAzureAsyncOperation/")),
        "{status_url}"
    );
    assert!(
        result_url.starts_with(&format!("{prefix}managedInstanceOperationResults/")),
        "{result_url}"
    );
    assert!(status_url.ends_with("?api-version=2025-01-01"));

    // While running, the result URL answers 202 with Location and Retry-After.
    let early = f.send(Method::GET, &result_url, None).await;
    if early.status == StatusCode::ACCEPTED {
        assert_eq!(early.header("retry-after").as_deref(), Some("1"));
        assert!(early.header("location").is_some());
    }
    let done = f.wait_operation(&r).await;
    assert_eq!(done["status"], "Succeeded");
    assert!(done["startTime"].is_string() && done["endTime"].is_string());
    assert!(done.get("resourceLocation").is_none());
    // Once succeeded, the result URL returns the resource as GET does.
    let result = f.send(Method::GET, &result_url, None).await;
    assert_eq!(result.status, StatusCode::OK);
    assert_eq!(result.body, f.send(Method::GET, &path, None).await.body);
    // The status URL also works without the resource-group segment.
    let op_id = status_url
        .rsplit('/')
        .next()
        .and_then(|s| s.split('?').next())
        .expect("id");
    let short = f.send(Method::GET, &format!("/subscriptions/{}/providers/Microsoft.Sql/locations/japaneast/managedInstanceAzureAsyncOperation/{op_id}", f.sub), None).await;
    assert_eq!(short.body["status"], "Succeeded");

    // A failed operation: the status says Failed with an error; the result URL returns it.
    // (A database create on an instance whose server is stopped behind fogd's back and
    // whose data is gone — so fogd, which restarts stopped servers, cannot start it.)
    let view = f.send(Method::GET, &path, None).await.body;
    let pgdata = f.data.join("instances");
    let uid_dir = std::fs::read_dir(&pgdata)
        .expect("dir")
        .flatten()
        .next()
        .expect("server dir")
        .path();
    let stop = std::process::Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/pg_ctl",
            "stop",
            "-m",
            "fast",
            "-D",
        ])
        .arg(uid_dir.join("pgdata"))
        .output()
        .expect("pg_ctl");
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let lost = uid_dir.with_extension("lost");
    std::fs::rename(&uid_dir, &lost).expect("take the data away");
    std::fs::write(&uid_dir, "gone").expect("placeholder");
    assert!(pg_connect(&view, "fogadmin", PASSWORD, "postgres")
        .await
        .is_err());
    let r = f
        .send(
            Method::PUT,
            &format!("{}/databases/willfail?{API}", f.mi_path("rg-lro", "mi-lro")),
            Some("{}"),
        )
        .await;
    let failed = f.wait_operation(&r).await;
    assert_eq!(failed["status"], "Failed", "{failed}");
    assert_eq!(failed["error"]["code"], "OperationFailed");
    let result = f
        .send(Method::GET, &r.header("location").expect("Location"), None)
        .await;
    assert_eq!(result.code(), "OperationFailed");
    // Compensation left nothing behind: the database does not exist.
    let db = f
        .send(
            Method::GET,
            &format!("{}/databases/willfail?{API}", f.mi_path("rg-lro", "mi-lro")),
            None,
        )
        .await;
    assert_eq!(db.status, StatusCode::NOT_FOUND);
}

/// `/metrics` shows fogd's families from the first scrape of a fresh fogd, with help text
/// and the build it runs.
#[tokio::test]
async fn metrics_families_are_there_from_the_first_scrape() {
    let f = Fogd::start().await;
    let m = f
        .client
        .get(format!("{}/metrics", f.url))
        .bearer_auth(&f.token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "# TYPE fogd_build_info gauge",
        &format!(
            "fogd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "# HELP fogd_server_restarts_total",
        "fogd_server_restarts_total{result=\"ok\"} 0",
        "fogd_api_connections_closed_total{reason=\"idle\"} 0",
        "# TYPE fogd_api_connections gauge",
    ] {
        assert!(m.contains(needle), "metrics lack {needle}:\n{m}");
    }
}
