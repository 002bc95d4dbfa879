//! Cluster membership (`etcdserverpb.Cluster/MemberList`) and endpoint discovery from it.

use super::client::{Client, Retry};
use super::error::EtcdError;
use super::kv::{header, ResponseHeader};

/// A member of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// The member id.
    pub id: u64,
    /// The member name (empty while a member added to the cluster has not started yet).
    pub name: String,
    /// URLs its peers reach it at.
    pub peer_urls: Vec<String>,
    /// URLs clients reach it at (empty until it has started).
    pub client_urls: Vec<String>,
    /// True for a learner (a non-voting member).
    pub is_learner: bool,
}

/// The member list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
            "member list",
            Retry::Idempotent,
            self.request_timeout(),
            |rpc| async move {
                let resp = rpc.cluster_client().member_list().await?;
                Ok(MemberList {
                    header: header(resp.header()),
                    members: resp
                        .members()
                        .iter()
                        .map(|m| Member {
                            id: m.id(),
                            name: m.name().to_owned(),
                            peer_urls: m.peer_urls().to_vec(),
                            client_urls: m.client_urls().to_vec(),
                            is_learner: m.is_learner(),
                        })
                        .collect(),
                })
            },
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
