//! The Prometheus families fogd exports, declared once: their help text, and a first
//! sample for every family whose labels are known before anything happens — so a scrape
//! right after start-up already shows what will be there (dashboards and alerts can be
//! checked against a fresh fogd), and `fogd_build_info` says which fogd answers.
//!
//! Families labelled by group or instance appear with their first group, as they must.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Registers every family's help text and the label-independent first samples.
pub fn describe() {
    describe_gauge!(
        "fogd_build_info",
        "fogd's version (label `version`); always 1"
    );
    metrics::gauge!("fogd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);

    describe_counter!(
        "fogd_api_requests_total",
        "API requests answered, by method and HTTP status"
    );
    describe_histogram!(
        "fogd_api_request_duration_seconds",
        Unit::Seconds,
        "API request handling time, by method"
    );
    describe_gauge!("fogd_api_connections", "open HTTPS connections to the API");
    metrics::gauge!("fogd_api_connections").set(0.0);
    describe_counter!(
        "fogd_api_connections_closed_total",
        "API connections fogd closed, by reason (idle, limit)"
    );
    for reason in ["idle", "limit"] {
        metrics::counter!("fogd_api_connections_closed_total", "reason" => reason).absolute(0);
    }

    describe_gauge!(
        "fogd_group_replicating",
        "1 while the group's secondary streams from its primary"
    );
    describe_gauge!(
        "fogd_group_replication_lag_bytes",
        Unit::Bytes,
        "WAL the secondary has not replayed"
    );
    describe_gauge!(
        "fogd_group_replication_lag_seconds",
        Unit::Seconds,
        "how far the secondary's replay is behind"
    );
    describe_gauge!("fogd_group_generation", "the group's fencing generation");
    describe_gauge!(
        "fogd_group_member_is_primary",
        "1 for the group's primary member"
    );
    describe_gauge!(
        "fogd_group_member_healthy",
        "1 while the member is healthy by the monitor's rules"
    );
    describe_gauge!(
        "fogd_group_automatic_failover_countdown_seconds",
        Unit::Seconds,
        "seconds left before an automatic failover (0: no countdown)"
    );
    describe_counter!(
        "fogd_failovers_total",
        "finished failovers, by group and type (planned, forced, automatic)"
    );
    describe_counter!(
        "fogd_automatic_failovers_total",
        "automatic failovers started, by group"
    );
    describe_histogram!(
        "fogd_failover_duration_seconds",
        Unit::Seconds,
        "failover duration from fence to finish, by type"
    );
    describe_counter!(
        "fogd_server_restarts_total",
        "PostgreSQL servers fogd started again after they stopped by themselves, by result"
    );
    for result in ["ok", "failed"] {
        metrics::counter!("fogd_server_restarts_total", "result" => result).absolute(0);
    }

    describe_counter!(
        "fogd_listener_connections_total",
        "client connections accepted by a group listener"
    );
    describe_gauge!(
        "fogd_listener_connections_active",
        "client connections open through a group listener"
    );
    describe_counter!(
        "fogd_listener_refused_total",
        "client connections a group listener refused"
    );
    describe_counter!(
        "fogd_listener_bytes_total",
        Unit::Bytes,
        "bytes forwarded by a group listener, by direction"
    );
}
