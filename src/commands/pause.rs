//! `etcd-supervisor pause` and `resume`: write and delete the cluster-wide `pause` key.
//!
//! While the key exists no member starts a new upgrade turn; a turn already past its stop
//! finishes (a member is never left half-swapped), and one not yet stopped gives the turn
//! back. The record says who paused (user and host), when and why, for `status` and `plan`.
//! A cluster that cannot be reached fails the command (exit 1), as it fails `status`.

use std::collections::HashMap;
use std::time::SystemTime;

use super::Outcome;
use crate::cli::{ConnArgs, PauseArgs, ResumeArgs};
use crate::cluster::keys::Keys;
use crate::cluster::records::{PauseRecord, Record};
use crate::etcd::kv::{Compare, PutRequest, RangeRequest, Txn, TxnOp, TxnOpResponse};
use crate::etcd::Client;

/// `etcd-supervisor pause`: exit 0 once paused (or when it already was), 1 when the cluster
/// cannot be reached, 2 for bad options.
pub async fn pause(args: &PauseArgs) -> Outcome {
    let Some(client) = client(&args.conn) else {
        return Outcome::Usage;
    };
    let key = Keys::new(&args.prefix.key_prefix).pause();
    let record = PauseRecord::new(&user(), &host(), SystemTime::now(), args.reason.as_deref());
    // Only where none is: the first pause's who and why stay until someone resumes.
    let txn = Txn::new()
        .when([Compare::absent(key.clone())])
        .and_then([TxnOp::Put(PutRequest::new(key.clone(), record.encode()))])
        .or_else([TxnOp::Range(RangeRequest::key(key.clone()))]);
    match client.txn(&txn).await {
        Ok(resp) if resp.succeeded => {
            println!(
                "upgrades {}: no member starts a new turn (a turn past its stop finishes); `etcd-supervisor resume` lifts it",
                record.describe()
            );
            Outcome::Success
        }
        Ok(resp) => {
            let existing = resp.responses.into_iter().find_map(|r| match r {
                TxnOpResponse::Range(range) => range.kvs.into_iter().next(),
                _ => None,
            });
            let what = existing
                .map(|kv| match PauseRecord::decode(&kv.value) {
                    Ok(p) => p.describe(),
                    Err(_) => format!("paused ({key} holds something else)"),
                })
                .unwrap_or_else(|| "paused".into());
            println!("upgrades were already {what}; left as it is");
            Outcome::Success
        }
        Err(e) => unreachable_cluster("pause", &client, &e),
    }
}

/// `etcd-supervisor resume`: exit 0 once the pause is gone (or when there was none), 1 when
/// the cluster cannot be reached, 2 for bad options.
pub async fn resume(args: &ResumeArgs) -> Outcome {
    let Some(client) = client(&args.conn) else {
        return Outcome::Usage;
    };
    let key = Keys::new(&args.prefix.key_prefix).pause();
    let request = crate::etcd::kv::DeleteRequest::key(key).prev_kv();
    match client.delete_range(&request).await {
        Ok(resp) => {
            match resp.prev_kvs.first() {
                Some(kv) => {
                    let was = PauseRecord::decode(&kv.value)
                        .map_or_else(|_| "paused".to_owned(), |p| p.describe());
                    println!(
                        "upgrades resumed (they were {was}); queued members take their turns again"
                    );
                }
                None => println!("upgrades were not paused; nothing to do"),
            }
            Outcome::Success
        }
        Err(e) => unreachable_cluster("resume", &client, &e),
    }
}

pub(super) fn client(conn: &ConnArgs) -> Option<Client> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let cfg =
        crate::config::client_config(conn, &[crate::config::DEFAULT_ENDPOINT.to_owned()], &env);
    match Client::new(cfg) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!("{e}");
            None
        }
    }
}

fn unreachable_cluster(what: &str, client: &Client, e: &crate::etcd::EtcdError) -> Outcome {
    tracing::error!(
        endpoints = %client.endpoints().join(","),
        "cannot {what} upgrades: the cluster did not answer ({e}); nothing was changed"
    );
    Outcome::Failed
}

/// Who is pausing: the person behind sudo, else the user this runs as.
pub(super) fn user() -> String {
    if let Ok(user) = std::env::var("SUDO_USER") {
        if !user.is_empty() {
            return user;
        }
    }
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => std::env::var("USER").unwrap_or_else(|_| format!("uid {uid}")),
    }
}

pub(super) fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}
