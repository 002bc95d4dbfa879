//! `etcd-supervisor plan`: a dry run. For the local member: the pinned version, the upgrade
//! state, what waits in the staging dir, and what preflight would decide for the target,
//! with the rule. Changes nothing and runs no staged file.

use super::Outcome;
use std::fmt::Write as _;

use crate::cli::PlanArgs;
use crate::cluster::view;
use crate::config::inspect::{Daemon, From, Sourced};
use crate::etcd::Client;
use crate::rehearsal::{Request, ToolKind};
use crate::staging;
use crate::upgrade::rules::advice;
use crate::upgrade::rules::path::Policy;
use crate::upgrade::rules::preflight::{self, PreflightVerdict};
use crate::upgrade::turn::machine::Phase;
use crate::upgrade::turn::state_file::StateFile;
use crate::upgrade::turn::vet::VettingRecord;
use crate::versions::store::VersionStore;
use crate::versions::Version;

/// Runs the dry run; exit 0 when the target would proceed (or nothing is staged), 1 when it
/// would wait or be refused, 2 for bad input.
pub async fn command(args: &PlanArgs) -> Outcome {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let state_dir = &args.state.state_dir;
    // Under systemd the daemon's options come from the unit's environment files, which an
    // operator's shell does not have: what the daemon recorded fills in what is not given.
    let daemon = Daemon::look(state_dir);
    let (conn, conn_from) = daemon.conn(&args.conn);
    let client = match Client::new(crate::config::client_config(
        &conn,
        &[crate::config::DEFAULT_ENDPOINT.to_owned()],
        &env,
    )) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return Outcome::Usage;
        }
    };
    let given_policy = match args.policy.resolve() {
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
    let member = daemon.pick(
        args.member
            .clone()
            .or_else(|| env.get("ETCD_NAME").filter(|v| !v.is_empty()).cloned()),
        |r| Some(r.member.clone()),
        "default".to_owned(),
    );
    // One default per option (packaging's default config lists it): a prefix left at the
    // default counts as not given, as in `status`.
    let given_prefix = (args.prefix.key_prefix != crate::config::DEFAULT_KEY_PREFIX)
        .then(|| args.prefix.key_prefix.clone());
    let key_prefix = daemon.pick(
        given_prefix,
        |r| Some(r.key_prefix.clone()),
        crate::config::DEFAULT_KEY_PREFIX.to_owned(),
    );
    let windows_set = daemon.windows(&args.window.windows);
    let staging = daemon.pick(
        args.staging.staging_dir.clone(),
        |r| Some(r.staging_dir.clone()),
        args.staging.resolve(state_dir),
    );
    let rehearsal_mode = daemon.pick(None, |r| Some(r.rehearsal.clone()), "auto".to_owned());
    let policy =
        if given_policy.allow_known_bad.is_empty() && !given_policy.allow_auth_upgrade_from_34 {
            daemon.pick(
                None,
                |r| {
                    Some(Policy {
                        allow_known_bad: r
                            .allow_known_bad
                            .iter()
                            .filter_map(|v| v.parse().ok())
                            .collect(),
                        allow_auth_upgrade_from_34: r.allow_auth_upgrade_from_34,
                    })
                },
                given_policy,
            )
        } else {
            Sourced {
                value: given_policy,
                from: From::Given,
            }
        };
    let mut out = String::new();
    let _ = writeln!(out, "{}", daemon.describe());
    let name_note = daemon
        .record()
        .filter(|_| member.from != From::Given)
        .and_then(|(r, _)| r.sources.get("name").cloned())
        .map(|s| format!("; its name from {s}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  member       {} ({}{name_note})",
        member.value, member.from
    );
    let _ = writeln!(
        out,
        "  endpoints    {} ({conn_from})",
        conn.endpoints.join(",")
    );
    let _ = writeln!(
        out,
        "  key prefix   {} ({})",
        key_prefix.value, key_prefix.from
    );
    let specs: Vec<&str> = windows_set.value.iter().map(|w| w.spec()).collect();
    let _ = writeln!(
        out,
        "  windows      {} ({})",
        if specs.is_empty() {
            "none (any time)".to_owned()
        } else {
            specs.join("; ")
        },
        windows_set.from
    );
    let _ = writeln!(
        out,
        "  staging dir  {} ({})",
        staging.value.display(),
        staging.from
    );
    let _ = writeln!(
        out,
        "  rehearsal    {} ({})",
        rehearsal_mode.value, rehearsal_mode.from
    );
    if !policy.value.allow_known_bad.is_empty() || policy.value.allow_auth_upgrade_from_34 {
        let bad: Vec<String> = policy
            .value
            .allow_known_bad
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(
            out,
            "  allowed      known-bad [{}], auth upgrade from 3.4: {} ({})",
            bad.join(","),
            policy.value.allow_auth_upgrade_from_34,
            policy.from
        );
    }
    let member = member.value;
    let policy = policy.value;
    let store = VersionStore::new(state_dir);
    let running = match store.current() {
        Ok(Some(p)) => {
            let _ = writeln!(
                out,
                "member {} runs etcd {} ({})",
                member,
                p.version,
                p.binary.display()
            );
            Some(p.version)
        }
        Ok(None) => {
            let _ = writeln!(
                out,
                "member {}: nothing pinned in {}",
                member,
                state_dir.display()
            );
            None
        }
        Err(e) => {
            tracing::error!("{e}");
            return Outcome::Usage;
        }
    };
    let turn = StateFile::new(state_dir).load().ok().flatten();
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
    if let Some(v) = VettingRecord::load(state_dir) {
        let _ = writeln!(
            out,
            "last vetting: {} {} at {} ({} ms): {}",
            v.version, v.result, v.time, v.took_ms, v.detail
        );
    }
    let windows = crate::upgrade::rules::pacing::window::state_at(
        &windows_set.value,
        std::time::SystemTime::now(),
    );
    let _ = writeln!(out, "windows: {windows}");
    let staging_dir = staging.value;
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
    if let (Some(running), Some(target)) = (&running, &target) {
        let _ = writeln!(
            out,
            "rehearsal of {target}: {}",
            restore_tool_line(&store, running, target, &rehearsal_mode.value)
        );
    }
    let (Some(running), Some(target)) = (running, target) else {
        let _ = writeln!(out, "decision: nothing to do");
        print!("{out}");
        return Outcome::Success;
    };
    let report = view::gather(&client, &key_prefix.value).await;
    for warning in advice::known_bad_running(&report) {
        let _ = writeln!(out, "warning: {warning}");
    }
    if let Some(note) = advice::last_to_move(&report, &member, &target)
        .or_else(|| advice::point_of_no_return(&report))
    {
        let _ = writeln!(out, "note: {note}");
    }
    if let Some(paused) = report.paused() {
        let _ = writeln!(out, "upgrades PAUSED: {paused}");
    }
    if let Some(line) = super::downgrade::progress_line(&client, &key_prefix.value, &report).await {
        let _ = writeln!(out, "{line}");
    }
    if let Some((version, why)) = refused_here {
        let _ = writeln!(out, "decision for {version}: refused here: {why}");
        print!("{out}");
        return Outcome::Failed;
    }
    let mut verdict = preflight::assess(&report, &member, &running, &target, &policy);
    // The rules allow it, but the turn would not start now.
    if verdict == PreflightVerdict::Proceed {
        if let Some(paused) = report.paused() {
            verdict = PreflightVerdict::Wait(format!("upgrades are {paused}"));
        } else if !windows.allows_start() {
            verdict = PreflightVerdict::Wait(windows.to_string());
        }
    }
    let code = match &verdict {
        PreflightVerdict::Proceed => {
            let _ = writeln!(
                out,
                "decision for {target}: proceed (turn, backup, stop, swap, start, verify)"
            );
            Outcome::Success
        }
        PreflightVerdict::Wait(why) => {
            let _ = writeln!(out, "decision for {target}: wait: {why}");
            Outcome::Failed
        }
        PreflightVerdict::Refuse(why) => {
            let _ = writeln!(out, "decision for {target}: refuse: {why}");
            Outcome::Failed
        }
    };
    print!("{out}");
    code
}

/// Which tool the rehearsal restores with, or why it has none.
fn restore_tool_line(
    store: &VersionStore,
    running: &Version,
    target: &Version,
    mode: &str,
) -> String {
    if mode == "never" {
        return "not rehearsed (--rehearsal never)".to_owned();
    }
    match Request::restore_tool_from_store(store, running, target) {
        Some(tool) => {
            let how = match tool.kind {
                ToolKind::Etcdutl => "etcdutl snapshot restore",
                ToolKind::Etcdctl34 => "etcdctl snapshot restore (3.4, ETCDCTL_API=3)",
            };
            format!(
                "restores with {how} of {} ({})",
                tool.version,
                tool.path.display()
            )
        }
        None => format!(
            "no restore tool: neither {} nor {} has {} pinned, so the rehearsal {}; give \
             --etcd-binary with etcdctl/etcdutl beside it, or stage the version with \
             `--with etcdutl`",
            store.dir_of(running).display(),
            store.dir_of(target).display(),
            if running.minor_version() >= (3, 5) {
                "etcdutl"
            } else {
                "etcdctl (3.4) or etcdutl"
            },
            if mode == "always" {
                "cannot run and the upgrade holds"
            } else {
                "is skipped"
            },
        ),
    }
}
