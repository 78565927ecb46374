//! The behaviour every [`Store`] backend must show. Backends call [`run`] from their tests:
//! [`MemoryStore`](crate::MemoryStore) and [`SqliteStore`](crate::SqliteStore) in their unit
//! tests, [`EtcdStore`](crate::EtcdStore) against a real etcd that
//! `crates/fog-store/tests/etcd.rs` starts.
//!
//! Events are awaited with a timeout (a remote backend delivers them asynchronously), and
//! "nothing else arrived" is checked after a short pause. The lease checks wait for real
//! expiry: about a second on the one-process backends, a few seconds on etcd (whole-second
//! TTLs, a 2 s minimum, expiry checked every 500 ms).

use crate::{Event, LeaseId, Precondition, Store, StoreError, Watcher, Write};
use std::time::{Duration, Instant};

/// How long an expected event may take.
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// How long to wait before concluding that no other event comes.
const QUIET: Duration = Duration::from_millis(300);
/// The TTL the lease checks ask for (etcd rounds it up to its minimum).
const LEASE_TTL: Duration = Duration::from_millis(500);
/// The longest a lease may take to expire after its TTL, on any backend.
const EXPIRY_WAIT: Duration = Duration::from_secs(15);

fn must<T>(r: Result<T, StoreError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

async fn next_event(w: &mut Watcher, what: &str) -> Event {
    match tokio::time::timeout(EVENT_WAIT, w.recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("{what}: the watch ended"),
        Err(_) => panic!("{what}: no event within {EVENT_WAIT:?}"),
    }
}

/// `(key, is a put, revision)` of the next `n` events.
async fn events(w: &mut Watcher, n: usize, what: &str) -> Vec<(String, bool, u64)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = next_event(w, what).await;
        out.push((e.key, e.value.is_some(), e.revision));
    }
    out
}

async fn assert_quiet(watches: &mut [&mut Watcher], what: &str) {
    tokio::time::sleep(QUIET).await;
    for w in watches.iter_mut() {
        if let Ok(e) = w.try_recv() {
            panic!("{what}: unexpected event {e:?}");
        }
    }
}

