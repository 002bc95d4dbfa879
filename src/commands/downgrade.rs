//! `etcd-supervisor downgrade VERSION` and `downgrade --cancel`: one minor back through
//! etcd's downgrade API (3.7 → 3.6, 3.6 → 3.5).
//!
//! The command checks the rules ([`crate::upgrade::rules::downgrade::may_start`]: one minor
//! below a 3.6+ cluster version, at or above the floor, a healthy cluster not mid-upgrade,
//! no turn held, the target staged on every member), then asks etcd to validate, writes
//! `<prefix>downgrade`, and enables. Each member's supervisor has the target parked
//! (staged, waiting for this); once etcd moved the cluster version and migrated the storage,
//! the members take their turns through the usual lock, leader last. The command follows
//! along (one line per change) until every member runs the target and etcd ended the
//! downgrade, then deletes the record. Killing the command changes nothing: the members go
//! on, and running it again resumes following. A refusal changes nothing.
//!
//! `--cancel` cancels in etcd and marks the record cancelled: members already downgraded
//! go back to the version they came from, the others keep theirs.

use std::time::{Duration, Instant, SystemTime};

use super::pause::{client, host, user};
use super::Outcome;
use crate::cli::DowngradeArgs;
use crate::cluster::view::{gather, ClusterView};
use crate::etcd::maintenance::DowngradeAction;
use crate::etcd::Client;
use crate::upgrade::rules::downgrade::{self, DowngradeRecord, InEtcd, RecordState, StartRefusal};
use crate::upgrade::turn::downgrade_live;
use crate::versions::Version;

/// How often the command looks at the cluster while it follows the downgrade.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How long the command waits for etcd to replace its placeholder cluster version (it does
/// so on its leader's first version decision, seconds after a start).
const UNDECIDED_PATIENCE: Duration = Duration::from_secs(30);

/// `etcd-supervisor downgrade`: exit 0 once the cluster finished (or, with `--no-wait`,
/// once enabled; or once cancelled), 1 when refused, cancelled by a failure, or not done
/// within `--timeout`, 2 for bad options.
pub async fn command(args: &DowngradeArgs) -> Outcome {
    let Some(client) = client(&args.conn) else {
        return Outcome::Usage;
    };
    let prefix = args.prefix.key_prefix.as_str();
    if args.cancel {
        return cancel(&client, prefix).await;
    }
    let Some(raw) = args.target.as_deref() else {
        tracing::error!(
            "give the version to go back to (e.g. `etcd-supervisor downgrade 3.6.17`), or --cancel"
        );
        return Outcome::Usage;
    };
    let target: Version = match raw.trim_start_matches('v').parse() {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("{raw} is not an etcd version: {e}");
            return Outcome::Usage;
        }
    };
    // etcd's placeholder cluster version lasts seconds after a start: wait it out, bounded.
    let deadline = Instant::now() + UNDECIDED_PATIENCE;
    let (view, facts) = loop {
        let view = gather(&client, prefix).await;
        if let Some(err) = &view.error {
            tracing::error!(
                "cannot downgrade: the cluster did not answer ({err}); nothing was changed"
            );
            return Outcome::Failed;
        }
        let facts = downgrade_live::read(&client, prefix, &view).await;
        match downgrade::may_start(&facts, &target) {
            Ok(()) => break (view, facts),
            Err(StartRefusal::Undecided(cv)) if Instant::now() < deadline => {
                tracing::info!(cluster_version = %cv, "waiting for etcd to decide the cluster version");
                tokio::time::sleep(LOOK_EVERY).await;
            }
            Err(why) => {
                tracing::error!(target = %target, "downgrade refused: {why}; nothing was changed");
                println!("downgrade to {target} refused: {why}; nothing was changed");
                return Outcome::Failed;
            }
        }
    };
    let from = newest(&view).unwrap_or_else(|| target.clone());
    if facts.etcd == InEtcd::Enabled(target.minor_version()) {
        println!("the downgrade to {target} is already enabled in etcd; following it");
        if facts.record.is_none() {
            let record = new_record(&target, &from);
            if let Err(e) = downgrade_live::write_record(&client, prefix, &record).await {
                tracing::warn!(error = %e, "could not write the downgrade record");
            }
        }
    } else if let Err(outcome) = enable(&client, prefix, &target, &from, &view).await {
        return outcome;
    }
    if args.no_wait {
        println!("the members take their turns now; follow with `etcd-supervisor status`");
        return Outcome::Success;
    }
    let ours = facts
        .record
        .clone()
        .unwrap_or_else(|| new_record(&target, &from));
    follow(&client, prefix, &ours, args.timeout).await
}

