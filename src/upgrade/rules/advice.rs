//! What an operator should know about the versions the cluster runs, beyond health: a
//! running version etcd says not to run, the point of no return of a minor upgrade, and a
//! member's last problem as it reads now (a parked older minor once its downgrade is on).
//! Plain functions over the typed [`ClusterView`]; `status`, `plan` and the driver show
//! the lines.

use super::release_facts;
use crate::cluster::records::MemberRecord;
use crate::cluster::view::ClusterView;
use crate::versions::Version;

/// Warnings for members that run a known-bad version, each with the fixed version to stage.
pub fn known_bad_running(view: &ClusterView) -> Vec<String> {
    view.members
        .iter()
        .filter_map(|m| {
            let v = m.server_version.as_ref()?;
            let bad = release_facts::known_bad(v)?;
            Some(format!(
                "{} runs etcd {v}, which etcd says not to run: {} ({}); stage {} or later",
                m.name, bad.reason, bad.source, bad.fixed_in
            ))
        })
        .collect()
}

/// The point of no return: while a minor upgrade is under way (some members on the
/// cluster version's next minor), the last member to move makes the cluster version move,
/// after which no binary rollback is possible. `None` when no minor upgrade is under way.
pub fn point_of_no_return(view: &ClusterView) -> Option<String> {
    let cluster = view.cluster_version.as_ref()?;
    let next = (cluster.major, cluster.minor + 1);
    let (ahead, behind): (Vec<_>, Vec<_>) = view
        .members
        .iter()
        .filter_map(|m| Some((m.name.as_str(), m.server_version.as_ref()?)))
        .partition(|(_, v)| v.minor_version() == next);
    if ahead.is_empty() || behind.is_empty() {
        return None;
    }
    let target = format!("{}.{}", next.0, next.1);
    let waiting: Vec<&str> = behind.iter().map(|(n, _)| *n).collect();
    Some(format!(
        "a minor upgrade to {target} is under way ({} of {} members on it); when {} \
         move{} too, the cluster version becomes {target}.0 and going back by swapping \
         binaries is no longer possible: {}. Keep the backups",
        ahead.len(),
        ahead.len() + behind.len(),
        waiting.join(", "),
        if waiting.len() == 1 { "s" } else { "" },
        downgrade_hint(cluster)
    ))
}

/// For the last member of a minor upgrade: the same, as it takes its turn.
pub fn last_to_move(view: &ClusterView, member: &str, target: &Version) -> Option<String> {
    let cluster = view.cluster_version.as_ref()?;
    if target.minor_version() <= cluster.minor_version() {
        return None;
    }
    let others_on_target = view.members.iter().filter(|m| m.name != member).all(|m| {
        m.server_version
            .as_ref()
            .is_some_and(|v| v.minor_version() == target.minor_version())
    });
    others_on_target.then(|| {
        format!(
            "{member} is the last member to move to {}.{}: afterwards the cluster version \
             moves and a binary rollback is no longer possible ({})",
            target.major,
            target.minor,
            downgrade_hint(cluster)
        )
    })
}

/// How to go back once the cluster version moved.
fn downgrade_hint(cluster: &Version) -> &'static str {
    if cluster.minor_version() >= (3, 5) {
        "from 3.6 on, going back one minor is etcd's downgrade procedure \
         (`etcd-supervisor downgrade X.Y.Z` runs it: validate, enable, the members' turns); \
         before that, only a restore from backup"
    } else {
        "going back means restoring the cluster from a backup taken before the upgrade"
    }
}

/// What a member's record says went wrong last, or `None`. A member parked with an older
/// minor (idle, that minor staged) whose minor the cluster version has since reached is
/// no longer refused: etcd's downgrade was enabled, and its old "run `etcd-supervisor
/// downgrade`" reason stays in the record only until its own turn, so it is shown as
/// waiting for that turn instead.
pub fn problem_line(
    record: &MemberRecord,
    cluster: Option<&Version>,
    name_staged: bool,
) -> Option<String> {
    let err = record.last_error.as_ref()?;
    if let (Some(staged), Some(running), Some(cluster)) = (&record.staged, &record.running, cluster)
    {
        let older = staged.minor_version() < running.minor_version();
        if record.state == "idle" && older && cluster.minor_version() == staged.minor_version() {
            return Some(format!(
                "waiting for its turn in the downgrade to {staged} (staged; the leader goes last)"
            ));
        }
    }
    let what = match (&record.staged, name_staged) {
        (Some(v), true) => format!(" ({v} staged)"),
        _ => String::new(),
    };
    Some(format!("last problem{what}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::view::{build_view, Gathered, Probe};
    use crate::etcd::maintenance::{EtcdVersion, Status};
    use crate::etcd::{Member, ResponseHeader};

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn view(cluster: &str, versions: &[(&str, &str)]) -> ClusterView {
        let members: Vec<Member> = versions
            .iter()
            .enumerate()
            .map(|(i, (name, _))| Member {
                id: i as u64 + 1,
                name: (*name).into(),
                client_urls: vec![format!("http://127.0.0.1:{}", i + 1)],
                ..Default::default()
            })
            .collect();
        let probes = versions
            .iter()
            .enumerate()
            .map(|(i, (_, version))| Probe {
                status: Ok(Status {
                    header: ResponseHeader {
                        member_id: i as u64 + 1,
                        ..Default::default()
                    },
                    leader: 1,
                    ..Default::default()
                }),
                health: Ok(true),
                version: Ok(EtcdVersion {
                    server: (*version).into(),
                    cluster: cluster.into(),
                    storage: String::new(),
                }),
            })
            .collect();
        build_view(&members, probes, Gathered::default())
    }

    #[test]
    fn known_bad_running_names_the_member_and_the_fix() {
        let w = known_bad_running(&view("3.5.0", &[("m1", "3.5.1"), ("m2", "3.5.30")]));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("m1 runs etcd 3.5.1"), "{}", w[0]);
        assert!(w[0].contains("stage 3.5.3 or later"), "{}", w[0]);
    }

    #[test]
    fn point_of_no_return_only_while_a_minor_upgrade_is_under_way() {
        let steady = view("3.5.0", &[("m1", "3.5.16"), ("m2", "3.5.30")]);
        assert_eq!(point_of_no_return(&steady), None);
        let mixed = view(
            "3.4.0",
            &[("m1", "3.5.30"), ("m2", "3.5.30"), ("m3", "3.4.23")],
        );
        let note = point_of_no_return(&mixed).expect("under way");
        assert!(note.contains("2 of 3 members"), "{note}");
        assert!(note.contains("when m3 moves too"), "{note}");
        assert!(note.contains("3.5.0"), "{note}");
        assert!(
            note.contains("restoring the cluster from a backup"),
            "{note}"
        );
    }

    #[test]
    fn last_to_move_is_said_for_the_last_member_only() {
        let mixed = view(
            "3.5.0",
            &[("m1", "3.6.1"), ("m2", "3.6.1"), ("m3", "3.5.32")],
        );
        let note = last_to_move(&mixed, "m3", &v("3.6.1")).expect("m3 is last");
        assert!(note.contains("downgrade"), "{note}");
        assert_eq!(last_to_move(&mixed, "m2", &v("3.6.1")), None);
        // A patch upgrade has no point of no return.
        let patch = view("3.5.0", &[("m1", "3.5.30"), ("m2", "3.5.16")]);
        assert_eq!(last_to_move(&patch, "m2", &v("3.5.30")), None);
    }
}
