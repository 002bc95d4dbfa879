//! Configurations as operators write them, on real etcd: members configured only by
//! `--config-file` YAML in the shape of etcd's own `etcd.conf.yml.sample` (v3.5.16), the
//! Debian layout (`--etcd-binary /usr/bin/etcd` with etcdctl and etcdutl beside it), `plan`
//! and `status` from a bare shell (only `--state-dir`), and bad input refused before
//! anything stops.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::rollout::{server_version, stage, FAST};
use crate::support::{
    self, http_post, output_text, pki, wait_for, write_script, Cluster, MemberSpec, Mode, Proc,
    Release, SUPERVISOR,
};

/// Bound on a rolling upgrade of three members, each rehearsing first (generous: the
/// machine is shared).
const ROLLOUT_BOUND: Duration = Duration::from_secs(420);

/// A cluster whose members are configured only by YAML files, each run by a supervisor
/// given nothing but `--state-dir`, `--etcd-binary` and the test timings.
struct YamlCluster {
    // Dropped first: the processes go before the cluster's directories.
    procs: Vec<Option<Proc>>,
    cluster: Cluster,
    yamls: Vec<PathBuf>,
    tls: bool,
}

/// One member's file in the shape of etcd.conf.yml.sample (v3.5.16): the same keys, in
/// the same order, with this member's values; `extra` is appended.
fn sample_yaml(spec: &MemberSpec, tls_dir: Option<&Path>, extra: &str) -> String {
    let scheme = if tls_dir.is_some() { "https" } else { "http" };
    let client = format!("{scheme}://{}:{}", spec.ip, spec.client_port);
    let (cert, key, ca, auth) = match tls_dir {
        Some(d) => (
            d.join("server.pem").display().to_string(),
            d.join("server-key.pem").display().to_string(),
            d.join("ca.pem").display().to_string(),
            "true",
        ),
        None => (String::new(), String::new(), String::new(), "false"),
    };
    format!(
        "# This is the configuration file for the etcd server.\n\
         name: '{name}'\n\
         data-dir: {data}\n\
         wal-dir:\n\
         snapshot-count: 10000\n\
         heartbeat-interval: 100\n\
         election-timeout: 1000\n\
         quota-backend-bytes: 0\n\
         listen-peer-urls: {peer}\n\
         listen-client-urls: {client}\n\
         max-snapshots: 5\n\
         max-wals: 5\n\
         cors:\n\
         initial-advertise-peer-urls: {peer}\n\
         advertise-client-urls: {client}\n\
         discovery:\n\
         discovery-fallback: 'proxy'\n\
         discovery-proxy:\n\
         discovery-srv:\n\
         initial-cluster: {initial}\n\
         initial-cluster-token: '{token}'\n\
         initial-cluster-state: 'new'\n\
         strict-reconfig-check: false\n\
         enable-v2: true\n\
         enable-pprof: true\n\
         proxy: 'off'\n\
         proxy-failure-wait: 5000\n\
         proxy-refresh-interval: 30000\n\
         proxy-dial-timeout: 1000\n\
         proxy-write-timeout: 5000\n\
         proxy-read-timeout: 0\n\
         client-transport-security:\n\
         \x20 cert-file: {cert}\n\
         \x20 key-file: {key}\n\
         \x20 client-cert-auth: {auth}\n\
         \x20 trusted-ca-file: {ca}\n\
         \x20 auto-tls: false\n\
         peer-transport-security:\n\
         \x20 cert-file:\n\
         \x20 key-file:\n\
         \x20 client-cert-auth: false\n\
         \x20 trusted-ca-file:\n\
         \x20 auto-tls: false\n\
         \x20 allowed-cn:\n\
         \x20 allowed-hostname:\n\
         self-signed-cert-validity: 1\n\
         log-level: info\n\
         logger: zap\n\
         log-outputs: [stderr]\n\
         force-new-cluster: false\n\
         auto-compaction-mode: periodic\n\
         auto-compaction-retention: \"1\"\n\
         {extra}",
        name = spec.name,
        data = spec.data_dir.display(),
        peer = spec.peer_url(),
        initial = spec.initial_cluster,
        token = spec.token,
    )
}

