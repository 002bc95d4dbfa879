//! Command lines of a rehearsal, as pure functions: which restore tool to use, its
//! arguments, and the member's etcd flags with everything that names the cluster, the
//! member or the network replaced by the private copy's own.

use std::path::{Path, PathBuf};

use crate::versions::Version;

/// The name of the private single-member cluster.
pub const REHEARSAL_NAME: &str = "rehearsal";

/// How a restore tool is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// `etcdutl snapshot restore` (3.5 and later).
    Etcdutl,
    /// 3.4's `etcdctl snapshot restore`, with `ETCDCTL_API=3`.
    Etcdctl34,
}

/// The tool that restores the snapshot into the private data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreTool {
    /// The binary.
    pub path: PathBuf,
    /// How to call it.
    pub kind: ToolKind,
    /// The version it belongs to.
    pub version: Version,
}

/// The tools pinned beside one version's etcd (`<state-dir>/versions/<X.Y.Z>/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedTools {
    /// The version.
    pub version: Version,
    /// `etcdutl`, when present.
    pub etcdutl: Option<PathBuf>,
    /// `etcdctl`, when present.
    pub etcdctl: Option<PathBuf>,
}

impl PinnedTools {
    /// Looks for `etcdutl` and `etcdctl` in `dir` (a version directory of the store).
    pub fn in_dir(version: Version, dir: &Path) -> Self {
        let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        Self {
            version,
            etcdutl: file("etcdutl"),
            etcdctl: file("etcdctl"),
        }
    }

    /// The restore tool this version's files offer: etcdutl from 3.5 on (3.5's etcdctl
    /// restore is deprecated, 3.6 has none), etcdctl with `ETCDCTL_API=3` for 3.4.
    pub fn restore_tool(&self) -> Option<RestoreTool> {
        let tool = |path: &PathBuf, kind| RestoreTool {
            path: path.clone(),
            kind,
            version: self.version.clone(),
        };
        if self.version.minor_version() >= (3, 5) {
            self.etcdutl.as_ref().map(|p| tool(p, ToolKind::Etcdutl))
        } else {
            self.etcdctl.as_ref().map(|p| tool(p, ToolKind::Etcdctl34))
        }
    }
}

/// The restore tool to use: the running version's when it has one (it wrote the data),
/// else the target's.
pub fn choose_restore_tool(running: &PinnedTools, target: &PinnedTools) -> Option<RestoreTool> {
    running.restore_tool().or_else(|| target.restore_tool())
}

/// Arguments and environment of `snapshot restore` into `data_dir`, as a single member
/// advertising `peer_url`. `verified`: the snapshot's sha256 is checked by another pass (a
/// turn backup: its trailer while it streamed, `SHA256SUMS` re-read from disk beside this
/// restore, whose verdict counts only if that passes), so the tool's own pass over it is
/// skipped with `--skip-hash-check` (the trailer is still cut off).
pub fn restore_command(
    tool: &RestoreTool,
    snapshot: &Path,
    data_dir: &Path,
    peer_url: &str,
    verified: bool,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut args = vec![
        "snapshot".to_owned(),
        "restore".to_owned(),
        snapshot.display().to_string(),
        format!("--name={REHEARSAL_NAME}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--initial-cluster={REHEARSAL_NAME}={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster-token={REHEARSAL_NAME}"),
    ];
    if verified {
        args.push("--skip-hash-check".to_owned());
    }
    let env = match tool.kind {
        ToolKind::Etcdutl => Vec::new(),
        ToolKind::Etcdctl34 => vec![("ETCDCTL_API".to_owned(), "3".to_owned())],
    };
    (args, env)
}

/// Flags that name the member, its data, the cluster or the network: replaced.
const REPLACED: &[&str] = &[
    "name",
    "data-dir",
    "wal-dir",
    "advertise-client-urls",
    "initial-advertise-peer-urls",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "force-new-cluster",
    // The private etcd's output must be read back for the log tail.
    "log-outputs",
    "log-output",
];

/// Prefixes of replaced flags: every listener, every discovery setting.
const REPLACED_PREFIXES: &[&str] = &["listen-", "discovery"];

/// Replaced flags that take no separate value (`--force-new-cluster`, not `--x value`).
const BOOLEAN: &[&str] = &[
    "force-new-cluster",
    "discovery-insecure-transport",
    "discovery-insecure-skip-tls-verify",
];

