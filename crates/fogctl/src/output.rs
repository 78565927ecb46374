//! Output formats, as `az -o`: `json` (pretty JSON of the resource, or an array for a list),
//! `table` (a readable subset of columns with a header) and `tsv` (the same columns,
//! tab-separated, no header — for shell scripts).

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Table,
    Tsv,
}

/// One column of `table`/`tsv` output.
pub struct Column {
    pub header: &'static str,
    pub get: fn(&Value) -> String,
}

/// The value at a JSON path; numeric keys index arrays. Missing = `Null`.
pub fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| match (v, k.parse::<usize>()) {
        (Value::Array(a), Ok(i)) => a.get(i).unwrap_or(&Value::Null),
        _ => &v[*k],
    })
}

/// A scalar at a JSON path as text; objects and arrays as compact JSON; null as "".
pub fn text_at(v: &Value, path: &[&str]) -> String {
    scalar(at(v, path))
}

pub fn scalar(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// The segment after `key` in an ARM id (case-insensitive), e.g. `resourceGroups`.
pub fn id_segment(id: &str, key: &str) -> Option<String> {
    let parts: Vec<&str> = id.split('/').collect();
    parts
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case(key))
        .map(|w| w[1].to_string())
}

/// The last segment of an ARM id (the resource's name).
pub fn last_segment(id: &str) -> String {
    id.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(id)
        .to_string()
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn rg(v: &Value) -> String {
    id_segment(v["id"].as_str().unwrap_or(""), "resourceGroups").unwrap_or_default()
}

const INSTANCE: &[Column] = &[
    Column {
        header: "Name",
        get: |v| text_at(v, &["name"]),
    },
    Column {
        header: "ResourceGroup",
        get: rg,
    },
    Column {
        header: "Location",
        get: |v| text_at(v, &["location"]),
    },
    Column {
        header: "Tier",
        get: |v| text_at(v, &["sku", "tier"]),
    },
    Column {
        header: "VCores",
        get: |v| text_at(v, &["properties", "vCores"]),
    },
    Column {
        header: "StorageGB",
        get: |v| text_at(v, &["properties", "storageSizeInGB"]),
    },
    Column {
        header: "ProvisioningState",
        get: |v| text_at(v, &["properties", "provisioningState"]),
    },
    Column {
        header: "DnsZone",
        get: |v| text_at(v, &["properties", "dnsZone"]),
    },
    Column {
        header: "PostgresEndpoint",
        get: |v| {
            let e = &v["properties"]["postgresEndpoint"];
            match (e["host"].as_str(), e["port"].as_u64()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                _ => String::new(),
            }
        },
    },
];

const DATABASE: &[Column] = &[
    Column {
        header: "Name",
        get: |v| text_at(v, &["name"]),
    },
    Column {
        header: "ManagedInstance",
        get: |v| id_segment(v["id"].as_str().unwrap_or(""), "managedInstances").unwrap_or_default(),
    },
    Column {
        header: "ResourceGroup",
        get: rg,
    },
    Column {
        header: "Location",
        get: |v| text_at(v, &["location"]),
    },
    Column {
        header: "Status",
        get: |v| text_at(v, &["properties", "status"]),
    },
    Column {
        header: "Collation",
        get: |v| text_at(v, &["properties", "collation"]),
    },
    Column {
        header: "FailoverGroup",
        get: |v| {
            v["properties"]["failoverGroupId"]
                .as_str()
                .map(last_segment)
                .unwrap_or_default()
        },
    },
];

const GROUP: &[Column] = &[
    Column {
        header: "Name",
        get: |v| text_at(v, &["name"]),
    },
    Column {
        header: "ResourceGroup",
        get: rg,
    },
    Column {
        header: "Location",
        get: |v| id_segment(v["id"].as_str().unwrap_or(""), "locations").unwrap_or_default(),
    },
    Column {
        header: "ReplicationRole",
        get: |v| text_at(v, &["properties", "replicationRole"]),
    },
    Column {
        header: "ReplicationState",
        get: |v| text_at(v, &["properties", "replicationState"]),
    },
    Column {
        header: "PartnerLocation",
        get: |v| text_at(v, &["properties", "partnerRegions", "0", "location"]),
    },
    Column {
        header: "PartnerRole",
        get: |v| text_at(v, &["properties", "partnerRegions", "0", "replicationRole"]),
    },
    Column {
        header: "FailoverPolicy",
        get: |v| text_at(v, &["properties", "readWriteEndpoint", "failoverPolicy"]),
    },
    Column {
        header: "GracePeriodMinutes",
        get: |v| {
            text_at(
                v,
                &[
                    "properties",
                    "readWriteEndpoint",
                    "failoverWithDataLossGracePeriodMinutes",
                ],
            )
        },
    },
    Column {
        header: "SecondaryType",
        get: |v| text_at(v, &["properties", "secondaryType"]),
    },
];

const OPERATION: &[Column] = &[
    Column {
        header: "OperationId",
        get: |v| text_at(v, &["operationId"]),
    },
    Column {
        header: "Status",
        get: |v| text_at(v, &["status"]),
    },
    Column {
        header: "AzureAsyncOperation",
        get: |v| text_at(v, &["azureAsyncOperation"]),
    },
];

const GENERIC: &[Column] = &[
    Column {
        header: "Name",
        get: |v| text_at(v, &["name"]),
    },
    Column {
        header: "Type",
        get: |v| text_at(v, &["type"]),
    },
    Column {
        header: "Id",
        get: |v| text_at(v, &["id"]),
    },
];

/// A service principal (`fogctl ad sp`): never a secret column.
const PRINCIPAL: &[Column] = &[
    Column {
        header: "DisplayName",
        get: |v| text_at(v, &["displayName"]),
    },
    Column {
        header: "AppId",
        get: |v| text_at(v, &["appId"]),
    },
    Column {
        header: "Secrets",
        get: |v| {
            v["passwordCredentials"]
                .as_array()
                .map_or(String::new(), |a| a.len().to_string())
        },
    },
];

/// The columns for a resource, chosen by its `type`.
pub fn columns_for(v: &Value) -> &'static [Column] {
    if v.get("operationId").is_some() {
        return OPERATION;
    }
    if v.get("appId").is_some() && v.get("passwordCredentials").is_some() {
        return PRINCIPAL;
    }
    match v["type"]
        .as_str()
        .unwrap_or("")
        .to_ascii_lowercase()
        .as_str()
    {
        "microsoft.sql/managedinstances" => INSTANCE,
        "microsoft.sql/managedinstances/databases" => DATABASE,
        "microsoft.sql/locations/instancefailovergroups" => GROUP,
        _ => GENERIC,
    }
}

