//! HTTPS calls to fogd's ARM API and the long-running-operation (LRO) protocol.
//!
//! Every change fogd makes is asynchronous: it answers `202 Accepted` with an
//! `Azure-AsyncOperation` URL (the operation-status resource: `status`, `percentComplete`,
//! `error`, and for group creates `seedingProgress`), a `Location` URL (the operation result)
//! and `Retry-After`. [`Client::lro`] polls the status resource, shows progress on stderr
//! while it waits, and then reads the final resource like the Azure SDK does: the resource
//! itself after PUT/PATCH, the `Location` result after a failover POST, nothing after DELETE.

use crate::config::Settings;
use crate::output::human_bytes;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The api-version every request carries (fogd serves it; the Python SDK 4.x sends it).
pub const API_VERSION: &str = "2025-01-01";

/// An error the API answered (or an operation ended with): ARM's `code` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the answer; `None` when a long-running operation reported the error.
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}) {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// From an ARM error envelope `{"error": {"code", "message"}}`, or whatever came back.
    fn from_body(status: Option<StatusCode>, body: &Value, raw: &str) -> Self {
        let e = &body["error"];
        let code = e["code"].as_str().map(str::to_string).unwrap_or_else(|| {
            status.map_or_else(|| "OperationFailed".to_string(), |s| s.to_string())
        });
        let message = e["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                let raw = raw.trim();
                if raw.is_empty() {
                    "the request failed".to_string()
                } else {
                    raw.chars().take(500).collect()
                }
            });
        ApiError {
            status: status.map(|s| s.as_u16()),
            code,
            message,
        }
    }
}

/// A response: status, headers and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body as text (for non-JSON answers).
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// Percent-encodes one path segment (names are DNS labels, but locations may have spaces).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Adds `api-version` to a path unless it already has one.
pub fn with_api_version(path: &str) -> String {
    if path.contains("api-version=") {
        path.to_string()
    } else if path.contains('?') {
        format!("{path}&api-version={API_VERSION}")
    } else {
        format!("{path}?api-version={API_VERSION}")
    }
}

/// What to return once a long-running operation has succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// GET the resource that was PUT or PATCHed.
    Resource,
    /// GET the `Location` (operation result) URL: a failover's group, from the new primary.
    Location,
    /// Nothing (DELETE).
    Nothing,
}

/// One long-running request.
#[derive(Debug, Clone)]
pub struct Lro {
    pub method: Method,
    /// Resource path (api-version is added).
    pub path: String,
    pub body: Option<Value>,
    /// What is happening, for the progress line, e.g. `Creating managed instance mi1`.
    pub label: String,
    pub final_state: Final,
    /// Return as soon as the request is accepted, with the operation's id and URLs.
    pub no_wait: bool,
    /// A failover group to read while waiting, for `replicationState` and `seedingProgress`.
    pub observe_group: Option<String>,
}

/// The HTTPS client, bound to one fogd (or to the nodes of a cluster: the first endpoint
/// that answers is used, and kept while it answers).
pub struct Client {
    http: reqwest::Client,
    pub settings: Settings,
    /// Index into `settings.endpoints` of the endpoint that answered last.
    current: std::sync::atomic::AtomicUsize,
}

