//! One member's upgrade turn.
//!
//! Theory of operation. A staged binary that passed the acceptance checks becomes a
//! candidate. The member queues for the cluster-wide turn (a lock in etcd on a lease kept
//! alive through any reachable endpoint). Holding it, preflight checks that every member is
//! healthy and reachable, there is a leader and no alarm, losing this member keeps quorum,
//! and the upgrade-path rules say proceed. Then: a verified backup, a graceful stop (etcd
//! hands leadership away by itself on SIGTERM), an atomic switch of `current`, a start, and
//! verification (healthy, reports the target version, applied index caught up with the
//! leader's). Progress is recorded in etcd and the turn released. If the new version fails
//! after the stop, the same swap runs backwards to the old version and the new one is
//! marked rejected for the whole cluster.
//!
//! Pacing: a turn starts only while the cluster is not paused (`etcd-supervisor pause`)
//! and inside a maintenance window (`rules::pacing::window`); a verified member may keep the
//! turn for a soak under watch (`rules::pacing::soak`) before it is released.
//!
//! `turn::machine` holds the states and the pure transition function; `turn::state_file`
//! persists the state atomically before every step that changes the world, so a supervisor
//! killed at any point resumes (or finishes the rollback) on restart.
//!
//! Two rooms, so a rule and the code that carries it out sit under the same word:
//! - [`rules`]: what is allowed. Pure rules and the data they read, no I/O: the upgrade
//!   path and its reasons, release facts, etcd's flag tables, leader last, pacing (windows
//!   and the soak), preflight, advice, the vetting rules, the downgrade's rules, the
//!   consistency verdict after a rollout. Each is plain data in, a decision out,
//!   unit-tested in milliseconds.
//! - [`turn`]: how one turn is carried out. The state machine and its recovery, the
//!   driver and its ports with their live implementations, the state file, the
//!   consistency check, the downgrade's facts and record, the live vetter.
//!
//! A rule and its carrying out share a name: `rules::leader_last` is decided, and
//! `turn::driver::leader_last` waits, gives the turn back and hands leadership over;
//! `rules::pacing` (window, soak) is judged and `turn::driver::pacing` holds the queue and
//! watches the soak; `rules::downgrade` is carried out by `turn::driver::downgrade` with
//! the facts of `turn::downgrade_live`; `rules::vet` judges what `turn::vet` ran;
//! `rules::consistency` compares the hashes `turn::consistency` fetched. `turn` depends on
//! `rules`, never the other way round.

pub mod rules;
pub mod turn;
