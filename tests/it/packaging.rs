//! Packaging inputs agree with the command line they describe: the systemd unit, the
//! sysusers/tmpfiles entries, `/etc/default/etcd-supervisor`, and the hidden `completions`
//! and `man` subcommands the Debian package ships. The package itself (contents, maintainer
//! scripts, lintian, an install into a throwaway root) is checked by `scripts/check-packaging`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use clap::CommandFactory;
use etcd_supervisor::cli::Cli;

use crate::support::SUPERVISOR;

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn supervisor(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("30")
        .arg(SUPERVISOR)
        .args(args)
        .output()
        .expect("run the supervisor")
}

fn stdout_ok(args: &[&str]) -> String {
    let out = supervisor(args);
    assert!(
        out.status.success(),
        "etcd-supervisor {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Names of the subcommands users see (not `help`, not the hidden ones).
fn public_subcommands() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_owned())
        .collect()
}

/// `KEY=value` settings of a systemd unit, every occurrence, in order.
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            map.entry(k.trim().to_owned())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    map
}

fn one<'a>(settings: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("the unit should set {key}= exactly once, has {other:?}"),
    }
}

/// `Environment=NAME=value` lines of the unit.
fn unit_environment(settings: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, String> {
    settings
        .get("Environment")
        .into_iter()
        .flatten()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Default of an option of `run`, as clap shows it.
fn run_default(long: &str) -> String {
    let cli = Cli::command();
    let run = cli.find_subcommand("run").expect("run subcommand");
    let arg = run
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .unwrap_or_else(|| panic!("run has no --{long}"));
    arg.get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

fn duration(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn hidden_subcommands_stay_out_of_help() {
    let help = stdout_ok(&["--help"]);
    for hidden in ["completions", "man"] {
        assert!(
            !help.lines().any(|l| l.trim_start().starts_with(hidden)),
            "{hidden} shows in --help:\n{help}"
        );
    }
}

#[test]
fn completions_cover_the_public_command_line_only() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_ok(&["completions", shell]);
        for word in public_subcommands().iter().map(String::as_str).chain([
            "stop-timeout",
            "staging-dir",
            "endpoints",
        ]) {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
        assert!(
            !script.contains("completions") && !script.contains("Print a man page"),
            "{shell} completions offer the hidden subcommands"
        );
    }
    let bash = stdout_ok(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd-supervisor.bash");
    std::fs::write(&file, bash).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let out = supervisor(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_cover_every_subcommand_option_and_variable() {
    let list = stdout_ok(&["man", "--list"]);
    let mut expected = vec!["etcd-supervisor".to_owned()];
    expected.extend(
        public_subcommands()
            .iter()
            .map(|s| format!("etcd-supervisor-{s}")),
    );
    assert_eq!(list.lines().collect::<Vec<_>>(), expected);

    let main = stdout_ok(&["man"]);
    assert!(main.contains(".TH etcd-supervisor 1"), "{main}");
    for section in ["SUBCOMMANDS", "ENVIRONMENT", "FILES", "EXIT STATUS"] {
        assert!(
            main.contains(&format!(".SH \"{section}\""))
                || main.contains(&format!(".SH {section}")),
            "main page lacks {section}"
        );
    }
    assert!(
        !main.contains("completions"),
        "hidden subcommand on the main page"
    );
    // Every variable of every option, and the password, on the main page.
    let cli = Cli::command();
    for sub in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        for arg in sub.get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy().replace('_', "\\_");
                let plain = env.replace("\\_", "_");
                assert!(
                    main.contains(&plain) || main.contains(&env),
                    "main page lacks {plain}"
                );
            }
        }
    }
    assert!(main.contains("ETCD_SUPERVISOR_PASSWORD"));

    for sub in public_subcommands() {
        let page = stdout_ok(&["man", &sub]);
        assert!(
            page.contains(&format!(".TH etcd-supervisor-{sub} 1")),
            "page of {sub}: {page}"
        );
    }
    let run = stdout_ok(&["man", "run"]);
    for needle in [
        "stop\\-timeout",
        "ETCD_SUPERVISOR_STOP_TIMEOUT",
        "[default: 10s]",
    ] {
        assert!(run.contains(needle), "run page lacks {needle}");
    }
    let out = supervisor(&["man", "no-such-subcommand"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Every `ETCD_SUPERVISOR_*` variable of the command line is in the shipped default config,
/// commented out, with the default it has under the unit; nothing else is.
#[test]
fn default_config_lists_every_variable_with_its_default() {
    let unit = unit_settings(&repo_file("systemd/etcd-supervisor.service"));
    let unit_env = unit_environment(&unit);
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let cli = Cli::command();
    let args = cli
        .get_arguments()
        .chain(cli.get_subcommands().flat_map(|s| s.get_arguments()));
    for arg in args {
        let Some(env) = arg.get_env() else { continue };
        let env = env.to_string_lossy().into_owned();
        if !env.starts_with("ETCD_SUPERVISOR_") {
            continue;
        }
        let default = unit_env.get(&env).cloned().unwrap_or_else(|| {
            arg.get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",")
        });
        if let Some(other) = expected.insert(env.clone(), default.clone()) {
            assert_eq!(other, default, "{env} has two defaults");
        }
    }
    expected.insert(
        etcd_supervisor::config::PASSWORD_ENV.to_owned(),
        String::new(),
    );

    let text = repo_file("packaging/etcd-supervisor.default");
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        let Some((var, value)) = line.split_once('=') else {
            continue;
        };
        if var.starts_with("ETCD_SUPERVISOR_") && !var.contains(' ') {
            assert!(
                listed.insert(var.to_owned(), value.to_owned()).is_none(),
                "{var} listed twice"
            );
        }
    }
    for (var, default) in &expected {
        match listed.get(var) {
            Some(v) => assert_eq!(v, default, "{var}: the default config says {v:?}"),
            None => panic!("packaging/etcd-supervisor.default lacks #{var}={default}"),
        }
    }
    for var in listed.keys() {
        assert!(
            expected.contains_key(var),
            "packaging/etcd-supervisor.default lists {var}, which no option reads"
        );
    }
    // Everything is commented out: the file documents defaults, it changes nothing.
    assert!(
        text.lines()
            .all(|l| l.trim().is_empty() || l.starts_with('#')),
        "packaging/etcd-supervisor.default sets something"
    );
}

/// The unit, sysusers and tmpfiles entries agree with each other and with the supervisor's
/// defaults: writable dirs exist and belong to the unit's user, and systemd waits longer
/// than the supervisor's own stop sequence.
#[test]
fn unit_agrees_with_the_supervisor_and_its_directories() {
    let unit = unit_settings(&repo_file("systemd/etcd-supervisor.service"));
    assert_eq!(one(&unit, "Type"), "notify");
    assert_eq!(one(&unit, "KillMode"), "mixed");
    assert_eq!(one(&unit, "Restart"), "on-failure");
    let exec: Vec<&str> = one(&unit, "ExecStart").split_whitespace().collect();
    assert_eq!(exec[..2], ["/usr/bin/etcd-supervisor", "run"], "{exec:?}");
    // Reload = SIGHUP = re-exec in place (etcd keeps running).
    assert_eq!(one(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(
        unit["EnvironmentFile"],
        ["-/etc/default/etcd", "-/etc/default/etcd-supervisor"]
    );

    // SIGTERM -> SIGKILL after --stop-timeout, then a swap may be finished or rolled back
    // (bounded by --stop-timeout again): systemd must not SIGKILL the supervisor before.
    let stop = duration(&run_default("stop-timeout"));
    let timeout_stop = duration(one(&unit, "TimeoutStopSec"));
    assert!(
        timeout_stop >= 2 * stop + Duration::from_secs(10),
        "TimeoutStopSec={timeout_stop:?} is too short for --stop-timeout {stop:?}"
    );
    // The supervisor does not pet the watchdog while it waits (up to --stop-timeout) for
    // an old etcd to release the data dir, or for the upgrade driver on exit.
    let watchdog = duration(one(&unit, "WatchdogSec"));
    assert!(
        watchdog > stop + Duration::from_secs(5),
        "WatchdogSec={watchdog:?} must stay above --stop-timeout {stop:?}"
    );

    let writable: Vec<PathBuf> = one(&unit, "ReadWritePaths")
        .split_whitespace()
        .map(PathBuf::from)
        .collect();
    let state_dir = PathBuf::from(run_default("state-dir"));
    let data_dir = PathBuf::from(&unit_environment(&unit)["ETCD_DATA_DIR"]);
    for needed in [&state_dir, &state_dir.join("staging"), &data_dir] {
        assert!(
            writable.iter().any(|w| needed.starts_with(w)),
            "{} is not under ReadWritePaths={writable:?}",
            needed.display()
        );
    }

    let user = one(&unit, "User");
    assert_eq!(one(&unit, "Group"), user);
    let sysusers = repo_file("systemd/etcd-supervisor.sysusers");
    assert!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", user])),
        "sysusers.d does not create {user}"
    );
    let tmpfiles = repo_file("systemd/etcd-supervisor.tmpfile");
    let made: Vec<Vec<&str>> = tmpfiles
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 5 && f[0] == "d")
        .collect();
    for dir in writable.iter().chain([&state_dir.join("staging")]) {
        let entry = made
            .iter()
            .find(|f| Path::new(f[1]) == dir)
            .unwrap_or_else(|| panic!("tmpfiles.d does not create {}", dir.display()));
        assert_eq!(entry[3..5], [user, user], "owner of {}", dir.display());
    }
}
