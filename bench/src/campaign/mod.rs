//! The reliability campaign: attacks on a real release fogd, as repeatable trials, and the
//! `RELIABILITY.md` report. The program is `src/bin/campaign.rs`; what each scenario does
//! is in [`scenarios`], the workload checker that runs through all of them in [`workload`].

pub mod attack;
/// The shared fogd harness ([`crate::fogd`]) and the settings every campaign launch gets.
pub mod fogd {
    pub use crate::fogd::*;

    /// The settings every launch gets (every other `FOGD_*` variable is removed).
    pub const BASE_ENV: &[(&str, &str)] = &[
        // One grace-period "minute" lasts a second, and grace periods may be that short, so
        // an automatic failover is seconds away.
        ("FOGD_GRACE_PERIOD_UNIT_MS", "1000"),
        ("FOGD_MIN_GRACE_PERIOD_MINUTES", "1"),
        // Health probes twice a second (a failed probe counts after 1.5 s), and a former
        // primary that could not rejoin is retried every second.
        ("FOGD_PROBE_INTERVAL_MS", "500"),
        ("FOGD_PROBE_TIMEOUT_MS", "1500"),
        ("FOGD_REJOIN_RETRY_MS", "1000"),
    ];
}
pub mod cluster;
pub mod report;
pub mod scenarios;
pub mod workload;
