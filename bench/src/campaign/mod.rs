//! The reliability campaign: attacks on a real release fogd, as repeatable trials, and the
//! `RELIABILITY.md` report. The program is `src/bin/campaign.rs`; what each scenario does
//! is in [`scenarios`], the workload checker that runs through all of them in [`workload`].

pub mod attack;
pub mod cluster;
pub mod fogd;
pub mod report;
pub mod scenarios;
pub mod workload;