/// Renders rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![
        line(headers.iter().map(|h| h.to_string()).collect()),
        line(widths.iter().map(|w| "-".repeat(*w)).collect()),
    ];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// Renders a resource or a list of resources (a JSON array) in `format`.
pub fn render(value: &Value, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()),
        Format::Table | Format::Tsv => {
            let items: Vec<&Value> = match value {
                Value::Array(a) => a.iter().collect(),
                Value::Null => Vec::new(),
                other => vec![other],
            };
            let cols = items.first().map_or(GENERIC, |v| columns_for(v));
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|v| {
                    cols.iter()
                        .map(|c| (c.get)(v).replace(['\t', '\n'], " "))
                        .collect()
                })
                .collect();
            if format == Format::Tsv {
                rows.iter()
                    .map(|r| r.join("\t"))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                let headers: Vec<&str> = cols.iter().map(|c| c.header).collect();
                table(&headers, &rows)
            }
        }
    }
}

/// Prints a result to stdout; `None` (e.g. after a delete) prints nothing.
pub fn print(value: Option<&Value>, format: Format) {
    if let Some(v) = value {
        let text = render(v, format);
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mi(name: &str) -> Value {
        json!({"id": format!("/subscriptions/s/resourceGroups/rg1/providers/Microsoft.Sql/managedInstances/{name}"),
               "name": name, "type": "Microsoft.Sql/managedInstances", "location": "eastus",
               "sku": {"tier": "GeneralPurpose"},
               "properties": {"vCores": 4, "storageSizeInGB": 64, "provisioningState": "Succeeded",
                              "postgresEndpoint": {"host": "127.0.0.1", "port": 5433}}})
    }

    #[test]
    fn table_and_tsv_of_instances() {
        let list = json!([mi("a"), mi("bb")]);
        let t = render(&list, Format::Table);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("Name  ResourceGroup  Location"), "{t}");
        assert!(lines[1].starts_with("----  -------------"), "{t}");
        assert!(lines[3].starts_with("bb    rg1"), "{t}");
        let tsv = render(&list, Format::Tsv);
        assert_eq!(
            tsv.lines().next(),
            Some("a\trg1\teastus\tGeneralPurpose\t4\t64\tSucceeded\t\t127.0.0.1:5433")
        );
    }

    #[test]
    fn ids_and_bytes() {
        let id = "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Sql/locations/eastus/instanceFailoverGroups/fg";
        assert_eq!(id_segment(id, "resourcegroups").as_deref(), Some("RG"));
        assert_eq!(id_segment(id, "locations").as_deref(), Some("eastus"));
        assert_eq!(last_segment(id), "fg");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }

    #[test]
    fn group_columns_read_the_partner() {
        let g = json!({"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/locations/westus/instanceFailoverGroups/fg",
                       "name": "fg", "type": "Microsoft.Sql/locations/instanceFailoverGroups",
                       "properties": {"replicationRole": "Secondary", "partnerRegions": [{"location": "eastus", "replicationRole": "Primary"}]}});
        let tsv = render(&g, Format::Tsv);
        assert!(
            tsv.starts_with("fg\trg\twestus\tSecondary\t\teastus\tPrimary"),
            "{tsv}"
        );
    }
}
