//! A failover group of two fresh instances, for the tests that exercise one.

use super::*;
use serde_json::json;

/// What [`create_group`] made.
pub struct GroupParts {
    /// `{prefix}-a` (rg-east, eastus by default): the primary.
    pub a: Value,
    /// `{prefix}-b` (rg-west, westus by default, `a`'s DNS-zone partner): the secondary.
    pub b: Value,
    /// The group's address at the primary's and at the secondary's location.
    pub at_a: String,
    pub at_b: String,
    /// The group as GET returns it at `at_a` right after its creation.
    pub view: Value,
}

/// Creates `{name}-a` and `{name}-b`, a database `app` on the primary with a table
/// `t(id bigint primary key)`, and the group `name` with read-write endpoint `rw`; returns
/// once the group's creation succeeded.
pub async fn create_group(f: &Fogd, name: &str, rw: Value) -> GroupParts {
    create_group_at(
        f,
        name,
        name,
        rw,
        ("rg-east", "eastus"),
        ("rg-west", "westus"),
    )
    .await
}

/// [`create_group`] with instances `{prefix}-a` at `primary` (resource group, location)
/// and `{prefix}-b` at `secondary` (in `{prefix}-a`'s DNS zone).
pub async fn create_group_at(
    f: &Fogd,
    name: &str,
    prefix: &str,
    rw: Value,
    primary: (&str, &str),
    secondary: (&str, &str),
) -> GroupParts {
    let (rg_a, loc_a) = primary;
    let (rg_b, loc_b) = secondary;
    let a = f.create_instance(rg_a, &format!("{prefix}-a"), loc_a).await;
    let b = f
        .create_partner(rg_b, &format!("{prefix}-b"), loc_b, &a)
        .await;
    let r = f
        .send(
            Method::PUT,
            &format!(
                "{}/databases/app?{API}",
                f.mi_path(rg_a, &format!("{prefix}-a"))
            ),
            Some("{}"),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    admin_at(&a, &["properties", "postgresEndpoint"], "app")
        .await
        .expect("connect")
        .batch_execute("CREATE TABLE t(id bigint primary key)")
        .await
        .expect("table");
    let at = |rg: &str, loc: &str| {
        format!(
            "{}/locations/{loc}/instanceFailoverGroups/{name}?{API}",
            f.rg_path(rg)
        )
    };
    let (at_a, at_b) = (at(rg_a, loc_a), at(rg_b, loc_b));
    let body = Fogd::group_body(&a, &b, loc_b, json!({ "readWriteEndpoint": rw }));
    let r = f.send(Method::PUT, &at_a, Some(&body)).await;
    assert_eq!(
        f.wait_operation(&r).await["status"],
        "Succeeded",
        "{}",
        f.log()
    );
    let view = f.send(Method::GET, &at_a, None).await.body;
    GroupParts {
        a,
        b,
        at_a,
        at_b,
        view,
    }
}
