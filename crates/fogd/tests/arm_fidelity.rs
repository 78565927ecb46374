//! ARM fidelity (issue 16): HTTP/2 clients get every early error, managed databases can be
//! updated.

mod common;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// One request with curl over HTTP/2 (ALPN `h2`): exit code, HTTP status and body.
fn curl_h2(f: &Fogd, method: &str, path: &str, token: Option<&str>, body: &str) -> (i32, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--http2",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{http_version}",
    ])
    .arg("--cacert")
    .arg(f.data.join("ca.pem"))
    .args(["-X", method, "-H", "content-type: application/json"])
    .args(["--data-binary", body])
    .arg(format!("{}{}", f.url, path));
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.output().expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Errors found before the body is read (a name too long, an unknown resource type, no
/// api-version, no token) are answered with the ARM envelope over HTTP/2 every time: the
/// body is read first, so the stream is not reset under the response (curl error 92 in
/// about half the tries before).
#[tokio::test]
async fn http2_early_errors_are_answered_every_time() {
    let f = Fogd::start().await;
    let body = json!({"location": "eastus", "properties": {"administratorLogin": "fogadmin",
        "administratorLoginPassword": PASSWORD}})
    .to_string();
    let long = f.mi_path("rg", &"a".repeat(64));
    let cases: Vec<(String, Option<&str>, &str, u32)> = vec![
        (
            format!("{long}?{API}"),
            Some(f.token.as_str()),
            "400 TokenTooLong",
            100,
        ),
        (
            format!("{}/servers/x?{API}", f.rg_path("rg")),
            Some(f.token.as_str()),
            "404 InvalidResourceType",
            25,
        ),
        (
            f.mi_path("rg", "mi"),
            Some(f.token.as_str()),
            "400 MissingApiVersionParameter",
            25,
        ),
        (
            format!("{}?{API}", f.mi_path("rg", "mi")),
            None,
            "401 AuthenticationFailed",
            25,
        ),
    ];
    for (path, token, want, tries) in cases {
        let (status, code) = want.split_once(' ').expect("want");
        let mut failures = Vec::new();
        for _ in 0..tries {
            let (rc, out) = curl_h2(&f, "PUT", &path, token, &body);
            let (text, tail) = out.rsplit_once('\n').unwrap_or(("", &out));
            let ok = rc == 0
                && tail == format!("{status} 2")
                && serde_json::from_str::<serde_json::Value>(text)
                    .is_ok_and(|v| v["error"]["code"] == code);
            if !ok {
                failures.push(format!("curl exit {rc}: {out}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{want}: {} of {tries} tries failed, e.g. {}",
            failures.len(),
            failures[0]
        );
    }
}

/// `PATCH …/databases/{db}` (ManagedDatabases_Update) changes tags; a PUT on an existing
/// database applies its tags instead of ignoring the body; create-only properties stay.
#[tokio::test]
async fn managed_databases_can_be_updated() {
    let f = Fogd::start().await;
    f.create_instance("rg", "mi-db", "eastus").await;
    let path = format!("{}/databases/app?{API}", f.mi_path("rg", "mi-db"));
    let r = f
        .send(Method::PUT, &path, Some(r#"{"tags":{"env":"test"}}"#))
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let created = f.send(Method::GET, &path, None).await.body;
    assert_eq!(created["tags"], json!({"env": "test"}));

    // PATCH: 202, polled like any operation; the result and GET show the new tags.
    let r = f
        .send(
            Method::PATCH,
            &path,
            Some(r#"{"tags":{"env":"prod","team":"data"}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let result = f
        .send(Method::GET, &r.header("location").expect("Location"), None)
        .await;
    assert_eq!(result.status, StatusCode::OK);
    assert_eq!(result.body["tags"], json!({"env": "prod", "team": "data"}));
    let got = f.send(Method::GET, &path, None).await.body;
    assert_eq!(got["tags"], json!({"env": "prod", "team": "data"}));
    assert_eq!(
        got["properties"]["creationDate"],
        created["properties"]["creationDate"]
    );

    // A PATCH without tags leaves them; a PUT replaces them (absent: none).
    let r = f.send(Method::PATCH, &path, Some("{}")).await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    assert_eq!(
        f.send(Method::GET, &path, None).await.body["tags"],
        json!({"env": "prod", "team": "data"})
    );
    let r = f
        .send(Method::PUT, &path, Some(r#"{"tags":{"owner":"me"}}"#))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    assert_eq!(
        f.send(Method::GET, &path, None).await.body["tags"],
        json!({"owner": "me"})
    );
    let r = f.send(Method::PUT, &path, Some("{}")).await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    assert_eq!(
        f.send(Method::GET, &path, None).await.body["tags"],
        json!({})
    );

    // Create-only properties cannot change.
    let r = f
        .send(
            Method::PATCH,
            &path,
            Some(r#"{"properties":{"collation":"Latin1_General_100_CI_AS"}}"#),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "PropertyChangeNotAllowed")
    );
    // The database is still the same real database.
    let inst = f
        .send(
            Method::GET,
            &format!("{}?{API}", f.mi_path("rg", "mi-db")),
            None,
        )
        .await
        .body;
    assert!(pg_connect(&inst, "fogadmin", PASSWORD, "app").await.is_ok());
}

/// The contract table (`common/contract.rs`) catches what it should: a property a version
/// does not define, an integer beyond int32, an unknown property, an enum value in another
/// spelling, a missing required property, a success code the operation does not have.
#[test]
fn the_contract_schema_catches_what_it_should() {
    use common::contract::{
        validate, GroupOp, INSTANCE_FAILOVER_GROUP, INSTANCE_FAILOVER_GROUP_LIST,
    };
    use serde_json::Value;
    fn group(extra: Value) -> Value {
        let mut g = json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/locations/eastus/instanceFailoverGroups/fg",
            "name": "fg", "type": "Microsoft.Sql/locations/instanceFailoverGroups",
            "properties": {"readWriteEndpoint": {"failoverPolicy": "Automatic", "failoverWithDataLossGracePeriodMinutes": 60},
                "readOnlyEndpoint": {"failoverPolicy": "Disabled"}, "replicationRole": "Primary", "replicationState": "CATCH_UP",
                "partnerRegions": [{"location": "westus", "replicationRole": "Secondary"}],
                "managedInstancePairs": [{"primaryManagedInstanceId": "a", "partnerManagedInstanceId": "b"}],
                "listeners": {"readWrite": {"port": 1}}}
        });
        if let Value::Object(m) = extra {
            for (k, v) in m {
                g["properties"][k] = v;
            }
        }
        g
    }
    let errors = |v: &Value, version: &str| {
        let mut e = Vec::new();
        validate(&INSTANCE_FAILOVER_GROUP, v, "", version, &mut e);
        e
    };
    assert_eq!(
        errors(&group(json!({})), "2021-11-01"),
        Vec::<String>::new()
    );
    assert!(errors(&group(json!({"secondaryType": "Geo"})), "2025-01-01").is_empty());
    assert_eq!(
        errors(&group(json!({"secondaryType": "Geo"})), "2021-11-01").len(),
        1
    );
    let big = json!({"readWriteEndpoint": {"failoverPolicy": "Automatic", "failoverWithDataLossGracePeriodMinutes": 3_000_000_000u64}});
    assert_eq!(errors(&group(big), "2025-01-01").len(), 1);
    assert_eq!(
        errors(&group(json!({"surprise": 1})), "2025-01-01").len(),
        1
    );
    assert_eq!(
        errors(&group(json!({"replicationRole": "primary"})), "2025-01-01").len(),
        1
    );
    let mut g = group(json!({}));
    g["properties"]
        .as_object_mut()
        .map(|m| m.remove("partnerRegions"));
    assert_eq!(errors(&g, "2025-01-01").len(), 1);
    // Lists: the same rules for every item, fogd's extensions allowed there too.
    let list = |g: Value, version: &str| {
        let mut e = Vec::new();
        let v = json!({ "value": [g] });
        validate(&INSTANCE_FAILOVER_GROUP_LIST, &v, "", version, &mut e);
        e
    };
    assert_eq!(list(group(json!({})), "2021-11-01"), Vec::<String>::new());
    assert_eq!(
        list(group(json!({"secondaryType": "Geo"})), "2021-11-01").len(),
        1
    );
    assert!(!GroupOp::Failover.success_codes().contains(&201));
    let url = "https://x/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/locations/eastus/instanceFailoverGroups/fg?api-version=2021-11-01";
    let caught = std::panic::catch_unwind(|| {
        common::contract::check(
            &Method::GET,
            url,
            200,
            &group(json!({"secondaryType": "Geo"})),
        )
    });
    assert!(caught.is_err(), "secondaryType under 2021-11-01 is caught");
    common::contract::check(&Method::GET, url, 200, &group(json!({})));
}
