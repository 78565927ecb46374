//! `fogctl sql instance-failover-group watch`: a live view of failover groups, redrawn in
//! place every `--interval` seconds (`--once`: one frame).
//!
//! Which groups: `-g -l -n` names one; `-g -l` lists those with a member there; without
//! `-g`/`-l` the locations come from the subscription's managed instances, and every group
//! found there is shown once (from its primary's side when possible), optionally filtered
//! by `-n`.
//!
//! Per group: both instances with their role, location and health, replication state and
//! lag, listeners, a running automatic-failover countdown, the last failover, recent events
//! (`GET {group id}/events`). Fields a fogd does not report show as `-`.

use super::group::{group_path, groups_path};
use crate::client::{with_api_version, Client};
use crate::output::{self, at, human_bytes, id_segment, last_segment, table, Format};
use crate::UsageError;
use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Args)]
pub struct WatchArgs {
    /// Resource group of a member instance (with -l).
    #[arg(short = 'g', long)]
    resource_group: Option<String>,
    /// Location of that member instance (with -g).
    #[arg(short = 'l', long)]
    location: Option<String>,
    /// Only this failover group.
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// Seconds between frames.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Print one frame and exit.
    #[arg(long)]
    once: bool,
    /// How many recent events to show per group.
    #[arg(long, default_value_t = 5)]
    events: usize,
}

/// Fetches the group views to show.
async fn groups(client: &Client, a: &WatchArgs) -> Result<Vec<Value>> {
    match (&a.resource_group, &a.location, &a.name) {
        (Some(g), Some(l), Some(n)) => Ok(vec![client.get(&group_path(client, g, l, n)?).await?]),
        (Some(g), Some(l), None) => client.list(&groups_path(client, g, l)?).await,
        (None, None, name) => {
            let instances = client
                .list(&format!(
                    "{}/providers/Microsoft.Sql/managedInstances",
                    client.sub_path()?
                ))
                .await?;
            // Every (resource group, location) that has an instance, once.
            let mut places = BTreeMap::new();
            for i in &instances {
                let id = i["id"].as_str().unwrap_or_default();
                if let (Some(rg), Some(loc)) =
                    (id_segment(id, "resourceGroups"), i["location"].as_str())
                {
                    places.insert(
                        (rg.to_ascii_lowercase(), loc.to_ascii_lowercase()),
                        (rg, loc.to_string()),
                    );
                }
            }
            let mut seen = Vec::new();
            for (rg, loc) in places.values() {
                seen.extend(client.list(&groups_path(client, rg, loc)?).await?);
            }
            let mut list = each_group_once(seen);
            if let Some(n) = name {
                list.retain(|g| {
                    g["name"]
                        .as_str()
                        .is_some_and(|x| x.eq_ignore_ascii_case(n))
                });
                if list.is_empty() {
                    anyhow::bail!(
                        "no instance failover group named {n} at the locations of this subscription's managed instances"
                    );
                }
            }
            Ok(list)
        }
        _ => Err(UsageError("pass both -g and -l, or neither".into()).into()),
    }
}

/// Which group a view shows: its name and its pair of instances. Two groups may share a name
/// (in other resource groups and DNS zones); both views of one group name the same pair.
fn group_identity(g: &Value) -> (String, String, String) {
    let pair = &g["properties"]["managedInstancePairs"][0];
    let mut members = [
        pair["primaryManagedInstanceId"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        pair["partnerManagedInstanceId"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase(),
    ];
    members.sort();
    let [a, b] = members;
    (
        g["name"].as_str().unwrap_or_default().to_ascii_lowercase(),
        a,
        b,
    )
}

/// Each group once (by [`group_identity`]), preferring the primary's view, ordered by name.
fn each_group_once(views: Vec<Value>) -> Vec<Value> {
    let mut found: BTreeMap<(String, String, String), Value> = BTreeMap::new();
    for g in views {
        let key = group_identity(&g);
        let primary = at(&g, &["properties", "replicationRole"]) == "Primary";
        if primary || !found.contains_key(&key) {
            found.insert(key, g);
        }
    }
    found.into_values().collect()
}

/// The last `n` events of a group; none if the events resource is missing or fails.
async fn events(client: &Client, group: &Value, n: usize) -> Vec<Value> {
    let Some(id) = group["id"].as_str() else {
        return Vec::new();
    };
    let url = with_api_version(&format!("{id}/events"));
    match client.send(reqwest::Method::GET, &url, None).await {
        Ok(r) if r.status.is_success() => {
            let all = r.body["value"].as_array().cloned().unwrap_or_default();
            let skip = all.len().saturating_sub(n);
            all.into_iter().skip(skip).collect()
        }
        _ => Vec::new(),
    }
}

fn opt_str(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) if s.is_empty() => Value::Null,
        other => other.clone(),
    }
}

