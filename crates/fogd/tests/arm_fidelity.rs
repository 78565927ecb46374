//! ARM fidelity (issue 16): a failover group's identity is its whole resource id (two
//! groups may share a name in other resource groups and DNS zones), a store written before
//! that is migrated, HTTP/2 clients get every early error, managed databases can be updated.

mod common;
use common::group::{create_group, create_group_at};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The port and recovery state of the server a group listener (`readWrite`/`readOnly`)
/// leads to, once it answers with `want` (within 60 s).
async fn listener_reaches(g: &Value, which: &str, want: &Value) {
    let want = want["properties"]["postgresEndpoint"]["port"].to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(c) = admin_at(g, &["properties", "listeners", which], "app").await {
            if let Ok(r) = c.query_one("SELECT current_setting('port')", &[]).await {
                last = r.get(0);
                if last == want {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{which} listener of {} reaches port {last:?}, not {want}",
        g["id"]
    );
}

fn pair_of(g: &Value) -> (Value, Value) {
    let p = &g["properties"]["managedInstancePairs"][0];
    (
        p["primaryManagedInstanceId"].clone(),
        p["partnerManagedInstanceId"].clone(),
    )
}

/// Two groups named `fog-1` in other resource groups and other DNS zones are two groups,
/// end to end: both are created (an older fogd refused the second with 409
/// `InstanceFailoverGroupDnsRecordInUse`), each is listed and read at both of its
/// addresses, each pair of listeners leads to its own servers, a planned failover of one
/// leaves the other as it was, and deleting one leaves the other. The same name in the same
/// DNS zone is refused with the catalogue's code; a group of that name with a member at
/// the partner's address already has that address. At an address where no group of that
/// name has a member: GET and POST 404, DELETE 204, whatever exists elsewhere.
#[tokio::test]
async fn groups_of_one_name_in_other_resource_groups_and_dns_zones_are_two_groups() {
    let f = Fogd::start().await;
    let one = create_group_at(
        &f,
        "fog-1",
        "one",
        json!({"failoverPolicy": "Manual"}),
        ("rg-one", "eastus"),
        ("rg-one-dr", "westus"),
    )
    .await;
    let two = create_group_at(
        &f,
        "fog-1",
        "two",
        json!({"failoverPolicy": "Manual"}),
        ("rg-two", "eastus"),
        ("rg-two-dr", "westus"),
    )
    .await;
    assert_ne!(
        one.a["properties"]["dnsZone"], two.a["properties"]["dnsZone"],
        "two DNS zones"
    );

    // Each is read at both of its addresses, as itself; listed where it has a member.
    for (g, rg_a, rg_b, parts) in [
        ("one", "rg-one", "rg-one-dr", &one),
        ("two", "rg-two", "rg-two-dr", &two),
    ] {
        let at_a = f.send(Method::GET, &parts.at_a, None).await;
        let at_b = f.send(Method::GET, &parts.at_b, None).await;
        assert_eq!(
            (at_a.status, at_b.status),
            (StatusCode::OK, StatusCode::OK),
            "{g}"
        );
        assert_eq!(
            pair_of(&at_a.body),
            (parts.a["id"].clone(), parts.b["id"].clone())
        );
        assert_eq!(pair_of(&at_b.body), pair_of(&at_a.body));
        assert_eq!(at_a.body["properties"]["replicationRole"], "Primary");
        assert_eq!(at_b.body["properties"]["replicationRole"], "Secondary");
        assert!(at_a.body["id"]
            .as_str()
            .is_some_and(|i| i.contains(&format!("/resourceGroups/{rg_a}/"))));
        assert!(at_b.body["id"]
            .as_str()
            .is_some_and(|i| i.contains(&format!("/resourceGroups/{rg_b}/"))));
        let zone = parts.a["properties"]["dnsZone"].as_str().expect("zone");
        assert!(
            at_a.body["properties"]["listeners"]["readWrite"]["hostName"]
                .as_str()
                .is_some_and(|h| h.starts_with(&format!("fog-1.{zone}."))),
            "{}",
            at_a.body
        );
        for (rg, loc) in [(rg_a, "eastus"), (rg_b, "westus")] {
            let list = f
                .send(
                    Method::GET,
                    &format!(
                        "{}/locations/{loc}/instanceFailoverGroups?{API}",
                        f.rg_path(rg)
                    ),
                    None,
                )
                .await;
            let value = list.body["value"].as_array().expect("value");
            assert_eq!(value.len(), 1, "{rg}/{loc}: {}", list.body);
            assert_eq!(pair_of(&value[0]), pair_of(&at_a.body), "{rg}/{loc}");
        }
    }
    let ports = |p: &common::group::GroupParts| {
        (
            p.view["properties"]["listeners"]["readWrite"]["port"].clone(),
            p.view["properties"]["listeners"]["readOnly"]["port"].clone(),
        )
    };
    assert_ne!(ports(&one), ports(&two), "each group has its own listeners");

    // Each group's listeners lead to its own servers.
    listener_reaches(&one.view, "readWrite", &one.a).await;
    listener_reaches(&one.view, "readOnly", &one.b).await;
    listener_reaches(&two.view, "readWrite", &two.a).await;
    listener_reaches(&two.view, "readOnly", &two.b).await;

    // A planned failover of one leaves the other as it was.
    let before = f.send(Method::GET, &two.at_a, None).await.body;
    let (base, query) = one.at_b.split_once('?').expect("query");
    let r = f
        .send(Method::POST, &format!("{base}/failover?{query}"), None)
        .await;
    assert_eq!(
        f.wait_operation(&r).await["status"],
        "Succeeded",
        "{}",
        f.log()
    );
    let one_b = f.send(Method::GET, &one.at_b, None).await.body;
    assert_eq!(one_b["properties"]["replicationRole"], "Primary");
    assert_eq!(
        f.send(Method::GET, &one.at_a, None).await.body["properties"]["replicationRole"],
        "Secondary"
    );
    let after = f.send(Method::GET, &two.at_a, None).await.body;
    assert_eq!(after["properties"]["replicationRole"], "Primary");
    assert_eq!(after["properties"]["lastFailover"], Value::Null, "{after}");
    assert_eq!(pair_of(&after), pair_of(&before));
    listener_reaches(&one.view, "readWrite", &one.b).await;
    listener_reaches(&two.view, "readWrite", &two.a).await;
    // Each group's history is its own.
    let events = |at: &str| {
        let (base, query) = at.split_once('?').expect("query");
        format!("{base}/events?{query}")
    };
    let one_events = f.send(Method::GET, &events(&one.at_a), None).await.body;
    let two_events = f.send(Method::GET, &events(&two.at_a), None).await.body;
    let kinds = |v: &Value| -> Vec<String> {
        v["value"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(
        kinds(&one_events).iter().any(|k| k == "FailoverFinished"),
        "{one_events}"
    );
    assert!(
        !kinds(&two_events).iter().any(|k| k.starts_with("Failover")),
        "{two_events}"
    );

    // The same name in the same DNS zone is refused with the catalogue's code.
    let c = f
        .create_partner("rg-three", "three-a", "eastus", &one.a)
        .await;
    let d = f
        .create_partner("rg-three-dr", "three-d", "westus", &one.a)
        .await;
    let at_three = format!(
        "{}/locations/eastus/instanceFailoverGroups/fog-1?{API}",
        f.rg_path("rg-three")
    );
    let r = f
        .send(
            Method::PUT,
            &at_three,
            Some(&Fogd::group_body(&c, &d, "westus", json!({}))),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "InstanceFailoverGroupDnsRecordInUse"),
        "{}",
        r.body
    );
    assert_eq!(
        r.body["error"]["message"],
        "A duplicate DNS record exists for the requested endpoint."
    );
    // Another zone, but the partner's address already has a group of that name.
    let e = f.create_instance("rg-four", "four-a", "eastus").await;
    let next_to_two = f.create_partner("rg-two-dr", "four-b", "westus", &e).await;
    let r = f
        .send(
            Method::PUT,
            &format!(
                "{}/locations/eastus/instanceFailoverGroups/fog-1?{API}",
                f.rg_path("rg-four")
            ),
            Some(&Fogd::group_body(&e, &next_to_two, "westus", json!({}))),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "InstanceFailoverGroupAlreadyExists"),
        "{}",
        r.body
    );

    // Where no group of that name has a member: 404 / 204 / 404, both groups untouched.
    for (rg, loc) in [
        ("rg-three", "eastus"),
        ("rg-one", "westus"),
        ("rg-two-dr", "eastus"),
    ] {
        let path = format!(
            "{}/locations/{loc}/instanceFailoverGroups/fog-1?{API}",
            f.rg_path(rg)
        );
        let r = f.send(Method::GET, &path, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "ResourceNotFound"),
            "{path}"
        );
        let (base, query) = path.split_once('?').expect("query");
        for action in ["failover", "forceFailoverAllowDataLoss"] {
            let r = f
                .send(Method::POST, &format!("{base}/{action}?{query}"), None)
                .await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::NOT_FOUND, "ResourceNotFound"),
                "{action} at {path}"
            );
        }
        let r = f.send(Method::DELETE, &path, None).await;
        assert_eq!(
            (r.status, r.body.is_null()),
            (StatusCode::NO_CONTENT, true),
            "{path}"
        );
    }

    // Deleting one leaves the other.
    let r = f.send(Method::DELETE, &two.at_a, None).await;
    assert_eq!(
        f.wait_operation(&r).await["status"],
        "Succeeded",
        "{}",
        f.log()
    );
    for at in [&two.at_a, &two.at_b] {
        assert_eq!(
            f.send(Method::GET, at, None).await.status,
            StatusCode::NOT_FOUND,
            "{at}"
        );
    }
    for at in [&one.at_a, &one.at_b] {
        assert_eq!(
            f.send(Method::GET, at, None).await.status,
            StatusCode::OK,
            "{at}"
        );
    }
    listener_reaches(&one.view, "readWrite", &one.b).await;
    listener_reaches(&one.view, "readOnly", &one.a).await;
    // The DNS record is free again: the same pair is refused only because the former
    // secondary keeps its copies of the databases (not because of the name).
    let r = f
        .send(
            Method::PUT,
            &two.at_a,
            Some(&Fogd::group_body(&two.a, &two.b, "westus", json!({}))),
        )
        .await;
    assert_eq!(r.code(), "GeoDrSecondaryInstanceNotEmpty", "{}", r.body);
}

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
        validate, GroupOp, GROUP_EXTENSIONS, INSTANCE_FAILOVER_GROUP, INSTANCE_FAILOVER_GROUP_LIST,
    };
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
        validate(
            &INSTANCE_FAILOVER_GROUP,
            v,
            "",
            version,
            GROUP_EXTENSIONS,
            &mut e,
        );
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
        validate(
            &INSTANCE_FAILOVER_GROUP_LIST,
            &v,
            "",
            version,
            GROUP_EXTENSIONS,
            &mut e,
        );
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

