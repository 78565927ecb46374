//! `fogd serve --store etcd://…`: one fogd keeps its metadata in a real etcd 3.4 (started
//! by the test on free loopback ports), not in DATA_DIR/store.sqlite, and finds it there
//! again after a crash.

mod common;
use common::*;
use fog_store::testing::EtcdCluster;
use fog_store::{EtcdStore, Store};
use reqwest::{Method, StatusCode};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fogd_on_etcd_creates_an_instance_and_finds_it_after_a_crash() {
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let url = etcd.store_url();
    let env = [("FOGD_STORE", url.as_str())];
    let mut f = Fogd::start_with(&env).await;
    let view = f.create_instance("rg", "mi-etcd", "eastus").await;
    assert!(
        !f.data.join("store.sqlite").exists(),
        "fogd on etcd made a SQLite store"
    );

    // The records are in etcd, under fogd's prefix, with the credentials sealed.
    let store = etcd
        .connect(EtcdStore::DEFAULT_PREFIX)
        .await
        .expect("connect");
    let instances = store.range("instances/").await.expect("range");
    assert_eq!(instances.len(), 1, "{instances:?}");
    let secrets = store.range("secrets/").await.expect("range");
    assert_eq!(secrets.len(), 1);
    assert!(
        !String::from_utf8_lossy(&secrets[0].value).contains(PASSWORD),
        "a clear-text credential in etcd"
    );

    // A crash and a restart on the same cluster: the instance is still there and usable.
    f.kill9();
    f.launch(&env).await;
    let path = format!("{}?{API}", f.mi_path("rg", "mi-etcd"));
    let got = f.send(Method::GET, &path, None).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(got.body["id"], view["id"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match pg_connect(&got.body, "fogadmin", PASSWORD, "postgres").await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "server unusable after restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    // A store that cannot be reached stops fogd at start-up with an error naming it.
    f.terminate();
    drop(etcd);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fogd"));
    let out = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&f.data)
        .args(["--store", &url])
        .output()
        .expect("run fogd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&url), "{stderr}");
}
