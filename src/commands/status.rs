//! `etcd-supervisor status`: the cluster view, as a table or stable JSON.

use super::Outcome;
use crate::cluster::records::{Record, Stored};
use crate::cluster::view::{gather, ClusterView};
use crate::config::inspect::Daemon;
use crate::etcd::Client;
use crate::upgrade::rules::advice;
use crate::upgrade::turn::consistency;
use crate::versions::Version;

/// `etcd-supervisor status`: prints the report; exit 0 when every member is healthy.
pub async fn command(args: &crate::cli::StatusArgs) -> Outcome {
    let env = std::env::vars().collect();
    // From an operator's shell: the daemon's recorded endpoints, TLS and prefix fill in
    // what is not given (see `config::inspect`).
    let daemon = Daemon::look(&args.state_dir);
    let (conn, _) = daemon.conn(&args.conn);
    let given_prefix = (args.prefix.key_prefix != crate::config::DEFAULT_KEY_PREFIX)
        .then(|| args.prefix.key_prefix.clone());
    let key_prefix = daemon
        .pick(
            given_prefix,
            |r| Some(r.key_prefix.clone()),
            args.prefix.key_prefix.clone(),
        )
        .value;
    let cfg =
        crate::config::client_config(&conn, &[crate::config::DEFAULT_ENDPOINT.to_owned()], &env);
    let client = match Client::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return Outcome::Usage;
        }
    };
    if args.watch {
        return super::status_watch::run(&client, &key_prefix, args.interval).await;
    }
    let view = gather(&client, &key_prefix).await;
    // A recorded inconsistency is shown, and makes the exit code non-zero.
    let inconsistency = consistency::blocked(&client, &key_prefix)
        .await
        .ok()
        .flatten();
    let downgrade = super::downgrade::progress_line(&client, &key_prefix, &view).await;
    if args.json {
        let json = serde_json::to_value(&view).map(|mut v| {
            v["inconsistency"] = inconsistency.clone().into();
            v["downgrade"] = downgrade.clone().into();
            v
        });
        match json.and_then(|v| serde_json::to_string_pretty(&v)) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                tracing::error!("cannot encode the report: {e}");
                return Outcome::Failed;
            }
        }
    } else {
        let table = render(&view);
        match &downgrade {
            // During a downgrade the mixed minors are not an upgrade under way: the
            // upgrade's point-of-no-return note would say the opposite of what happens.
            Some(line) => {
                for l in table
                    .lines()
                    .filter(|l| !l.starts_with("note: a minor upgrade"))
                {
                    println!("{l}");
                }
                println!("{line}");
            }
            None => print!("{table}"),
        }
        if let Some(why) = &inconsistency {
            println!("INCONSISTENT: {why}; no upgrade turn is taken until `etcd-supervisor acknowledge-inconsistency`");
        }
    }
    if view.healthy && inconsistency.is_none() {
        Outcome::Success
    } else {
        Outcome::Failed
    }
}