impl Client {
    pub fn new(settings: Settings) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("fogctl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120));
        if let Some(ca) = &settings.ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("read the CA certificate {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("parse the CA certificate {}", ca.display()))?;
            builder = builder.tls_certs_only([cert]);
        }
        let http = builder.build().context("build the HTTPS client")?;
        Ok(Client {
            http,
            settings,
            current: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The endpoint in use now.
    pub fn endpoint(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        self.settings
            .endpoints
            .get(i)
            .map_or(self.settings.endpoint.as_str(), String::as_str)
    }

    /// The URLs to try for `path`, the endpoint in use first: a relative path on each
    /// endpoint; an absolute URL (a polling URL naming one node) as given, then with its
    /// origin replaced by each other endpoint (any node answers any request).
    fn candidates(&self, path: &str) -> Vec<(usize, String)> {
        let n = self.settings.endpoints.len().max(1);
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let order = (0..n).map(|k| (start + k) % n);
        if path.starts_with("https://") || path.starts_with("http://") {
            let rest = path
                .find("://")
                .and_then(|i| path[i + 3..].find('/').map(|j| &path[i + 3 + j..]))
                .unwrap_or("");
            let mut out = vec![(start, path.to_string())];
            for i in order {
                let Some(e) = self.settings.endpoints.get(i) else {
                    continue;
                };
                let url = format!("{e}{rest}");
                if url != path {
                    out.push((i, url));
                }
            }
            out
        } else {
            order
                .map(|i| {
                    let e = self
                        .settings
                        .endpoints
                        .get(i)
                        .map_or(self.settings.endpoint.as_str(), String::as_str);
                    (i, format!("{e}{path}"))
                })
                .collect()
        }
    }

    /// `/subscriptions/{sub}` of the configured subscription.
    pub fn sub_path(&self) -> Result<String> {
        Ok(format!(
            "/subscriptions/{}",
            seg(self.settings.subscription()?)
        ))
    }

    /// Sends one request; only transport failures are errors. With several endpoints, one
    /// that cannot be connected to (the request never left) is skipped for the next.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        let candidates = self.candidates(path);
        let last = candidates.len().saturating_sub(1);
        let mut sent = None;
        for (k, (index, url)) in candidates.into_iter().enumerate() {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.settings.token);
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            match req.send().await {
                Ok(resp) => {
                    self.current
                        .store(index, std::sync::atomic::Ordering::Relaxed);
                    sent = Some((url, resp));
                    break;
                }
                Err(e) if e.is_connect() && k < last => continue,
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("{method} {url}: could not reach fogd")))
                }
            }
        }
        let Some((url, resp)) = sent else {
            anyhow::bail!("{method} {path}: no fogd endpoint configured");
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{method} {url}: read the response"))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Ok(Reply {
            status,
            headers,
            body,
            text,
        })
    }

    /// Sends a request; a non-2xx answer becomes an [`ApiError`].
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        let r = self.send(method, path, body).await?;
        if r.status.is_success() {
            Ok(r)
        } else {
            Err(ApiError::from_body(Some(r.status), &r.body, &r.text).into())
        }
    }

    /// GET a resource (api-version added).
    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .call(Method::GET, &with_api_version(path), None)
            .await?
            .body)
    }

    /// GET a resource; `None` on 404.
    pub async fn get_optional(&self, path: &str) -> Result<Option<Value>> {
        let r = self
            .send(Method::GET, &with_api_version(path), None)
            .await?;
        match r.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(r.body)),
            s => Err(ApiError::from_body(Some(s), &r.body, &r.text).into()),
        }
    }

    /// GET a list, following `nextLink`s; returns the items.
    pub async fn list(&self, path: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut next = Some(with_api_version(path));
        let mut pages = 0;
        while let Some(url) = next.take() {
            let body = self.call(Method::GET, &url, None).await?.body;
            if let Some(v) = body["value"].as_array() {
                items.extend(v.iter().cloned());
            }
            pages += 1;
            next = body["nextLink"]
                .as_str()
                .filter(|s| !s.is_empty() && pages < 1000)
                .map(str::to_string);
        }
        Ok(items)
    }

    /// Runs a long-running request to completion (or returns at once with `no_wait`).
    /// Returns the final resource, or `None` when there is nothing to print.
    pub async fn lro(&self, req: Lro) -> Result<Option<Value>> {
        let path = with_api_version(&req.path);
        // Events newer than this are the operation's steps (shown while waiting).
        let mut events = match (&req.observe_group, req.no_wait) {
            (Some(g), false) => self.latest_event(g).await.map(|e| EventCursor {
                group: g.clone(),
                after: e.as_ref().and_then(event_time),
            }),
            _ => None,
        };
        let accepted = self
            .call(req.method.clone(), &path, req.body.as_ref())
            .await?;
        let status_url = accepted.header("azure-asyncoperation");
        let location = accepted.header("location");
        if status_url.is_none() && location.is_none() {
            // Completed synchronously (200/201 with the resource, or 204).
            return Ok(Some(accepted.body).filter(|b| !b.is_null()));
        }
        if req.no_wait {
            let id = status_url
                .as_deref()
                .or(location.as_deref())
                .and_then(operation_id)
                .unwrap_or_default();
            return Ok(Some(json!({
                "operationId": id,
                "status": "Accepted",
                "azureAsyncOperation": status_url,
                "location": location,
            })));
        }
        let mut progress = Progress::new(&req.label);
        let mut delay = retry_after(&accepted.headers);
        let result = match &status_url {
            Some(url) => {
                self.poll_status(url, &req, &mut events, &mut progress, &mut delay)
                    .await?;
                match req.final_state {
                    Final::Resource => Some(self.get(&req.path).await?),
                    Final::Location => match &location {
                        Some(l) => {
                            let r = self.call(Method::GET, l, None).await?;
                            Some(r.body).filter(|b| !b.is_null())
                        }
                        None => None,
                    },
                    Final::Nothing => None,
                }
            }
            None => {
                let url = location.unwrap_or_default();
                let body = self.poll_location(&url, &mut progress, &mut delay).await?;
                match req.final_state {
                    Final::Resource => Some(self.get(&req.path).await?),
                    Final::Location => body,
                    Final::Nothing => None,
                }
            }
        };
        progress.finish();
        Ok(result)
    }

    /// Polls an operation-status URL until it is terminal; a failed operation is an error.
    async fn poll_status(
        &self,
        url: &str,
        req: &Lro,
        events: &mut Option<EventCursor>,
        progress: &mut Progress,
        delay: &mut Duration,
    ) -> Result<()> {
        loop {
            let r = self.call(Method::GET, url, None).await?;
            let status = r.body["status"].as_str().unwrap_or("InProgress");
            match status.to_ascii_lowercase().as_str() {
                "succeeded" => return Ok(()),
                "failed" | "canceled" | "cancelled" => {
                    progress.abandon();
                    let mut e = ApiError::from_body(None, &r.body, "");
                    if r.body["error"]["code"].is_null() {
                        e.code = format!("Operation{status}");
                        e.message = format!("the operation ended {status}");
                    }
                    return Err(e.into());
                }
                _ => {}
            }
            let group = match &req.observe_group {
                Some(g) => self.get_optional(g).await.ok().flatten(),
                None => None,
            };
            let event = match events {
                Some(c) => self.newest_event_after(c).await,
                None => None,
            };
            progress.update(&r.body, group.as_ref(), event.as_deref());
            if let Some(d) = r.headers.get("retry-after") {
                *delay = parse_retry_after(d.to_str().unwrap_or("")).unwrap_or(*delay);
            }
            tokio::time::sleep(poll_interval(*delay)).await;
        }
    }

    /// Polls a `Location` URL (no status resource): 202 = running, else done.
    async fn poll_location(
        &self,
        url: &str,
        progress: &mut Progress,
        delay: &mut Duration,
    ) -> Result<Option<Value>> {
        loop {
            let r = self.call(Method::GET, url, None).await?;
            if r.status != StatusCode::ACCEPTED {
                return Ok(Some(r.body).filter(|b| !b.is_null()));
            }
            progress.update(&json!({"status": "InProgress"}), None, None);
            *delay = retry_after(&r.headers);
            tokio::time::sleep(poll_interval(*delay)).await;
        }
    }
}

