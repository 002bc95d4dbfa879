//! The swap's world-changing steps before the start: the backup while etcd runs, the stop
//! (after a last look at the turn and the other members, and the leadership hand-off),
//! the cold copy while etcd is stopped, and pointing `current` at the other version.

use super::*;
use crate::upgrade::rules::backup_reuse;

impl<C, K, B, S, V> Driver<C, K, B, S, V>
where
    C: EtcdChild,
    K: Cluster,
    B: Backups,
    S: VersionSwitch,
    V: Vetter,
{
    /// Space check and snapshot while etcd runs; in snapshot mode the backup is finished
    /// and verified here, otherwise the cold copy follows once etcd is stopped.
    pub(super) async fn backup(&mut self) -> Event {
        let to = self
            .turn
            .to
            .clone()
            .unwrap_or_else(|| self.turn.from.clone());
        let turn = BackupTurn {
            from: self.turn.from.clone(),
            to,
        };
        // The verified backup taken while vetting (the rehearsal's snapshot) serves when it
        // is of this turn and fresh enough; the rule says why not otherwise.
        let prepared = self.backups.take_prepared();
        let facts = prepared.as_ref().map(|p| backup_reuse::Prepared {
            from: p.from.clone(),
            to: p.to.clone(),
            age: p.at.elapsed(),
        });
        let snapshot_only = self.cfg.backup == crate::backup::BackupMode::Snapshot;
        match (
            backup_reuse::decide(
                facts.as_ref(),
                &turn.from,
                &turn.to,
                self.cfg.backup_max_age,
                snapshot_only,
            ),
            prepared,
        ) {
            (backup_reuse::Decision::Reuse, Some(p)) => {
                tracing::info!(member = %self.cfg.member, backup = %p.taken.dir.display(), age_ms = p.at.elapsed().as_millis() as u64, "the turn's backup is the verified one taken for the rehearsal");
                self.backup_done(&p.taken);
                return Event::BackupDone;
            }
            (backup_reuse::Decision::Take(Some(why)), _) => {
                tracing::info!(member = %self.cfg.member, reason = %why, "taking a new backup for the turn");
            }
            _ => {}
        }
        match self.backups.begin(turn).await {
            Ok(BackupStage::Done(done)) => {
                self.backup_done(&done);
                Event::BackupDone
            }
            Ok(BackupStage::ColdCopyPending(pending)) => {
                self.pending_backup = Some(pending);
                Event::BackupDone
            }
            Err(e) => Event::BackupFailed(e.to_string()),
        }
    }

    pub(super) fn backup_done(&self, done: &TakenBackup) {
        tracing::info!(member = %self.cfg.member, backup = %done.dir.display(), bytes = done.bytes, took_ms = done.elapsed.as_millis() as u64, "{}", done.summary);
        self.metrics.backup_taken(done.bytes, true);
    }

    pub(super) async fn stop(&mut self) -> Event {
        // Preflight passed before the backup; a member may have gone down since. One last
        // look right before a forward stop keeps that window to a few milliseconds. (A
        // rollback always stops: the new version is the one failing.) Nor does a forward
        // stop happen on a turn lost while the backup finished.
        if !self.turn.rollback {
            let lost = match &self.held {
                Some(held) => held.confirm().await,
                None => Some("no upgrade turn held".into()),
            };
            if let Some(reason) = lost {
                tracing::warn!(member = %self.cfg.member, reason, "lost the upgrade turn before the stop");
                self.pending_backup = None;
                return Event::TurnLost;
            }
        } else if self.control.status().pid.is_some()
            && self.fence("stopping etcd again").await.is_some()
        {
            // The new version still runs: without the turn another member may be down now.
            return Event::TurnLost;
        }
        let report = if self.turn.rollback {
            None
        } else {
            Some(self.client.read_view().await)
        };
        // A pause that arrived during preflight or the backup holds the turn before the stop.
        if let Some(paused) = report.as_ref().filter(|r| r.pause.is_some()) {
            self.pending_backup = None;
            return Event::PreflightWait(paused.paused().unwrap_or_default());
        }
        if let Some(down) = report
            .iter()
            .flat_map(|r| r.members.iter())
            .find(|m| m.name != self.cfg.member && !m.healthy)
        {
            self.pending_backup = None;
            return Event::PreflightWait(format!(
                "member {} went down after preflight; not stopping this one",
                down.name
            ));
        }
        if let Some(why) = report
            .as_ref()
            .and_then(|r| preflight::catching_up(r, &self.cfg.member))
        {
            self.pending_backup = None;
            return Event::PreflightWait(format!("{why}; not stopping this one"));
        }
        if let Some(report) = &report {
            self.hand_over_leadership(report).await;
        }
        self.swap_started = Some(Instant::now());
        let stopped = match self.control.stop().await {
            Ok(stopped) => stopped,
            Err(e) => {
                // Nobody is left to stop (or restart) etcd: not a stop.
                tracing::error!(member = %self.cfg.member, error = %e, "stop request failed");
                self.pending_backup = None;
                return Event::StopFailed(format!("stopping etcd failed: {e}"));
            }
        };
        tracing::info!(member = %self.cfg.member, exit = %stopped.exit, ended = stopped.ended.as_str(), took_ms = stopped.took.as_millis() as u64, "etcd stopped");
        let Some(pending) = self.pending_backup.take() else {
            return Event::Stopped;
        };
        // The cold copy of the data dir, while etcd is stopped.
        match self.backups.cold_copy(pending).await {
            Ok(done) => {
                self.backup_done(&done);
                Event::Stopped
            }
            Err(e) => {
                // No verified backup, no swap: `current` still points at the old version;
                // the machine restarts and verifies it, then queues again.
                let why = format!("backup failed after the stop: {e}");
                tracing::error!(member = %self.cfg.member, reason = %why, "restoring the old etcd; the upgrade will be retried");
                Event::ColdCopyFailed(why)
            }
        }
    }

    /// Points `current` at `v` (symlink, rename, fsync) on the blocking pool.
    pub(super) async fn switch_current(&self, v: &Version) -> Result<(), String> {
        let (store, v) = (self.store.clone(), v.clone());
        let switched =
            crate::blocking::run(move || store.set_current(&v).map_err(|e| e.to_string())).await;
        if switched.is_ok() {
            crate::failpoint::kill_at(crate::failpoint::SWITCHED);
        }
        switched
    }
}
