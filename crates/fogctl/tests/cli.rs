//! End-to-end tests of the `fogctl` binary against a real fogd (real PostgreSQL servers).
//!
//! Three scenarios, each with its own fogd, so they run in parallel:
//! - instances and databases: create/show/list/update, table and tsv output, `--no-wait`,
//!   configuration precedence, API and usage errors;
//! - a failover group's life: create, show from both sides, watch, update, set-primary
//!   there and back (and the no-op), delete, and the errors in between;
//! - service principals (`fogctl ad sp`): create-for-rbac, list, show, credential reset,
//!   delete.

mod common;

use common::{Fogd, PASSWORD};
use serde_json::Value;
use std::time::{Duration, Instant};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

#[test]
fn instances_databases_outputs_and_no_wait() {
    let fogd = Fogd::start(&[]);

    // --no-wait answers at once with the operation; the create goes on in the background.
    let started = fogd
        .fogctl(&[
            "sql",
            "mi",
            "create",
            "-g",
            "rg-bg",
            "-n",
            "mi-bg",
            "-l",
            "northeurope",
            "-u",
            "fogadmin",
            "-p",
            PASSWORD,
            "--no-wait",
        ])
        .ok();
    let op = started.json();
    assert!(
        started.elapsed < Duration::from_secs(5),
        "--no-wait took {:?}",
        started.elapsed
    );
    assert!(!op["operationId"].as_str().unwrap_or("").is_empty(), "{op}");
    let status_url = op["azureAsyncOperation"].as_str().unwrap_or("");
    assert!(
        status_url.contains("AzureAsyncOperation/") && status_url.contains("api-version="),
        "{op}"
    );

    // Two instances in two locations, created concurrently by two fogctl processes.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            fogd.create_instance(
                "rg-east",
                "mi-a",
                "eastus",
                &["--capacity", "4", "--storage", "64GB"],
            )
        });
        let b = s.spawn(|| {
            fogd.create_instance(
                "rg-west",
                "mi-b",
                "westus",
                &[
                    "--vcores",
                    "4",
                    "--storage",
                    "64",
                    "--tier",
                    "GeneralPurpose",
                ],
            )
        });
        (a.join().expect("mi-a"), b.join().expect("mi-b"))
    });
    assert_eq!(a["name"], "mi-a");
    assert_eq!(a["location"], "eastus");
    assert_eq!(a["properties"]["provisioningState"], "Succeeded");
    assert_eq!(a["properties"]["vCores"], 4);
    assert_eq!(a["properties"]["storageSizeInGB"], 64);
    assert_eq!(b["sku"]["tier"], "GeneralPurpose");

    let shown = fogd
        .fogctl(&["sql", "mi", "show", "-g", "rg-west", "-n", "mi-b"])
        .ok()
        .json();
    assert_eq!(id(&shown), id(&b));

    // Table: a header, a rule, one row per instance of the subscription.
    let table = fogd
        .fogctl(&["sql", "mi", "list", "-o", "table"])
        .ok()
        .stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("Name") && lines[0].contains("Location"),
        "{table}"
    );
    assert!(lines[1].starts_with("----"), "{table}");
    for name in ["mi-a", "mi-b", "mi-bg"] {
        assert!(
            lines[2..].iter().any(|l| l.starts_with(name)),
            "{name} missing:\n{table}"
        );
    }
    // TSV: no header, tab-separated name, resource group, location, ….
    let tsv = fogd
        .fogctl(&["sql", "mi", "list", "-g", "rg-east", "-o", "tsv"])
        .ok()
        .stdout;
    let rows: Vec<Vec<&str>> = tsv.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 1, "{tsv}");
    assert_eq!(&rows[0][..3], ["mi-a", "rg-east", "eastus"], "{tsv}");
    let list = fogd.fogctl(&["sql", "mi", "list"]).ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");

    // Update: more vCores, seen by show.
    let updated = fogd
        .fogctl(&[
            "sql",
            "mi",
            "update",
            "-g",
            "rg-east",
            "-n",
            "mi-a",
            "--capacity",
            "8",
        ])
        .ok()
        .json();
    assert_eq!(updated["properties"]["vCores"], 8);
    let shown = fogd
        .fogctl(&["sql", "mi", "show", "-g", "rg-east", "-n", "mi-a"])
        .ok()
        .json();
    assert_eq!(shown["properties"]["vCores"], 8);
    assert_eq!(shown["sku"]["capacity"], 8);

    // Databases.
    let db = fogd
        .fogctl(&[
            "sql", "midb", "create", "-g", "rg-east", "--mi", "mi-a", "-n", "appdb",
        ])
        .ok()
        .json();
    assert_eq!(db["name"], "appdb");
    assert_eq!(db["properties"]["status"], "Online");
    let dbs = fogd
        .fogctl(&[
            "sql", "midb", "list", "-g", "rg-east", "--mi", "mi-a", "-o", "tsv",
        ])
        .ok()
        .stdout;
    assert!(
        dbs.lines().any(|l| l.starts_with("appdb\tmi-a\trg-east")),
        "{dbs}"
    );
    let db = fogd
        .fogctl(&[
            "sql",
            "midb",
            "show",
            "-g",
            "rg-east",
            "--managed-instance",
            "mi-a",
            "-n",
            "appdb",
        ])
        .ok()
        .json();
    assert_eq!(
        db["properties"]["collation"],
        "SQL_Latin1_General_CP1_CI_AS"
    );

    // Errors from the API: exit 1, the ARM code on stderr.
    fogd.fogctl(&[
        "sql", "mi", "create", "-g", "rg-east", "-n", "weak", "-l", "eastus", "-u", "fogadmin",
        "-p", "Sh0rt!",
    ])
    .fails_with(1, "PasswordTooShort");
    fogd.fogctl(&[
        "sql",
        "mi",
        "create",
        "-g",
        "rg-east",
        "-n",
        "weak",
        "-l",
        "eastus",
        "-u",
        "fogadmin",
        "-p",
        "onlylowercaseletters",
    ])
    .fails_with(1, "PasswordNotComplex");
    let missing = fogd
        .fogctl(&["sql", "mi", "show", "-g", "rg-east", "-n", "nope"])
        .fails_with(1, "ResourceNotFound");
    assert!(missing.stdout.is_empty(), "{}", missing.stdout);
    // Usage errors: exit 2, before any request.
    let usage = fogd.fogctl(&["sql", "mi", "create", "-g", "rg-east"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let usage = fogd.fogctl(&[
        "sql",
        "mi",
        "update",
        "-g",
        "rg-east",
        "-n",
        "mi-a",
        "--storage",
        "lots",
    ]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);

    // Flags beat the environment and the data directory.
    let ca = fogd.data.join("ca.pem");
    let flags = fogd
        .fogctl(&[
            "--data-dir",
            "/nonexistent",
            "--endpoint",
            &fogd.file("api-url"),
            "--ca",
            ca.to_str().expect("utf-8 path"),
            "--token",
            &fogd.file("admin-token"),
            "--subscription",
            &fogd.file("subscription-id"),
            "sql",
            "mi",
            "show",
            "-g",
            "rg-east",
            "-n",
            "mi-a",
        ])
        .ok()
        .json();
    assert_eq!(flags["name"], "mi-a");
    fogd.fogctl(&["--token", "wrong", "sql", "mi", "list"])
        .fails_with(1, "InvalidAuthenticationToken");
    // A config file named by FOGCTL_CONFIG beats the data directory.
    let cfg = fogd.data.with_file_name("other.toml");
    std::fs::write(
        &cfg,
        format!(
            "endpoint = \"{}\"\nca_file = \"{}\"\ntoken_file = \"{}\"\nsubscription_id = \"{}\"\n",
            fogd.file("api-url"),
            ca.display(),
            fogd.data.join("admin-token").display(),
            "00000000-0000-0000-0000-000000000001"
        ),
    )
    .expect("write config");
    let other_sub = fogd
        .fogctl_env(
            &["sql", "mi", "list"],
            &[("FOGCTL_CONFIG", cfg.to_str().expect("utf-8 path"))],
        )
        .ok()
        .json();
    assert_eq!(
        other_sub,
        serde_json::json!([]),
        "another subscription is empty"
    );

    // The --no-wait create finishes on its own.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = fogd
            .fogctl(&["sql", "mi", "show", "-g", "rg-bg", "-n", "mi-bg"])
            .ok()
            .json();
        match v["properties"]["provisioningState"].as_str() {
            Some("Succeeded") => break,
            Some("Creating") => {}
            other => panic!("unexpected state {other:?}: {v}"),
        }
        assert!(Instant::now() < deadline, "mi-bg never finished: {v}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // Delete (no prompt without a terminal); the instance is gone afterwards.
    let deleted = fogd
        .fogctl(&["sql", "mi", "delete", "-g", "rg-bg", "-n", "mi-bg"])
        .ok();
    assert!(deleted.stdout.trim().is_empty(), "{}", deleted.stdout);
    fogd.fogctl(&["sql", "mi", "show", "-g", "rg-bg", "-n", "mi-bg"])
        .fails_with(1, "ResourceNotFound");
}

/// `instance-failover-group show` at a location, as JSON.
fn show(fogd: &Fogd, rg: &str, location: &str, name: &str) -> Value {
    fogd.fogctl(&[
        "sql",
        "instance-failover-group",
        "show",
        "-g",
        rg,
        "-l",
        location,
        "-n",
        name,
    ])
    .ok()
    .json()
}

fn role(v: &Value) -> &str {
    v["properties"]["replicationRole"].as_str().unwrap_or("")
}

#[test]
fn failover_group_lifecycle_and_watch() {
    let fogd = Fogd::start(&[("FOGD_MIN_GRACE_PERIOD_MINUTES", "1")]);
    let a = fogd.create_instance(
        "rg-a",
        "mi-a",
        "eastus",
        &["--capacity", "4", "--storage", "64GB"],
    );
    let b = fogd.create_instance(
        "rg-b",
        "mi-b",
        "westus",
        &[
            "--capacity",
            "4",
            "--storage",
            "64GB",
            "--dns-zone-partner",
            &id(&a),
        ],
    );
    assert_eq!(a["properties"]["dnsZone"], b["properties"]["dnsZone"]);

    let ifg = |args: &[&str]| {
        let mut all = vec!["sql", "instance-failover-group"];
        all.extend_from_slice(args);
        fogd.fogctl(&all)
    };
    let create = [
        "create",
        "-g",
        "rg-a",
        "-n",
        "fg1",
        "--mi",
        "mi-a",
        "--partner-mi",
        "mi-b",
        "--partner-resource-group",
        "rg-b",
    ];

    // Automatic with a grace period under the minimum is refused before anything starts.
    let mut below = create.to_vec();
    below.extend(["--failover-policy", "Automatic", "--grace-period", "0"]);
    ifg(&below).fails_with(
        1,
        "InstanceFailoverGroupCreateOrUpdateRequestLessThanMinimumGracePeriodValues",
    );

    // Create: addressed at the primary's location, partner region = the partner's location.
    let mut manual = create.to_vec();
    manual.extend(["--failover-policy", "Manual"]);
    let g = ifg(&manual).ok().json();
    assert_eq!(g["name"], "fg1");
    assert!(id(&g).contains("/resourceGroups/rg-a/"), "{g}");
    assert!(id(&g).contains("/locations/eastus/"), "{g}");
    assert_eq!(role(&g), "Primary");
    assert_eq!(g["properties"]["partnerRegions"][0]["location"], "westus");
    assert_eq!(
        g["properties"]["readWriteEndpoint"]["failoverPolicy"],
        "Manual"
    );
    assert!(g["properties"]["readWriteEndpoint"]
        .get("failoverWithDataLossGracePeriodMinutes")
        .is_none());
    assert_eq!(
        g["properties"]["readOnlyEndpoint"]["failoverPolicy"],
        "Disabled"
    );
    assert_eq!(role(&show(&fogd, "rg-a", "eastus", "fg1")), "Primary");
    assert_eq!(role(&show(&fogd, "rg-b", "westus", "fg1")), "Secondary");

    // Missing group: exit 1 with the ARM code.
    ifg(&["show", "-g", "rg-a", "-l", "eastus", "-n", "nope"]).fails_with(1, "ResourceNotFound");

    // watch --once: one frame with the group and both roles.
    let frame = ifg(&["watch", "--once"]).ok().stdout;
    assert!(frame.contains("fg1"), "{frame}");
    for needle in ["Primary", "Secondary", "mi-a", "mi-b", "eastus", "westus"] {
        assert!(frame.contains(needle), "{needle} missing:\n{frame}");
    }
    let frames = ifg(&["watch", "--once", "-o", "json"]).ok().json();
    assert_eq!(frames.as_array().map(Vec::len), Some(1), "{frames}");
    assert_eq!(frames[0]["name"], "fg1");
    assert_eq!(frames[0]["primary"]["instance"], "mi-a");
    assert_eq!(frames[0]["secondary"]["instance"], "mi-b");
    // Seen from the secondary's side, the same members.
    let tsv = ifg(&[
        "watch", "--once", "-o", "tsv", "-g", "rg-b", "-l", "westus", "-n", "fg1",
    ])
    .ok()
    .stdout;
    assert!(
        tsv.starts_with("fg1\tmi-a\teastus\tPrimary\t")
            && tsv.contains("\tmi-b\twestus\tSecondary\t"),
        "{tsv}"
    );

    // Update: Automatic with a grace period of 1 hour = 60 minutes.
    let g = ifg(&[
        "update",
        "-g",
        "rg-a",
        "-l",
        "eastus",
        "-n",
        "fg1",
        "--failover-policy",
        "Automatic",
        "--grace-period",
        "1",
    ])
    .ok()
    .json();
    assert_eq!(
        g["properties"]["readWriteEndpoint"]["failoverPolicy"],
        "Automatic"
    );
    assert_eq!(
        g["properties"]["readWriteEndpoint"]["failoverWithDataLossGracePeriodMinutes"],
        60
    );

    // set-primary at a location where the group has no member.
    let bad = ifg(&[
        "set-primary",
        "-g",
        "rg-b",
        "-l",
        "northeurope",
        "-n",
        "fg1",
    ]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(
        bad.stderr
            .contains("ERROR: (InstanceFailoverGroupDoesNotExist)")
            || bad.stderr.contains("ERROR: (ResourceNotFound)"),
        "{}",
        bad.stderr
    );

    // set-primary at the secondary's location: roles swap.
    let g = ifg(&["set-primary", "-g", "rg-b", "-l", "westus", "-n", "fg1"])
        .ok()
        .json();
    assert_eq!(role(&g), "Primary", "{g}");
    assert!(id(&g).contains("/locations/westus/"), "{g}");
    assert_eq!(role(&show(&fogd, "rg-b", "westus", "fg1")), "Primary");
    assert_eq!(role(&show(&fogd, "rg-a", "eastus", "fg1")), "Secondary");
    let tsv = ifg(&["watch", "--once", "-o", "tsv"]).ok().stdout;
    assert!(tsv.starts_with("fg1\tmi-b\twestus\tPrimary\t"), "{tsv}");

    // Again at the same location: already primary, nothing to do, success.
    let again = ifg(&["set-primary", "-g", "rg-b", "-l", "westus", "-n", "fg1"]).ok();
    assert!(again.stdout.trim().is_empty(), "{}", again.stdout);
    assert!(again.stderr.contains("already primary"), "{}", again.stderr);
    assert_eq!(role(&show(&fogd, "rg-b", "westus", "fg1")), "Primary");

    // Update is refused on the (now) secondary's side.
    ifg(&[
        "update",
        "-g",
        "rg-a",
        "-l",
        "eastus",
        "-n",
        "fg1",
        "--grace-period",
        "2",
    ])
    .fails_with(1, "InstanceFailoverGroupUpdateOrDeleteRequestOnSecondary");

    // And back.
    let g = ifg(&[
        "set-primary",
        "-g",
        "rg-a",
        "-l",
        "eastus",
        "-n",
        "fg1",
        "-o",
        "table",
    ])
    .ok()
    .stdout;
    assert!(
        g.lines()
            .nth(2)
            .is_some_and(|l| l.starts_with("fg1") && l.contains("Primary")),
        "{g}"
    );
    assert_eq!(role(&show(&fogd, "rg-a", "eastus", "fg1")), "Primary");
    assert_eq!(role(&show(&fogd, "rg-b", "westus", "fg1")), "Secondary");

    // A second group named fg1, in other resource groups and another DNS zone: -g -l -n
    // names each, and watch shows both.
    let c = fogd.create_instance(
        "rg-c",
        "mi-c",
        "eastus",
        &["--capacity", "4", "--storage", "64GB"],
    );
    fogd.create_instance(
        "rg-d",
        "mi-d",
        "westus",
        &[
            "--capacity",
            "4",
            "--storage",
            "64GB",
            "--dns-zone-partner",
            &id(&c),
        ],
    );
    assert_ne!(a["properties"]["dnsZone"], c["properties"]["dnsZone"]);
    let g2 = ifg(&[
        "create",
        "-g",
        "rg-c",
        "-n",
        "fg1",
        "--mi",
        "mi-c",
        "--partner-mi",
        "mi-d",
        "--partner-resource-group",
        "rg-d",
        "--failover-policy",
        "Manual",
    ])
    .ok()
    .json();
    assert!(id(&g2).contains("/resourceGroups/rg-c/"), "{g2}");
    let pair = |v: &Value| {
        v["properties"]["managedInstancePairs"][0]["primaryManagedInstanceId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(pair(&show(&fogd, "rg-c", "eastus", "fg1")).ends_with("/mi-c"));
    assert!(pair(&show(&fogd, "rg-d", "westus", "fg1")).ends_with("/mi-c"));
    assert!(pair(&show(&fogd, "rg-a", "eastus", "fg1")).ends_with("/mi-a"));
    let frames = ifg(&["watch", "--once", "-o", "json"]).ok().json();
    let primaries: Vec<&str> = frames
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| f["primary"]["instance"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(primaries, ["mi-a", "mi-c"], "{frames}");

    // Delete at the primary's location; the group is gone from both sides, the other fg1
    // stays.
    let deleted = ifg(&["delete", "-g", "rg-a", "-l", "eastus", "-n", "fg1"]).ok();
    assert!(deleted.stdout.trim().is_empty(), "{}", deleted.stdout);
    ifg(&["show", "-g", "rg-a", "-l", "eastus", "-n", "fg1"]).fails_with(1, "ResourceNotFound");
    ifg(&["show", "-g", "rg-b", "-l", "westus", "-n", "fg1"]).fails_with(1, "ResourceNotFound");
    assert_eq!(role(&show(&fogd, "rg-c", "eastus", "fg1")), "Primary");
    ifg(&["delete", "-g", "rg-c", "-l", "eastus", "-n", "fg1"]).ok();
    let none = ifg(&["watch", "--once"]).ok().stdout;
    assert!(none.contains("No instance failover groups"), "{none}");
}

/// `fogctl ad sp`: create-for-rbac prints what `az login --service-principal` needs, list
/// and show never print a secret, a reset replaces the secret, delete removes the principal;
/// a token in place of the administrator's may not manage principals.
#[test]
fn service_principals_are_managed_with_the_administrator_token() {
    let fogd = Fogd::start(&[]);
    let made = fogd
        .fogctl(&["ad", "sp", "create-for-rbac", "--name", "ci"])
        .ok()
        .json();
    let app = made["appId"].as_str().expect("appId").to_string();
    let password = made["password"].as_str().expect("password").to_string();
    assert_eq!(made["displayName"], "ci");
    assert_eq!(made["tenant"].as_str(), Some(fogd.file("tenant-id").trim()));
    assert_eq!(password.len(), 40);

    let list = fogd.fogctl(&["ad", "sp", "list"]).ok();
    assert!(list.stdout.contains(&app), "{}", list.stdout);
    assert!(!list.stdout.contains(&password), "{}", list.stdout);
    let table = fogd.fogctl(&["ad", "sp", "list", "-o", "table"]).ok();
    assert!(
        table.stdout.contains("DisplayName") && table.stdout.contains(&app),
        "{}",
        table.stdout
    );
    let shown = fogd.fogctl(&["ad", "sp", "show", "--id", "ci"]).ok().json();
    assert_eq!(shown["appId"], app.as_str());
    assert_eq!(
        shown["passwordCredentials"].as_array().map(Vec::len),
        Some(1)
    );

    let reset = fogd
        .fogctl(&["ad", "sp", "credential", "reset", "--id", &app])
        .ok()
        .json();
    assert_eq!(reset["appId"], app.as_str());
    assert_ne!(reset["password"].as_str(), Some(password.as_str()));
    let appended = fogd
        .fogctl(&["ad", "sp", "credential", "reset", "--id", &app, "--append"])
        .ok()
        .json();
    assert!(appended["password"].is_string());
    let shown = fogd.fogctl(&["ad", "sp", "show", "--id", &app]).ok().json();
    assert_eq!(
        shown["passwordCredentials"].as_array().map(Vec::len),
        Some(2)
    );

    // Not the administrator token: refused.
    fogd.fogctl(&["--token", "not-the-token", "ad", "sp", "list"])
        .fails_with(1, "InvalidAuthenticationToken");

    fogd.fogctl(&["ad", "sp", "delete", "--id", &app]).ok();
    fogd.fogctl(&["ad", "sp", "show", "--id", &app])
        .fails_with(1, "ServicePrincipalNotFound");
    fogd.fogctl(&["ad", "sp", "create-for-rbac", "--name", ""])
        .fails_with(1, "InvalidParameterValue");
}