/// Where the events of an observed group stand: only newer ones are shown.
struct EventCursor {
    group: String,
    after: Option<OffsetDateTime>,
}

fn event_time(e: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(e["time"].as_str()?, &Rfc3339).ok()
}

impl Client {
    /// The group's events (`GET {group}/events`); `None` if fogd does not serve them.
    async fn events(&self, group: &str) -> Option<Vec<Value>> {
        let r = self
            .send(
                Method::GET,
                &with_api_version(&format!("{group}/events")),
                None,
            )
            .await
            .ok()?;
        if !r.status.is_success() {
            return None;
        }
        r.body["value"].as_array().cloned()
    }

    /// `Some(latest event or None)` if the group has an events resource.
    async fn latest_event(&self, group: &str) -> Option<Option<Value>> {
        self.events(group).await.map(|v| v.last().cloned())
    }

    /// The type of the newest event after the cursor (what the operation did last).
    async fn newest_event_after(&self, c: &EventCursor) -> Option<String> {
        let list = self.events(&c.group).await?;
        let e = list.last()?;
        let newer = match (c.after, event_time(e)) {
            (Some(after), Some(t)) => t > after,
            (None, _) => true,
            (Some(_), None) => false,
        };
        newer
            .then(|| e["type"].as_str().map(str::to_string))
            .flatten()
    }
}

/// The last path segment of an operation URL (its id), without the query.
pub fn operation_id(url: &str) -> Option<String> {
    let path = url.split('?').next()?;
    path.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(60.0)))
}

fn retry_after(h: &HeaderMap) -> Duration {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
        .unwrap_or(Duration::from_secs(1))
}

/// The server's `Retry-After`, unless `FOGCTL_POLL_INTERVAL_MS` asks for another interval.
fn poll_interval(server: Duration) -> Duration {
    std::env::var("FOGCTL_POLL_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(server)
        .max(Duration::from_millis(20))
}

/// Progress of a long-running operation on stderr: an indicatif bar on a terminal, an
/// occasional plain line otherwise.
struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    with_percent: bool,
}

