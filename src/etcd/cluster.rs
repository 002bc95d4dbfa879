//! Cluster membership (`/v3/cluster/member/list`) and endpoint discovery from it.

use serde::Deserialize;

use super::client::{Client, Retry};
use super::error::EtcdError;
use super::wire::{int, ResponseHeader};

/// A member of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Member {
    /// The member id.
    #[serde(rename = "ID", with = "int")]
    pub id: u64,
    /// The member name (empty while a member added to the cluster has not started yet).
    pub name: String,
    /// URLs its peers reach it at.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// URLs clients reach it at (empty until it has started).
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
    /// True for a learner (a non-voting member).
    #[serde(rename = "isLearner")]
    pub is_learner: bool,
}

/// The member list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MemberList {
    /// The response header (`member_id` is the member that answered).
    pub header: ResponseHeader,
    /// The members, in etcd's order (by id).
    pub members: Vec<Member>,
}

impl MemberList {
    /// The member with this id.
    pub fn by_id(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The member with this name.
    pub fn by_name(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

impl Client {
    /// Lists the cluster's members.
    pub async fn member_list(&self) -> Result<MemberList, EtcdError> {
        self.call(
            "/v3/cluster/member/list",
            &serde_json::json!({}),
            Retry::Idempotent,
        )
        .await
    }

    /// Replaces the endpoints in use with the configured ones followed by every member's
    /// client URLs (in member-list order, without duplicates). Returns the new list.
    /// Adds `urls` (learned elsewhere, e.g. from the supervisors' records) after the
    /// configured endpoints; returns the endpoints now known.
    pub fn add_endpoints(&self, urls: &[String]) -> Vec<String> {
        self.set_discovered_endpoints(urls)
    }

    pub async fn refresh_endpoints(&self) -> Result<Vec<String>, EtcdError> {
        let list = self.member_list().await?;
        let urls: Vec<String> = list
            .members
            .iter()
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect();
        let endpoints = self.set_discovered_endpoints(&urls);
        tracing::debug!(?endpoints, "etcd endpoints refreshed from the member list");
        Ok(endpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn member_list_parses_with_omitted_fields() {
        let list: MemberList = serde_json::from_value(json!({
            "header":{"cluster_id":"17319506567620374923","member_id":"3961401065075778231","raft_term":"2"},
            "members":[
                {"ID":"3961401065075778231","name":"m1","peerURLs":["http://127.0.0.1:23801"],"clientURLs":["http://127.0.0.1:23791"]},
                {"ID":"10405928607036884643","name":"m2","peerURLs":["http://127.0.0.1:23802"],"clientURLs":["http://127.0.0.1:23792"],"isLearner":true},
                {"ID":"42","peerURLs":["http://127.0.0.1:23803"]}
            ]
        }))
        .unwrap();
        assert_eq!(list.header.member_id, 3_961_401_065_075_778_231);
        assert_eq!(list.members.len(), 3);
        let m2 = list.by_name("m2").unwrap();
        assert_eq!(m2.id, 10_405_928_607_036_884_643);
        assert!(m2.is_learner);
        let unstarted = list.by_id(42).unwrap();
        assert!(unstarted.name.is_empty() && unstarted.client_urls.is_empty());
        assert!(!list.members[0].is_learner);
    }
}
