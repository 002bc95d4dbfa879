use super::*;

/// A cluster whose members answer fixed revisions and hashes; keeps every inconsistency
/// recorded.
struct Hashes {
    members: Vec<(&'static str, i64, u32)>,
    /// Answer "compacted" to this many HashKV calls first.
    compacted: std::sync::Mutex<u32>,
    recorded: std::sync::Mutex<Vec<InconsistencyRecord>>,
    asked_at: std::sync::Mutex<Vec<i64>>,
}

struct NoLock;

impl super::super::ports::TurnLock for NoLock {
    fn acquired(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
    fn lost_reason(&self) -> Option<String> {
        None
    }
    fn lost(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        std::future::pending()
    }
    async fn release(self) -> Result<(), EtcdError> {
        Ok(())
    }
}

fn url(name: &str) -> String {
    format!("http://{name}:2379")
}

impl Cluster for Hashes {
    type Lock = NoLock;
    async fn refresh_endpoints(&self) {}
    async fn read_view(&self) -> ClusterView {
        let mut view = crate::cluster::view::unreachable(&EtcdError::InvalidRequest("-".into()));
        view.error = None;
        view.members = self
            .members
            .iter()
            .map(|(name, _, _)| crate::cluster::view::MemberView {
                name: (*name).into(),
                id: String::new(),
                client_url: Some(url(name)),
                server_version: Some(Version::new(3, 5, 30)),
                healthy: true,
                leader: false,
                learner: false,
                storage_version: None,
                raft_applied_index: None,
                lag: None,
                error: None,
            })
            .collect();
        view
    }
    async fn acquire(
        &self,
        _cancel: impl std::future::Future<Output = ()> + Send,
    ) -> Result<NoLock, crate::cluster::lock::LockError> {
        Ok(NoLock)
    }
    async fn publish_member(
        &self,
        _record: &crate::cluster::records::MemberRecord,
    ) -> Result<(), EtcdError> {
        Ok(())
    }
    async fn reject_version(
        &self,
        _version: &Version,
        _record: &crate::cluster::records::RejectionRecord,
    ) -> Result<(), EtcdError> {
        Ok(())
    }
    async fn record_inconsistency(&self, record: &InconsistencyRecord) -> Result<(), EtcdError> {
        self.recorded.lock().unwrap().push(record.clone());
        Ok(())
    }
    async fn recorded_inconsistency(&self) -> Result<Option<String>, EtcdError> {
        Ok(self
            .recorded
            .lock()
            .unwrap()
            .last()
            .map(InconsistencyRecord::summary))
    }
    async fn health_of(&self, _endpoint: &str) -> Result<bool, EtcdError> {
        Ok(true)
    }
    async fn transfer_leadership(&self, _target_id: u64) -> Result<(), EtcdError> {
        Err(EtcdError::InvalidRequest("-".into()))
    }
    async fn version_of(
        &self,
        _endpoint: &str,
    ) -> Result<crate::etcd::maintenance::EtcdVersion, EtcdError> {
        Err(EtcdError::InvalidRequest("-".into()))
    }
    async fn status_of(
        &self,
        endpoint: &str,
    ) -> Result<crate::etcd::maintenance::Status, EtcdError> {
        let (_, revision, _) = self
            .members
            .iter()
            .find(|(n, _, _)| url(n) == endpoint)
            .copied()
            .ok_or_else(|| EtcdError::InvalidRequest("unknown".into()))?;
        let mut status = crate::etcd::maintenance::Status::default();
        status.header.revision = revision;
        Ok(status)
    }
    async fn leader(&self) -> Result<crate::etcd::maintenance::Leader, EtcdError> {
        Err(EtcdError::InvalidRequest("-".into()))
    }
    async fn hash_kv_of(
        &self,
        endpoint: &str,
        revision: i64,
    ) -> Result<crate::etcd::maintenance::HashKv, EtcdError> {
        self.asked_at.lock().unwrap().push(revision);
        {
            let mut left = self.compacted.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(EtcdError::Api {
                    endpoint: endpoint.to_owned(),
                    code: 11,
                    message: "etcdserver: mvcc: required revision has been compacted".into(),
                });
            }
        }
        let (_, _, hash) = self
            .members
            .iter()
            .find(|(n, _, _)| url(n) == endpoint)
            .copied()
            .ok_or_else(|| EtcdError::InvalidRequest("unknown".into()))?;
        Ok(crate::etcd::maintenance::HashKv {
            hash,
            compact_revision: 3,
            ..Default::default()
        })
    }
}

fn hashes(members: Vec<(&'static str, i64, u32)>, compacted: u32) -> Hashes {
    Hashes {
        members,
        compacted: std::sync::Mutex::new(compacted),
        recorded: std::sync::Mutex::new(Vec::new()),
        asked_at: std::sync::Mutex::new(Vec::new()),
    }
}

#[tokio::test(start_paused = true)]
async fn a_mismatch_after_the_rollout_is_recorded_and_raises_the_alarm() {
    let cluster = hashes(vec![("m1", 52, 7), ("m2", 50, 7), ("m3", 51, 9)], 1);
    let metrics = Metrics::new(&["idle"]);
    after_rollout(&cluster, &metrics, "m2", "/p/", &Version::new(3, 5, 30)).await;
    // Hashed at the lowest current revision, again after a "compacted" answer.
    let asked = cluster.asked_at.lock().unwrap().clone();
    assert!(
        asked.iter().all(|r| *r == 50) && asked.len() == 4,
        "{asked:?}"
    );
    let recorded = cluster.recorded.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let record = &recorded[0];
    assert_eq!(record.revision, 50);
    assert!(
        record.summary().contains("m1,m2 hash 7; m3 hash 9"),
        "{}",
        record.summary()
    );
    let scrape = metrics.encode();
    assert!(
        scrape.contains("etcd_supervisor_consistency_alarm 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("etcd_supervisor_consistency_checks_total 1"),
        "{scrape}"
    );
}

#[tokio::test(start_paused = true)]
async fn agreeing_members_record_nothing_and_a_member_behind_is_not_checked() {
    let cluster = hashes(vec![("m1", 52, 7), ("m2", 50, 7), ("m3", 51, 7)], 0);
    let metrics = Metrics::new(&["idle"]);
    after_rollout(&cluster, &metrics, "m2", "/p/", &Version::new(3, 5, 30)).await;
    assert!(cluster.recorded.lock().unwrap().is_empty());
    let scrape = metrics.encode();
    assert!(
        scrape.contains("etcd_supervisor_consistency_alarm 0"),
        "{scrape}"
    );
    assert!(
        scrape.contains("etcd_supervisor_consistency_checks_total 1"),
        "{scrape}"
    );
    // Not the last member: another runs a different version, so nothing is compared.
    let metrics = Metrics::new(&["idle"]);
    after_rollout(&cluster, &metrics, "m2", "/p/", &Version::new(3, 5, 31)).await;
    assert!(cluster.asked_at.lock().unwrap().len() == 3);
    assert!(metrics
        .encode()
        .contains("etcd_supervisor_consistency_checks_total 0"));
}