/// Rewrites a stopped fogd's store into the layout a fogd before group uids wrote: each
/// group under `failover-groups/{name}` (format 1, no uid), its members naming it (format
/// 1), its observation, events and listener ports keyed by name, no index keys.
async fn downgrade_to_name_keys(st: &dyn fog_store::Store) {
    use fog_store::{Precondition, Write};
    let envelope = |format: u32, data: &Value| {
        serde_json::to_vec(&json!({ "format": format, "data": data })).expect("json")
    };
    let data =
        |v: &[u8]| -> Value { serde_json::from_slice::<Value>(v).expect("json")["data"].clone() };
    let mut writes = Vec::new();
    for prefix in ["failover-group-at/", "failover-group-dns/"] {
        for k in st.range(prefix).await.expect("index") {
            writes.push(Write::delete(k.key, Precondition::Any));
        }
    }
    for r in st.range("failover-groups/").await.expect("groups") {
        let mut g = data(&r.value);
        let uid = g["uid"].as_str().expect("uid").to_string();
        let name = g["name"].as_str().expect("name").to_string();
        let zone = g["dns_zone"].as_str().expect("zone").to_string();
        g.as_object_mut().expect("object").remove("uid");
        writes.push(Write::delete(r.key.clone(), Precondition::Any));
        writes.push(Write::put(
            format!("failover-groups/{name}"),
            envelope(1, &g),
            Precondition::Any,
        ));
        for i in st.range("instances/").await.expect("instances") {
            let mut rec = data(&i.value);
            if rec["failover_group"] == uid.as_str() {
                rec["failover_group"] = name.clone().into();
                writes.push(Write::put(i.key, envelope(1, &rec), Precondition::Any));
            }
        }
        let observed = format!("observed/failover-groups/{uid}");
        if let Some(o) = st.get(&observed).await.expect("observed") {
            writes.push(Write::delete(o.key, Precondition::Any));
            writes.push(Write::put(
                format!("observed/failover-groups/{name}"),
                o.value,
                Precondition::Any,
            ));
        }
        for e in st.range(&format!("events/{uid}/")).await.expect("events") {
            let suffix = e.key.rsplit('/').next().expect("suffix").to_string();
            writes.push(Write::delete(e.key, Precondition::Any));
            writes.push(Write::put(
                format!("events/{name}/{suffix}"),
                e.value,
                Precondition::Any,
            ));
        }
        if let Some(p) = st
            .get(&format!("listener-ports/{zone}/{name}"))
            .await
            .expect("ports")
        {
            writes.push(Write::delete(p.key, Precondition::Any));
            writes.push(Write::put(
                format!("listener-ports/{name}"),
                p.value,
                Precondition::Any,
            ));
        }
    }
    st.commit(writes).await.expect("downgrade");
}

