//! The behaviour every [`Store`] backend must show. Backends call [`run`] from their tests
//! (an etcd backend will run the same suite against a real etcd).

use crate::{Precondition, Store, StoreError, Write};

fn must<T>(r: Result<T, StoreError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
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
    let mut seen = Vec::new();
    while let Ok(e) = watch.try_recv() {
        seen.push((e.key, e.value.is_some(), e.revision));
    }
    assert_eq!(
        seen,
        vec![
            (format!("{p}a"), true, r1),
            (format!("{p}a"), true, r2),
            (format!("{p}b"), true, r3),
            (format!("{p}b"), false, r4),
        ]
    );
    assert!(
        other_watch.try_recv().is_err(),
        "no events outside the prefix"
    );
}
