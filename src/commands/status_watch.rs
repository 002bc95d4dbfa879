//! `etcd-supervisor status --watch`: the cluster view asked again whenever the records under
//! the key prefix change (a watch) and at least every `--interval`, until Ctrl-C (or
//! SIGTERM). On a terminal each frame is drawn over the last one in place
//! (cursor home, every line ending in clear-to-end-of-line, then clear-to-end-of-screen:
//! nothing is blanked before it is redrawn, so nothing flickers; the cursor is hidden while
//! watching). Elsewhere (a pipe, a log file) it prints a block with a time header each time
//! something changes other than the ages and raft indexes that move all the time.
//!
//! A frame: the cluster line, one row per member (version, health, role, its supervisor's
//! phase and how long it has been in it, the staged version, applied index), the upgrade
//! turn's holder and queue, rejected versions, the members' last problems and alarms, and
//! a downgrade under way (the same line `status` prints).

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use super::Outcome;
use crate::cluster::changes::{Changes, Woke};
use crate::cluster::records::Stored;
use crate::cluster::view::{gather, ClusterView};
use crate::etcd::Client;
use crate::upgrade::rules::advice;
use crate::versions::Version;

/// Clear to the end of the line (ends every line of a frame on a terminal).
const CLEAR_EOL: &str = "\x1b[K";
/// Cursor home, then the frame, then clear below it.
const HOME: &str = "\x1b[H";
const CLEAR_BELOW: &str = "\x1b[J";
const CLEAR_SCREEN: &str = "\x1b[2J";
const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";

/// After a change, how long to gather more before drawing: a turn writes a few records in
/// a row, and one frame shows them together.
const COALESCE: Duration = Duration::from_millis(100);

/// Watches until Ctrl-C or SIGTERM: exit 0 then; 1 when stdout goes away.
pub async fn run(client: &Client, key_prefix: &str, interval: Duration) -> Outcome {
    let tty = io::stdout().is_terminal();
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch for SIGTERM: {e}");
            return Outcome::Failed;
        }
    };
    let stop = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tokio::pin!(stop);
    let mut out = io::stdout().lock();
    if tty && write!(out, "{HIDE_CURSOR}{CLEAR_SCREEN}").is_err() {
        return Outcome::Failed;
    }
    // A change of the supervisors' records, the turn or the pause is drawn as it happens;
    // the rest (health, versions, indexes, ages) every `interval`, which is also the poll
    // while the watch is broken.
    let changes = Changes::start(client, key_prefix);
    let mut first = true;
    let mut last_key: Option<String> = None;
    let outcome = loop {
        let (view, downgrade) = tokio::select! {
            _ = &mut stop => break Outcome::Success,
            seen = async {
                // One frame for a burst of changes (a turn writes several records).
                if !std::mem::take(&mut first) && changes.wait(interval).await == Woke::Change {
                    tokio::time::sleep(COALESCE.min(interval)).await;
                }
                let view = gather(client, key_prefix).await;
                let downgrade = super::downgrade::progress_line(client, key_prefix, &view).await;
                (view, downgrade)
            } => seen,
        };
        // The turn holder is about to stop its member: our watch must not hold that up.
        let avoid = turn_holder_url(&view).and_then(|url| client.endpoint_url(url).ok());
        let placement = client.placement();
        if placement.mode().avoid != avoid {
            match &avoid {
                Some(url) => placement.avoid(url),
                None => placement.home(),
            }
        }
        let now = SystemTime::now();
        let downgrade = downgrade.as_deref();
        let written = if tty {
            let frame = render_frame(&view, downgrade, now, interval)
                .replace('\n', &format!("{CLEAR_EOL}\n"));
            write!(out, "{HOME}{frame}{CLEAR_BELOW}")
        } else {
            let key = with_downgrade(render_table(&view, None), downgrade);
            if last_key.as_ref() == Some(&key) {
                Ok(())
            } else {
                last_key = Some(key);
                writeln!(out, "{}", render_frame(&view, downgrade, now, interval))
            }
        };
        if written.and_then(|()| out.flush()).is_err() {
            // Whoever read our output is gone: nothing left to show anything to.
            break Outcome::Failed;
        }
    };
    if tty {
        let _ = writeln!(out, "{SHOW_CURSOR}");
        let _ = out.flush();
    }
    outcome
}

/// The client URL of the member that holds the upgrade turn, if any: etcd's graceful stop
/// waits for open watches (see `etcd::placement`), so the watch stays off it.
pub fn turn_holder_url(view: &ClusterView) -> Option<&str> {
    let holder = view.turn.holder.as_deref()?;
    view.members
        .iter()
        .find(|m| m.name == holder)?
        .client_url
        .as_deref()
}

