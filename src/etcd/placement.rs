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
//! A client that stops nothing may still hold a call on a member about to stop:
//! `status --watch` keeps its watch off the turn holder's member ([`StreamPlacement::avoid`]).
//!
//! Each open call holds a [`Seat`] naming its member; [`StreamPlacement::cleared`] waits
//! until none is left on the avoided one, which is what the stop waits for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Where long-lived calls go now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mode {
    /// The member to stay off (it is about to stop); none: the local member first.
    pub avoid: Option<String>,
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
    /// The local member's endpoint.
    local: String,
    mode: watch::Sender<Mode>,
    /// The endpoint of each open long-lived call.
    seats: watch::Sender<Vec<String>>,
}

impl Default for StreamPlacement {
    fn default() -> Self {
        Self::new(String::new())
    }
}

impl StreamPlacement {
    /// A placement whose home is `local` (an endpoint as the client normalized it).
    pub fn new(local: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                local,
                mode: watch::Sender::new(Mode::default()),
                seats: watch::Sender::new(Vec::new()),
            }),
        }
    }

    /// Moves long-lived calls off the local member: it is about to stop.
    pub fn step_aside(&self) {
        let local = self.inner.local.clone();
        self.avoid(&local);
    }

    /// Moves long-lived calls off `endpoint` (a member about to stop that this client does
    /// not stop itself: `status --watch` avoids the turn holder's).
    pub fn avoid(&self, endpoint: &str) {
        self.inner.mode.send_modify(|m| {
            m.avoid = Some(endpoint.to_owned());
            m.epoch += 1;
        });
    }

    /// Nothing to avoid: long-lived calls go back to the local member (also those that
    /// failed over while it was down).
    pub fn home(&self) {
        self.inner.mode.send_modify(|m| {
            m.avoid = None;
            m.epoch += 1;
        });
    }

    /// The placement now.
    pub fn mode(&self) -> Mode {
        self.inner.mode.borrow().clone()
    }

    /// Changes of placement, for an open call to wait on.
    pub fn subscribe(&self) -> watch::Receiver<Mode> {
        self.inner.mode.subscribe()
    }

    /// Open long-lived calls on `endpoint` now.
    pub fn on(&self, endpoint: &str) -> usize {
        self.inner
            .seats
            .borrow()
            .iter()
            .filter(|e| *e == endpoint)
            .count()
    }

    /// Open long-lived calls on the local member now.
    pub fn on_local(&self) -> usize {
        self.on(&self.inner.local)
    }

    /// Waits until no long-lived call is open on the member avoided now, at most `bound`;
    /// true when none is (at once when none is avoided).
    pub async fn cleared(&self, bound: Duration) -> bool {
        let Some(avoided) = self.mode().avoid else {
            return true;
        };
        let mut seats = self.inner.seats.subscribe();
        tokio::time::timeout(bound, seats.wait_for(|open| !open.contains(&avoided)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The members to try for a long-lived call, from `attempt_order` (see [`order`]).
    pub(crate) fn order(&self, attempt_order: Vec<String>) -> Vec<String> {
        order(
            attempt_order,
            &self.inner.local,
            self.inner.mode.borrow().avoid.as_deref(),
        )
    }

    /// A seat for a call opened on `endpoint` under the placement of `epoch` (read before
    /// the members were ordered, so that a change while it opened still moves it).
    pub(crate) fn seat(&self, endpoint: &str, epoch: u64) -> Seat {
        self.inner
            .seats
            .send_modify(|open| open.push(endpoint.to_owned()));
        Seat {
            placement: self.clone(),
            endpoint: endpoint.to_owned(),
            epoch,
        }
    }
}

/// An open long-lived call's place; dropping it (with the call) frees it.
#[derive(Debug)]
pub(crate) struct Seat {
    placement: StreamPlacement,
    endpoint: String,
    /// The placement's epoch when the call was opened.
    epoch: u64,
}

impl Seat {
    /// Whether the call should move now: the placement changed since it was opened and it
    /// sits where that placement does not want it.
    pub(crate) fn should_move(&self, mode: &Mode) -> bool {
        mode.epoch != self.epoch
            && misplaced(
                &self.endpoint,
                &self.placement.inner.local,
                mode.avoid.as_deref(),
            )
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let endpoint = &self.endpoint;
        self.placement.inner.seats.send_modify(|open| {
            if let Some(i) = open.iter().position(|e| e == endpoint) {
                open.swap_remove(i);
            }
        });
    }
}

/// Whether a call on `endpoint` is out of place: on the member avoided, or, with none
/// avoided, anywhere but the local member (it failed over, or stepped aside, and may come
/// back).
pub(crate) fn misplaced(endpoint: &str, local: &str, avoid: Option<&str>) -> bool {
    match avoid {
        Some(avoided) => endpoint == avoided,
        None => endpoint != local,
    }
}

/// The members to try for a long-lived call, from `attempt_order` (the usual order: the
/// member that answered last first): the local member first; the avoided one never.
pub(crate) fn order(attempt_order: Vec<String>, local: &str, avoid: Option<&str>) -> Vec<String> {
    let (mut on_local, others): (Vec<String>, Vec<String>) =
        attempt_order.into_iter().partition(|e| e == local);
    on_local.truncate(1);
    on_local.extend(others);
    on_local.retain(|e| Some(e.as_str()) != avoid);
    on_local
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "http://a:1";
    const B: &str = "http://b:2";
    const C: &str = "http://c:3";

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn long_lived_calls_go_to_the_local_member_first_and_never_to_the_avoided_one() {
        let attempt = list(&[C, A, B]);
        assert_eq!(order(attempt.clone(), A, None), [A, C, B]);
        assert_eq!(order(attempt.clone(), A, Some(A)), [C, B]);
        // Another member avoided (`status --watch` off the turn holder's): local first still.
        assert_eq!(order(attempt.clone(), A, Some(B)), [A, C]);
        // Alone, a stepping-aside member leaves nowhere to go: the call waits or fails
        // rather than hold up its own stop.
        assert!(order(list(&[A]), A, Some(A)).is_empty());
        assert_eq!(order(list(&[A]), A, None), [A]);
        // A local member missing from the list changes nothing but the order.
        assert_eq!(
            order(attempt.clone(), "http://z:9", Some("http://z:9")),
            attempt
        );
    }

    #[test]
    fn a_call_moves_only_after_a_change_of_placement_and_only_when_out_of_place() {
        let placement = StreamPlacement::new(A.to_owned());
        let epoch = placement.mode().epoch;
        let local = placement.seat(A, epoch);
        let remote = placement.seat(B, epoch);
        // Placed under the current placement: nothing moves.
        assert!(!local.should_move(&placement.mode()));
        assert!(!remote.should_move(&placement.mode()));

        placement.step_aside();
        assert!(local.should_move(&placement.mode()));
        assert!(!remote.should_move(&placement.mode()));

        placement.avoid(B);
        assert!(!local.should_move(&placement.mode()));
        assert!(remote.should_move(&placement.mode()));

        placement.home();
        assert!(!local.should_move(&placement.mode()));
        assert!(remote.should_move(&placement.mode()));

        // Ordered home, then the member stepped aside while the call opened on it: it
        // still moves.
        let ordered = placement.mode().epoch;
        placement.step_aside();
        let late = placement.seat(A, ordered);
        assert!(late.should_move(&placement.mode()));
        drop(late);

        // Opened while aside, elsewhere: stays until the member is home again.
        let aside = placement.seat(C, placement.mode().epoch);
        placement.step_aside();
        assert!(!aside.should_move(&placement.mode()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_avoided_member_is_clear_once_its_last_seat_is_dropped() {
        let placement = StreamPlacement::new(A.to_owned());
        let epoch = placement.mode().epoch;
        let first = placement.seat(A, epoch);
        let second = placement.seat(A, epoch);
        let _elsewhere = placement.seat(B, epoch);
        assert_eq!((placement.on_local(), placement.on(B)), (2, 1));
        // Nothing avoided: nothing to wait for.
        assert!(placement.cleared(Duration::from_millis(10)).await);
        placement.step_aside();
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
        assert_eq!((placement.on_local(), placement.on(B)), (0, 1));
    }
}