/// Flags a private etcd cannot be given: with them, etcd ignores every other flag.
const UNSUPPORTED: &[&str] = &["config-file"];

fn is_replaced(name: &str) -> bool {
    REPLACED.contains(&name) || REPLACED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The environment variable etcd reads for flag `name` (`ETCD_DATA_DIR`).
pub fn env_name(name: &str) -> String {
    format!("ETCD_{}", name.replace('-', "_").to_uppercase())
}

/// The member's flags with the replaced ones dropped (with their separate values), and
/// the names of the flags dropped. `Err` for flags a private etcd cannot honour.
pub fn strip_member_flags(args: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            kept.push(arg.clone());
            continue;
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((n, _)) => (n, true),
            None => (body, false),
        };
        if UNSUPPORTED.contains(&name) {
            return Err(format!(
                "the member is configured by --{name}, which makes etcd ignore every other flag, so the rehearsal cannot give its copy a name, data dir and ports of its own"
            ));
        }
        if !is_replaced(name) {
            kept.push(arg.clone());
            continue;
        }
        if !inline_value && !BOOLEAN.contains(&name) {
            // `--name value`: the value goes too.
            iter.next();
        }
        dropped.push(name.to_owned());
    }
    Ok((kept, dropped))
}

/// The environment variables of every replaced flag, to be removed from the private
/// etcd's environment so an `ETCD_WAL_DIR` of the supervisor's never reaches it.
pub fn replaced_env_vars() -> Vec<String> {
    let mut vars: Vec<String> = REPLACED
        .iter()
        .chain(BOOLEAN)
        .map(|n| env_name(n))
        .collect();
    for extra in [
        "listen-client-urls",
        "listen-peer-urls",
        "listen-metrics-urls",
        "listen-client-http-urls",
        "discovery",
        "discovery-srv",
        "discovery-srv-name",
        "discovery-fallback",
        "discovery-proxy",
        "discovery-endpoints",
        "discovery-token",
        "config-file",
    ] {
        vars.push(env_name(extra));
    }
    vars.sort();
    vars.dedup();
    vars
}

/// The full argument list of the private etcd: the member's kept flags, then its own
/// identity, data dir and loopback URLs.
pub fn rehearsal_args(
    kept: &[String],
    data_dir: &Path,
    client_url: &str,
    peer_url: &str,
) -> Vec<String> {
    let mut args = kept.to_vec();
    args.extend([
        format!("--name={REHEARSAL_NAME}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={REHEARSAL_NAME}={peer_url}"),
        format!("--initial-cluster-token={REHEARSAL_NAME}"),
        "--log-outputs=stderr".to_owned(),
    ]);
    args
}