/// One group, both members spelled out, independent of the side the view came from.
fn summarize(g: &Value, events: Vec<Value>) -> Value {
    let p = &g["properties"];
    let id = g["id"].as_str().unwrap_or_default();
    let here = id_segment(id, "locations").unwrap_or_default();
    let there = p["partnerRegions"][0]["location"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let here_primary = p["replicationRole"].as_str() == Some("Primary");
    let (primary_loc, secondary_loc) = if here_primary {
        (here, there)
    } else {
        (there, here)
    };
    let pair = &p["managedInstancePairs"][0];
    let member = |role: &str, id_key: &str, loc: String, health_key: &str| {
        let mid = pair[id_key].as_str().unwrap_or_default();
        json!({
            "role": role,
            "instance": if mid.is_empty() { Value::Null } else { last_segment(mid).into() },
            "resourceGroup": id_segment(mid, "resourceGroups"),
            "location": loc,
            "health": opt_str(&p["health"][health_key]["status"]),
            "healthSince": opt_str(&p["health"][health_key]["since"]),
            "healthError": opt_str(&p["health"][health_key]["lastError"]),
        })
    };
    let listener = |key: &str| {
        let l = &p["listeners"][key];
        match (
            l["hostName"].as_str(),
            l["host"].as_str(),
            l["port"].as_u64(),
        ) {
            (name, Some(h), Some(port)) => json!({
                "hostName": name, "address": format!("{h}:{port}")
            }),
            _ => Value::Null,
        }
    };
    json!({
        "name": g["name"],
        "id": g["id"],
        "primary": member("Primary", "primaryManagedInstanceId", primary_loc, "primary"),
        "secondary": member("Secondary", "partnerManagedInstanceId", secondary_loc, "secondary"),
        "replicationState": opt_str(&p["replicationState"]),
        "replicationLag": opt_str(&p["replicationLag"]),
        "lastInSyncTime": opt_str(&p["lastInSyncTime"]),
        "failoverPolicy": opt_str(&p["readWriteEndpoint"]["failoverPolicy"]),
        "gracePeriodMinutes": opt_str(&p["readWriteEndpoint"]["failoverWithDataLossGracePeriodMinutes"]),
        "readOnlyPolicy": opt_str(&p["readOnlyEndpoint"]["failoverPolicy"]),
        "secondaryType": opt_str(&p["secondaryType"]),
        "seedingProgress": opt_str(&p["seedingProgress"]),
        "listeners": { "readWrite": listener("readWrite"), "readOnly": listener("readOnly") },
        "automaticFailoverAt": opt_str(&p["automaticFailover"]["failoverAt"]),
        "primaryUnavailableSince": opt_str(&p["automaticFailover"]["primaryUnavailableSince"]),
        "lastFailover": opt_str(&p["lastFailover"]),
        "events": events,
    })
}

fn dash(v: &Value) -> String {
    match output::scalar(v) {
        s if s.is_empty() => "-".to_string(),
        s => s,
    }
}

fn parse_time(v: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

fn lag(s: &Value) -> String {
    let l = &s["replicationLag"];
    if l.is_null() {
        return "-".into();
    }
    let bytes = l["bytes"].as_u64().map(human_bytes);
    let secs = l["seconds"].as_f64().map(|s| format!("{s:.1} s"));
    match (bytes, secs) {
        (Some(b), Some(s)) => format!("{b}, {s}"),
        (Some(b), None) => b,
        (None, Some(s)) => s,
        (None, None) => "-".into(),
    }
}

fn countdown(s: &Value, now: OffsetDateTime) -> String {
    match parse_time(&s["automaticFailoverAt"]) {
        Some(t) => {
            let left = (t - now).whole_seconds();
            let when = if left > 0 {
                format!("in {left} s (at {})", dash(&s["automaticFailoverAt"]))
            } else {
                format!("due now (at {})", dash(&s["automaticFailoverAt"]))
            };
            match s["primaryUnavailableSince"].as_str() {
                Some(since) => format!("{when}; primary unavailable since {since}"),
                None => when,
            }
        }
        None => "-".into(),
    }
}

fn last_failover(s: &Value) -> String {
    let f = &s["lastFailover"];
    if f.is_null() {
        return "-".into();
    }
    let name = |v: &Value| {
        v.as_str()
            .map(|x| {
                if x.starts_with('/') {
                    last_segment(x)
                } else {
                    x.to_string()
                }
            })
            .unwrap_or_else(|| "-".into())
    };
    let mut text = format!(
        "{} at {}: {} -> {}",
        dash(&f["type"]),
        dash(&f["time"]),
        name(&f["from"]),
        name(&f["to"])
    );
    if let Some(ms) = f["durationMs"].as_u64() {
        text.push_str(&format!(", {ms} ms"));
    }
    match &f["dataLoss"] {
        Value::Null => {}
        Value::Object(d) => match d.get("bytes").and_then(Value::as_u64) {
            Some(0) => text.push_str(", no data lost"),
            Some(b) => text.push_str(&format!(", data lost: {}", human_bytes(b))),
            None => text.push_str(&format!(", data loss: {}", Value::Object(d.clone()))),
        },
        other => text.push_str(&format!(", data loss: {}", output::scalar(other))),
    }
    if let Some(r) = f["reason"].as_str() {
        text.push_str(&format!(" ({r})"));
    }
    text
}

fn listener(s: &Value, key: &str) -> String {
    let l = &s["listeners"][key];
    match (l["hostName"].as_str(), l["address"].as_str()) {
        (Some(n), Some(a)) => format!("{n} -> {a}"),
        (None, Some(a)) => a.to_string(),
        _ => "-".into(),
    }
}

/// The human-readable frame (`-o table`).
fn frame(summaries: &[Value], now: OffsetDateTime, interval: Option<f64>) -> String {
    let stamp = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut out = match interval {
        Some(i) => format!("Instance failover groups at {stamp} (every {i}s; Ctrl-C to stop)\n"),
        None => format!("Instance failover groups at {stamp}\n"),
    };
    if summaries.is_empty() {
        out.push_str("\nNo instance failover groups found.\n");
    }
    for s in summaries {
        out.push_str(&format!(
            "\n{}  state {}  policy {}{}  secondary type {}\n",
            dash(&s["name"]),
            dash(&s["replicationState"]),
            dash(&s["failoverPolicy"]),
            match s["gracePeriodMinutes"].as_i64() {
                Some(m) => format!(" (grace {m} min)"),
                None => String::new(),
            },
            dash(&s["secondaryType"]),
        ));
        let rows: Vec<Vec<String>> = ["primary", "secondary"]
            .iter()
            .map(|k| {
                let m = &s[*k];
                vec![
                    dash(&m["role"]),
                    dash(&m["instance"]),
                    dash(&m["resourceGroup"]),
                    dash(&m["location"]),
                    match m["healthError"].as_str() {
                        Some(e) => format!("{} ({e})", dash(&m["health"])),
                        None => dash(&m["health"]),
                    },
                ]
            })
            .collect();
        let t = table(
            &["Role", "Instance", "ResourceGroup", "Location", "Health"],
            &rows,
        );
        for line in t.lines() {
            out.push_str(&format!("  {line}\n"));
        }
        let seeding_state = matches!(s["replicationState"].as_str(), Some("SEEDING" | "PENDING"));
        if let Some(p) = s["seedingProgress"].as_object() {
            if let (Some(d), Some(t)) = (
                p.get("bytesDone").and_then(Value::as_u64),
                p.get("bytesTotal").and_then(Value::as_u64),
            ) {
                // Only while seeding: a finished copy is not worth a line.
                if seeding_state || d < t {
                    out.push_str(&format!(
                        "  seeding:            {} / {}\n",
                        human_bytes(d),
                        human_bytes(t)
                    ));
                }
            }
        }
        out.push_str(&format!("  lag:                {}\n", lag(s)));
        out.push_str(&format!(
            "  last in sync:       {}\n",
            dash(&s["lastInSyncTime"])
        ));
        out.push_str(&format!(
            "  read-write:         {}\n",
            listener(s, "readWrite")
        ));
        out.push_str(&format!(
            "  read-only:          {} (policy {})\n",
            listener(s, "readOnly"),
            dash(&s["readOnlyPolicy"])
        ));
        out.push_str(&format!("  automatic failover: {}\n", countdown(s, now)));
        out.push_str(&format!("  last failover:      {}\n", last_failover(s)));
        let events = s["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            out.push_str("  recent events:      -\n");
        } else {
            out.push_str("  recent events:\n");
            for e in events {
                out.push_str(&format!(
                    "    {}  {}  {}\n",
                    dash(&e["time"]),
                    dash(&e["type"]),
                    dash(&e["message"])
                ));
            }
        }
    }
    out
}

/// `-o tsv`: one line per group, no header.
fn tsv(summaries: &[Value]) -> String {
    summaries
        .iter()
        .map(|s| {
            [
                dash(&s["name"]),
                dash(&s["primary"]["instance"]),
                dash(&s["primary"]["location"]),
                dash(&s["primary"]["role"]),
                dash(&s["primary"]["health"]),
                dash(&s["secondary"]["instance"]),
                dash(&s["secondary"]["location"]),
                dash(&s["secondary"]["role"]),
                dash(&s["secondary"]["health"]),
                dash(&s["replicationState"]),
                dash(&s["replicationLag"]["bytes"]),
                dash(&s["replicationLag"]["seconds"]),
                dash(&s["lastFailover"]["time"]),
            ]
            .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn snapshot(client: &Client, a: &WatchArgs) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for g in groups(client, a).await? {
        let ev = events(client, &g, a.events).await;
        out.push(summarize(&g, ev));
    }
    Ok(out)
}

fn render(summaries: &[Value], format: Format, interval: Option<f64>) -> String {
    match format {
        Format::Json => {
            serde_json::to_string_pretty(&Value::Array(summaries.to_vec())).unwrap_or_default()
        }
        Format::Tsv => tsv(summaries),
        Format::Table => frame(summaries, OffsetDateTime::now_utc(), interval),
    }
}

pub async fn run(client: &Client, a: WatchArgs, format: Format) -> Result<()> {
    if !(a.interval.is_finite() && a.interval > 0.0) {
        return Err(UsageError("--interval must be a positive number of seconds".into()).into());
    }
    if a.resource_group.is_some() != a.location.is_some() {
        return Err(UsageError("pass both -g and -l, or neither".into()).into());
    }
    if a.once {
        let s = snapshot(client, &a).await?;
        println!("{}", render(&s, format, None).trim_end());
        return Ok(());
    }
    let tty = std::io::stdout().is_terminal();
    loop {
        let text = match snapshot(client, &a).await {
            Ok(s) => render(&s, format, Some(a.interval)),
            Err(e) => format!("error: {e:#}\n"),
        };
        let mut stdout = std::io::stdout().lock();
        if tty {
            // Home, clear screen, draw.
            writeln!(stdout, "\x1b[H\x1b[2J{}", text.trim_end())?;
        } else {
            writeln!(stdout, "{}\n", text.trim_end())?;
        }
        stdout.flush()?;
        drop(stdout);
        tokio::time::sleep(Duration::from_secs_f64(a.interval)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(role: &str, loc: &str, partner_loc: &str) -> Value {
        let partner_role = if role == "Primary" {
            "Secondary"
        } else {
            "Primary"
        };
        json!({
            "id": format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/locations/{loc}/instanceFailoverGroups/fg1"),
            "name": "fg1",
            "properties": {
                "replicationRole": role,
                "replicationState": "CATCH_UP",
                "readWriteEndpoint": {"failoverPolicy": "Manual"},
                "partnerRegions": [{"location": partner_loc, "replicationRole": partner_role}],
                "managedInstancePairs": [{
                    "primaryManagedInstanceId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi-a",
                    "partnerManagedInstanceId": "/subscriptions/s/resourceGroups/rg2/providers/Microsoft.Sql/managedInstances/mi-b"
                }],
                "listeners": {"readWrite": {"hostName": "fg1.z.local", "host": "127.0.0.1", "port": 5000}},
                "health": {"primary": {"status": "Healthy"}},
            }
        })
    }

    #[test]
    fn groups_of_one_name_in_other_resource_groups_are_each_shown_once() {
        let other = |v: Value| {
            let mut v = v;
            v["properties"]["managedInstancePairs"][0]["primaryManagedInstanceId"] =
                "/subscriptions/s/resourceGroups/rg3/providers/Microsoft.Sql/managedInstances/mi-c"
                    .into();
            v["properties"]["managedInstancePairs"][0]["partnerManagedInstanceId"] =
                "/subscriptions/s/resourceGroups/rg4/providers/Microsoft.Sql/managedInstances/mi-d"
                    .into();
            v
        };
        let views = vec![
            view("Secondary", "westus", "eastus"),
            other(view("Secondary", "westus", "eastus")),
            view("Primary", "eastus", "westus"),
            other(view("Primary", "eastus", "westus")),
        ];
        let shown = each_group_once(views);
        assert_eq!(shown.len(), 2, "two groups named fg1: {shown:?}");
        assert!(shown
            .iter()
            .all(|g| g["properties"]["replicationRole"] == "Primary"));
        let firsts: Vec<_> = shown
            .iter()
            .map(|g| summarize(g, vec![])["primary"]["instance"].clone())
            .collect();
        assert_eq!(firsts, vec![json!("mi-a"), json!("mi-c")]);
    }

    #[test]
    fn both_sides_summarize_alike() {
        let a = summarize(&view("Primary", "eastus", "westus"), vec![]);
        let b = summarize(&view("Secondary", "westus", "eastus"), vec![]);
        assert_eq!(a["primary"], b["primary"]);
        assert_eq!(a["secondary"], b["secondary"]);
        assert_eq!(a["primary"]["instance"], "mi-a");
        assert_eq!(a["primary"]["location"], "eastus");
        assert_eq!(a["secondary"]["resourceGroup"], "rg2");
        assert_eq!(a["secondary"]["health"], Value::Null);
    }

    #[test]
    fn frame_shows_roles_and_dashes_for_missing_fields() {
        let s = summarize(
            &view("Primary", "eastus", "westus"),
            vec![
                json!({"time": "t1", "type": "FailoverCompleted", "message": "done", "generation": 2}),
            ],
        );
        let f = frame(std::slice::from_ref(&s), OffsetDateTime::UNIX_EPOCH, None);
        assert!(f.contains("fg1  state CATCH_UP  policy Manual"), "{f}");
        assert!(f.contains("Primary    mi-a"), "{f}");
        assert!(f.contains("Secondary  mi-b"), "{f}");
        assert!(f.contains("Healthy"), "{f}");
        assert!(f.contains("lag:                -"), "{f}");
        assert!(f.contains("fg1.z.local -> 127.0.0.1:5000"), "{f}");
        assert!(f.contains("t1  FailoverCompleted  done"), "{f}");
        assert_eq!(
            tsv(&[s]),
            "fg1\tmi-a\teastus\tPrimary\tHealthy\tmi-b\twestus\tSecondary\t-\tCATCH_UP\t-\t-\t-"
        );
    }

    #[test]
    fn countdown_and_last_failover() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let s = json!({"automaticFailoverAt": "1970-01-01T00:00:42Z",
                       "lastFailover": {"type": "Planned", "time": "T", "from": "/x/mi-a", "to": "mi-b",
                                        "durationMs": 1200, "dataLoss": {"bytes": 0}}});
        assert_eq!(countdown(&s, now), "in 42 s (at 1970-01-01T00:00:42Z)");
        assert_eq!(
            last_failover(&s),
            "Planned at T: mi-a -> mi-b, 1200 ms, no data lost"
        );
        assert_eq!(countdown(&json!({}), now), "-");
    }
}