/// The human table.
pub fn render(report: &ClusterView) -> String {
    let mut out = String::new();
    if let Some(err) = &report.error {
        out.push_str(&format!("cluster unreachable: {err}\n"));
        return out;
    }
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let show = |v: &Option<Version>| v.as_ref().map_or_else(|| "-".into(), ToString::to_string);
    out.push_str(&format!(
        "cluster {}  version {}  leader {}  {}\n\n",
        dash(&report.cluster_id),
        show(&report.cluster_version),
        dash(&report.leader),
        if report.healthy {
            "healthy"
        } else {
            "UNHEALTHY"
        }
    ));
    let mut rows = vec![[
        "NAME",
        "ID",
        "CLIENT URL",
        "VERSION",
        "HEALTHY",
        "ROLE",
        "APPLIED",
        "LAG",
        "STATE",
    ]
    .map(String::from)];
    for m in &report.members {
        let state = report
            .progress
            .get(&m.name)
            .and_then(Stored::record)
            .map_or("-", |p| p.state.as_str());
        rows.push([
            m.name.clone(),
            m.id.clone(),
            dash(&m.client_url),
            show(&m.server_version),
            if m.healthy { "yes" } else { "NO" }.into(),
            match (m.leader, m.learner) {
                (true, _) => "leader",
                (false, true) => "learner",
                (false, false) => "",
            }
            .into(),
            m.raft_applied_index.map_or("-".into(), |i| i.to_string()),
            m.lag.map_or("-".into(), |i| i.to_string()),
            state.to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for m in report.members.iter().filter(|m| m.error.is_some()) {
        out.push_str(&format!("  {}: {}\n", m.name, dash(&m.error)));
    }
    out.push('\n');
    if report.alarms.is_empty() {
        out.push_str("alarms: none\n");
    } else {
        let list: Vec<String> = report
            .alarms
            .iter()
            .map(|a| format!("{} on {}", a.alarm, a.member))
            .collect();
        out.push_str(&format!("alarms: {}\n", list.join(", ")));
    }
    match &report.turn.holder {
        None => out.push_str("upgrade turn: free\n"),
        Some(h) if report.turn.waiting.is_empty() => {
            out.push_str(&format!("upgrade turn: held by {h}\n"))
        }
        Some(h) => out.push_str(&format!(
            "upgrade turn: held by {h}; waiting: {}\n",
            report.turn.waiting.join(", ")
        )),
    }
    if let Some(paused) = report.paused() {
        out.push_str(&format!("upgrades PAUSED: {paused}\n"));
    }
    for (name, stored) in &report.progress {
        if let Some(held) = stored.record().and_then(|p| p.held.as_deref()) {
            out.push_str(&format!("{name}: held: {held}\n"));
        }
    }
    for (version, stored) in &report.rejected {
        match stored {
            Stored::Read(r) => {
                let when = r
                    .time
                    .as_deref()
                    .map_or(String::new(), |t| format!(" at {t}"));
                out.push_str(&format!(
                    "rejected: {version} (failed on {}{when}): {}\n",
                    r.member, r.reason
                ));
            }
            // The note below says why the record cannot be read.
            Stored::Unreadable { .. } => out.push_str(&format!("rejected: {version}\n")),
        }
    }
    let storage: Vec<String> = report
        .members
        .iter()
        .filter_map(|m| Some(format!("{} {}", m.name, m.storage_version.as_ref()?)))
        .collect();
    if !storage.is_empty() {
        out.push_str(&format!("storage versions: {}\n", storage.join(", ")));
    }
    for (name, stored) in &report.progress {
        let Some(p) = stored.record() else { continue };
        if let Some(vetting) = &p.vetting {
            out.push_str(&format!("{name}: vetted {vetting}\n"));
        }
        if let Some(line) = advice::problem_line(p, report.cluster_version.as_ref(), true) {
            out.push_str(&format!("{name}: {line}\n"));
        }
    }
    for warning in advice::known_bad_running(report) {
        out.push_str(&format!("warning: {warning}\n"));
    }
    if let Some(note) = advice::point_of_no_return(report) {
        out.push_str(&format!("note: {note}\n"));
    }
    for (name, stored) in &report.progress {
        out.push_str(&record_note(&format!("progress record of {name}"), stored));
    }
    for (version, stored) in &report.rejected {
        out.push_str(&record_note(&format!("rejection of {version}"), stored));
    }
    out
}

/// A line for a record this release cannot fully read; empty for an ordinary one.
fn record_note<T: Record>(what: &str, stored: &Stored<T>) -> String {
    match stored {
        Stored::Read(r) if r.newer_schema() => format!(
            "note: {what} was written by a newer supervisor (schema {}, this one knows {}); shown as far as understood\n",
            r.schema(),
            crate::cluster::records::SCHEMA
        ),
        Stored::Read(_) => String::new(),
        Stored::Unreadable { error, .. } => format!("note: {what}: {error}\n"),
    }
}
