//! Where a client's long-lived calls sit: a watch, a lease keepalive, a queued lock.
//!
//! etcd's graceful stop waits for every open gRPC call before it closes its data, up to its
//! request timeout (5 s + two election timeouts, 7 s by default): one open watch made a
//! 3.6.17 member take 7.0 s to exit instead of 8 ms. A supervisor only ever stops its own
//! member, so its long-lived calls sit there ([`order`]: the local member first), where no
//! other supervisor's stop waits for them; just before it stops its member it moves them
//! to the others ([`StreamPlacement::step_aside`]), and once that member is healthy again
//! it brings them back ([`StreamPlacement::home`]). A moved watch resumes at the revision
//! it had reached, so nothing is lost or repeated.
//!
//! Each open call on the local member holds a [`Seat`]; [`StreamPlacement::cleared`] waits
//! until none is left, which is what the stop waits for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Where long-lived calls go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mode {
    /// Off the local member (it is about to stop).
    pub aside: bool,
    /// Bumped by every change of placement, so that an open call placed under an older
    /// one checks where it sits.
    pub epoch: u64,
}

/// The placement shared by a client's clones and whoever stops its local member; see the
/// module header. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamPlacement {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mode: watch::Sender<Mode>,
    /// Open long-lived calls on the local member.
    on_local: watch::Sender<usize>,
}

impl Default for StreamPlacement {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                mode: watch::Sender::new(Mode::default()),
                on_local: watch::Sender::new(0),
            }),
        }
    }
}

impl StreamPlacement {
    /// Moves long-lived calls off the local member: it is about to stop.
    pub fn step_aside(&self) {
        self.inner.mode.send_modify(|m| {
            m.aside = true;
            m.epoch += 1;
        });
    }

    /// The local member is healthy again: long-lived calls go back to it (also those that
    /// failed over while it was down).
    pub fn home(&self) {
        self.inner.mode.send_modify(|m| {
            m.aside = false;
            m.epoch += 1;
        });
    }

    /// The placement now.
    pub fn mode(&self) -> Mode {
        *self.inner.mode.borrow()
    }

    /// Changes of placement, for an open call to wait on.
    pub fn subscribe(&self) -> watch::Receiver<Mode> {
        self.inner.mode.subscribe()
    }

    /// Open long-lived calls on the local member now.
    pub fn on_local(&self) -> usize {
        *self.inner.on_local.borrow()
    }

    /// Waits until no long-lived call is open on the local member, at most `bound`; true
    /// when none is.
    pub async fn cleared(&self, bound: Duration) -> bool {
        let mut on_local = self.inner.on_local.subscribe();
        tokio::time::timeout(bound, on_local.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A seat for a call opened on `endpoint` under the placement of `epoch` (read before
    /// the members were ordered, so that a change while it opened still moves it): counted
    /// while it lives when `endpoint` is the local member's.
    pub(crate) fn seat(&self, endpoint: &str, local: &str, epoch: u64) -> Seat {
        let counted = endpoint == local;
        if counted {
            self.inner.on_local.send_modify(|n| *n += 1);
        }
        Seat {
            placement: self.clone(),
            counted,
            epoch,
        }
    }
}

/// An open long-lived call's place; dropping it (with the call) frees it.
#[derive(Debug)]
pub(crate) struct Seat {
    placement: StreamPlacement,
    counted: bool,
    /// The placement's epoch when the call was opened.
    epoch: u64,
}

impl Seat {
    /// Whether the call should move now: the placement changed since it was opened and it
    /// sits where that placement does not want it.
    pub(crate) fn should_move(&self, mode: Mode) -> bool {
        mode.epoch != self.epoch && misplaced(self.counted, mode.aside)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if self.counted {
            self.placement
                .inner
                .on_local
                .send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

/// Whether a call on the local member (`on_local`) or another one is out of place: on the
/// local member while it steps aside, or elsewhere once it is home (it failed over, or
/// stepped aside, and may come back).
pub(crate) fn misplaced(on_local: bool, aside: bool) -> bool {
    on_local == aside
}

/// The members to try for a long-lived call, from `attempt_order` (the usual order: the
/// member that answered last first): the local member first; while it steps aside, never.
pub(crate) fn order(attempt_order: Vec<String>, local: &str, aside: bool) -> Vec<String> {
    let (mut on_local, others): (Vec<String>, Vec<String>) =
        attempt_order.into_iter().partition(|e| e == local);
    if aside {
        return others;
    }
    on_local.truncate(1);
    on_local.extend(others);
    on_local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn long_lived_calls_go_to_the_local_member_first_and_never_while_it_steps_aside() {
        let attempt = list(&["http://c:3", "http://a:1", "http://b:2"]);
        assert_eq!(
            order(attempt.clone(), "http://a:1", false),
            ["http://a:1", "http://c:3", "http://b:2"]
        );
        assert_eq!(
            order(attempt.clone(), "http://a:1", true),
            ["http://c:3", "http://b:2"]
        );
        // Alone, a stepping-aside member leaves nowhere to go: the call waits or fails
        // rather than hold up its own stop.
        assert!(order(list(&["http://a:1"]), "http://a:1", true).is_empty());
        assert_eq!(
            order(list(&["http://a:1"]), "http://a:1", false),
            ["http://a:1"]
        );
        // A local member missing from the list changes nothing but the order.
        assert_eq!(order(attempt.clone(), "http://z:9", true), attempt);
    }

    #[test]
    fn a_call_moves_only_after_a_change_of_placement_and_only_when_out_of_place() {
        let placement = StreamPlacement::default();
        let local = placement.seat("http://a:1", "http://a:1", placement.mode().epoch);
        let remote = placement.seat("http://b:2", "http://a:1", placement.mode().epoch);
        // Placed under the current placement: nothing moves.
        assert!(!local.should_move(placement.mode()));
        assert!(!remote.should_move(placement.mode()));

        placement.step_aside();
        assert!(local.should_move(placement.mode()));
        assert!(!remote.should_move(placement.mode()));

        placement.home();
        assert!(!local.should_move(placement.mode()));
        assert!(remote.should_move(placement.mode()));

        // Ordered home, then the member stepped aside while the call opened on it: it
        // still moves.
        let ordered = placement.mode().epoch;
        placement.step_aside();
        let late = placement.seat("http://a:1", "http://a:1", ordered);
        assert!(late.should_move(placement.mode()));
        drop(late);
        placement.home();

        // Opened while aside, elsewhere: stays until the member is home again.
        let aside = placement.seat("http://c:3", "http://a:1", placement.mode().epoch);
        assert!(!aside.should_move(placement.mode()));
        placement.step_aside();
        assert!(!aside.should_move(placement.mode()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_member_is_clear_once_its_last_seat_is_dropped() {
        let placement = StreamPlacement::default();
        assert!(placement.cleared(Duration::from_millis(10)).await);
        let first = placement.seat("http://a:1", "http://a:1", placement.mode().epoch);
        let second = placement.seat("http://a:1", "http://a:1", placement.mode().epoch);
        let _elsewhere = placement.seat("http://b:2", "http://a:1", placement.mode().epoch);
        assert_eq!(placement.on_local(), 2);
        assert!(!placement.cleared(Duration::from_millis(10)).await);
        drop(first);
        assert!(!placement.cleared(Duration::from_millis(10)).await);
        let waiter = {
            let placement = placement.clone();
            tokio::spawn(async move { placement.cleared(Duration::from_secs(1)).await })
        };
        tokio::task::yield_now().await;
        drop(second);
        assert!(waiter.await.unwrap());
        assert_eq!(placement.on_local(), 0);
    }
}