/// Runs the suite against an empty store (keys under `conformance/`).
pub async fn run(store: &dyn Store) {
    let p = "conformance/";
    let mut watch = store.watch(p);
    let mut other_watch = store.watch("elsewhere/");
    let r0 = must(store.revision().await, "revision");

    // Create-if-absent succeeds once.
    let r1 = must(
        store
            .commit(vec![Write::put(
                format!("{p}a"),
                b"1".to_vec(),
                Precondition::Absent,
            )])
            .await,
        "create a",
    );
    assert!(r1 > r0, "revision must grow");
    assert!(matches!(
        store
            .commit(vec![Write::put(
                format!("{p}a"),
                b"2".to_vec(),
                Precondition::Absent
            )])
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let a = must(store.get(&format!("{p}a")).await, "get a").expect("a exists");
    assert_eq!((a.value.as_slice(), a.revision), (&b"1"[..], r1));

    // CAS on revision: stale revision fails, current succeeds.
    let r2 = must(
        store
            .commit(vec![Write::put(
                format!("{p}a"),
                b"2".to_vec(),
                Precondition::Revision(r1),
            )])
            .await,
        "cas a",
    );
    assert!(matches!(
        store
            .commit(vec![Write::put(
                format!("{p}a"),
                b"3".to_vec(),
                Precondition::Revision(r1)
            )])
            .await,
        Err(StoreError::Conflict { .. })
    ));

    // A failed batch applies nothing.
    assert!(store
        .commit(vec![
            Write::put(format!("{p}b"), b"x".to_vec(), Precondition::Absent),
            Write::check(format!("{p}a"), r1),
        ])
        .await
        .is_err());
    assert!(must(store.get(&format!("{p}b")).await, "get b").is_none());

    // A batch with a check applies atomically.
    let r3 = must(
        store
            .commit(vec![
                Write::put(format!("{p}b"), b"x".to_vec(), Precondition::Absent),
                Write::check(format!("{p}a"), r2),
            ])
            .await,
        "batch",
    );
    let a = must(store.get(&format!("{p}a")).await, "get a").expect("a");
    assert_eq!(a.revision, r2, "a check must not rewrite the key");

    // Range reads by prefix, in key order, and nothing outside it.
    must(
        store
            .commit(vec![Write::put(
                "conformancX",
                b"no".to_vec(),
                Precondition::Any,
            )])
            .await,
        "outside",
    );
    let keys: Vec<String> = must(store.range(p).await, "range")
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, vec![format!("{p}a"), format!("{p}b")]);

    // Delete with precondition.
    assert!(store
        .commit(vec![Write::delete(
            format!("{p}b"),
            Precondition::Revision(r1)
        )])
        .await
        .is_err());
    let r4 = must(
        store
            .commit(vec![Write::delete(
                format!("{p}b"),
                Precondition::Revision(r3),
            )])
            .await,
        "delete b",
    );
    assert!(must(store.get(&format!("{p}b")).await, "get b").is_none());

    // The watcher saw exactly the applied changes under its prefix, in order.
    assert_eq!(
        events(&mut watch, 4, "watch").await,
        vec![
            (format!("{p}a"), true, r1),
            (format!("{p}a"), true, r2),
            (format!("{p}b"), true, r3),
            (format!("{p}b"), false, r4),
        ]
    );
    assert_quiet(&mut [&mut watch, &mut other_watch], "watch").await;

    history(store, p, [r1, r2, r3, r4]).await;
    leases(store, &format!("{p}lease/")).await;
}

/// `range_with_revision`, `watch_from` and `compact_history`, after [`run`]'s first part
/// (`revs`: the revisions of its changes under `p`).
async fn history(store: &dyn Store, p: &str, revs: [u64; 4]) {
    let [r1, r2, r3, r4] = revs;

    // A range with the revision it reflects.
    let (records, at) = must(store.range_with_revision(p).await, "range_with_revision");
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, vec![format!("{p}a")]);
    assert!(
        at >= r4,
        "range revision {at} older than the last change {r4}"
    );

    // A watch from a revision replays the later changes in order, then streams.
    let mut replay = must(store.watch_from(p, r1).await, "watch_from r1");
    assert_eq!(
        events(&mut replay, 3, "watch_from replay").await,
        vec![
            (format!("{p}a"), true, r2),
            (format!("{p}b"), true, r3),
            (format!("{p}b"), false, r4),
        ]
    );
    let mut from_now = must(store.watch_from(p, at).await, "watch_from now");
    let r5 = must(
        store
            .commit(vec![Write::put(
                format!("{p}c"),
                b"c".to_vec(),
                Precondition::Absent,
            )])
            .await,
        "put c",
    );
    assert!(r5 > at);
    for w in [&mut replay, &mut from_now] {
        assert_eq!(
            events(w, 1, "watch_from live").await,
            vec![(format!("{p}c"), true, r5)]
        );
    }
    assert_quiet(&mut [&mut replay, &mut from_now], "watch_from").await;

    // After compaction the old history is refused with a clear error; later history stays.
    must(store.compact_history(r3).await, "compact");
    match store.watch_from(p, r1).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, r1);
            assert!(compacted > r1, "compaction revision {compacted} <= {r1}");
        }
        Err(e) => panic!("watch_from a compacted revision: {e}"),
        Ok(_) => panic!("watch_from a compacted revision succeeded"),
    }
    let mut after = must(
        store.watch_from(p, r3).await,
        "watch_from the compaction revision",
    );
    assert_eq!(
        events(&mut after, 2, "watch_from after compaction").await,
        vec![(format!("{p}b"), false, r4), (format!("{p}c"), true, r5)]
    );
    must(
        store.compact_history(r2).await,
        "compacting less is a no-op",
    );
    assert_quiet(&mut [&mut after], "watch_from after compaction").await;
}

