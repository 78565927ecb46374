//! Every failover-group validation rule that needs stored state: exact code, status and
//! message from the catalogue, and nothing changed afterwards.

mod common;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn instance(f: &Fogd, rg: &str, name: &str, body: Value) -> Value {
    let path = format!("{}?{API}", f.mi_path(rg, name));
    let r = f.send(Method::PUT, &path, Some(&body.to_string())).await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded", "{name}");
    f.send(Method::GET, &path, None).await.body
}

fn mi(location: &str, props: Value) -> Value {
    let mut p = json!({"administratorLogin": "fogadmin", "administratorLoginPassword": PASSWORD, "storageSizeInGB": 64});
    if let Value::Object(m) = props {
        for (k, v) in m {
            p[k] = v;
        }
    }
    json!({"location": location, "sku": {"name": "GP_Gen5"}, "properties": p})
}

fn body(primary: &Value, partner: &Value, region: &str) -> String {
    Fogd::group_body(primary, partner, region, json!({}))
}

#[tokio::test]
async fn state_dependent_rules() {
    let f = Fogd::start().await;
    let a = instance(&f, "rg", "a", mi("eastus", json!({}))).await;
    let zone = json!({"dnsZonePartner": a["id"]});
    let with_zone = |extra: Value| {
        let mut z = zone.clone();
        if let Value::Object(m) = extra {
            for (k, v) in m {
                z[k] = v;
            }
        }
        z
    };
    let b = instance(&f, "rg", "b", mi("westus", with_zone(json!({})))).await;
    let same_region = instance(&f, "rg", "c-east", mi("eastus", with_zone(json!({})))).await;
    let other_zone = instance(&f, "rg", "d-zone", mi("westus", json!({}))).await;
    let bigger = instance(
        &f,
        "rg",
        "e-size",
        mi("westus", with_zone(json!({"storageSizeInGB": 128}))),
    )
    .await;
    let mut bc_body = mi("westus", with_zone(json!({})));
    bc_body["sku"] = json!({"name": "BC_Gen5"});
    let bc = instance(&f, "rg", "f-tier", bc_body).await;
    let newer = instance(
        &f,
        "rg",
        "g-format",
        mi(
            "westus",
            with_zone(json!({"databaseFormat": "AlwaysUpToDate"})),
        ),
    )
    .await;
    let busy_db = instance(&f, "rg", "h-notempty", mi("westus", with_zone(json!({})))).await;
    let central = instance(&f, "rg", "i-central", mi("centralus", with_zone(json!({})))).await;
    let r = f
        .send(
            Method::PUT,
            &format!("{}/databases/x?{API}", f.mi_path("rg", "h-notempty")),
            Some("{}"),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let missing = json!({"id": format!("{}/managedInstances/nope", f.rg_path("rg"))});

    let at = |rg: &str, loc: &str, name: &str| {
        format!(
            "{}/locations/{loc}/instanceFailoverGroups/{name}?{API}",
            f.rg_path(rg)
        )
    };
    let cases: Vec<(String, String, u16, &str, &str)> = vec![
        (at("rg", "eastus", "fg"), body(&missing, &b, "westus"), 400, "ServerNotFound", "The requested server was not found."),
        (at("rg", "eastus", "fg"), body(&a, &missing, "westus"), 400, "ServerNotFound", "The requested server was not found."),
        (at("rg", "westus", "fg"), body(&a, &b, "westus"), 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalidPrimary",
            "The given primary field in create or update instance failover group request body is empty or invalid."),
        (at("other-rg", "eastus", "fg"), body(&a, &b, "westus"), 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalidPrimary",
            "The given primary field in create or update instance failover group request body is empty or invalid."),
        (at("rg", "eastus", "fg"), body(&a, &b, "centralus"), 400, "FailoverGroupRegionMismatch",
            "Partner region specified in Failover Group need to match the region of the partner managed instance indicated."),
        (at("rg", "eastus", "fg"), body(&a, &same_region, "eastus"), 400, "InvalidFailoverGroupRegion",
            "Servers specified in an Instance Failover Group need to reside in different regions to provide isolation."),
        (at("rg", "eastus", "fg"), body(&a, &bc, "westus"), 400, "ServerEditionMismatch",
            "Edition must be the same as the primary server when creating a replica server."),
        (at("rg", "eastus", "fg"), body(&a, &bigger, "westus"), 400, "GeoDrInstanceSizeMismatch",
            "Primary managed instance and partner managed instance do not have the same storage size."),
        (at("rg", "eastus", "fg"), body(&a, &other_zone, "westus"), 400, "DnsZoneMismatch",
            "The DNSZone on the partner server is different from the DNSZone on the source server. This breaks InstanceFailoverGroup functionality."),
        (at("rg", "eastus", "fg"), body(&a, &newer, "westus"), 400, "ManagedInstanceEstablishingFailoverGroupGeoPrimaryWithNewerVersionEditionThanSecondary",
            "Failover group cannot be created because database format of the primary instance is not compatible with the database format of the secondary instance. See https://go.microsoft.com/fwlink/?linkid=2251601 for more details."),
        (at("rg", "eastus", "fg"), body(&a, &busy_db, "westus"), 400, "GeoDrSecondaryInstanceNotEmpty",
            "Secondary managed instance has user databases. To create an instance failover group the secondary managed instance needs to be empty."),
        (at("rg", "eastus", "Bad_Name"), body(&a, &b, "westus"), 409, "InvalidFailoverGroupName", "Invalid Instance Failover Group name was supplied."),
        // A DR-only (Standby) secondary must be in its primary's Azure regional pair
        // (East US's is West US, not Central US).
        (at("rg", "eastus", "fg"), Fogd::group_body(&a, &central, "centralus", json!({"secondaryType": "Standby"})), 400, "InvalidTargetSubregion",
            "The target server of a non-readable secondary is not in a DR paired Azure region."),
        (at("rg", "eastus", "fg"), "{not json".into(), 400, "InstanceFailoverGroupCreateOrUpdateRequestInvalid",
            "The create or update instance failover group request body is empty or invalid."),
        (at("rg", "eastus", "fg"), json!({"properties": {"readWriteEndpoint": {"failoverPolicy": "Automatic", "failoverWithDataLossGracePeriodMinutes": 30},
            "partnerRegions": [{"location": "westus"}], "managedInstancePairs": [{"primaryManagedInstanceId": a["id"], "partnerManagedInstanceId": b["id"]}]}}).to_string(),
            400, "InstanceFailoverGroupCreateOrUpdateRequestLessThanMinimumGracePeriodValues",
            "Grace period value for the instance failover group must be greater than or equal to the '60' minutes minimum grace period"),
    ];
    for (path, b, status, code, message) in &cases {
        let r = f.send(Method::PUT, path, Some(b)).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (*status, *code),
            "{path}: {}",
            r.body
        );
        assert_eq!(r.body["error"]["message"], *message, "{code}");
    }
    // Nothing changed: no group exists, no instance is a member.
    let list = f
        .send(
            Method::GET,
            &format!(
                "{}/locations/eastus/instanceFailoverGroups?{API}",
                f.rg_path("rg")
            ),
            None,
        )
        .await;
    assert_eq!(list.body["value"], json!([]));

    // A real group a–b, then the rules about existing groups.
    let ok = f
        .send(
            Method::PUT,
            &at("rg", "eastus", "fg"),
            Some(&body(&a, &b, "westus")),
        )
        .await;
    assert_eq!(
        f.wait_operation(&ok).await["status"],
        "Succeeded",
        "{}",
        f.log()
    );
    let r = f
        .send(
            Method::PUT,
            &at("rg", "eastus", "fg2"),
            Some(&body(&a, &busy_db, "westus")),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "InstanceFailoverGroupAlreadyExists")
    );
    // At the group's address, another pair is a change of a read-only property.
    let r = f
        .send(
            Method::PUT,
            &at("rg", "eastus", "fg"),
            Some(&body(&same_region, &bigger, "westus")),
        )
        .await;
    assert_eq!(
        r.code(),
        "InstanceFailoverGroupCreateOrUpdateRequestReadOnlyPropertyModified"
    );
    // Another pair at another address in the same DNS zone cannot take the name: its DNS
    // record `fg.{zone}` is the group's.
    let elsewhere = instance(
        &f,
        "elsewhere",
        "x-else",
        mi("eastus", with_zone(json!({}))),
    )
    .await;
    let r = f
        .send(
            Method::PUT,
            &format!(
                "{}/locations/eastus/instanceFailoverGroups/fg?{API}",
                f.rg_path("elsewhere")
            ),
            Some(&body(&elsewhere, &b, "westus")),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "InstanceFailoverGroupDnsRecordInUse")
    );
    assert_eq!(
        r.body["error"]["message"],
        "A duplicate DNS record exists for the requested endpoint."
    );
    // Addressed where the group has no member: there is no group there, whatever exists
    // elsewhere — GET and POST 404, DELETE 204 (and the group is untouched).
    for (rg, loc) in [
        ("rg", "centralus"),
        ("elsewhere", "eastus"),
        ("elsewhere", "westus"),
    ] {
        let path = at(rg, loc, "fg");
        let r = f.send(Method::GET, &path, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "ResourceNotFound"),
            "{path}"
        );
        let (base, query) = path.split_once('?').expect("query");
        for action in ["failover", "forceFailoverAllowDataLoss", "events"] {
            let method = if action == "events" {
                Method::GET
            } else {
                Method::POST
            };
            let r = f
                .send(method, &format!("{base}/{action}?{query}"), None)
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
    assert_eq!(
        f.send(Method::GET, &at("rg", "eastus", "fg"), None)
            .await
            .status,
        StatusCode::OK
    );
    let r = f.send(Method::GET, &at("rg", "eastus", "nope"), None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
    // Each version's shape: no `secondaryType` before 2022-08-01-preview.
    let under = |v: &str| at("rg", "eastus", "fg").replace(API, &format!("api-version={v}"));
    for (v, has) in [
        ("2021-11-01", false),
        ("2022-05-01-preview", false),
        ("2022-08-01-preview", true),
        ("2025-01-01", true),
    ] {
        let g = f.send(Method::GET, &under(v), None).await.body;
        assert_eq!(
            g["properties"].get("secondaryType").is_some(),
            has,
            "{v}: {g}"
        );
        let list = f
            .send(
                Method::GET,
                &format!(
                    "{}/locations/westus/instanceFailoverGroups?api-version={v}",
                    f.rg_path("rg")
                ),
                None,
            )
            .await
            .body;
        assert_eq!(
            list["value"][0]["properties"]
                .get("secondaryType")
                .is_some(),
            has,
            "{v}: {list}"
        );
    }
    // An update under a version without `secondaryType` keeps it.
    let r = f
        .send(
            Method::PUT,
            &at("rg", "eastus", "fg"),
            Some(&Fogd::group_body(
                &a,
                &b,
                "westus",
                json!({"secondaryType": "Standby"}),
            )),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let r = f
        .send(
            Method::PUT,
            &under("2021-11-01"),
            Some(&Fogd::group_body(
                &a,
                &b,
                "westus",
                json!({"secondaryType": "Geo"}),
            )),
        )
        .await;
    let done = f.wait_operation(&r).await;
    assert_eq!(done["status"], "Succeeded");
    let result = f
        .send(Method::GET, &r.header("location").expect("Location"), None)
        .await
        .body;
    assert!(
        result["properties"].get("secondaryType").is_none(),
        "{result}"
    );
    assert_eq!(
        f.send(Method::GET, &at("rg", "eastus", "fg"), None)
            .await
            .body["properties"]["secondaryType"],
        "Standby"
    );
    // Modifying the pair is modifying a read-only property.
    let r = f
        .send(
            Method::PUT,
            &at("rg", "eastus", "fg"),
            Some(&body(&a, &bigger, "westus")),
        )
        .await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'managedInstancePairs'")),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn unreachable_primary_is_an_incorrect_networking_configuration() {
    let f = Fogd::start().await;
    let a = instance(&f, "rg", "a", mi("eastus", json!({}))).await;
    let b = instance(
        &f,
        "rg",
        "b",
        mi("westus", json!({"dnsZonePartner": a["id"]})),
    )
    .await;
    // The primary's server stops behind fogd's back and its data is gone (so fogd cannot
    // start it again): replication cannot reach it.
    let pgdata = f.pgdata_of(&a);
    let host = pgdata.parent().expect("instance dir").to_path_buf();
    f.pg_ctl(&a, "stop", "fast");
    std::fs::rename(&host, host.with_extension("lost")).expect("take the host away");
    std::fs::write(&host, "unreachable").expect("placeholder");
    let path = format!(
        "{}/locations/eastus/instanceFailoverGroups/fg?{API}",
        f.rg_path("rg")
    );
    let r = f
        .send(Method::PUT, &path, Some(&body(&a, &b, "westus")))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::BAD_REQUEST,
            "InstanceFailoverGroupIncorrectNetworkingConfiguration"
        )
    );
    assert_eq!(r.body["error"]["message"], "Networking configuration is incorrect. Primary server's replication traffic cannot reach secondary server.");
    assert_eq!(
        f.send(Method::GET, &path, None).await.status,
        StatusCode::NOT_FOUND,
        "nothing changed"
    );
    let b_now = f
        .send(
            Method::GET,
            &format!("{}?{API}", f.mi_path("rg", "b")),
            None,
        )
        .await
        .body;
    assert_eq!(b_now, b, "the partner is untouched");
}
