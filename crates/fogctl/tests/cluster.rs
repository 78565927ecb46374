//! fogctl against several fogd nodes on one etcd: it uses the first endpoint that answers
//! (`--endpoint` repeated, or `endpoints` in the client config), and `fogctl cluster status`
//! shows the nodes, their leases, the owners and the etcd members' health.

mod common;
use common::*;
use fog_store::testing::EtcdCluster;

#[test]
fn fogctl_uses_the_first_endpoint_that_answers_and_shows_the_cluster() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = runtime.block_on(EtcdCluster::start(1)).expect("etcd");
    let shared = tempfile::tempdir().expect("tempdir");
    let shared_dir = shared.path().join("cluster");
    let (store, dir) = (etcd.store_url(), shared_dir.display().to_string());
    let node = |name: &'static str| {
        Fogd::start(&[
            ("FOGD_STORE", store.as_str()),
            ("FOGD_CLUSTER_DIR", dir.as_str()),
            ("FOGD_NODE", name),
            ("FOGD_LEASE_TTL", "3s"),
        ])
    };
    let n1 = node("n1");
    let n2 = node("n2");
    let url2 = n2.file("api-url");
    // A port nobody listens on comes first: fogctl moves on to node 2.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("https://{}", l.local_addr().expect("addr"))
    };
    let status = n1
        .fogctl(&[
            "--endpoint",
            &dead,
            "--endpoint",
            &url2,
            "cluster",
            "status",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(status["answeredBy"], url2.as_str(), "{status:#}");
    assert_eq!(status["node"], "n2", "{status:#}");
    let names: Vec<&str> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["n1", "n2"], "{status:#}");
    assert!(status["nodes"][0]["lease"]
        .as_str()
        .is_some_and(|l| !l.is_empty()));
    let owners = status["owners"].as_array().expect("owners");
    assert!(
        owners.iter().any(|o| o["key"] == "owners/monitor"),
        "{status:#}"
    );
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{status:#}");
    assert_eq!(members[0]["healthy"], true, "{status:#}");
    assert_eq!(members[0]["leader"], true, "{status:#}");

    // The same from a client config listing every node, and an ordinary command.
    let config = shared.path().join("client.toml");
    std::fs::write(
        &config,
        format!(
            "endpoints = [\"{dead}\", \"{url2}\"]\nca_file = \"{dir}/ca.pem\"\ntoken_file = \"{dir}/admin-token\"\nsubscription_id = \"{}\"\n",
            std::fs::read_to_string(shared_dir.join("subscription-id")).expect("sub").trim()
        ),
    )
    .expect("write config");
    let cfg = config.display().to_string();
    let table = n1.fogctl(&["--config", &cfg, "cluster", "status"]).ok();
    assert!(
        table.stdout.contains("Nodes") && table.stdout.contains("n1"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("owners/monitor"), "{}", table.stdout);
    let list = n1
        .fogctl(&["--config", &cfg, "sql", "mi", "list"])
        .ok()
        .json();
    assert_eq!(list, serde_json::json!([]));

    // Every endpoint dead: an error naming the last one tried.
    let out = n1.fogctl(&["--endpoint", &dead, "cluster", "status"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("could not reach fogd"),
        "{}",
        out.stderr
    );
    drop(n1);
    drop(n2);
}
