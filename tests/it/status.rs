//! `etcd-supervisor status` against real clusters: healthy, a member down, JSON, the turn,
//! TLS with client certificates, and auth.

use std::process::{Command, Output};
use std::time::Duration;

use etcd_supervisor::cluster::lock::{self, LockConfig};
use etcd_supervisor::etcd::{Client, ClientConfig, Credentials};

use crate::support::{self, output_text, pki, wait_for, Cluster, Mode, Release, SUPERVISOR};

fn status(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("60").arg(SUPERVISOR).arg("status").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run status")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", output_text(out)))
}

fn turn_cfg(member: &str) -> LockConfig {
    LockConfig {
        key_prefix: "/etcd-supervisor/".into(),
        ttl: Duration::from_secs(5),
        member: member.into(),
    }
}

fn healthy_then_member_down(release: Release) {
    let mut cluster = Cluster::start(release, 3);
    let endpoints = cluster.client_urls().join(",");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(ClientConfig::new(cluster.client_urls())).unwrap();
    let held = rt
        .block_on(lock::acquire(
            &client,
            &turn_cfg("m2"),
            std::future::pending(),
        ))
        .unwrap();

    let out = status(&["--endpoints", &endpoints], &[]);
    let table = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{table}");
    for name in ["m1", "m2", "m3"] {
        assert!(table.contains(name), "{table}");
    }
    assert!(
        table.contains("healthy") && !table.contains("UNHEALTHY"),
        "{table}"
    );
    assert!(table.contains("upgrade turn: held by m2"), "{table}");

    let out = status(&["--endpoints", &endpoints, "--json"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let report = json(&out);
    assert_eq!(report["healthy"], true);
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members
        .iter()
        .all(|m| m["server_version"] == release.version().as_str()));
    assert_eq!(members.iter().filter(|m| m["leader"] == true).count(), 1);
    let minor = release.version().rsplit_once('.').unwrap().0.to_owned();
    assert_eq!(report["cluster_version"], format!("{minor}.0"));
    assert_eq!(report["turn"]["holder"], "m2");
    rt.block_on(held.release()).unwrap();

    cluster.member(2).kill();
    let out = status(&["--endpoints", &endpoints], &[]);
    let table = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("UNHEALTHY"), "{table}");
    let out = status(&["--endpoints", &endpoints, "--json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    let m3 = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m3")
        .unwrap()
        .clone();
    assert_eq!(m3["healthy"], false);
    assert!(m3["error"].is_string(), "{m3}");
    assert_eq!(report["turn"]["holder"], serde_json::Value::Null);
}

#[test]
fn status_3_4_healthy_then_member_down() {
    healthy_then_member_down(Release::V3_4);
}

#[test]
fn status_3_5_healthy_then_member_down() {
    healthy_then_member_down(Release::V3_5);
}

#[test]
fn status_of_an_unreachable_cluster_is_one_clear_line() {
    let net = support::Net::allocate();
    let url = format!("http://{}:{}", net.ip, net.port(0));
    let out = status(&["--endpoints", &url, "--request-timeout", "1s"], &[]);
    support::assert_fails_saying(&out, &["cluster unreachable", &url]);
}

fn tls_status_and_turn(release: Release) {
    let cluster = Cluster::new(release, 1, Mode::Bare);
    let (_etcd, https) = pki::start_tls_member(&cluster);
    let dir = cluster.dir();
    let path = |f: &str| dir.join(f).display().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client-key.pem"));
    let tls = [
        "--endpoints",
        https.as_str(),
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
    ];
    wait_for(Duration::from_secs(30), || {
        (status(&tls, &[]).status.code() == Some(0)).then_some(())
    })
    .unwrap_or_else(|_| {
        panic!(
            "TLS status never healthy: {}",
            output_text(&status(&tls, &[]))
        )
    });
    let report = json(&status(&[&tls[..], &["--json"]].concat(), &[]));
    assert_eq!(
        report["members"][0]["server_version"],
        release.version().as_str()
    );

    let client = Client::new(ClientConfig {
        cacert: Some(dir.join("ca.pem")),
        cert: Some(dir.join("client.pem")),
        key: Some(dir.join("client-key.pem")),
        ..ClientConfig::new(vec![https.clone()])
    })
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let held = lock::acquire(&client, &turn_cfg("tls"), std::future::pending())
            .await
            .unwrap();
        held.release().await.unwrap();
    });

    // Without the client certificate: one clear line, exit 1.
    let out = status(
        &[
            "--endpoints",
            &https,
            "--cacert",
            &ca,
            "--request-timeout",
            "2s",
        ],
        &[],
    );
    support::assert_fails_saying(&out, &["cluster unreachable"]);
}

#[test]
fn status_3_4_over_tls_with_client_certificates() {
    tls_status_and_turn(Release::V3_4);
}

#[test]
fn status_3_5_over_tls_with_client_certificates() {
    tls_status_and_turn(Release::V3_5);
}

fn auth_status_and_turn(release: Release) {
    let cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    pki::enable_auth(&urls[0]);
    let endpoints = urls.join(",");
    let args = ["--endpoints", endpoints.as_str(), "--user", "root"];
    let out = status(&args, &[("ETCD_SUPERVISOR_PASSWORD", "rootpw")]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("upgrade turn: free"),
        "{}",
        output_text(&out)
    );

    let client = Client::new(ClientConfig {
        credentials: Some(Credentials {
            user: "root".into(),
            password: "rootpw".into(),
        }),
        ..ClientConfig::new(urls.clone())
    })
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let held = rt
        .block_on(lock::acquire(
            &client,
            &turn_cfg("authed"),
            std::future::pending(),
        ))
        .unwrap();
    let out = status(&args, &[("ETCD_SUPERVISOR_PASSWORD", "rootpw")]);
    assert!(
        output_text(&out).contains("held by authed"),
        "{}",
        output_text(&out)
    );
    rt.block_on(held.release()).unwrap();

    let out = status(&args, &[("ETCD_SUPERVISOR_PASSWORD", "wrong")]);
    let t = support::assert_fails_saying(&out, &["root"]);
    assert_eq!(t.trim().lines().count(), 1, "one clear line: {t}");
}

#[test]
fn status_3_4_with_auth() {
    auth_status_and_turn(Release::V3_4);
}

#[test]
fn status_3_5_with_auth() {
    auth_status_and_turn(Release::V3_5);
}