impl YamlCluster {
    /// Writes every member's YAML (with `extra`), starts their supervisors (with
    /// `run_extra` options) and waits until each member is healthy.
    fn start(release: Release, n: usize, tls: bool, extra: &str, run_extra: &[&str]) -> Self {
        Self::start_edited(release, n, tls, extra, run_extra, |y| y)
    }

    /// [`YamlCluster::start`] with each member's YAML passed through `edit` first.
    fn start_edited(
        release: Release,
        n: usize,
        tls: bool,
        extra: &str,
        run_extra: &[&str],
        edit: impl Fn(String) -> String,
    ) -> Self {
        let cluster = Cluster::new(release, n, Mode::Supervised(Vec::new()));
        let dir = cluster.dir().to_path_buf();
        if tls {
            pki::make_pki(&dir, &cluster.net.ip);
        }
        let yamls: Vec<PathBuf> = cluster
            .members
            .iter()
            .map(|m| {
                let path = dir.join(format!("{}.conf.yml", m.spec.name));
                let text = edit(sample_yaml(&m.spec, tls.then_some(dir.as_path()), extra));
                std::fs::write(&path, text).unwrap();
                path
            })
            .collect();
        let mut this = YamlCluster {
            procs: (0..n).map(|_| None).collect(),
            cluster,
            yamls,
            tls,
        };
        let run_extra: Vec<String> = run_extra.iter().map(|s| s.to_string()).collect();
        for i in 0..n {
            this.start_member(i, &run_extra);
        }
        for i in 0..n {
            this.wait_healthy(i);
        }
        // Staged before the members have agreed on a cluster version, a minor upgrade is
        // judged against etcd's placeholder 3.0 (tested here from outside).
        wait_for(Duration::from_secs(60), || {
            let view = this.status_json(0)?;
            let v = view["cluster_version"].as_str()?.to_owned();
            (!v.starts_with("3.0")).then_some(())
        })
        .unwrap_or_else(|_| panic!("no cluster version decided\n{}", this.cluster.logs()));
        this
    }

    fn start_member(&mut self, i: usize, run_extra: &[String]) {
        let m = &self.cluster.members[i];
        let mut cmd = Command::new(SUPERVISOR);
        cmd.arg("run")
            .arg("--state-dir")
            .arg(&m.state_dir)
            .arg("--etcd-binary")
            .arg(m.release.etcd())
            .args(FAST)
            .args(run_extra)
            .arg("--")
            .arg(format!("--config-file={}", self.yamls[i].display()));
        self.procs[i] = Some(Proc::spawn(&mut cmd, &m.log));
    }

    fn state_dir(&self, i: usize) -> &Path {
        &self.cluster.members[i].state_dir
    }

    /// `status --json` of member `i`'s daemon, from a bare shell (only `--state-dir`).
    fn status_json(&self, i: usize) -> Option<serde_json::Value> {
        let out = bare(&["status", "--json", "--state-dir"], self.state_dir(i));
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The version member `i` serves, as `status` reads it (TLS where the YAML says so).
    fn version_of(&self, i: usize) -> Option<String> {
        if !self.tls {
            return server_version(&self.cluster, i);
        }
        let name = &self.cluster.members[i].spec.name;
        let view = self.status_json(i)?;
        view["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"].as_str() == Some(name))?["server_version"]
            .as_str()
            .map(str::to_owned)
    }

    fn wait_healthy(&self, i: usize) {
        let name = &self.cluster.members[i].spec.name;
        wait_for(Duration::from_secs(60), || self.version_of(i).map(drop))
            .unwrap_or_else(|_| panic!("{name} never served\n{}", self.cluster.logs()));
    }

    fn wait_all_on(&self, version: &str, bound: Duration) {
        let n = self.cluster.members.len();
        wait_for(bound, || {
            (0..n)
                .all(|i| self.version_of(i).as_deref() == Some(version))
                .then_some(())
        })
        .unwrap_or_else(|_| {
            panic!(
                "not every member reached {version}\n{}",
                self.supervisor_lines()
            )
        });
    }

