//! The end of a turn: the verdict recorded (a cluster-wide rejection, or a refusal here),
//! the turn given back, and the reason left in the staging dir for the operator.

use super::*;

impl<C, K, B, S, V> Driver<C, K, B, S, V>
where
    C: EtcdChild,
    K: Cluster,
    B: Backups,
    S: VersionSwitch,
    V: Vetter,
{
    /// Records the turn's verdict and gives the turn back.
    pub(super) async fn release(
        &mut self,
        reject: Option<(Version, String)>,
        refuse: Option<(Version, String)>,
    ) -> Event {
        if let Some((version, why)) = &reject {
            self.metrics.rolled_back();
            if self.fence("recording the rejection").await.is_some() {
                // A stale holder's verdict is not recorded; a member holding the turn
                // judges the version again.
                tracing::warn!(member = %self.cfg.member, version = %version, reason = why, "etcd {version} failed here, but the turn was lost: not rejecting it for the cluster");
            } else {
                self.record_rejection(version, why).await;
                self.downgrade_failed(version, why).await;
            }
        }
        if let Some((version, why)) = &refuse {
            self.note_refusal(version, why).await;
        }
        self.give_back_turn().await;
        self.control.resume().await;
        self.publish().await;
        // A newer candidate that arrived during the turn is taken next.
        while let Ok(c) = self.candidates.try_recv() {
            self.pending = Some(c.version);
        }
        Event::Released
    }

    /// Releases the turn if held; a release that fails leaves it to expire with its lease.
    pub(super) async fn give_back_turn(&mut self) {
        if let Some(held) = self.held.take() {
            let held_for = held.acquired().elapsed();
            self.metrics.turn_released(held_for);
            match tokio::time::timeout(RECORD_TIMEOUT, held.release()).await {
                Ok(Ok(())) => {
                    tracing::info!(member = %self.cfg.member, held_ms = held_for.as_millis() as u64, "upgrade turn released")
                }
                Ok(Err(e)) => {
                    tracing::warn!(member = %self.cfg.member, error = %e, "could not release the upgrade turn; it expires with its lease")
                }
                Err(_) => {
                    tracing::warn!(member = %self.cfg.member, "releasing the upgrade turn timed out; it expires with its lease")
                }
            }
        }
    }

    /// `rejected/<version>` for the whole cluster, plus a note in the staging dir.
    pub(super) async fn record_rejection(&self, version: &Version, why: &str) {
        let record =
            crate::cluster::records::RejectionRecord::new(&self.cfg.member, why, SystemTime::now());
        // Named for the operator who lifts the rejection; the port decides where it is written.
        let key = crate::cluster::keys::Keys::new(&self.cfg.key_prefix).rejected(version);
        let put = self.client.reject_version(version, &record);
        match tokio::time::timeout(RECORD_TIMEOUT, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "could not record the rejection in etcd"),
            Err(_) => tracing::error!("recording the rejection in etcd timed out"),
        }
        tracing::error!(
            member = %self.cfg.member, version = %version, reason = why,
            "etcd {version} failed and was rolled back; it is rejected for the whole cluster. Fix or replace the binary, then delete the key {key} to allow it again"
        );
        self.write_reason(version, why).await;
    }

    /// A refusal by the path rules: this member will not take `version`.
    pub(super) async fn note_refusal(&self, version: &Version, why: &str) {
        tracing::error!(member = %self.cfg.member, version = %version, reason = why, "staged etcd {version} refused: {why}");
        self.write_reason(version, why).await;
    }

    /// The reason beside the staged file, for the operator who looks there first: written
    /// whole by staging's own writer, on the blocking pool.
    async fn write_reason(&self, version: &Version, why: &str) {
        let (dir, version, why) = (
            self.cfg.staging_dir.clone(),
            version.clone(),
            why.to_owned(),
        );
        let written = crate::blocking::run(move || {
            crate::staging::write_reason(&dir, &version, &why, SystemTime::now())
                .map_err(|e| e.to_string())
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(dir = %self.cfg.staging_dir.display(), error = %e, "could not write the reason file");
        }
    }
}
