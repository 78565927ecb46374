//! Several fogd nodes on one etcd (issue 12): real etcd, real fogd processes, real
//! PostgreSQL. Any node answers any API call; an operation whose owner dies is finished
//! by another node within the lease TTL and a step; the health monitor moves with its node;
//! a node paused past its lease cannot commit what it was doing.

mod common;
use common::*;
use fog_store::testing::EtcdCluster;
use fog_store::{EtcdStore, Store};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lease TTL the nodes run with, in seconds.
const TTL: u64 = 3;

/// An etcd cluster, a shared cluster directory and the nodes on it.
struct Cluster {
    root: tempfile::TempDir,
    etcd: EtcdCluster,
    store_url: String,
    extra: Vec<(&'static str, &'static str)>,
}

impl Cluster {
    async fn new(members: usize, extra: Vec<(&'static str, &'static str)>) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(
            root.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let etcd = EtcdCluster::start(members).await.expect("etcd");
        let store_url = etcd.store_url();
        Cluster {
            root,
            etcd,
            store_url,
            extra,
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("cluster")
    }

    /// The environment of node `i` (1-based): its name, its listener address
    /// `127.0.0.1{i}`, the store, the TTL and `more`.
    fn env(&self, i: usize, more: &[(&'static str, String)]) -> Vec<(String, String)> {
        let mut e: Vec<(String, String)> = vec![
            ("FOGD_STORE".into(), self.store_url.clone()),
            ("FOGD_NODE".into(), format!("n{i}")),
            ("FOGD_LEASE_TTL".into(), format!("{TTL}s")),
            ("FOGD_LISTENER_HOST".into(), format!("127.0.0.1{i}")),
            ("FOGD_CLUSTER_DIR".into(), self.dir().display().to_string()),
        ];
        e.extend(
            self.extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        e.extend(more.iter().map(|(k, v)| (k.to_string(), v.clone())));
        e
    }

    async fn node(&self, i: usize, more: &[(&'static str, String)]) -> Fogd {
        let env = self.env(i, more);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Fogd::start_node(self.root.path().join(format!("n{i}")), &self.dir(), &env).await
    }

    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    async fn relaunch(&self, f: &mut Fogd, i: usize, more: &[(&'static str, String)]) {
        let env = self.env(i, more);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        f.launch(&env).await;
    }

    async fn store(&self) -> EtcdStore {
        self.etcd
            .connect(EtcdStore::DEFAULT_PREFIX)
            .await
            .expect("connect")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // No PostgreSQL server of this test outlives it (the nodes leave them running).
        if let Ok(entries) = std::fs::read_dir(self.dir().join("instances")) {
            for e in entries.flatten() {
                let pgdata = e.path().join("pgdata");
                if pgdata.join("postmaster.pid").exists() {
                    let _ = std::process::Command::new("runuser")
                        .args(["-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl"])
                        .args(["stop", "-m", "immediate", "-D"])
                        .arg(&pgdata)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
        }
    }
}

/// The node holding `key` (an ownership key), if any.
async fn owner_of(store: &EtcdStore, key: &str) -> Option<String> {
    let rec = store.get(key).await.expect("get")?;
    let v: Value = serde_json::from_slice(&rec.value).expect("json");
    v["data"]["node"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_every_call_from_the_shared_store() {
    let c = Cluster::new(1, vec![]).await;
    let n1 = c.node(1, &[]).await;
    let n2 = c.node(2, &[]).await;
    let n3 = c.node(3, &[]).await;
    // Three node records, each bound to a lease, naming the node's API and listener host.
    let store = c.store().await;
    let nodes = store.range("nodes/").await.expect("nodes");
    let names: Vec<String> = nodes
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.value).expect("json")["data"]["name"].to_string()
        })
        .collect();
    assert_eq!(names, ["\"n1\"", "\"n2\"", "\"n3\""], "{names:?}");
    let n2_rec: Value = serde_json::from_slice(&nodes[1].value).expect("json");
    assert_eq!(n2_rec["data"]["apiUrl"], n2.url.as_str());
    assert_eq!(n2_rec["data"]["listenerHost"], "127.0.0.12");
    // One token and one CA for the cluster.
    assert_eq!(n1.token, n2.token);
    assert_eq!(n1.sub, n3.sub);

    // A PUT on node 1 is seen by a GET on node 2 at once; its polling URL works anywhere.
    let path = format!("{}?{API}", n1.mi_path("rg", "mi-nodes"));
    let put = n1
        .send(Method::PUT, &path, Some(&Fogd::instance_body("eastus")))
        .await;
    assert_eq!(put.status, StatusCode::ACCEPTED, "{}", put.body);
    let got = n2.send(Method::GET, &path, None).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body["name"], "mi-nodes");
    let status_url = put.header("azure-asyncoperation").expect("polling URL");
    let done = n3.poll(&status_url, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "Succeeded", "{done}\n{}", n1.log());
    let on2 = n2.poll(&status_url, Duration::from_secs(5)).await;
    assert_eq!(on2, done);
    // The node that accepted it owned it while it ran, and gave it up when it ended.
    assert!(
        n1.log().contains("this node owns the operation"),
        "{}",
        n1.log()
    );
    let mut owners = store.range("owners/operations/").await.expect("owners");
    for _ in 0..20 {
        if owners.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        owners = store.range("owners/operations/").await.expect("owners");
    }
    assert!(owners.is_empty(), "{owners:?}");
    // Exactly one node runs the monitor.
    assert!(owner_of(&store, "owners/monitor").await.is_some());
}

/// Polls `f`'s group view at `at` until `check` holds.
async fn until(
    f: &Fogd,
    at: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let r = f.send(Method::GET, at, None).await;
        if r.status == StatusCode::OK && check(&r.body) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}\nlast: {:#}\nlog:\n{}",
            r.body,
            f.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A writer through a read-write listener recording acknowledged ids, and a monitor that
/// counts moments with two writable servers.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    writer: tokio::task::JoinHandle<u64>,
    monitor: tokio::task::JoinHandle<(u64, u64)>,
}

#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
impl Workload {
    fn start(rw: (String, u64), servers: [(String, u64); 2]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                let (mut next, mut errors) = (1_000_000i64, 0u64);
                let mut conn: Option<tokio_postgres::Client> = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.as_ref().is_none_or(|c| c.is_closed()) {
                        conn = pg(
                            &rw.0,
                            rw.1,
                            "fogadmin",
                            PASSWORD,
                            "app",
                            Duration::from_secs(2),
                        )
                        .await
                        .ok();
                        if conn.is_none() {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    }
                    let Some(c) = conn.as_ref() else { continue };
                    match c.execute("INSERT INTO t VALUES ($1)", &[&next]).await {
                        Ok(_) => acked.lock().expect("lock").push(next),
                        Err(_) => {
                            errors += 1;
                            conn = None;
                        }
                    }
                    next += 1;
                }
                errors
            })
        };
        let monitor = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut conns: [Option<tokio_postgres::Client>; 2] = [None, None];
                let (mut samples, mut violations) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let mut writable = [false, false];
                    for (i, (h, p)) in servers.iter().enumerate() {
                        if conns[i].as_ref().is_none_or(|c| c.is_closed()) {
                            conns[i] = pg(
                                h,
                                *p,
                                "fogadmin",
                                PASSWORD,
                                "postgres",
                                Duration::from_millis(200),
                            )
                            .await
                            .ok();
                        }
                        if let Some(c) = &conns[i] {
                            match c.query_one("SELECT NOT pg_is_in_recovery()", &[]).await {
                                Ok(r) => writable[i] = r.get(0),
                                Err(_) => conns[i] = None,
                            }
                        }
                    }
                    samples += 1;
                    if writable[0] && writable[1] {
                        violations += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                (samples, violations)
            })
        };
        Workload {
            stop,
            acked,
            writer,
            monitor,
        }
    }

    /// Stops both; returns (acknowledged ids, writer errors, samples, violations).
    async fn finish(self) -> (BTreeSet<i64>, u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.writer.await.expect("writer");
        let (samples, violations) = self.monitor.await.expect("monitor");
        let acked = self.acked.lock().expect("lock").iter().copied().collect();
        (acked, errors, samples, violations)
    }
}

/// Ids in `t` on the server of instance `v`.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
async fn ids(v: &Value) -> BTreeSet<i64> {
    let c = admin_at(v, &["properties", "postgresEndpoint"], "app")
        .await
        .expect("connect");
    c.query("SELECT id FROM t", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// kill -9 of the node that owns a planned failover, at each of its steps in turn: the
/// other node finishes it within the lease TTL and a step; a writer through the surviving
/// node's read-write listener loses no acknowledged write and there are never two
/// writable servers.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_owner_of_a_planned_failover_is_replaced_at_every_step() {
    // Three etcd members, as a real cluster runs.
    let c = Cluster::new(3, vec![]).await;
    let mut n1 = c.node(1, &[]).await;
    let n2 = c.node(2, &[]).await;
    let parts =
        common::group::create_group(&n2, "fog-mn", json!({"failoverPolicy": "Manual"})).await;
    let rw = endpoint(&parts.view, &["properties", "listeners", "readWrite"]);
    assert_eq!(rw.0, "127.0.0.12", "node 2's listener");
    let servers = [
        endpoint(&parts.a, &["properties", "postgresEndpoint"]),
        endpoint(&parts.b, &["properties", "postgresEndpoint"]),
    ];
    let work = Workload::start(rw, servers);
    let planned = fog_model::Action::FailoverGroup {
        name: "fog-mn".into(),
        uid: String::new(),
        planned: true,
        automatic: None,
    };
    let steps = fog_orchestrator::steps::step_names(&planned);
    assert!(steps.len() >= 7, "{steps:?}");
    let mut takeovers = Vec::new();
    for step in steps {
        // Let the secondary stream again after the last switch.
        until(
            &n2,
            &parts.at_a,
            "a streaming secondary",
            Duration::from_secs(60),
            |g| {
                g["properties"]["replicationState"] == "CATCH_UP"
                    && g["properties"]["health"]["secondary"]["status"] == "Healthy"
            },
        )
        .await;
        let view = n2.send(Method::GET, &parts.at_a, None).await.body;
        let target = if view["properties"]["replicationRole"] == "Secondary" {
            &parts.at_a
        } else {
            &parts.at_b
        };
        n1.terminate();
        c.relaunch(&mut n1, 1, &[("FOGD_FAILPOINTS", format!("{step}=crash"))])
            .await;
        let url = target.replace(&format!("?{API}"), &format!("/failover?{API}"));
        let r = n1.send(Method::POST, &url, None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{step}: {}", r.body);
        let status_url = r.header("azure-asyncoperation").expect("status url");
        assert!(
            !n1.wait_exit(Duration::from_secs(60)).await.success(),
            "crashed at {step}"
        );
        let crashed = Instant::now();
        let done = n2.poll(&status_url, Duration::from_secs(90)).await;
        let took = crashed.elapsed();
        assert_eq!(
            done["status"],
            "Succeeded",
            "crash at {step}: {done}\n{}",
            n2.log()
        );
        takeovers.push((step, took));
        // Bound: the lease TTL, the sweep's second, and the failover's remaining steps.
        assert!(
            took < Duration::from_secs(TTL + 10),
            "{step}: finished {took:?} after the crash"
        );
        let now = n2.send(Method::GET, target, None).await.body;
        assert_eq!(
            now["properties"]["replicationRole"], "Primary",
            "{step}: {now:#}"
        );
        n1.kill9();
        c.relaunch(&mut n1, 1, &[]).await;
    }
    assert!(
        n2.log().contains("took the operation over"),
        "node 2 took over\n{}",
        n2.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, errors, samples, violations) = work.finish().await;
    assert!(
        acked.len() > 50,
        "the writer wrote: {} ({errors} errors)",
        acked.len()
    );
    assert!(samples > 100, "{samples}");
    assert_eq!(violations, 0, "two writable servers ({samples} samples)");
    let view = n2.send(Method::GET, &parts.at_a, None).await.body;
    let primary = if view["properties"]["replicationRole"] == "Primary" {
        &parts.a
    } else {
        &parts.b
    };
    let on_primary = ids(primary).await;
    let lost: Vec<_> = acked.difference(&on_primary).take(10).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    for (step, took) in &takeovers {
        eprintln!(
            "takeover at {step}: finished {:.2} s after the crash",
            took.as_secs_f64()
        );
    }
    eprintln!(
        "multi-node checker: {} acknowledged rows, {errors} client errors, {samples} samples",
        acked.len()
    );
}

/// The node running the health monitor dies while a primary is down under the Automatic
/// policy: another node takes the monitor over and the group still fails over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_monitor_node_under_automatic_policy_still_fails_over() {
    let c = Cluster::new(
        3,
        vec![
            ("FOGD_MIN_GRACE_PERIOD_MINUTES", "1"),
            ("FOGD_GRACE_PERIOD_UNIT_MS", "2000"),
            ("FOGD_PROBE_INTERVAL_MS", "200"),
            ("FOGD_PROBE_TIMEOUT_MS", "1000"),
            ("FOGD_REJOIN_RETRY_MS", "300"),
        ],
    )
    .await;
    let mut nodes = [c.node(1, &[]).await, c.node(2, &[]).await];
    let store = c.store().await;
    let parts = common::group::create_group(
        &nodes[0],
        "fog-mon",
        json!({"failoverPolicy": "Automatic", "failoverWithDataLossGracePeriodMinutes": 1}),
    )
    .await;
    until(
        &nodes[1],
        &parts.at_a,
        "healthy",
        Duration::from_secs(60),
        |g| {
            g["properties"]["replicationState"] == "CATCH_UP"
                && g["properties"]["health"]["primary"]["status"] == "Healthy"
        },
    )
    .await;
    let monitor = owner_of(&store, "owners/monitor").await.expect("a monitor");
    let (dead, alive) = if monitor == "n1" { (0, 1) } else { (1, 0) };

    // The primary's host goes away (its directory with it: no restart, no rewind).
    let pgdata_a = nodes[alive].pgdata_of(&parts.a);
    let host_a = pgdata_a.parent().expect("dir").to_path_buf();
    kill9_postmaster(&pgdata_a);
    let killed = Instant::now();
    std::fs::rename(&host_a, host_a.with_extension("lost")).expect("take the host away");
    std::fs::write(&host_a, "unreachable").expect("placeholder");
    // ... and so does the node running the monitor.
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes[dead].kill9();

    let view = until(
        &nodes[alive],
        &parts.at_b,
        "an automatic failover",
        Duration::from_secs(60),
        |g| g["properties"]["replicationRole"] == "Primary",
    )
    .await;
    let took = killed.elapsed();
    let survivor = format!("n{}", alive + 1);
    assert_eq!(
        owner_of(&store, "owners/monitor").await.as_deref(),
        Some(survivor.as_str())
    );
    // Grace period (2 s) + lease TTL + 2 s, plus the countdown starting over on the new
    // monitor (it cannot trust a countdown it did not see) and the failover itself.
    assert!(
        took < Duration::from_secs(2 * 2 + TTL + 2 + 5),
        "failed over {took:?} after the primary died: {view:#}"
    );
    assert!(
        nodes[alive]
            .log()
            .contains("this node now runs the health monitor"),
        "{}",
        nodes[alive].log()
    );
    eprintln!(
        "automatic failover with the monitor's node killed: {:.2} s",
        took.as_secs_f64()
    );
}

/// A node paused (SIGSTOP) for longer than its lease while it owns a failover: another node
/// takes the failover over and finishes it; when the paused node runs again, its late
/// commit is refused by the store and nothing is done twice.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_owner_cannot_commit_after_its_lease_expired() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let c = Cluster::new(1, vec![]).await;
    let n2 = c.node(2, &[]).await;
    let parts =
        common::group::create_group(&n2, "fog-stop", json!({"failoverPolicy": "Manual"})).await;
    until(
        &n2,
        &parts.at_a,
        "a streaming secondary",
        Duration::from_secs(60),
        |g| {
            g["properties"]["replicationState"] == "CATCH_UP"
                && g["properties"]["health"]["secondary"]["status"] == "Healthy"
        },
    )
    .await;
    // Node 1 stalls right after promoting, before committing the step.
    let n1 = c
        .node(
            1,
            &[("FOGD_FAILPOINTS", "failover.promote:after=sleep".into())],
        )
        .await;
    let url = parts
        .at_b
        .replace(&format!("?{API}"), &format!("/failover?{API}"));
    let r = n1.send(Method::POST, &url, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let status_url = r.header("azure-asyncoperation").expect("status url");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !n1
        .log()
        .contains("failpoint failover.promote:after: sleeping")
    {
        assert!(
            Instant::now() < deadline,
            "never reached promote\n{}",
            n1.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = Pid::from_raw(n1.pid().expect("pid") as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    // Node 2 finishes the failover while node 1 is paused.
    let done = n2.poll(&status_url, Duration::from_secs(60)).await;
    let paused_for = Instant::now();
    assert_eq!(done["status"], "Succeeded", "{done}\n{}", n2.log());
    assert!(n2.log().contains("took the operation over"), "{}", n2.log());
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    let _ = paused_for;
    // Node 1 wakes up and tries to commit the step it had finished: refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !n1.log().contains("ownership lost") {
        assert!(Instant::now() < deadline, "no refusal\n{}", n1.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = n1.log();
    assert!(
        log.contains("the store refused this node's late commit of the step"),
        "{log}"
    );
    assert!(!log.contains("operation succeeded"), "{log}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Nothing was done twice: one role change, one finished failover, b the primary.
    let events_url = parts
        .at_b
        .replace(&format!("?{API}"), &format!("/events?{API}"));
    let ev = n2.send(Method::GET, &events_url, None).await;
    assert_eq!(ev.status, StatusCode::OK, "{}", ev.body);
    let kinds: Vec<String> = ev.body["value"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .collect();
    let count = |k: &str| kinds.iter().filter(|x| x.as_str() == k).count();
    assert_eq!(count("RoleChanged"), 1, "{kinds:?}");
    assert_eq!(count("FailoverFinished"), 1, "{kinds:?}");
    let view = n2.send(Method::GET, &parts.at_b, None).await.body;
    assert_eq!(view["properties"]["replicationRole"], "Primary", "{view:#}");
    let writable = {
        let mut n = 0;
        for v in [&parts.a, &parts.b] {
            if let Ok(c) = admin_at(v, &["properties", "postgresEndpoint"], "postgres").await {
                if c.query_one("SELECT NOT pg_is_in_recovery()", &[])
                    .await
                    .is_ok_and(|r| r.get::<_, bool>(0))
                {
                    n += 1;
                }
            }
        }
        n
    };
    assert_eq!(writable, 1, "exactly one writable server");
}

/// A node cut off from the store (the one etcd member it knows is gone) stops forwarding
/// writes through its read-write listener once its view is older than the lease TTL, with
/// a PostgreSQL error naming the reason; a node that still reaches the quorum forwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_store_refuses_writes() {
    let mut c = Cluster::new(3, vec![]).await;
    let eps = c.etcd.all_endpoints();
    let only_first = format!("etcd://{}", eps[0]);
    let the_others = format!("etcd://{},{}", eps[1], eps[2]);
    let n1 = c.node(1, &[("FOGD_STORE", only_first)]).await;
    let n2 = c.node(2, &[("FOGD_STORE", the_others)]).await;
    let parts =
        common::group::create_group(&n2, "fog-cut", json!({"failoverPolicy": "Manual"})).await;
    let (_, port) = endpoint(&parts.view, &["properties", "listeners", "readWrite"]);
    let write = |host: &'static str, id: i64| async move {
        let c = pg(
            host,
            port,
            "fogadmin",
            PASSWORD,
            "app",
            Duration::from_secs(3),
        )
        .await?;
        c.execute("INSERT INTO t VALUES ($1)", &[&id]).await
    };
    // Both nodes' listeners forward to the primary (node 1's once it bound them).
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = write("127.0.0.11", 1).await {
        assert!(
            Instant::now() < deadline,
            "node 1's listener: {e}\n{}",
            n1.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    write("127.0.0.12", 2).await.expect("node 2's listener");

    c.etcd.stop_member(0);
    let cut = Instant::now();
    let refusal = loop {
        match write("127.0.0.11", 3).await {
            Err(e) if format!("{e:?}").contains("older than its lease TTL") => break e,
            _ => {}
        }
        assert!(
            cut.elapsed() < Duration::from_secs(TTL + 10),
            "node 1 still forwards writes\n{}",
            n1.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "node 1 refused writes {:.2} s after losing the store: {refusal:?}",
        cut.elapsed().as_secs_f64()
    );
    assert!(
        n1.log().contains("read-write listeners refuse writes"),
        "{}",
        n1.log()
    );
    // Node 2 still reaches a quorum and forwards.
    write("127.0.0.12", 4).await.expect("node 2 still forwards");
}

/// kill -9 of the node that owns a group creation when it reaches seeding: another node
/// finishes the creation (the secondary seeded and streaming).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_owner_of_a_group_creation_is_replaced_at_seeding() {
    let c = Cluster::new(1, vec![]).await;
    let n2 = c.node(2, &[]).await;
    let create = fog_model::Action::CreateFailoverGroup {
        name: "fog-seed".into(),
        uid: String::new(),
    };
    let seed = fog_orchestrator::steps::step_names(&create)
        .iter()
        .find(|s| s.ends_with(".seed"))
        .expect("a seeding step");
    let mut n1 = c
        .node(1, &[("FOGD_FAILPOINTS", format!("{seed}=crash"))])
        .await;
    let a = n2.create_instance("rg-east", "seed-a", "eastus").await;
    let b = n2.create_partner("rg-west", "seed-b", "westus", &a).await;
    let at_a = format!(
        "{}/locations/eastus/instanceFailoverGroups/fog-seed?{API}",
        n2.rg_path("rg-east")
    );
    let body = Fogd::group_body(&a, &b, "westus", json!({}));
    let r = n1.send(Method::PUT, &at_a, Some(&body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let status_url = r.header("azure-asyncoperation").expect("status url");
    assert!(
        !n1.wait_exit(Duration::from_secs(60)).await.success(),
        "crashed at {seed}"
    );
    let crashed = Instant::now();
    let done = n2.poll(&status_url, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "Succeeded", "{done}\n{}", n2.log());
    eprintln!(
        "group creation finished by node 2 {:.2} s after node 1 died at {seed}",
        crashed.elapsed().as_secs_f64()
    );
    assert!(n2.log().contains("took the operation over"), "{}", n2.log());
    let view = until(
        &n2,
        &at_a,
        "a streaming secondary",
        Duration::from_secs(60),
        |g| {
            g["properties"]["replicationState"] == "CATCH_UP"
                && g["properties"]["health"]["secondary"]["status"] == "Healthy"
        },
    )
    .await;
    assert_eq!(view["properties"]["replicationRole"], "Primary");
}

/// 30 concurrent failovers of one group spread over three nodes: exactly one is accepted,
/// every other gets the catalogue's busy code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conflicting_failovers_over_three_nodes_one_wins() {
    let c = Cluster::new(1, vec![]).await;
    let nodes = [
        c.node(1, &[]).await,
        c.node(2, &[]).await,
        c.node(3, &[]).await,
    ];
    let parts =
        common::group::create_group(&nodes[0], "fog-race", json!({"failoverPolicy": "Manual"}))
            .await;
    until(
        &nodes[1],
        &parts.at_a,
        "a streaming secondary",
        Duration::from_secs(60),
        |g| {
            g["properties"]["replicationState"] == "CATCH_UP"
                && g["properties"]["health"]["secondary"]["status"] == "Healthy"
        },
    )
    .await;
    let url = parts
        .at_b
        .replace(&format!("?{API}"), &format!("/failover?{API}"));
    let replies =
        futures::future::join_all((0..30).map(|i| nodes[i % 3].send(Method::POST, &url, None)))
            .await;
    let accepted: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .collect();
    assert_eq!(accepted.len(), 1, "exactly one failover accepted");
    for r in replies.iter().filter(|r| r.status != StatusCode::ACCEPTED) {
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert_eq!(r.code(), "InstanceFailoverGroupBusy", "{}", r.body);
    }
    let done = nodes[2].wait_operation(accepted[0]).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
}

/// An etcd member stops during a failover (a follower, then, in a second failover, the
/// leader; five members keep a quorum through both): each failover still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_completes_when_an_etcd_member_and_then_the_leader_stop() {
    let mut c = Cluster::new(5, vec![]).await;
    let n1 = c.node(1, &[]).await;
    let n2 = c.node(2, &[]).await;
    let parts =
        common::group::create_group(&n1, "fog-etcd", json!({"failoverPolicy": "Manual"})).await;
    let store = c.store().await;
    for (round, (target, kill_leader)) in [(&parts.at_b, false), (&parts.at_a, true)]
        .into_iter()
        .enumerate()
    {
        until(
            &n2,
            &parts.at_a,
            "a streaming secondary",
            Duration::from_secs(60),
            |g| {
                g["properties"]["replicationState"] == "CATCH_UP"
                    && g["properties"]["health"]["secondary"]["status"] == "Healthy"
            },
        )
        .await;
        let members = store.members().await.expect("members");
        let victim = members
            .iter()
            .find(|m| m.healthy && m.leader == kill_leader)
            .expect("a member to stop");
        let index: usize = victim.name.trim_start_matches('m').parse().expect("index");
        let url = target.replace(&format!("?{API}"), &format!("/failover?{API}"));
        let r = n1.send(Method::POST, &url, None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        c.etcd.stop_member(index);
        let done = n2
            .poll(
                &r.header("azure-asyncoperation").expect("status url"),
                Duration::from_secs(90),
            )
            .await;
        assert_eq!(
            done["status"],
            "Succeeded",
            "round {round} (stopped {}, leader: {kill_leader}): {done}\n{}",
            victim.name,
            n1.log()
        );
        let view = n2.send(Method::GET, target, None).await.body;
        assert_eq!(view["properties"]["replicationRole"], "Primary", "{view:#}");
    }
}
