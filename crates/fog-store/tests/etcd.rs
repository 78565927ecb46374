//! `EtcdStore` against real etcd 3.4 servers that each test starts on free loopback ports
//! (`fog_store::testing::EtcdCluster`; Debian's `etcd-server`, installed by
//! scripts/install-deps.sh).

use fog_store::testing::EtcdCluster;
use fog_store::{EtcdStore, Precondition, Store, StoreError, Write};
use std::time::{Duration, Instant};

async fn cluster(n: usize) -> EtcdCluster {
    match EtcdCluster::start(n).await {
        Ok(c) => c,
        Err(e) => panic!("etcd: {e}"),
    }
}

async fn store(c: &EtcdCluster, prefix: &str) -> EtcdStore {
    match c.connect(prefix).await {
        Ok(s) => s,
        Err(e) => panic!("connect: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_passes_conformance() {
    let c = cluster(1).await;
    fog_store::conformance::run(&store(&c, EtcdStore::DEFAULT_PREFIX).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_isolate_stores_and_conflicts_name_the_failing_key() {
    let c = cluster(1).await;
    let a = store(&c, "/a/").await;
    let b = store(&c, "/b/").await;
    let mut watch_b = b.watch("");
    let r1 = a
        .commit(vec![
            Write::put("x", b"1".to_vec(), Precondition::Absent),
            Write::put("y", b"1".to_vec(), Precondition::Absent),
        ])
        .await
        .expect("commit");
    assert!(b.get("x").await.expect("get").is_none());
    assert!(b.range("").await.expect("range").is_empty());
    assert_eq!(a.range("").await.expect("range").len(), 2);

    // The key whose precondition failed is named, whichever position it has.
    let err = a
        .commit(vec![
            Write::check("x", r1),
            Write::put("z", b"1".to_vec(), Precondition::Absent),
            Write::put("y", b"2".to_vec(), Precondition::Absent),
        ])
        .await;
    assert!(
        matches!(&err, Err(StoreError::Conflict { key }) if key == "y"),
        "{err:?}"
    );
    let err = a
        .commit(vec![Write::delete("x", Precondition::Revision(r1 + 100))])
        .await;
    assert!(
        matches!(&err, Err(StoreError::Conflict { key }) if key == "x"),
        "{err:?}"
    );
    // A key written twice in one batch: the last write wins (etcd refuses duplicates).
    a.commit(vec![
        Write::put("x", b"2".to_vec(), Precondition::Revision(r1)),
        Write::delete("x", Precondition::Any),
        Write::put("x", b"3".to_vec(), Precondition::Any),
    ])
    .await
    .expect("rewrite");
    assert_eq!(a.get("x").await.expect("get").expect("x").value, b"3");

    // A batch that changes nothing leaves the revision alone, as etcd does.
    let now = a.revision().await.expect("revision");
    let x = a.get("x").await.expect("get").expect("x");
    assert_eq!(
        a.commit(vec![Write::check("x", x.revision)])
            .await
            .expect("check"),
        now
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(watch_b.try_recv().is_err(), "b saw a's keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_more_than_one_page_at_one_revision() {
    let c = cluster(1).await;
    let s = store(&c, "/p/").await;
    let n = EtcdStore::PAGE as usize * 2 + 7;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        s.commit(
            chunk
                .iter()
                .map(|i| Write::put(format!("k/{i:05}"), vec![1], Precondition::Any))
                .collect(),
        )
        .await
        .expect("commit");
    }
    let (records, at) = s.range_with_revision("k/").await.expect("range");
    assert_eq!(records.len(), n);
    assert!(records.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(at, s.revision().await.expect("revision"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_keep_serving_with_one_stopped() {
    let mut c = cluster(3).await;
    let s = store(&c, "/fogd/").await;
    let mut watch = s.watch("k/");
    let mut last = s
        .commit(vec![Write::put("k/0", vec![0], Precondition::Absent)])
        .await
        .expect("commit");

    // Stop the leader (the member whose own status names itself), the hardest case.
    let leader = leader_index(&c).await;
    c.stop_member(leader);
    let started = Instant::now();
    let put = |i: u8| vec![Write::put(format!("k/{i}"), vec![i], Precondition::Absent)];
    // The first commit may wait for the election (etcd times out a request caught by the
    // old leader's loss after about 7 s); retry it.
    loop {
        match s.commit(put(1)).await {
            Ok(r) => {
                assert!(r > last);
                last = r;
                break;
            }
            Err(StoreError::Backend(e)) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no commit within 30 s of losing the leader: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("commit 1: {e}"),
        }
    }
    let first = started.elapsed();
    // From then on every request succeeds, whichever member the client picks.
    for i in 2..=20u8 {
        let r = s.commit(put(i)).await.expect("commit with a member down");
        assert!(r > last);
        last = r;
        s.get(&format!("k/{i}"))
            .await
            .expect("get")
            .expect("written");
    }
    eprintln!(
        "leader m{leader} stopped: first commit after {first:?}, 20 after {:?}",
        started.elapsed()
    );
    assert_eq!(s.range("k/").await.expect("range").len(), 21);
    // The watch went on through the loss (reconnecting if its member was the one stopped).
    for i in 0..=20u8 {
        let e = tokio::time::timeout(Duration::from_secs(15), watch.recv())
            .await
            .expect("event in time")
            .expect("watch open");
        assert_eq!((e.key, e.value), (format!("k/{i}"), Some(vec![i])));
    }
}

/// Which member leads, from each member's own status.
async fn leader_index(c: &EtcdCluster) -> usize {
    for (i, endpoint) in c.all_endpoints().iter().enumerate() {
        let mut client = etcd_client::Client::connect([format!("http://{endpoint}")], None)
            .await
            .expect("connect");
        let status = client.status().await.expect("status");
        let me = status.header().map(|h| h.member_id()).unwrap_or_default();
        if status.leader() == me {
            return i;
        }
    }
    panic!("no leader")
}

/// The biggest batch etcd takes is 128 operations (its default `--max-txn-ops`): one that
/// size commits, a larger one is refused with an error saying why, and nothing of it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_up_to_etcds_transaction_limit_commit_and_larger_ones_are_refused() {
    let c = cluster(1).await;
    let s = store(&c, EtcdStore::DEFAULT_PREFIX).await;
    let batch = |n: usize, tag: &str| -> Vec<Write> {
        (0..n)
            .map(|i| Write::put(format!("{tag}/{i:03}"), b"v".to_vec(), Precondition::Absent))
            .collect()
    };
    s.commit(batch(EtcdStore::MAX_TXN_OPS, "fits"))
        .await
        .expect("128 operations commit");
    assert_eq!(s.range("fits/").await.expect("range").len(), 128);
    match s.commit(batch(EtcdStore::MAX_TXN_OPS + 1, "big")).await {
        Err(StoreError::Backend(m)) => assert!(m.contains("128"), "{m}"),
        other => panic!("expected a refusal naming the limit, got {other:?}"),
    }
    assert!(s.range("big/").await.expect("range").is_empty());
}