    /// Every member's supervisor lines (etcd's own JSON lines left out: they crowd out
    /// what the supervisors said in a failure message).
    fn supervisor_lines(&self) -> String {
        self.cluster
            .members
            .iter()
            .map(|m| {
                let lines: Vec<String> = m
                    .log_text()
                    .lines()
                    .filter(|l| !l.starts_with('{'))
                    .map(str::to_owned)
                    .collect();
                format!("==== {} ====\n{}", m.spec.name, lines.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Pids of member `i`'s supervisor and etcd, from /proc.
    fn pids(&self, i: usize) -> (i32, Option<i32>) {
        let proc = self.procs[i].as_ref().expect("running");
        let sup = proc.pid().as_raw();
        (sup, etcd_in(&proc.group_pids()))
    }
}

/// The member's etcd among `pids` (by /proc/<pid>/comm; a rehearsal's copy runs in
/// `<state-dir>/rehearsal/` and is not it).
fn etcd_in(pids: &[i32]) -> Option<i32> {
    pids.iter().copied().find(|p| {
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        comm.trim() == "etcd" && !String::from_utf8_lossy(&cmdline).contains("/rehearsal/")
    })
}

/// Runs the supervisor as from an operator's bare shell: no environment but PATH.
fn bare(args: &[&str], state_dir: &Path) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(SUPERVISOR)
        .args(args)
        .arg(state_dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run the supervisor")
}

/// A copy of `release`'s etcd named as a drop (`etcd-X.Y.Z`), staged alone on every member.
fn stage_alone(yc: &YamlCluster, release: Release) {
    let binary = yc.cluster.dir().join(format!("etcd-{}", release.version()));
    std::fs::copy(release.etcd(), &binary).unwrap();
    for i in 0..yc.cluster.members.len() {
        stage(&yc.cluster, i, &binary);
    }
}

/// The rolled cluster's records carry the real names, and each member rehearsed.
fn assert_real_names_and_rehearsals(yc: &YamlCluster) {
    // The last member may still be verifying when every member serves the target.
    let view = wait_for(Duration::from_secs(120), || {
        let view = yc.status_json(0)?;
        let records = view["progress"].as_object()?;
        let idle = records.len() == yc.cluster.members.len()
            && records.values().all(|r| r["state"] == "idle");
        idle.then_some(view)
    })
    .unwrap_or_else(|_| panic!("the members never settled\n{}", yc.supervisor_lines()));
    let names: Vec<String> = view["progress"]
        .as_object()
        .expect("progress records")
        .keys()
        .cloned()
        .collect();
    let want: Vec<String> = yc
        .cluster
        .members
        .iter()
        .map(|m| m.spec.name.clone())
        .collect();
    assert_eq!(names, want, "records under members/<name>");
    for m in &yc.cluster.members {
        let log = m.log_text();
        assert!(
            log.contains("rehearsal passed"),
            "{} did not rehearse\n{log}",
            m.spec.name
        );
        assert!(
            !log.contains("member default"),
            "{} called itself default",
            m.spec.name
        );
    }
    let human = bare(&["status", "--state-dir"], yc.state_dir(0));
    eprintln!(
        "status from a bare shell (--state-dir only):\n{}",
        output_text(&human)
    );
    assert_eq!(human.status.code(), Some(0), "{}", output_text(&human));
}

#[test]
fn a_yaml_only_3_5_cluster_rolls_3_5_16_to_3_5_30_with_real_names_and_rehearses() {
    let yc = YamlCluster::start(Release::V3_5, 3, false, "", &[]);
    stage_alone(&yc, Release::V3_5Newest);
    yc.wait_all_on(&Release::V3_5Newest.version(), ROLLOUT_BOUND);
    assert_real_names_and_rehearsals(&yc);
}

#[test]
fn a_yaml_only_3_5_cluster_with_client_tls_rolls_3_5_16_to_3_5_30_and_rehearses() {
    let yc = YamlCluster::start(Release::V3_5, 3, true, "", &[]);
    // The supervisors talk https with etcd's own CA and certificate, read from the YAML.
    let view = yc.status_json(0).expect("status over TLS");
    assert!(
        view["members"][0]["client_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{view}"
    );
    stage_alone(&yc, Release::V3_5Newest);
    yc.wait_all_on(&Release::V3_5Newest.version(), ROLLOUT_BOUND);
    assert_real_names_and_rehearsals(&yc);
}

/// The same shape from the newest 3.5 to 3.6, as an operator prepares it for 3.6: the v2
/// API off (3.6's sample has no `enable-v2`). With the 3.5 sample's `enable-v2: true` a
/// 3-member 3.5.36 cluster's WAL holds v2 requests that `etcdutl check v2store` reports
/// as custom content, and the vetting refuses 3.6 on every member (seen on these binaries).
#[test]
fn a_yaml_only_cluster_rolls_the_newest_3_5_to_3_6() {
    let yc = YamlCluster::start_edited(Release::V3_5Go, 3, false, "", &[], |y| {
        y.replace("enable-v2: true\n", "enable-v2: false\n")
    });
    stage_alone(&yc, Release::V3_6);
    yc.wait_all_on(&Release::V3_6.version(), ROLLOUT_BOUND);
    assert_real_names_and_rehearsals(&yc);
}

/// Over-refusal: keys etcd ignores (unknown ones) and `experimental-*` keys 3.5 accepts
/// do not stop a 3.5 patch (one member each, side by side).
#[test]
fn unknown_keys_or_experimental_keys_on_3_5_roll_a_3_5_patch() {
    let unknown = YamlCluster::start(
        Release::V3_5,
        1,
        false,
        "no-such-setting: 1\nanother-unknown-key: [a, b]\nnested-unknown:\n  x: y\n",
        &[],
    );
    let experimental = YamlCluster::start(
        Release::V3_5,
        1,
        false,
        "experimental-initial-corrupt-check: true\n\
         experimental-compact-hash-check-enabled: true\n\
         experimental-enable-lease-checkpoint: true\n\
         experimental-watch-progress-notify-interval: 600000000000\n",
        &[],
    );
    stage_alone(&unknown, Release::V3_5Newest);
    stage_alone(&experimental, Release::V3_5Newest);
    let target = Release::V3_5Newest.version();
    unknown.wait_all_on(&target, ROLLOUT_BOUND);
    experimental.wait_all_on(&target, ROLLOUT_BOUND);
    for yc in [&unknown, &experimental] {
        let log = yc.cluster.members[0].log_text();
        assert!(log.contains("rehearsal passed"), "{log}");
        assert!(
            !log.contains("would not start with this member's configuration"),
            "{log}"
        );
    }
}

/// True when `rejected/<version>` exists under the default prefix.
fn rejected_in_etcd(url: &str, version: &str) -> bool {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .encode(format!("/etcd-supervisor/rejected/{version}"));
    http_post(
        &format!("{url}/v3/kv/range"),
        &format!(r#"{{"key":"{key}"}}"#),
        Duration::from_secs(2),
    )
    .is_some_and(|(status, body)| status == 200 && body.contains("\"kvs\""))
}

/// Debian's layout: `--etcd-binary` names a directory holding etcd, etcdctl and etcdutl of
/// 3.5.16. A crashing 3.5.30 staged alone is rejected by the rehearsal (restored with the
/// etcdutl pinned beside the first binary) and no member's etcd restarts.
#[test]
fn debian_layout_rehearses_and_a_crashing_binary_staged_alone_restarts_no_etcd() {
    let dir = Release::V3_5.dir();
    for tool in ["etcd", "etcdctl", "etcdutl"] {
        assert!(dir.join(tool).is_file(), "{} lacks {tool}", dir.display());
    }
    let mut cluster = Cluster::start_supervised(Release::V3_5, 3, FAST);
    let version = Release::V3_5.version();
    for m in &cluster.members {
        let pinned = m.state_dir.join("versions").join(&version);
        for tool in ["etcdctl", "etcdutl"] {
            assert!(
                pinned.join(tool).is_file(),
                "{tool} beside the first binary was not pinned in {}",
                pinned.display()
            );
        }
    }
    let before: Vec<(i32, Option<i32>)> = (0..3)
        .map(|i| {
            let p = cluster.members[i].proc();
            (p.pid().as_raw(), etcd_in(&p.group_pids()))
        })
        .collect();
    let fake = cluster.dir().join("etcd-3.5.30");
    write_script(
        &fake,
        "#!/bin/sh\ncase \"$1\" in --version) echo 'etcd Version: 3.5.30'; exit 0;; --help) exit 0;; esac\necho 'panic: cannot serve this data (a crashing 3.5.30)' >&2\nexit 1\n",
    );
    for i in 0..3 {
        stage(&cluster, i, &fake);
    }
    let url = cluster.members[0].client_url();
    wait_for(Duration::from_secs(120), || {
        rejected_in_etcd(&url, "3.5.30").then_some(())
    })
    .unwrap_or_else(|_| panic!("3.5.30 was not rejected\n{}", cluster.logs()));
    for i in 0..3 {
        let reason = cluster.members[i]
            .state_dir
            .join("staging/rejected/etcd-3.5.30.reason");
        wait_for(Duration::from_secs(90), || reason.exists().then_some(()))
            .unwrap_or_else(|_| panic!("m{} never refused 3.5.30\n{}", i + 1, cluster.logs()));
    }
    let logs = cluster.logs();
    assert!(
        logs.contains("dress rehearsal of etcd 3.5.30"),
        "no rehearsal verdict in the logs\n{logs}"
    );
    assert!(!logs.contains("no snapshot restore tool"), "{logs}");
    for (i, before) in before.iter().enumerate() {
        let p = cluster.members[i].proc();
        let after = (p.pid().as_raw(), etcd_in(&p.group_pids()));
        eprintln!(
            "m{}: (supervisor pid, etcd pid) before {before:?}, after {after:?}",
            i + 1
        );
        assert!(before.1.is_some(), "m{}: no etcd found before", i + 1);
        assert_eq!(&after, before, "m{}'s etcd was restarted", i + 1);
        assert_eq!(server_version(&cluster, i), Some(version.clone()));
    }
}

/// `plan` with only `--state-dir`, from a shell without the daemon's environment, on a
/// member held by its maintenance window: the member's real name, the daemon's window, and
/// the window as the reason to wait.
#[test]
fn plan_from_a_bare_shell_names_the_member_and_gives_the_window_as_the_reason() {
    // Opens at 00:00 UTC on January 1st for a minute: closed whenever this runs, save
    // that minute.
    let yc = YamlCluster::start(Release::V3_5, 1, false, "", &["--window", "0 0 1 1 * 1m"]);
    stage_alone(&yc, Release::V3_5Newest);
    let state_dir = yc.state_dir(0).to_path_buf();
    let out = wait_for(Duration::from_secs(120), || {
        let out = bare(&["plan", "--state-dir"], &state_dir);
        output_text(&out)
            .contains("decision for 3.5.30")
            .then_some(out)
    })
    .unwrap_or_else(|_| {
        panic!(
            "plan never judged 3.5.30:\n{}\n{}",
            output_text(&bare(&["plan", "--state-dir"], &state_dir)),
            yc.cluster.logs()
        )
    });
    let said = output_text(&out);
    eprintln!(
        "plan --state-dir {} (bare shell):\n{said}",
        state_dir.display()
    );
    assert!(said.contains("daemon: running"), "{said}");
    assert!(said.contains("member m1 runs etcd 3.5.16"), "{said}");
    assert!(said.contains("0 0 1 1 * 1m (the running daemon)"), "{said}");
    let decision = said
        .lines()
        .find(|l| l.contains("decision for 3.5.30"))
        .unwrap_or_default();
    assert!(
        decision.contains("wait") && decision.contains("outside the maintenance windows"),
        "{said}"
    );
    assert!(!said.contains("member default"), "{said}");
    assert_eq!(out.status.code(), Some(1), "a plan that waits exits 1");
    assert_eq!(yc.version_of(0), Some(Release::V3_5.version()));
}

/// Bad input is refused with the fix before anything stops: a YAML syntax error, a config
/// file that does not exist, a data dir that disagrees with the state dir's. Each both on
/// a reload of a running daemon (SIGHUP: etcd keeps running, same pid) and on a fresh
/// `run` (exit 2, no etcd started).
#[test]
fn bad_input_is_refused_with_the_fix_and_no_etcd_stops() {
    let yc = YamlCluster::start(Release::V3_5, 1, false, "", &[]);
    let before = yc.pids(0);
    assert!(before.1.is_some(), "no etcd under the supervisor");
    let spec = yc.cluster.members[0].spec.clone();
    let yaml = yc.yamls[0].clone();
    let good = std::fs::read_to_string(&yaml).unwrap();
    let state_dir = yc.state_dir(0).to_path_buf();
    let log = &yc.cluster.members[0].log;
    let refusals = || {
        support::tail(log, 100_000)
            .matches("reload refused")
            .count()
    };

    // 1. A syntax error on line 4: the reload is refused with the path and the line.
    let broken = good.replacen("wal-dir:\n", "wal-dir: a: b\n", 1);
    assert_ne!(broken, good);
    std::fs::write(&yaml, &broken).unwrap();
    let sup = nix::unistd::Pid::from_raw(before.0);
    nix::sys::signal::kill(sup, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(Duration::from_secs(60), || (refusals() >= 1).then_some(()))
        .unwrap_or_else(|_| panic!("reload not refused\n{}", yc.cluster.logs()));
    let said = support::tail(log, 100_000);
    assert!(
        said.contains(&yaml.display().to_string()) && said.contains("line 4"),
        "{said}"
    );
    let fresh_state = yc.cluster.dir().join("fresh-state");
    let run = |yaml: &Path, state_dir: &Path| {
        Command::new("timeout")
            .arg("60")
            .arg(SUPERVISOR)
            .arg("run")
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--etcd-binary")
            .arg(Release::V3_5.etcd())
            .arg("--")
            .arg(format!("--config-file={}", yaml.display()))
            .output()
            .expect("run")
    };
    let out = run(&yaml, &fresh_state);
    eprintln!("syntax error: {}", output_text(&out));
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("line 4"),
        "{}",
        output_text(&out)
    );
    assert!(
        !fresh_state.join("versions").exists(),
        "nothing pinned, nothing started"
    );

    // 2. A file that does not exist.
    let missing = yc.cluster.dir().join("no-such.conf.yml");
    let out = run(&missing, &fresh_state);
    eprintln!("missing file: {}", output_text(&out));
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&missing.display().to_string())
            && output_text(&out).contains("create it"),
        "{}",
        output_text(&out)
    );
    assert!(!fresh_state.join("versions").exists());

    // 3. A data dir other than the one this state dir runs, which still holds the data.
    let moved = good.replace(
        &format!("data-dir: {}", spec.data_dir.display()),
        &format!("data-dir: {}", yc.cluster.dir().join("elsewhere").display()),
    );
    assert_ne!(moved, good);
    std::fs::write(&yaml, &moved).unwrap();
    nix::sys::signal::kill(sup, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(Duration::from_secs(60), || (refusals() >= 2).then_some(()))
        .unwrap_or_else(|_| panic!("second reload not refused\n{}", yc.cluster.logs()));
    let out = run(&yaml, &state_dir);
    eprintln!("data dir disagrees: {}", output_text(&out));
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&spec.data_dir.display().to_string())
            && output_text(&out).contains("still holds its data"),
        "{}",
        output_text(&out)
    );

    // etcd ran throughout, the same process, on the same version.
    let after = yc.pids(0);
    eprintln!("(supervisor pid, etcd pid) before {before:?}, after {after:?}");
    assert_eq!(after, before, "etcd was stopped or restarted");
    assert_eq!(yc.version_of(0), Some(Release::V3_5.version()));
}

/// A companion staged with a binary is pinned only when it is of the same release: 3.5.16's
/// etcdutl staged `--with` 3.5.30 stays out of `versions/3.5.30/`, and the rehearsal
/// restores with the etcdutl pinned beside the first binary instead.
#[test]
fn a_staged_companion_of_another_release_is_not_pinned() {
    let cluster = Cluster::start_supervised(Release::V3_5, 1, FAST);
    let binary = cluster.dir().join("etcd-3.5.30");
    std::fs::copy(Release::V3_5Newest.etcd(), &binary).unwrap();
    let old_utl = cluster.dir().join("etcdutl-3.5.30");
    std::fs::copy(Release::V3_5.etcdutl().expect("3.5.16 etcdutl"), &old_utl).unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(SUPERVISOR)
        .arg("stage")
        .arg(&binary)
        .arg("--with")
        .arg(&old_utl)
        .arg("--state-dir")
        .arg(&cluster.members[0].state_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    wait_for(Duration::from_secs(180), || {
        (server_version(&cluster, 0).as_deref() == Some("3.5.30")).then_some(())
    })
    .unwrap_or_else(|_| panic!("3.5.30 never ran\n{}", cluster.logs()));
    let pinned = cluster.members[0].state_dir.join("versions/3.5.30");
    assert!(pinned.join("etcd").is_file());
    assert!(
        !pinned.join("etcdutl").exists(),
        "3.5.16's etcdutl was pinned as 3.5.30's"
    );
    let log = cluster.members[0].log_text();
    assert!(log.contains("not of the same release"), "{log}");
    assert!(log.contains("rehearsal passed"), "{log}");
}
