//! A throwaway PKI for TLS tests, made with rcgen (no openssl binary needed).

use std::path::Path;

/// A throwaway PKI in `dir`: `ca.pem`, `server.pem` + `server-key.pem` (for `ip`),
/// `client.pem` + `client-key.pem`, and `other-ca.pem` (signed nothing here).
pub fn make_pki(dir: &Path, ip: &str) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let issuer = ca("etcd-supervisor test CA");
    std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), ca("some other CA").pem()).unwrap();
    for (name, sans, usages) in [
        (
            "server",
            vec![ip.to_owned()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        ),
        ("client", vec![], vec![ExtendedKeyUsagePurpose::ClientAuth]),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
}

/// Enables auth on a cluster with user `root` / password `rootpw` (raw HTTP: set-up only).
pub fn enable_auth(endpoint: &str) {
    for (path, body) in [
        ("/v3/auth/role/add", r#"{"name":"root"}"#),
        (
            "/v3/auth/user/add",
            r#"{"name":"root","password":"rootpw"}"#,
        ),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        ("/v3/auth/enable", "{}"),
    ] {
        let answer = super::http_post(
            &format!("{endpoint}{path}"),
            body,
            std::time::Duration::from_secs(5),
        );
        assert!(matches!(answer, Some((200, _))), "{path}: {answer:?}");
    }
}

/// Starts member 0 of `cluster` (single member) with client TLS and client-cert auth, using
/// a PKI made in the cluster's dir; returns the process guard and the https client URL.
pub fn start_tls_member(cluster: &super::Cluster) -> (super::Proc, String) {
    let member = &cluster.members[0];
    let spec = member.spec.clone();
    let dir = cluster.dir();
    make_pki(dir, &spec.ip);
    let https = format!("https://{}:{}", spec.ip, spec.client_port);
    let mut flags: Vec<String> = spec
        .etcd_flags()
        .into_iter()
        .map(|f| f.replace(&spec.client_url(), &https))
        .collect();
    flags.extend([
        format!("--cert-file={}", dir.join("server.pem").display()),
        format!("--key-file={}", dir.join("server-key.pem").display()),
        format!("--trusted-ca-file={}", dir.join("ca.pem").display()),
        "--client-cert-auth".to_owned(),
    ]);
    let proc = super::Proc::spawn(
        std::process::Command::new(member.release.etcd()).args(&flags),
        &dir.join("tls.log"),
    );
    (proc, https)
}