/// Validate, record, enable; each failure says what happened and that nothing changed.
async fn enable(
    client: &Client,
    prefix: &str,
    target: &Version,
    from: &Version,
    view: &ClusterView,
) -> Result<(), Outcome> {
    let wanted = target.to_string();
    if let Err(e) = client.downgrade(DowngradeAction::Validate, &wanted).await {
        tracing::error!(target = %target, "etcd refused to validate the downgrade: {e}; nothing was changed");
        return Err(Outcome::Failed);
    }
    let record = new_record(target, from);
    if let Err(e) = downgrade_live::write_record(client, prefix, &record).await {
        tracing::error!("cannot write the downgrade record: {e}; nothing was changed");
        return Err(Outcome::Failed);
    }
    match client.downgrade(DowngradeAction::Enable, &wanted).await {
        Ok(cluster) => {
            tracing::info!(target = %target, from = %from, cluster_version = %cluster, "downgrade enabled");
            println!(
                "downgrade to {target} enabled (cluster version was {}); etcd moves the cluster \
                 version and migrates the storage, then the members take their turns, the leader last",
                view.cluster_version
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string)
            );
            Ok(())
        }
        Err(e) => {
            tracing::error!(target = %target, "etcd refused to enable the downgrade: {e}; nothing was changed");
            let _ = downgrade_live::delete_record(client, prefix).await;
            Err(Outcome::Failed)
        }
    }
}

/// Follows the members' turns, one line per change, until the cluster finished.
async fn follow(
    client: &Client,
    prefix: &str,
    ours: &DowngradeRecord,
    timeout: Duration,
) -> Outcome {
    let target = &ours.target;
    let started = Instant::now();
    let mut said = String::new();
    let mut migrated = false;
    loop {
        let view = gather(client, prefix).await;
        let mut facts = downgrade_live::read(client, prefix, &view).await;
        // The member that sees the end first deletes the record: judge by ours then.
        let vanished = facts.record.is_none();
        if vanished {
            facts.record = Some(ours.clone());
        }
        if vanished && facts.etcd == InEtcd::Off && !downgrade::finished(&facts) {
            tracing::error!(target = %target, "the downgrade is no longer recorded and etcd has none enabled: it was cancelled and settled; see `etcd-supervisor status` and the members' logs");
            println!("the downgrade was cancelled (its record is gone; the members' logs say why)");
            return Outcome::Failed;
        }
        if let Some(line) = downgrade::progress(&facts) {
            if line != said {
                println!("{line}");
                said = line;
            }
        }
        if let Some(r) = facts
            .record
            .as_ref()
            .filter(|r| r.state == RecordState::Cancelled)
        {
            let why = r.reason.as_deref().unwrap_or("no reason recorded");
            tracing::error!(target = %target, reason = why, "the downgrade was cancelled; members already downgraded go back to {}", r.from);
            println!("the downgrade was cancelled: {why}");
            return Outcome::Failed;
        }
        let t = target.minor_version();
        if !migrated
            && facts.cluster_version.as_ref().map(Version::minor_version) == Some(t)
            && facts
                .members
                .iter()
                .all(|m| m.storage.is_none_or(|s| s == t))
        {
            migrated = true;
            println!(
                "cluster version and storage version on {}.{} on every member after {:.1} s",
                t.0,
                t.1,
                started.elapsed().as_secs_f64()
            );
        }
        if downgrade::finished(&facts) {
            let _ = downgrade_live::delete_record(client, prefix).await;
            println!(
                "the cluster finished the downgrade: every member runs {target}, cluster version {}, in {:.1} s",
                facts
                    .cluster_version
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                started.elapsed().as_secs_f64()
            );
            return Outcome::Success;
        }
        if started.elapsed() > timeout {
            tracing::error!(target = %target, "the downgrade is not finished after {}; it goes on: follow it with `etcd-supervisor status`", humantime::format_duration(timeout));
            return Outcome::Failed;
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// `--cancel`: etcd's cancel, and the record marked so downgraded members go back.
async fn cancel(client: &Client, prefix: &str) -> Outcome {
    let view = gather(client, prefix).await;
    if let Some(err) = &view.error {
        tracing::error!("cannot cancel: the cluster did not answer ({err}); nothing was changed");
        return Outcome::Failed;
    }
    let facts = downgrade_live::read(client, prefix, &view).await;
    if downgrade::finished(&facts) {
        println!("the downgrade already finished; going back up is an upgrade: stage the newer version on every member");
        return Outcome::Failed;
    }
    let why = format!("cancelled by {}@{}", user(), host());
    match downgrade_live::cancel(client, prefix, &why, None).await {
        Ok(Some(r)) => {
            println!(
                "downgrade to {} cancelled; members already downgraded go back to {} in turn, the others keep it",
                r.target, r.from
            );
            Outcome::Success
        }
        Ok(None) => {
            println!("no downgrade was recorded by the supervisors; etcd's was cancelled if one was enabled");
            Outcome::Success
        }
        Err(e) => {
            tracing::error!("cannot cancel the downgrade: {e}");
            Outcome::Failed
        }
    }
}

fn new_record(target: &Version, from: &Version) -> DowngradeRecord {
    DowngradeRecord {
        schema: 1,
        target: target.clone(),
        from: from.clone(),
        state: RecordState::Enabled,
        by: format!("{}@{}", user(), host()),
        time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        reason: None,
    }
}

/// The newest version a member runs: what the members go back to on a cancel.
fn newest(view: &ClusterView) -> Option<Version> {
    view.members
        .iter()
        .filter_map(|m| m.server_version.clone())
        .max()
}

/// The downgrade line for `status` and `plan` (`None` when none is under way).
pub async fn progress_line(client: &Client, prefix: &str, view: &ClusterView) -> Option<String> {
    if view.error.is_some() {
        return None;
    }
    let facts = downgrade_live::read(client, prefix, view).await;
    downgrade::progress(&facts)
}