/// The member's config file rewritten for the private etcd: every key kept except those
/// naming the member, its data, the cluster or the network, which are the copy's own (as
/// [`rehearsal_args`] does with flags). `Err` when the text is not a YAML mapping.
pub fn rehearsal_config(
    yaml: &str,
    data_dir: &Path,
    client_url: &str,
    peer_url: &str,
) -> Result<String, String> {
    use yaml_serde::{Mapping, Value};
    let mut map = match yaml_serde::from_str::<Value>(yaml) {
        Ok(Value::Mapping(m)) => m,
        Ok(Value::Null) => Mapping::new(),
        Ok(_) => return Err("the member's config file is not a mapping of etcd's settings".into()),
        Err(e) => return Err(format!("the member's config file is not valid YAML: {e}")),
    };
    map.retain(|key, _| {
        key.as_str()
            .is_none_or(|k| !(is_replaced(k) || k == "log-outputs"))
    });
    let s = |v: &str| Value::String(v.to_owned());
    for (key, value) in [
        ("name", s(REHEARSAL_NAME)),
        ("data-dir", s(&data_dir.display().to_string())),
        ("listen-client-urls", s(client_url)),
        ("advertise-client-urls", s(client_url)),
        ("listen-peer-urls", s(peer_url)),
        ("initial-advertise-peer-urls", s(peer_url)),
        (
            "initial-cluster",
            s(&format!("{REHEARSAL_NAME}={peer_url}")),
        ),
        ("initial-cluster-token", s(REHEARSAL_NAME)),
        ("initial-cluster-state", s("new")),
        ("log-outputs", Value::Sequence(vec![s("stderr")])),
    ] {
        map.insert(s(key), value);
    }
    // Written as JSON (which is YAML): etcd reads the file with go-yaml's YAML 1.1, where
    // a plain `off` or `yes` is a boolean, and a YAML 1.2 writer leaves such strings
    // unquoted (`proxy: 'off'` would come back as `proxy: off` and fail etcd's parse).
    serde_json::to_string_pretty(&Value::Mapping(map)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn strips_identity_network_and_cluster_flags_in_every_spelling() {
        let args = s(&[
            "--name=m1",
            "--data-dir",
            "/var/lib/etcd",
            "-wal-dir=/wal",
            "--listen-client-urls=http://10.0.0.1:2379",
            "--listen-peer-urls",
            "http://10.0.0.1:2380",
            "--listen-metrics-urls=http://10.0.0.1:2381",
            "--advertise-client-urls=http://10.0.0.1:2379",
            "--initial-advertise-peer-urls=http://10.0.0.1:2380",
            "--initial-cluster=m1=http://10.0.0.1:2380",
            "--initial-cluster-state",
            "existing",
            "--initial-cluster-token=tok",
            "--discovery-srv=example.com",
            "--force-new-cluster",
            "--quota-backend-bytes=8589934592",
            "--snapshot-count",
            "5000",
            "--logger=zap",
            "--log-outputs=/var/log/etcd.log",
            "--experimental-initial-corrupt-check=true",
            "--initial-election-tick-advance=false",
            "--auto-compaction-retention=1h",
        ]);
        let (kept, dropped) = strip_member_flags(&args).unwrap();
        assert_eq!(
            kept,
            s(&[
                "--quota-backend-bytes=8589934592",
                "--snapshot-count",
                "5000",
                "--logger=zap",
                "--experimental-initial-corrupt-check=true",
                "--initial-election-tick-advance=false",
                "--auto-compaction-retention=1h",
            ])
        );
        assert!(dropped.contains(&"force-new-cluster".to_owned()));
        assert!(dropped.contains(&"wal-dir".to_owned()));
        assert_eq!(dropped.len(), 14, "{dropped:?}");
    }

    #[test]
    fn a_config_file_cannot_be_rehearsed() {
        let err = strip_member_flags(&s(&["--config-file=/etc/etcd.yml"])).unwrap_err();
        assert!(err.contains("--config-file"), "{err}");
    }

    #[test]
    fn a_config_file_is_rewritten_with_the_private_identity_and_keeps_the_rest() {
        let yaml = "name: 'm1'\ndata-dir: /var/lib/etcd\nwal-dir: /wal\nsnapshot-count: 10000\n\
            listen-peer-urls: http://10.0.0.1:2380\nlisten-metrics-urls: http://10.0.0.1:2381\n\
            initial-cluster: m1=http://10.0.0.1:2380\ninitial-cluster-state: existing\n\
            discovery-srv: example.com\nexperimental-initial-corrupt-check: true\n\
            client-transport-security:\n  cert-file: /c.pem\n  client-cert-auth: true\n\
            log-outputs: [/var/log/etcd.log]\nno-such-key: 1\nproxy: 'off'\n";
        let out = rehearsal_config(
            yaml,
            Path::new("/s/data"),
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
        )
        .unwrap();
        let v: yaml_serde::Value = yaml_serde::from_str(&out).unwrap();
        let get = |k: &str| v.get(k).cloned();
        assert_eq!(get("name").unwrap().as_str(), Some("rehearsal"));
        assert_eq!(get("data-dir").unwrap().as_str(), Some("/s/data"));
        assert_eq!(
            get("initial-cluster").unwrap().as_str(),
            Some("rehearsal=http://127.0.0.1:2")
        );
        assert_eq!(get("initial-cluster-state").unwrap().as_str(), Some("new"));
        assert_eq!(
            get("listen-client-urls").unwrap().as_str(),
            Some("http://127.0.0.1:1")
        );
        for gone in ["wal-dir", "listen-metrics-urls", "discovery-srv"] {
            assert!(get(gone).is_none(), "{gone} kept:\n{out}");
        }
        assert_eq!(get("snapshot-count").unwrap().as_u64(), Some(10000));
        assert_eq!(
            get("experimental-initial-corrupt-check").unwrap().as_bool(),
            Some(true)
        );
        assert_eq!(get("no-such-key").unwrap().as_u64(), Some(1));
        assert_eq!(
            get("client-transport-security")
                .unwrap()
                .get("cert-file")
                .unwrap()
                .as_str(),
            Some("/c.pem")
        );
        assert_eq!(get("log-outputs").unwrap()[0].as_str(), Some("stderr"));
        assert!(rehearsal_config("- a\n", Path::new("/d"), "u", "p").is_err());
        // Quoted: YAML 1.1 (etcd's go-yaml) reads a plain `off` as false.
        assert!(out.contains("\"proxy\": \"off\""), "{out}");
    }

    #[test]
    fn rehearsal_args_end_with_the_private_identity() {
        let args = rehearsal_args(
            &s(&["--debug"]),
            Path::new("/s/data"),
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
        );
        assert_eq!(args[0], "--debug");
        assert!(args.contains(&"--initial-cluster=rehearsal=http://127.0.0.1:2".to_owned()));
        assert!(args.contains(&"--data-dir=/s/data".to_owned()));
        assert!(args.contains(&"--log-outputs=stderr".to_owned()));
    }

    #[test]
    fn env_of_replaced_flags_is_removed() {
        let vars = replaced_env_vars();
        for v in [
            "ETCD_WAL_DIR",
            "ETCD_INITIAL_CLUSTER",
            "ETCD_LISTEN_CLIENT_URLS",
            "ETCD_NAME",
        ] {
            assert!(vars.contains(&v.to_owned()), "{v}");
        }
        assert!(!vars.contains(&"ETCD_QUOTA_BACKEND_BYTES".to_owned()));
    }

    fn tools(version: Version, utl: bool, ctl: bool) -> PinnedTools {
        PinnedTools {
            etcdutl: utl.then(|| PathBuf::from(format!("/v/{version}/etcdutl"))),
            etcdctl: ctl.then(|| PathBuf::from(format!("/v/{version}/etcdctl"))),
            version,
        }
    }

    #[test]
    fn the_running_versions_tool_wins_then_the_targets() {
        let v34 = Version::new(3, 4, 23);
        let v516 = Version::new(3, 5, 16);
        let v530 = Version::new(3, 5, 30);
        let t = choose_restore_tool(
            &tools(v516.clone(), true, true),
            &tools(v530.clone(), true, true),
        )
        .unwrap();
        assert_eq!(
            (t.kind, t.version.clone()),
            (ToolKind::Etcdutl, v516.clone())
        );
        // 3.5's etcdctl alone does not count: its restore is deprecated.
        let t = choose_restore_tool(&tools(v516, false, true), &tools(v530.clone(), true, false))
            .unwrap();
        assert_eq!((t.kind, t.version), (ToolKind::Etcdutl, v530.clone()));
        let t = choose_restore_tool(
            &tools(v34.clone(), false, true),
            &tools(v530.clone(), true, true),
        )
        .unwrap();
        assert_eq!((t.kind, t.version), (ToolKind::Etcdctl34, v34.clone()));
        assert_eq!(
            choose_restore_tool(&tools(v34, false, false), &tools(v530, false, true)),
            None
        );
    }

    #[test]
    fn etcdctl_34_restores_with_api_3() {
        let tool = RestoreTool {
            path: "/v/3.4.23/etcdctl".into(),
            kind: ToolKind::Etcdctl34,
            version: Version::new(3, 4, 23),
        };
        let (args, env) = restore_command(
            &tool,
            Path::new("/s/snap.db"),
            Path::new("/s/data"),
            "http://127.0.0.1:9",
            false,
        );
        assert_eq!(env, vec![("ETCDCTL_API".to_owned(), "3".to_owned())]);
        assert_eq!(&args[..3], &s(&["snapshot", "restore", "/s/snap.db"])[..]);
        assert!(args.contains(&"--initial-advertise-peer-urls=http://127.0.0.1:9".to_owned()));
        assert!(!args.contains(&"--skip-hash-check".to_owned()));
        let (args, _) = restore_command(
            &tool,
            Path::new("/s/snap.db"),
            Path::new("/s/data"),
            "http://127.0.0.1:9",
            true,
        );
        assert!(
            args.contains(&"--skip-hash-check".to_owned()),
            "a verified backup"
        );
    }
}
