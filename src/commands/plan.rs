//! `etcd-supervisor plan`: a dry run. For the local member: the pinned version, the upgrade
//! state, what waits in the staging dir, and what preflight would decide for the target,
//! with the rule. Changes nothing and runs no staged file.

use super::Outcome;
use std::fmt::Write as _;

use crate::cli::PlanArgs;
use crate::cluster::view;
use crate::etcd::Client;
use crate::staging;
use crate::upgrade::advice;
use crate::upgrade::machine::Phase;
use crate::upgrade::preflight::{self, Verdict};
use crate::upgrade::state_file::StateFile;
use crate::upgrade::vet::VettingRecord;
use crate::versions::store::VersionStore;
use crate::versions::Version;

/// Runs the dry run; exit 0 when the target would proceed (or nothing is staged), 1 when it
/// would wait or be refused, 2 for bad input.
pub async fn command(args: &PlanArgs) -> Outcome {
    let env = std::env::vars().collect();
    let client = match Client::new(crate::config::client_config(
        &args.conn,
        &[crate::config::DEFAULT_ENDPOINT.to_owned()],
        &env,
    )) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return Outcome::Usage;
        }
    };
    let policy = match args.policy.resolve() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("--allow-known-bad takes versions such as 3.5.1: {e}");
            return Outcome::Usage;
        }
    };
    let explicit: Option<Version> = match args.target.as_deref().map(str::parse) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            tracing::error!("--target: {e}");
            return Outcome::Usage;
        }
    };
    let mut out = String::new();
    let store = VersionStore::new(&args.state.state_dir);
    let running = match store.current() {
        Ok(Some(p)) => {
            let _ = writeln!(
                out,
                "member {} runs etcd {} ({})",
                args.member,
                p.version,
                p.binary.display()
            );
            Some(p.version)
        }
        Ok(None) => {
            let _ = writeln!(
                out,
                "member {}: nothing pinned in {}",
                args.member,
                args.state.state_dir.display()
            );
            None
        }
        Err(e) => {
            tracing::error!("{e}");
            return Outcome::Usage;
        }
    };
    let turn = StateFile::new(&args.state.state_dir).load().ok().flatten();
    match &turn {
        Some(t) if t.phase != Phase::Idle => {
            let to = t.to.as_ref().map_or("-".to_owned(), ToString::to_string);
            let _ = writeln!(out, "upgrade: {} -> {to}, state {}", t.from, t.state_name());
        }
        _ => {
            let _ = writeln!(out, "upgrade: idle");
        }
    }
    if let Some(err) = turn.as_ref().and_then(|t| t.last_error.as_deref()) {
        let _ = writeln!(out, "last error: {err}");
    }
    if let Some(v) = VettingRecord::load(&args.state.state_dir) {
        let _ = writeln!(
            out,
            "last vetting: {} {} at {} ({} ms): {}",
            v.version, v.result, v.time, v.took_ms, v.detail
        );
    }
    let windows =
        crate::upgrade::window::state_at(&args.window.windows, std::time::SystemTime::now());
    let _ = writeln!(out, "windows: {windows}");
    let staging_dir = args.staging.resolve(&args.state.state_dir);
    match staging::scan(&staging_dir) {
        Ok(listing) => {
            let plan = staging::plan(&listing);
            for bundle in &plan.ready {
                let _ = writeln!(out, "staged: {} (checksum present; checked and probed when the supervisor picks it up)", bundle.binary.name);
            }
            for (name, why) in &plan.waiting {
                let _ = writeln!(out, "staged: {name} waits: {why}");
            }
            if plan.ready.is_empty() && plan.waiting.is_empty() {
                let _ = writeln!(
                    out,
                    "staging dir {}: nothing waiting",
                    staging_dir.display()
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "staging dir: {e}");
        }
    }
    // Refused here for this member's configuration: it stays so until the supervisor
    // restarts with the fix (the vetting runs again then).
    let refused_here = turn
        .as_ref()
        .filter(|t| t.phase == Phase::Idle && explicit.is_none())
        .and_then(|t| Some((t.to.clone()?, t.last_error.clone()?)));
    let target = explicit.or_else(|| turn.and_then(|t| t.to));
    let (Some(running), Some(target)) = (running, target) else {
        let _ = writeln!(out, "decision: nothing to do");
        print!("{out}");
        return Outcome::Success;
    };
    let report = view::gather(&client, &args.prefix.key_prefix).await;
    for warning in advice::known_bad_running(&report) {
        let _ = writeln!(out, "warning: {warning}");
    }
    if let Some(note) = advice::last_to_move(&report, &args.member, &target)
        .or_else(|| advice::point_of_no_return(&report))
    {
        let _ = writeln!(out, "note: {note}");
    }
    if let Some(paused) = report.paused() {
        let _ = writeln!(out, "upgrades PAUSED: {paused}");
    }
    if let Some(line) =
        super::downgrade::progress_line(&client, &args.prefix.key_prefix, &report).await
    {
        let _ = writeln!(out, "{line}");
    }
    if let Some((version, why)) = refused_here {
        let _ = writeln!(out, "decision for {version}: refused here: {why}");
        print!("{out}");
        return Outcome::Failed;
    }
    let mut verdict = preflight::assess(&report, &args.member, &running, &target, &policy);
    // The rules allow it, but the turn would not start now.
    if verdict == Verdict::Proceed {
        if let Some(paused) = report.paused() {
            verdict = Verdict::Wait(format!("upgrades are {paused}"));
        } else if !windows.allows_start() {
            verdict = Verdict::Wait(windows.to_string());
        }
    }
    let code = match &verdict {
        Verdict::Proceed => {
            let _ = writeln!(
                out,
                "decision for {target}: proceed (turn, backup, stop, swap, start, verify)"
            );
            Outcome::Success
        }
        Verdict::Wait(why) => {
            let _ = writeln!(out, "decision for {target}: wait: {why}");
            Outcome::Failed
        }
        Verdict::Refuse(why) => {
            let _ = writeln!(out, "decision for {target}: refuse: {why}");
            Outcome::Failed
        }
    };
    print!("{out}");
    code
}
