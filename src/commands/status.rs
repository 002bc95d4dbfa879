//! `etcd-supervisor status`: the cluster view, as a table or stable JSON.

use super::Outcome;
use crate::cluster::view::{gather, ClusterReport};
use crate::etcd::Client;

/// `etcd-supervisor status`: prints the report; exit 0 when every member is healthy.
pub async fn command(args: &crate::cli::StatusArgs) -> Outcome {
    let env = std::env::vars().collect();
    let cfg = crate::config::client_config(
        &args.conn,
        &[crate::config::DEFAULT_ENDPOINT.to_owned()],
        &env,
    );
    let client = match Client::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return Outcome::Usage;
        }
    };
    let report = gather(&client, &args.prefix.key_prefix).await;
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                tracing::error!("cannot encode the report: {e}");
                return Outcome::Failed;
            }
        }
    } else {
        print!("{}", render(&report));
    }
    if report.healthy {
        Outcome::Success
    } else {
        Outcome::Failed
    }
}

/// The human table.
pub fn render(report: &ClusterReport) -> String {
    let mut out = String::new();
    if let Some(err) = &report.error {
        out.push_str(&format!("cluster unreachable: {err}\n"));
        return out;
    }
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    out.push_str(&format!(
        "cluster {}  version {}  leader {}  {}\n\n",
        dash(&report.cluster_id),
        dash(&report.cluster_version),
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
        "LEADER",
        "APPLIED",
        "LAG",
        "STATE",
    ]
    .map(String::from)];
    for m in &report.members {
        let state = report
            .progress
            .get(&m.name)
            .and_then(|p| p.get("state"))
            .and_then(|s| s.as_str())
            .unwrap_or("-");
        rows.push([
            m.name.clone(),
            m.id.clone(),
            dash(&m.client_url),
            dash(&m.server_version),
            if m.healthy { "yes" } else { "NO" }.into(),
            if m.leader { "*" } else { "" }.into(),
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
    for (version, why) in &report.rejected {
        out.push_str(&format!("rejected: {version}: {why}\n"));
    }
    out
}