/// A whole frame: a header with the time, then [`render_table`] with ages, then the
/// downgrade line when one is under way.
pub fn render_frame(
    view: &ClusterView,
    downgrade: Option<&str>,
    now: SystemTime,
    interval: Duration,
) -> String {
    format!(
        "etcd-supervisor status --watch  {}  (every {}; Ctrl-C to stop)\n{}",
        humantime::format_rfc3339_seconds(now),
        humantime::format_duration(interval),
        with_downgrade(render_table(view, Some(now)), downgrade)
    )
}

/// `table` followed by the downgrade line, if any.
fn with_downgrade(mut table: String, downgrade: Option<&str>) -> String {
    if let Some(line) = downgrade {
        table.push_str(line);
        table.push('\n');
    }
    table
}

/// How long ago `since` (RFC 3339) was, shortly: `42s`, `3m05s`, `2h10m`.
pub fn age(since: &str, now: SystemTime) -> Option<String> {
    let then = humantime::parse_rfc3339_weak(since).ok()?;
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    Some(match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    })
}

/// The view as the watch shows it. Without `now`, the columns that move on their own
/// (phase ages, applied index, lag) are left out: that text changing is a change worth a
/// new block when stdout is not a terminal.
pub fn render_table(view: &ClusterView, now: Option<SystemTime>) -> String {
    let mut out = String::new();
    if let Some(err) = &view.error {
        let _ = writeln!(out, "cluster unreachable: {err}");
        return out;
    }
    let dash = |o: Option<&str>| o.unwrap_or("-").to_owned();
    let show = |v: Option<&Version>| v.map_or_else(|| "-".into(), ToString::to_string);
    let _ = writeln!(
        out,
        "cluster {}  version {}  leader {}  {}\n",
        dash(view.cluster_id.as_deref()),
        show(view.cluster_version.as_ref()),
        dash(view.leader.as_deref()),
        if view.healthy { "healthy" } else { "UNHEALTHY" }
    );
    let mut header = vec!["NAME", "VERSION", "HEALTHY", "ROLE", "PHASE"];
    if now.is_some() {
        header.push("FOR");
    }
    header.push("STAGED");
    if now.is_some() {
        header.extend(["APPLIED", "LAG"]);
    }
    let mut rows: Vec<Vec<String>> = vec![header.into_iter().map(String::from).collect()];
    for m in &view.members {
        let record = view.progress.get(&m.name).and_then(Stored::record);
        let mut row = vec![
            m.name.clone(),
            show(m.server_version.as_ref()),
            if m.healthy { "yes" } else { "NO" }.into(),
            match (m.leader, m.learner) {
                (true, _) => "leader",
                (false, true) => "learner",
                (false, false) => "",
            }
            .into(),
            record.map_or("-".into(), |r| r.state.clone()),
        ];
        if let Some(now) = now {
            row.push(
                record
                    .and_then(|r| age(r.since.as_deref()?, now))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        row.push(show(record.and_then(|r| r.staged.as_ref())));
        if now.is_some() {
            row.push(m.raft_applied_index.map_or("-".into(), |i| i.to_string()));
            row.push(m.lag.map_or("-".into(), |i| i.to_string()));
        }
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for m in &view.members {
        if let Some(err) = &m.error {
            let _ = writeln!(out, "  {}: {err}", m.name);
        }
    }
    out.push('\n');
    if view.pause.is_some() {
        if let Some(pause) = view.paused() {
            let _ = writeln!(out, "{pause}");
        }
    }
    for (name, stored) in &view.progress {
        if let Some(held) = stored.record().and_then(|r| r.held.as_ref()) {
            let _ = writeln!(out, "{name} held: {held}");
        }
    }
    match &view.turn.holder {
        None => out.push_str("upgrade turn: free\n"),
        Some(h) if view.turn.waiting.is_empty() => {
            let _ = writeln!(out, "upgrade turn: held by {h}");
        }
        Some(h) => {
            let _ = writeln!(
                out,
                "upgrade turn: held by {h}; queue: {}",
                view.turn.waiting.join(", ")
            );
        }
    }
    for (version, stored) in &view.rejected {
        match stored.record() {
            Some(r) => {
                let _ = writeln!(out, "rejected: {version} (on {}): {}", r.member, r.reason);
            }
            None => {
                let _ = writeln!(out, "rejected: {version}");
            }
        }
    }
    for (name, stored) in &view.progress {
        let line = stored
            .record()
            .and_then(|r| advice::problem_line(r, view.cluster_version.as_ref(), false));
        if let Some(line) = line {
            let _ = writeln!(out, "{name}: {line}");
        }
    }
    if !view.alarms.is_empty() {
        let list: Vec<String> = view
            .alarms
            .iter()
            .map(|a| format!("{} on {}", a.alarm, a.member))
            .collect();
        let _ = writeln!(out, "alarms: {}", list.join(", "));
    }
    out
}

#[cfg(test)]
mod tests;
