//! `RELIABILITY.md`: the campaign's table, failures with their evidence, and notes.

use super::fogd::BASE_ENV;
use super::scenarios::{Campaign, Trial};
use std::fmt::Write as _;

pub const START_MARKER: &str = "<!-- campaign:start -->";
pub const END_MARKER: &str = "<!-- campaign:end -->";

/// The text above the markers when `RELIABILITY.md` is first written.
pub const INTRO: &str = "# Reliability\n\n\
fogd's claims — no acknowledged write is lost outside a reported forced-failover loss, never two \
primaries, recovery without a hand on the keyboard — checked by attacking a real release fogd. \
The campaign (`bench/src/bin/campaign.rs`, see `bench/README.md`) starts fogd, builds a failover \
group of two real PostgreSQL 15 servers, and runs every scenario as repeatable trials while a \
workload checker writes numbered rows through the read-write listener, reads through the \
read-only listener, and samples `pg_is_in_recovery()` on both servers every few milliseconds. \
After each fault it waits, hands off, until the group is `CATCH_UP` with both members `Healthy`, \
then checks that every acknowledged id is on the primary and on the caught-up secondary. A \
trial fails when fogd does not recover within the bound, an acknowledged write is missing \
outside a range fogd reported lost (`lastFailover.dataLoss`, `DataLoss` events), both servers \
were primaries at once, the read-write listener reached a server in recovery after a switch \
had completed, or the scenario's own rule is broken (exactly one winner among concurrent \
requests, an answering API under attack, …). Failures are listed with their reason and fogd's \
log; nothing is left out.\n\n\
The section below is rewritten by every run of the campaign.\n";

fn row_of(trials: &[&Trial]) -> (usize, usize, usize, usize, usize, Option<f64>) {
    let failures = trials.iter().filter(|t| !t.failures.is_empty()).count();
    let lost = trials.iter().map(|t| t.lost).sum();
    let reported = trials.iter().map(|t| t.reported).sum();
    let two = trials.iter().map(|t| t.two_primaries).sum();
    let max = trials
        .iter()
        .filter_map(|t| t.recover_s)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    (trials.len(), failures, lost, reported, two, max)
}

/// Where and how the campaign ran.
pub struct RunInfo {
    pub command: String,
    pub machine: String,
    pub uname: String,
    pub pg: String,
    pub secs: f64,
    pub commit: String,
    pub date: String,
}

/// The section between the markers.
pub fn section(c: &Campaign, info: &RunInfo) -> String {
    let RunInfo {
        command,
        machine,
        uname,
        pg,
        secs,
        commit,
        date,
    } = info;
    let mut s = String::new();
    let _ = writeln!(s, "{START_MARKER}");
    let total = c.trials.len();
    let failed = c.trials.iter().filter(|t| !t.failures.is_empty()).count();
    let _ = writeln!(
        s,
        "## Last run: {date}\n\n\
         - command: `{command}` ({:.1} min)\n\
         - commit: {commit}\n\
         - machine: `{uname}`; {machine}\n\
         - {pg}; fogd settings: {}; `RUST_LOG=info`\n\
         - result: **{} of {total} trials passed**{}\n",
        secs / 60.0,
        BASE_ENV
            .iter()
            .map(|(k, v)| format!("`{k}={v}`"))
            .collect::<Vec<_>>()
            .join(", "),
        total - failed,
        if failed > 0 {
            format!(", **{failed} failed** (see Failures)")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "| # | scenario | runs | failures | acknowledged writes lost (outside reported ranges) | reported loss (writes) | two-primary moments | max time to recover (s) |"
    );
    let _ = writeln!(
        s,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (sc, trials) in c.by_scenario().into_values() {
        let (runs, failures, lost, reported, two, max) = row_of(&trials);
        let _ = writeln!(
            s,
            "| {} | `{}`: {} | {runs} | {} | {lost} | {reported} | {two} | {} |",
            sc.number,
            sc.key,
            sc.title,
            if failures > 0 {
                format!("**{failures}**")
            } else {
                "0".into()
            },
            max.map_or("–".to_string(), |m| format!("{m:.1}"))
        );
    }
    let _ = writeln!(
        s,
        "\nA run is one trial: one fault (for the `crash-*` scenarios, one per step the \
         orchestrator names, `fog_orchestrator::steps::step_names`), then recovery and the \
         data check. Time to recover: from the end of the fault (fogd restarted after its \
         crash, SIGCONT, the postmaster killed, the burst answered) until the group is \
         `CATCH_UP`, both members `Healthy`, the primary writable, the secondary streaming and \
         the read-write listener reaching the primary; for `automatic-host-gone`, from the \
         kill to the first write on the new primary. Reported loss: acknowledged writes fogd \
         said it lost (their WAL position inside a reported range on the server that took \
         them).\n"
    );
    let failures: Vec<&Trial> = c.trials.iter().filter(|t| !t.failures.is_empty()).collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "### Failures\n");
        for t in failures {
            let _ = writeln!(
                s,
                "- **`{}`{}**: {}",
                t.scenario,
                if t.case.is_empty() {
                    String::new()
                } else {
                    format!(" at `{}`", t.case)
                },
                t.failures.join("; ").replace('\n', " ")
            );
            if !t.notes.is_empty() {
                let _ = writeln!(s, "  ({})", t.notes.join("; ").replace('\n', " "));
            }
            if !t.evidence.is_empty() {
                let _ = writeln!(s, "\n  ```text");
                for l in &t.evidence {
                    let _ = writeln!(s, "  {}", l.replace("```", "'''"));
                }
                let _ = writeln!(s, "  ```\n");
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "### Notes per trial\n");
    for t in &c.trials {
        if t.notes.is_empty() && t.failures.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "- `{}`{}: {}{} acknowledged writes during the trial{}",
            t.scenario,
            if t.case.is_empty() {
                String::new()
            } else {
                format!(" `{}`", t.case)
            },
            if t.failures.is_empty() {
                "ok; "
            } else {
                "failed; "
            },
            t.acks,
            if t.notes.is_empty() {
                String::new()
            } else {
                format!("; {}", t.notes.join("; ").replace('\n', " "))
            }
        );
    }
    let _ = writeln!(s, "{END_MARKER}");
    s
}