/// Leases: keys bound to one vanish when it is revoked or expires (watchers see the
/// deletes), keep-alive keeps them, and an ended lease is refused.
async fn leases(store: &dyn Store, p: &str) {
    let mut watch = store.watch(p);
    let kept = must(store.grant_lease(LEASE_TTL).await, "grant kept");
    let lapsed = must(store.grant_lease(LEASE_TTL).await, "grant lapsed");
    let revoked = must(
        store.grant_lease(Duration::from_secs(60)).await,
        "grant revoked",
    );
    assert!(kept != lapsed && lapsed != revoked && kept != revoked);
    let k = |name: &str| format!("{p}{name}");
    let put = |name: &str, lease: Option<LeaseId>| {
        let w = Write::put(k(name), name.as_bytes().to_vec(), Precondition::Any);
        match lease {
            Some(l) => w.with_lease(l),
            None => w,
        }
    };
    let r_put = must(
        store
            .commit(vec![
                put("kept", Some(kept)),
                put("lapsed", Some(lapsed)),
                put("revoked", Some(revoked)),
                put("plain", None),
                put("unbound", Some(lapsed)),
            ])
            .await,
        "put leased keys",
    );
    // A put without a lease unbinds the key: it outlives the lease it had.
    let r_unbind = must(store.commit(vec![put("unbound", None)]).await, "unbind");
    let exists =
        |name: &'static str| async move { must(store.get(&k(name)).await, "get").is_some() };

    // Revoke: its keys go at once, in one revision; the lease is gone.
    must(store.revoke_lease(revoked).await, "revoke");
    assert!(!exists("revoked").await, "a revoked lease's key remains");
    assert!(matches!(
        store.revoke_lease(revoked).await,
        Err(StoreError::LeaseNotFound(l)) if l == revoked
    ));
    assert!(matches!(
        store.keep_alive(revoked).await,
        Err(StoreError::LeaseNotFound(l)) if l == revoked
    ));
    assert!(matches!(
        store.commit(vec![put("late", Some(revoked))]).await,
        Err(StoreError::LeaseNotFound(l)) if l == revoked
    ));
    assert!(!exists("late").await, "a refused batch applied");

    // Keep-alive keeps `kept` while `lapsed`, granted with the same TTL, expires.
    let start = Instant::now();
    loop {
        must(store.keep_alive(kept).await, "keep alive");
        if !exists("lapsed").await {
            break;
        }
        assert!(
            start.elapsed() < EXPIRY_WAIT,
            "a lease without keep-alive did not expire"
        );
        tokio::time::sleep(LEASE_TTL / 4).await;
    }
    assert!(
        start.elapsed() >= LEASE_TTL,
        "a lease expired before its TTL"
    );
    assert!(exists("kept").await, "a kept-alive lease's key vanished");
    assert!(matches!(
        store.keep_alive(lapsed).await,
        Err(StoreError::LeaseNotFound(l)) if l == lapsed
    ));

    // Without keep-alive, `kept` expires too.
    let start = Instant::now();
    while exists("kept").await {
        assert!(start.elapsed() < EXPIRY_WAIT, "a lease did not expire");
        tokio::time::sleep(LEASE_TTL / 4).await;
    }
    assert!(exists("plain").await && exists("unbound").await);

    // Watchers saw the puts, then one delete per ended lease, in that order.
    let seen = events(&mut watch, 9, "lease watch").await;
    let puts: Vec<&(String, bool, u64)> = seen[..6].iter().collect();
    assert!(puts.iter().all(|(_, put, _)| *put));
    assert_eq!(puts[5], &(k("unbound"), true, r_unbind));
    assert!(puts[..5].iter().all(|(_, _, r)| *r == r_put));
    let deletes: Vec<(String, bool)> = seen[6..]
        .iter()
        .map(|(key, put, _)| (key.clone(), *put))
        .collect();
    assert_eq!(
        deletes,
        vec![
            (k("revoked"), false),
            (k("lapsed"), false),
            (k("kept"), false),
        ]
    );
    assert!(seen[6].2 > r_unbind && seen[6].2 < seen[7].2 && seen[7].2 < seen[8].2);
    assert_quiet(&mut [&mut watch], "lease watch").await;
}