const SPINNER: &str = "{spinner:.green} {prefix} [{elapsed}] {wide_msg}";
const BAR: &str = "{spinner:.green} {prefix} [{elapsed}] [{bar:20.cyan/blue}] {pos:>3}% {wide_msg}";

impl Progress {
    fn new(label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(SPINNER) {
                b.set_style(style);
            }
            b.set_prefix(label.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress {
            label: label.to_string(),
            bar,
            started: Instant::now(),
            last_line: Instant::now(),
            with_percent: false,
        }
    }

    /// Shows the operation status body (and the observed group, if any).
    fn update(&mut self, status: &Value, group: Option<&Value>, event: Option<&str>) {
        let percent = status["percentComplete"].as_u64().map(|p| p.min(100));
        let detail = describe(status, group, event);
        match &self.bar {
            Some(bar) => {
                if let Some(p) = percent {
                    if !self.with_percent {
                        if let Ok(style) = ProgressStyle::with_template(BAR) {
                            bar.set_style(style.progress_chars("=> "));
                        }
                        self.with_percent = true;
                    }
                    bar.set_position(p);
                }
                bar.set_message(detail);
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(10) {
                    self.last_line = Instant::now();
                    let pct = percent.map(|p| format!(" {p}%")).unwrap_or_default();
                    eprintln!(
                        "{}:{pct} {detail} ({}s)",
                        self.label,
                        self.started.elapsed().as_secs()
                    );
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            eprintln!(
                "{}: done in {:.1}s",
                self.label,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// `step fence · RoleChanged · seeding 1.2 MiB / 30.0 MiB · SEEDING`: the status only if it
/// is unusual, the step if the status resource has one, the group's newest event, seeding
/// progress and replication state.
fn describe(status: &Value, group: Option<&Value>, event: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = status["status"]
        .as_str()
        .filter(|s| !s.eq_ignore_ascii_case("InProgress"))
    {
        parts.push(s.to_string());
    }
    if let Some(step) = status["step"].as_str() {
        parts.push(format!("step {step}"));
    }
    if let Some(e) = event {
        parts.push(e.to_string());
    }
    // The group keeps its last seeding figures after seeding: show them only while it seeds.
    let group_seeding = group
        .map(|g| &g["properties"])
        .filter(|p| matches!(p["replicationState"].as_str(), Some("SEEDING" | "PENDING")))
        .and_then(|p| p.get("seedingProgress"));
    let seeding = status.get("seedingProgress").or(group_seeding);
    if let Some(s) = seeding {
        if let (Some(done), Some(total)) = (s["bytesDone"].as_u64(), s["bytesTotal"].as_u64()) {
            parts.push(format!(
                "seeding {} / {}",
                human_bytes(done),
                human_bytes(total)
            ));
        }
    }
    if let Some(state) = group.and_then(|g| g["properties"]["replicationState"].as_str()) {
        parts.push(state.to_string());
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_versions() {
        assert_eq!(seg("Japan East"), "Japan%20East");
        assert_eq!(seg("mi-1"), "mi-1");
        assert_eq!(with_api_version("/a"), "/a?api-version=2025-01-01");
        assert_eq!(with_api_version("/a?x=1"), "/a?x=1&api-version=2025-01-01");
        assert_eq!(with_api_version("/a?api-version=1"), "/a?api-version=1");
    }

    #[test]
    fn operation_ids_and_retry_after() {
        assert_eq!(
            operation_id("https://h/x/managedInstanceAzureAsyncOperation/abc?api-version=1")
                .as_deref(),
            Some("abc")
        );
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn errors_render_code_and_message() {
        let body = json!({"error": {"code": "InstanceFailoverGroupBusy", "message": "busy"}});
        let e = ApiError::from_body(Some(StatusCode::CONFLICT), &body, "");
        assert_eq!(e.to_string(), "(InstanceFailoverGroupBusy) busy");
        let e = ApiError::from_body(Some(StatusCode::BAD_GATEWAY), &Value::Null, "oops");
        assert_eq!(e.to_string(), "(502 Bad Gateway) oops");
    }

    #[test]
    fn progress_description() {
        let s = json!({"status": "InProgress", "percentComplete": 50,
                       "seedingProgress": {"bytesDone": 1048576, "bytesTotal": 2097152}});
        let g = json!({"properties": {"replicationState": "SEEDING"}});
        assert_eq!(
            describe(&s, Some(&g), Some("Fenced")),
            "Fenced · seeding 1.0 MiB / 2.0 MiB · SEEDING"
        );
    }
}
