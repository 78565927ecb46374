//! End to end over HTTPS: managed instances and databases are real PostgreSQL servers.

mod common;
use common::*;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn instance_and_database_lifecycle_on_real_postgres() {
    let f = Fogd::start().await;
    let mi = f.create_instance("rg-one", "mi-one", "Japan East").await;
    let p = &mi["properties"];
    assert_eq!(mi["location"], "japaneast");
    assert_eq!(mi["type"], "Microsoft.Sql/managedInstances");
    assert_eq!(p["provisioningState"], "Succeeded");
    assert_eq!(p["state"], "Ready");
    assert_eq!(p["vCores"], 4);
    assert_eq!(mi["sku"]["capacity"], 4);
    assert_eq!(p["storageSizeInGB"], 64);
    assert_eq!(p["databaseFormat"], "SQLServer2022");
    let zone = p["dnsZone"].as_str().expect("zone").to_string();
    assert_eq!(zone.len(), 13);
    assert_eq!(
        p["fullyQualifiedDomainName"],
        format!("mi-one.{zone}.database.fogd.local")
    );
    assert!(p.get("administratorLoginPassword").is_none());
    assert!(!std::fs::read_to_string(f.data.with_extension("log"))
        .unwrap_or_default()
        .contains(PASSWORD));

    // The administrator connects with a PostgreSQL client and is a superuser.
    let admin = pg_connect(&mi, "fogadmin", PASSWORD, "postgres")
        .await
        .expect("admin connects");
    let row = admin.query_one("SELECT rolsuper, current_setting('wal_level') FROM pg_roles WHERE rolname = current_user", &[]).await.expect("q");
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "replica");
    assert!(pg_connect(&mi, "fogadmin", "wrong-Passw0rd!!!", "postgres")
        .await
        .is_err());

    // Case-insensitive addressing, echo as created.
    let upper = f.send(Method::GET, &format!("/SUBSCRIPTIONS/{}/RESOURCEGROUPS/RG-ONE/providers/microsoft.sql/managedinstances/mi-one?{API}", f.sub.to_uppercase()), None).await;
    assert_eq!(upper.status, StatusCode::OK, "{}", upper.body);
    assert_eq!(upper.body["id"], mi["id"]);

    // A second instance whose DNS zone is copied from the first.
    let partner_body = serde_json::json!({
        "location": "japanwest",
        "properties": {"administratorLogin": "fogadmin", "administratorLoginPassword": PASSWORD,
                        "dnsZonePartner": mi["id"]}
    })
    .to_string();
    let r = f
        .send(
            Method::PUT,
            &format!("{}?{API}", f.mi_path("rg-two", "mi-two")),
            Some(&partner_body),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let two = f
        .send(
            Method::GET,
            &format!("{}?{API}", f.mi_path("rg-two", "mi-two")),
            None,
        )
        .await
        .body;
    assert_eq!(two["properties"]["dnsZone"], zone.as_str());
    assert_ne!(
        two["properties"]["postgresEndpoint"]["port"],
        mi["properties"]["postgresEndpoint"]["port"]
    );

    // Lists: by resource group and by subscription.
    let rg = f
        .send(
            Method::GET,
            &format!("{}/managedInstances?{API}", f.rg_path("rg-one")),
            None,
        )
        .await;
    assert_eq!(rg.body["value"].as_array().map(Vec::len), Some(1));
    let all = f
        .send(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Sql/managedInstances?{API}",
                f.sub
            ),
            None,
        )
        .await;
    assert_eq!(all.body["value"].as_array().map(Vec::len), Some(2));

    // A database is a real PostgreSQL database.
    let db_path = format!("{}/databases/sales?{API}", f.mi_path("rg-one", "mi-one"));
    let r = f
        .send(
            Method::PUT,
            &db_path,
            Some(r#"{"properties":{"collation":"SQL_Latin1_General_CP1_CI_AS"}}"#),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let db = f.send(Method::GET, &db_path, None).await;
    assert_eq!(db.status, StatusCode::OK);
    assert_eq!(db.body["properties"]["status"], "Online");
    assert_eq!(db.body["location"], "japaneast");
    assert!(db.body["properties"]["creationDate"]
        .as_str()
        .is_some_and(|s| s.starts_with("20")));
    let sales = pg_connect(&mi, "fogadmin", PASSWORD, "sales")
        .await
        .expect("connect to the new database");
    sales
        .batch_execute("CREATE TABLE t(x int); INSERT INTO t VALUES (1)")
        .await
        .expect("write");
    // PUT again is an update (of its tags, the only changeable property): an operation
    // that has already succeeded, and the same database.
    let again = f.send(Method::PUT, &db_path, Some("{}")).await;
    assert_eq!(f.wait_operation(&again).await["status"], "Succeeded");
    assert_eq!(
        f.send(Method::GET, &db_path, None).await.body["id"],
        db.body["id"]
    );
    let list = f
        .send(
            Method::GET,
            &format!("{}/databases?{API}", f.mi_path("rg-one", "mi-one")),
            None,
        )
        .await;
    assert_eq!(list.body["value"][0]["name"], "sales");

    // PATCH: tags and password change; the new password works, the old does not.
    let r = f.send(Method::PATCH, &format!("{}?{API}", f.mi_path("rg-one", "mi-one")),
        Some(r#"{"tags":{"env":"test"},"properties":{"administratorLoginPassword":"N3w-Str0ng-Passw0rd!","databaseFormat":"AlwaysUpToDate"}}"#)).await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let patched = f
        .send(
            Method::GET,
            &format!("{}?{API}", f.mi_path("rg-one", "mi-one")),
            None,
        )
        .await
        .body;
    assert_eq!(patched["tags"]["env"], "test");
    assert_eq!(patched["properties"]["databaseFormat"], "AlwaysUpToDate");
    assert!(
        pg_connect(&mi, "fogadmin", "N3w-Str0ng-Passw0rd!", "postgres")
            .await
            .is_ok()
    );
    assert!(pg_connect(&mi, "fogadmin", PASSWORD, "postgres")
        .await
        .is_err());

    // Delete the database: dropped on the server; the result URL answers 204.
    drop(sales);
    let r = f.send(Method::DELETE, &db_path, None).await;
    let location = r.header("location").expect("Location");
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    assert_eq!(
        f.send(Method::GET, &location, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        f.send(Method::GET, &db_path, None).await.status,
        StatusCode::NOT_FOUND
    );
    let names: Vec<String> = admin
        .query("SELECT datname FROM pg_database", &[])
        .await
        .expect("q")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!names.contains(&"sales".to_string()));

    // Delete the instance: the server stops and its data is removed.
    let r = f
        .send(
            Method::DELETE,
            &format!("{}?{API}", f.mi_path("rg-one", "mi-one")),
            None,
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let gone = f
        .send(
            Method::GET,
            &format!("{}?{API}", f.mi_path("rg-one", "mi-one")),
            None,
        )
        .await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
    assert!(
        pg_connect(&mi, "fogadmin", "N3w-Str0ng-Passw0rd!", "postgres")
            .await
            .is_err()
    );
    let dirs = std::fs::read_dir(f.data.join("instances"))
        .expect("dir")
        .count();
    assert_eq!(dirs, 1, "only mi-two's server directory remains");
}
