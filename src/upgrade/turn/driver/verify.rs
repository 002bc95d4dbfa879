//! Verification after a start: healthy, reporting the target version, and caught up with
//! the leader's applied index, within the ready timeout; and, for the last member of a
//! minor upgrade, seeing the cluster version move.

use super::*;
use crate::upgrade::turn::consistency;

/// What 3.6+ says when its WAL holds a v2 request it no longer applies.
const V2_WAL_PANIC: &str = "detected disallowed v2 WAL";

/// How often a started etcd is asked whether it is healthy and caught up: it is part of
/// every swap window, and each round is a few small local requests.
const VERIFY_POLL: Duration = Duration::from_millis(10);

impl<C, K, B, S, V> Driver<C, K, B, S, V>
where
    C: EtcdChild,
    K: Cluster,
    B: Backups,
    S: VersionSwitch,
    V: Vetter,
{
    /// Healthy, reporting `target`, and caught up with the leader, within the ready timeout.
    pub(super) async fn verify(&mut self, target: &Version) -> Event {
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let started_pid = self.started_pid.or(self.control.status().pid);
        let Some(local) = self.cfg.local_endpoints.first().cloned() else {
            return Event::VerifyFailed("no local client URL to verify".into());
        };
        let started = Instant::now();
        let mut leader_applied: Option<u64> = None;
        loop {
            if self.shutting_down() {
                return Event::Shutdown;
            }
            let status = self.control.status();
            if status.pid.is_none() {
                let exit = status
                    .last_exit
                    .filter(|(pid, _)| Some(*pid) == started_pid)
                    .map(|(_, e)| e);
                let tail = self.control.log_tail();
                let last = last_lines(&tail, 5);
                // A usage error (its markers, or Go's flag parser's exit code 2 without a
                // panic) is this member's command line, which the check before the queue
                // missed: not the version's fault.
                if exit.is_some_and(|e| flags::is_usage_failure(Some(e.exit_code()), &tail))
                    && !self.turn.rollback
                {
                    return Event::Misconfigured(format!(
                        "etcd {target} refused this member's command line (exit code 2, a usage \
                         error): fix the flags and restart the supervisor; the version stays \
                         staged here. etcd said: {last}"
                    ));
                }
                // 3.6+ replaying v2 requests left in this member's WAL (a cluster that ran
                // 3.4 has one per /health until 3.5 snapshots): this member's data, which a
                // snapshot clears, not the version (the vetting catches it first when the
                // running 3.5's etcdutl is pinned).
                if tail.contains(V2_WAL_PANIC) && !self.turn.rollback {
                    return Event::Misconfigured(format!(
                        "etcd {target} panicked replaying v2 requests still in this member's \
                         WAL (\"{V2_WAL_PANIC}\"): let 3.5 take a snapshot first (etcd's 3.6 \
                         upgrade guide): restart this member once with --snapshot-count=1 until \
                         it logs \"triggering snapshot\", then as before; the version stays \
                         staged here. Stage etcdutl with the running 3.5 to have this checked \
                         before the stop"
                    ));
                }
                let exit = exit.map_or_else(|| "not running".into(), |e| e.to_string());
                return Event::VerifyFailed(format!(
                    "etcd {target} exited ({exit}); its last lines: {last}"
                ));
            }
            if Instant::now() >= deadline {
                // Running but not serving: the machine judges whose fault that is.
                return Event::StayedUnhealthy(format!(
                    "etcd {target} was not healthy and caught up within {}",
                    humantime::format_duration(self.cfg.ready_timeout)
                ));
            }
            if matches!(self.client.health_of(&local).await, Ok(true)) {
                match self.client.version_of(&local).await {
                    Ok(v) if v.server != target.to_string() => {
                        return Event::VerifyFailed(format!(
                            "etcd reports version {} instead of {target}",
                            v.server
                        ));
                    }
                    Ok(_) => {
                        if leader_applied.is_none() {
                            leader_applied = self.leader_applied().await;
                        }
                        if let (Some(want), Ok(me)) =
                            (leader_applied, self.client.status_of(&local).await)
                        {
                            if me.raft_applied_index >= want {
                                let window = self.swap_started.take().map(|t| t.elapsed());
                                tracing::info!(member = %self.cfg.member, version = %target, took_ms = started.elapsed().as_millis() as u64, swap_window_ms = window.map(|w| w.as_millis() as u64), "etcd healthy and caught up");
                                let upgraded =
                                    self.turn.phase == Phase::Verifying && !self.turn.rollback;
                                if let (Some(w), true) = (window, upgraded) {
                                    self.metrics.upgraded(w);
                                }
                                self.await_cluster_version(target).await;
                                if upgraded {
                                    let (m, p) = (&self.cfg.member, &self.cfg.key_prefix);
                                    let metrics = &self.metrics;
                                    consistency::after_rollout(&self.client, metrics, m, p, target)
                                        .await;
                                }
                                return Event::Verified;
                            }
                        }
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(VERIFY_POLL).await;
        }
    }

    async fn leader_applied(&self) -> Option<u64> {
        let leader = self.client.leader().await.ok()?;
        let status = self.client.status_of(&leader.endpoint).await.ok()?;
        Some(status.raft_applied_index)
    }

    /// After a minor upgrade by the last member, the leader moves the cluster version a few
    /// seconds later; wait (bounded) to see it and log it.
    async fn await_cluster_version(&self, target: &Version) {
        if self.turn.rollback
            || self.turn.phase != Phase::Verifying
            || target.minor_version() == self.turn.from.minor_version()
        {
            return;
        }
        let report = self.client.read_view().await;
        let all_on_target = report.members.iter().all(|m| {
            m.server_version
                .as_ref()
                .is_some_and(|v| v.minor_version() == target.minor_version())
        });
        if !all_on_target {
            return;
        }
        let deadline = Instant::now() + CLUSTER_VERSION_WAIT;
        let wanted = Version::new(target.major, target.minor, 0);
        while Instant::now() < deadline {
            let now = self.client.read_view().await;
            if now.cluster_version.as_ref() == Some(&wanted) {
                tracing::info!(member = %self.cfg.member, from = ?report.cluster_version.as_ref().map(ToString::to_string), to = %wanted, "cluster version moved");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::warn!(member = %self.cfg.member, expected = %wanted, "every member runs the new minor but the cluster version has not moved yet; check `etcd-supervisor status`");
    }
}

/// The last `n` non-empty lines of `tail`, joined with " | " for one log line.
pub(super) fn last_lines(tail: &str, n: usize) -> String {
    let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "(nothing on stderr)".into();
    }
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