/// A store an older fogd wrote (groups keyed by name; members, observation, events and
/// listener ports referring to them by name) keeps working: at start-up fogd moves every
/// group to its uid, an update the older fogd accepted and did not finish (its payload names
/// the group only) resumes and finishes, the group answers at both addresses with its
/// history, its listeners lead to its primary on the same ports, and it fails over.
#[tokio::test]
async fn a_store_written_before_group_uids_keeps_working() {
    let mut f = Fogd::start().await;
    let g = create_group(&f, "fog-old", json!({"failoverPolicy": "Manual"})).await;
    listener_reaches(&g.view, "readWrite", &g.a).await;
    assert!(f.terminate().is_some_and(|s| s.success()), "{}", f.log());

    let op_id = "00000000-0000-0000-0000-0000000f0001";
    {
        use fog_store::{Precondition, Store, Write};
        let store = fog_store::SqliteStore::open(&f.data.join("store.sqlite")).expect("store");
        downgrade_to_name_keys(&store).await;
        // The older fogd had accepted an update (read-only endpoint Enabled) and stopped
        // before its step ran.
        let old = store
            .get("failover-groups/fog-old")
            .await
            .expect("read")
            .expect("the group under its name");
        let mut rec: Value = serde_json::from_slice(&old.value).expect("json");
        rec["data"]["active_operation"] = op_id.into();
        let mut policies = rec["data"]["policies"].clone();
        policies["read_only"] = "Enabled".into();
        let op = json!({"format": 1, "data": {
            "id": op_id, "kind": "InstanceFailoverGroup",
            "scope": {"subscription": f.sub, "resource_group": "rg-east"}, "location": "eastus",
            "api_version": "2025-01-01",
            "action": {"type": "UpdateFailoverGroup", "name": "fog-old", "policies": policies},
            "status": "InProgress", "step": "update_group.finish", "percent_complete": 0,
            "start_time": "2026-01-01T00:00:00Z", "end_time": null, "error": null, "attempts": 1
        }});
        store
            .commit(vec![
                Write::put(
                    old.key,
                    serde_json::to_vec(&rec).expect("json"),
                    Precondition::Any,
                ),
                Write::put(
                    format!("operations/{op_id}"),
                    serde_json::to_vec(&op).expect("json"),
                    Precondition::Absent,
                ),
            ])
            .await
            .expect("old operation");
    }

    f.launch(&[]).await;
    assert!(
        f.log().contains("failover groups moved to their uids"),
        "{}",
        f.log()
    );
    let status = format!(
        "/subscriptions/{}/providers/Microsoft.Sql/locations/eastus/instanceFailoverGroupAzureAsyncOperation/{op_id}?{API}",
        f.sub
    );
    let done = f.poll(&status, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    let at_a = f.send(Method::GET, &g.at_a, None).await;
    assert_eq!(at_a.status, StatusCode::OK, "{}", at_a.body);
    assert_eq!(
        at_a.body["properties"]["readOnlyEndpoint"]["failoverPolicy"],
        "Enabled"
    );
    assert_eq!(
        at_a.body["properties"]["listeners"],
        g.view["properties"]["listeners"]
    );
    assert_eq!(
        f.send(Method::GET, &g.at_b, None).await.body["properties"]["replicationRole"],
        "Secondary"
    );
    let (base, query) = g.at_a.split_once('?').expect("query");
    let events = f
        .send(Method::GET, &format!("{base}/events?{query}"), None)
        .await
        .body;
    assert!(
        events["value"]
            .as_array()
            .is_some_and(|v| v.iter().any(|e| e["type"] == "GroupCreated")),
        "the history moved with the group: {events}"
    );
    listener_reaches(&g.view, "readWrite", &g.a).await;
    let (base, query) = g.at_b.split_once('?').expect("query");
    let r = f
        .send(Method::POST, &format!("{base}/failover?{query}"), None)
        .await;
    assert_eq!(
        f.wait_operation(&r).await["status"],
        "Succeeded",
        "{}",
        f.log()
    );
    listener_reaches(&g.view, "readWrite", &g.b).await;
}

/// The instance and database tables catch what they should: a property a version does not
/// define (`createTime` and `databaseFormat` before 2023-05-01-preview and in the stable
/// 2023-08-01, `isLedgerOn` before 2022-08-01-preview), an integer beyond int32, a date
/// that is not one, a tag that is not a string, a missing `location`, an unknown property;
/// fogd's `postgresEndpoint` is allowed on an instance only.
#[test]
fn the_instance_and_database_tables_catch_what_they_should() {
    use common::contract::{
        check, validate, INSTANCE_EXTENSIONS, MANAGED_DATABASE, MANAGED_INSTANCE,
        MANAGED_INSTANCE_LIST,
    };
    let mi = |extra: Value| {
        let mut v = json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi",
            "name": "mi", "type": "Microsoft.Sql/managedInstances", "location": "eastus",
            "tags": {"env": "test"},
            "sku": {"name": "GP_Gen5", "tier": "GeneralPurpose", "family": "Gen5", "capacity": 4},
            "properties": {"provisioningState": "Succeeded", "state": "Ready", "administratorLogin": "fogadmin",
                "vCores": 4, "storageSizeInGB": 64, "dnsZone": "z", "fullyQualifiedDomainName": "mi.z.x",
                "licenseType": "LicenseIncluded", "collation": "SQL_Latin1_General_CP1_CI_AS",
                "postgresEndpoint": {"host": "127.0.0.1", "port": 5432}}
        });
        if let Value::Object(m) = extra {
            for (k, x) in m {
                v["properties"][k] = x;
            }
        }
        v
    };
    let errors = |ty, v: &Value, version: &str, ext: &[&str]| {
        let mut e = Vec::new();
        validate(ty, v, "", version, ext, &mut e);
        e
    };
    let ext = INSTANCE_EXTENSIONS;
    let new = json!({"createTime": "2026-01-01T00:00:00Z", "databaseFormat": "SQLServer2022"});
    assert_eq!(
        errors(&MANAGED_INSTANCE, &mi(json!({})), "2021-11-01", ext),
        Vec::<String>::new()
    );
    for v in [
        "2023-05-01-preview",
        "2023-08-01-preview",
        "2024-11-01-preview",
        "2025-01-01",
    ] {
        assert_eq!(
            errors(&MANAGED_INSTANCE, &mi(new.clone()), v, ext),
            Vec::<String>::new(),
            "{v}"
        );
    }
    for v in [
        "2021-11-01",
        "2022-08-01-preview",
        "2023-02-01-preview",
        "2023-08-01",
    ] {
        assert_eq!(
            errors(&MANAGED_INSTANCE, &mi(new.clone()), v, ext).len(),
            2,
            "{v}"
        );
    }
    assert_eq!(
        errors(
            &MANAGED_INSTANCE,
            &mi(json!({"vCores": 3_000_000_000u64})),
            "2025-01-01",
            ext
        )
        .len(),
        1
    );
    assert_eq!(
        errors(
            &MANAGED_INSTANCE,
            &mi(json!({"createTime": "yesterday"})),
            "2025-01-01",
            ext
        )
        .len(),
        1
    );
    assert_eq!(
        errors(
            &MANAGED_INSTANCE,
            &mi(json!({"licenseType": "Free"})),
            "2025-01-01",
            ext
        )
        .len(),
        1
    );
    assert_eq!(
        errors(
            &MANAGED_INSTANCE,
            &mi(json!({"surprise": 1})),
            "2025-01-01",
            ext
        )
        .len(),
        1
    );
    assert_eq!(
        errors(&MANAGED_INSTANCE, &mi(json!({})), "2025-01-01", &[]).len(),
        1,
        "postgresEndpoint is an extension"
    );
    let mut bad = mi(json!({}));
    bad["tags"]["n"] = 1.into();
    bad.as_object_mut().map(|m| m.remove("location"));
    assert_eq!(errors(&MANAGED_INSTANCE, &bad, "2025-01-01", ext).len(), 2);
    let list = json!({"value": [mi(new.clone())]});
    assert_eq!(
        errors(&MANAGED_INSTANCE_LIST, &list, "2021-11-01", ext).len(),
        2
    );

    let db = |extra: Value| {
        let mut v = json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi/databases/db",
            "name": "db", "type": "Microsoft.Sql/managedInstances/databases", "location": "eastus", "tags": {},
            "properties": {"collation": "c", "status": "Online", "creationDate": "2026-01-01T00:00:00Z",
                "earliestRestorePoint": "2026-01-01T00:00:00Z"}
        });
        if let Value::Object(m) = extra {
            for (k, x) in m {
                v["properties"][k] = x;
            }
        }
        v
    };
    let ledger = json!({"isLedgerOn": false});
    assert!(errors(
        &MANAGED_DATABASE,
        &db(ledger.clone()),
        "2022-08-01-preview",
        &[]
    )
    .is_empty());
    assert_eq!(
        errors(&MANAGED_DATABASE, &db(ledger.clone()), "2021-11-01", &[]).len(),
        1
    );
    assert_eq!(
        errors(
            &MANAGED_DATABASE,
            &db(json!({"isLedgerOn": "no"})),
            "2025-01-01",
            &[]
        )
        .len(),
        1
    );
    assert!(
        errors(
            &MANAGED_DATABASE,
            &db(json!({"status": "Stopping"})),
            "2021-11-01",
            &[]
        )
        .is_empty(),
        "an open enum"
    );
    assert_eq!(
        errors(
            &MANAGED_DATABASE,
            &db(json!({"postgresEndpoint": {}})),
            "2025-01-01",
            &[]
        )
        .len(),
        1
    );

    // `check` finds the operation and its version in the URL.
    let url = "https://x/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi?api-version=2021-11-01";
    check(&Method::GET, url, 200, &mi(json!({})));
    assert!(std::panic::catch_unwind(|| check(&Method::GET, url, 200, &mi(new.clone()))).is_err());
    let result = "https://x/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/locations/eastus/managedDatabaseOperationResults/1?api-version=2021-11-01";
    check(&Method::GET, result, 200, &db(json!({})));
    assert!(
        std::panic::catch_unwind(|| check(&Method::GET, result, 200, &db(ledger.clone()))).is_err()
    );
    let patch = "https://x/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi/databases/db?api-version=2025-01-01";
    check(&Method::PATCH, patch, 202, &Value::Null);
    assert!(std::panic::catch_unwind(|| check(&Method::PATCH, patch, 201, &Value::Null)).is_err());
    // Versions before 2020-02-02-preview are served but not in the table.
    check(
        &Method::GET,
        &url.replace("2021-11-01", "2018-06-01-preview"),
        200,
        &mi(new.clone()),
    );
}

/// Every operation of managed instances and managed databases under 2021-11-01,
/// 2022-08-01-preview, 2024-11-01-preview and 2025-01-01, each response validated against
/// that version's facts (by `Fogd::send`): each version's shape — `createTime` and
/// `databaseFormat` on an instance from 2023-05-01-preview (not in 2021-11-01 nor
/// 2022-08-01-preview), `isLedgerOn` on a database from 2022-08-01-preview — and a request
/// property the version does not define is ignored (`databaseFormat` under 2021-11-01).
#[tokio::test]
async fn instances_and_databases_follow_each_versions_contract() {
    let f = Fogd::start().await;
    for (i, (v, instance_new, ledger)) in [
        ("2021-11-01", false, false),
        ("2022-08-01-preview", false, true),
        ("2024-11-01-preview", true, true),
        ("2025-01-01", true, true),
    ]
    .into_iter()
    .enumerate()
    {
        let api = format!("api-version={v}");
        let rg = format!("rg-v{i}");
        let name = format!("mi-v{i}");
        let mi = format!("{}?{api}", f.mi_path(&rg, &name));
        let mut body: Value = serde_json::from_str(&Fogd::instance_body("eastus")).expect("body");
        body["properties"]["databaseFormat"] = "AlwaysUpToDate".into();
        body["tags"] = json!({"v": v});
        let r = f.send(Method::PUT, &mi, Some(&body.to_string())).await;
        assert_eq!(f.wait_operation(&r).await["status"], "Succeeded", "{v}");
        let result = f
            .send(Method::GET, &r.header("location").expect("Location"), None)
            .await;
        assert_eq!(result.status, StatusCode::OK, "{v}");
        let got = f.send(Method::GET, &mi, None).await.body;
        assert_eq!(
            got["properties"].get("createTime").is_some(),
            instance_new,
            "{v}: {got}"
        );
        let format = got["properties"].get("databaseFormat").cloned();
        // Under a version without `databaseFormat` it was not read: the default.
        let latest = f
            .send(
                Method::GET,
                &format!("{}?{API}", f.mi_path(&rg, &name)),
                None,
            )
            .await
            .body;
        let expected = if instance_new {
            "AlwaysUpToDate"
        } else {
            "SQLServer2022"
        };
        assert_eq!(latest["properties"]["databaseFormat"], expected, "{v}");
        assert_eq!(format.is_some(), instance_new, "{v}");
        for list in [
            format!("{}/managedInstances?{api}", f.rg_path(&rg)),
            format!(
                "/subscriptions/{}/providers/Microsoft.Sql/managedInstances?{api}",
                f.sub
            ),
        ] {
            let l = f.send(Method::GET, &list, None).await;
            assert_eq!(l.status, StatusCode::OK, "{list}");
            assert!(
                l.body["value"].as_array().is_some_and(|a| !a.is_empty()),
                "{list}"
            );
        }
        let r = f
            .send(Method::PATCH, &mi, Some(r#"{"tags":{"v":"patched"}}"#))
            .await;
        assert_eq!(f.wait_operation(&r).await["status"], "Succeeded", "{v}");
        let result = f
            .send(Method::GET, &r.header("location").expect("Location"), None)
            .await;
        assert_eq!(result.body["tags"], json!({"v": "patched"}), "{v}");

        // Databases: create, get, list, update, delete.
        let db = format!("{}/databases/app?{api}", f.mi_path(&rg, &name));
        let r = f.send(Method::PUT, &db, Some("{}")).await;
        assert_eq!(f.wait_operation(&r).await["status"], "Succeeded", "{v}");
        let result = f
            .send(Method::GET, &r.header("location").expect("Location"), None)
            .await;
        assert_eq!(result.status, StatusCode::OK, "{v}");
        let got = f.send(Method::GET, &db, None).await.body;
        assert_eq!(
            got["properties"].get("isLedgerOn").is_some(),
            ledger,
            "{v}: {got}"
        );
        let list = f
            .send(
                Method::GET,
                &format!("{}/databases?{api}", f.mi_path(&rg, &name)),
                None,
            )
            .await;
        assert_eq!(list.body["value"].as_array().map(Vec::len), Some(1), "{v}");
        let r = f
            .send(Method::PATCH, &db, Some(r#"{"tags":{"t":"1"}}"#))
            .await;
        assert_eq!(f.wait_operation(&r).await["status"], "Succeeded", "{v}");
        let r = f.send(Method::DELETE, &db, None).await;
        assert_eq!(f.wait_operation(&r).await["status"], "Succeeded", "{v}");
        let result = f
            .send(Method::GET, &r.header("location").expect("Location"), None)
            .await;
        assert_eq!(result.status, StatusCode::NO_CONTENT, "{v}");
        assert_eq!(
            f.send(Method::DELETE, &db, None).await.status,
            StatusCode::NO_CONTENT
        );

        let r = f.send(Method::DELETE, &mi, None).await;
        assert_eq!(f.wait_operation(&r).await["status"], "Succeeded", "{v}");
        let result = f
            .send(Method::GET, &r.header("location").expect("Location"), None)
            .await;
        assert_eq!(result.status, StatusCode::NO_CONTENT, "{v}");
        assert_eq!(
            f.send(Method::GET, &mi, None).await.status,
            StatusCode::NOT_FOUND
        );
    }
}
