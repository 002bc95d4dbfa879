use super::*;

const HELP_3_4_23: &str = include_str!("../../../../tests/fixtures/etcd-3.4.23-help.txt");
const HELP_3_5_16: &str = include_str!("../../../../tests/fixtures/etcd-3.5.16-help.txt");

// Same layout as the real help (see fixtures), trimmed to what the tests need.
const HELP_3_6: &str = "Usage:\n\n  etcd [flags]\n    Start an etcd server.\n\n  etcd --config-file\n    Path.\n\nMember:\n  --name 'default'\n    Name.\n  --log-level 'info'\n    Level.\n  --logger 'zap'\n    Logger.\n  --max-snapshots '5'\n    Deprecated in v3.6.\n  --feature-gates ''\n    Gates.\n  --experimental-initial-corrupt-check 'false'\n    Deprecated in v3.6.\n  --experimental-corrupt-check-time '0s'\n    Deprecated in v3.6.\n  --corrupt-check-time '0s'\n    Period.\n  --v2-deprecation 'write-only'\n    Phase.\n  --discovery-fallback 'exit'\n    Fallback.\n";
const HELP_3_7: &str = "Member:\n  --name 'default'\n    Name.\n  --logger 'zap'\n    Logger.\n  --feature-gates ''\n    Gates.\n  --corrupt-check-time '0s'\n    Period.\n  --discovery ''\n    Stale help line.\n";

fn ver(s: &str) -> Version {
    s.parse().expect("test version")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs parse_args on the running help and check against the target help.
fn run(
    argv: &[&str],
    vars: &[(&str, &str)],
    yaml: Option<&str>,
    (running, running_help): (&str, &str),
    (target, target_help): (&str, &str),
) -> Compatibility {
    let passed = parse_args(&args(argv), &parse_help(running_help));
    check(
        &passed,
        &env(vars),
        yaml,
        &ver(running),
        &ver(target),
        &parse_help(target_help),
    )
}

fn messages(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

// ---- parse_help on real binaries' output ----

#[test]
fn parse_help_reads_every_flag_of_3_4_23() {
    let set = parse_help(HELP_3_4_23);
    // etcdmain/help.go at v3.4.23 lists 80 flags.
    assert_eq!(set.len(), 80);
    for name in [
        "name",
        "debug",
        "log-package-levels",
        "logger",
        "experimental-backend-bbolt-freelist-type",
        "proxy-read-timeout",
        "enable-v2",
    ] {
        assert!(set.contains(name), "{name}");
    }
    // Usage lines and hidden flags are not in the help's flag list.
    for name in [
        "etcd",
        "help",
        "h",
        "config-file",
        "version",
        "log-output",
        "unsafe-no-fsync",
    ] {
        assert!(!set.contains(name), "{name}");
    }
}

#[test]
fn parse_help_reads_every_flag_of_3_5_16() {
    let set = parse_help(HELP_3_5_16);
    assert_eq!(set.len(), 109);
    assert!(set.contains("--log-outputs") && set.contains("-backend-bbolt-freelist-type"));
    for name in [
        "debug",
        "log-package-levels",
        "log-output",
        "experimental-backend-bbolt-freelist-type",
    ] {
        assert!(!set.contains(name), "{name}");
    }
}

#[test]
fn parse_help_marks_bool_flags() {
    let set = parse_help(HELP_3_5_16);
    assert_eq!(set.is_bool("initial-election-tick-advance"), Some(true));
    assert_eq!(set.is_bool("socket-reuse-port"), Some(true));
    // Shown without a default; known bool from etcd's source.
    assert_eq!(set.is_bool("enable-grpc-gateway"), Some(true));
    assert_eq!(set.is_bool("experimental-memory-mlock"), Some(true));
    assert_eq!(set.is_bool("name"), Some(false));
    assert_eq!(set.is_bool("bcrypt-cost"), Some(false));
    assert_eq!(
        set.is_bool("experimental-downgrade-check-time"),
        Some(false)
    );
    assert_eq!(set.is_bool("nonexistent"), None);
    assert_eq!(parse_help(HELP_3_4_23).is_bool("debug"), Some(true));
}

#[test]
fn parse_help_of_non_help_text_is_empty() {
    assert!(parse_help("etcd Version: 3.5.16\nGit SHA: abc\n").is_empty());
    assert!(parse_help("--name at column zero is not a flag line\n").is_empty());
}

// ---- parse_args: Go flag syntax ----

#[test]
fn parse_args_follows_go_flag_syntax() {
    let running = parse_help(HELP_3_4_23);
    let got = parse_args(
        &args(&[
            "--name",
            "n1",
            "-data-dir=/d",
            "--debug",
            "--pre-vote=false",
            "--logger",
            "capnslog",
            "--initial-cluster-state",
            "-existing",
        ]),
        &running,
    );
    let shown: Vec<String> = got.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "--name=n1",
            "--data-dir=/d",
            "--debug",
            "--pre-vote=false",
            "--logger=capnslog",
            "--initial-cluster-state=-existing"
        ]
    );
}

#[test]
fn parse_args_bool_flag_does_not_take_next_argument() {
    let running = parse_help(HELP_3_5_16);
    // --enable-grpc-gateway has no default in help: bool comes from KNOWN_BOOL_FLAGS.
    let got = parse_args(&args(&["--enable-grpc-gateway", "--name", "x"]), &running);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].value, None);
    assert_eq!(got[1].value.as_deref(), Some("x"));
}

#[test]
fn parse_args_stops_like_go() {
    let running = parse_help(HELP_3_5_16);
    let after_terminator = parse_args(&args(&["--name", "a", "--", "--debug"]), &running);
    assert_eq!(after_terminator.len(), 1);
    let at_positional = parse_args(&args(&["--auto-tls", "true", "--name", "a"]), &running);
    assert_eq!(at_positional.len(), 1);
    assert!(parse_args(&args(&["---bad"]), &running).is_empty());
    assert!(parse_args(&args(&["-"]), &running).is_empty());
}

#[test]
fn parse_args_unknown_flag_takes_value_only_if_it_is_not_a_flag() {
    let running = FlagSet::new();
    let got = parse_args(&args(&["--mystery", "v", "--other", "--third"]), &running);
    let shown: Vec<String> = got.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["--mystery=v", "--other", "--third"]);
}

// ---- check: 3.4 -> 3.5 facts verified on real etcd ----

#[test]
fn removed_flags_refuse_3_5_with_replacement() {
    let c = run(
        &[
            "--debug",
            "--log-output",
            "stderr",
            "--log-package-levels",
            "etcdmain=DEBUG",
            "--experimental-backend-bbolt-freelist-type",
            "map",
            "--name",
            "n1",
        ],
        &[],
        None,
        ("3.4.23", HELP_3_4_23),
        ("3.5.16", HELP_3_5_16),
    );
    let msgs = messages(&c.refusals);
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    assert_eq!(
        msgs[0],
        "--debug is not a flag of etcd 3.5.16 (removed in 3.5): use --log-level=debug; remove it from this member's etcd flags and restart the supervisor"
    );
    assert!(
        msgs[1].starts_with("--log-output is not a flag") && msgs[1].contains("use --log-outputs")
    );
    assert!(msgs[3].contains("use --backend-bbolt-freelist-type"));
    assert!(c.warnings.is_empty());
    assert!(!c.is_compatible());
    assert_eq!((c.running, c.target), (ver("3.4.23"), ver("3.5.16")));
}

#[test]
fn logger_capnslog_refuses_3_5_but_not_3_4() {
    for argv in [&["--logger=capnslog"][..], &["--logger", "capnslog"][..]] {
        let c = run(
            argv,
            &[],
            None,
            ("3.4.23", HELP_3_4_23),
            ("3.5.16", HELP_3_5_16),
        );
        assert_eq!(c.refusals.len(), 1);
        assert_eq!(c.refusals[0].kind, ProblemKind::RemovedValue);
        assert!(c.refusals[0].to_string().starts_with(
            "--logger=capnslog is refused by etcd 3.5.16 (removed in 3.5): use --logger=zap"
        ));
    }
    let patch = run(
        &["--logger=capnslog"],
        &[],
        None,
        ("3.4.22", HELP_3_4_23),
        ("3.4.23", HELP_3_4_23),
    );
    assert!(patch.refusals.is_empty() && patch.warnings.is_empty());
    let zap = run(
        &["--logger=zap"],
        &[],
        None,
        ("3.4.23", HELP_3_4_23),
        ("3.5.16", HELP_3_5_16),
    );
    assert!(zap.is_compatible());
}

#[test]
fn env_unknown_warns_and_removed_value_refuses() {
    let c = run(
        &[],
        &[
            ("ETCD_DEBUG", "true"),
            ("ETCD_LOGGER", "capnslog"),
            ("ETCD_NAME", "n1"),
            ("ETCD_UNSUPPORTED_ARCH", "arm"),
            ("ETCD_VERIFY", "all"),
            ("ETCD_CLIENT_DEBUG", "info"),
            ("ETCD_VERSION", "3.5"),
            ("ETCD_LOG_OUTPUT", ""),
            ("PATH", "/bin"),
            ("ETCDCTL_API", "3"),
        ],
        None,
        ("3.4.23", HELP_3_4_23),
        ("3.5.16", HELP_3_5_16),
    );
    let warnings = messages(&c.warnings);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("ETCD_DEBUG names no flag of etcd 3.5.16 (removed in 3.5)"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("use --log-level=debug"));
    assert_eq!(c.refusals.len(), 1);
    assert_eq!(c.refusals[0].origin, Origin::Env("ETCD_LOGGER".into()));
    assert!(c.refusals[0]
        .to_string()
        .contains("ETCD_LOGGER=capnslog is refused by etcd 3.5.16"));
    assert!(c.refusals[0]
        .to_string()
        .contains("this member's environment"));
}

#[test]
fn config_unknown_key_warns_and_removed_value_refuses() {
    let yaml =
        "name: n1\ndebug: true\nLogger: capnslog\nclient-transport-security:\n  cert-file: /c\n";
    let c = run(
        &[],
        &[],
        Some(yaml),
        ("3.4.23", HELP_3_4_23),
        ("3.5.16", HELP_3_5_16),
    );
    let warnings = messages(&c.warnings);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].starts_with("config-file key debug is unknown to etcd 3.5.16 (removed in 3.5), which ignores it: use --log-level=debug"), "{}", warnings[0]);
    assert_eq!(c.refusals.len(), 1);
    assert_eq!(c.refusals[0].subject, "Logger: capnslog");
    assert_eq!(c.refusals[0].origin, Origin::ConfigFile);
}

#[test]
fn config_in_use_makes_flag_values_and_env_ignored() {
    let c = run(
        &["--config-file", "/etc/etcd.yaml", "--logger=capnslog"],
        &[("ETCD_LOGGER", "capnslog"), ("ETCD_DEBUG", "true")],
        Some("name: n1\n"),
        ("3.4.23", HELP_3_4_23),
        ("3.5.16", HELP_3_5_16),
    );
    assert!(c.refusals.is_empty(), "{:#?}", c.refusals);
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].kind, ProblemKind::IgnoredRemovedValue);
    // An unknown flag still stops Go's parser even with a config file.
    let c = run(
        &["--config-file=/e.yaml", "--debug"],
        &[],
        Some(""),
        ("3.4.23", HELP_3_4_23),
        ("3.5.16", HELP_3_5_16),
    );
    assert_eq!(c.refusals.len(), 1);
    assert_eq!(c.refusals[0].kind, ProblemKind::UnknownFlag);
}

#[test]
fn unreadable_config_is_refused() {
    let c = run(
        &[],
        &[],
        Some("name: [unclosed\n"),
        ("3.5.16", HELP_3_5_16),
        ("3.5.16", HELP_3_5_16),
    );
    assert_eq!(c.refusals.len(), 1);
    assert_eq!(c.refusals[0].kind, ProblemKind::UnreadableConfig);
    let c = run(
        &[],
        &[],
        Some("- a\n- b\n"),
        ("3.5.16", HELP_3_5_16),
        ("3.5.16", HELP_3_5_16),
    );
    assert_eq!(c.refusals.len(), 1);
}

#[test]
fn hidden_flags_are_accepted_where_the_binary_defines_them() {
    // --log-output and --unsafe-no-fsync are defined by 3.4.23 but not in its help.
    let c = run(
        &[
            "--log-output=stderr",
            "--unsafe-no-fsync",
            "--version",
            "--v",
        ],
        &[],
        None,
        ("3.4.22", HELP_3_4_23),
        ("3.4.23", HELP_3_4_23),
    );
    assert!(c.refusals.is_empty(), "{:#?}", c.refusals);
    // --unsafe-no-fsync is listed from 3.4.29 on, so the table stops at 3.4.28: a
    // help text without it at 3.4.29 means the binary lacks it.
    let c = run(
        &["--unsafe-no-fsync"],
        &[],
        None,
        ("3.4.22", HELP_3_4_23),
        ("3.4.29", HELP_3_4_23),
    );
    assert_eq!(c.refusals.len(), 1);
    // 3.5.14+ defines --experimental-snapshot-catchup-entries without listing it.
    let c = run(
        &["--experimental-snapshot-catchup-entries=100"],
        &[],
        None,
        ("3.5.16", HELP_3_5_16),
        ("3.5.16", HELP_3_5_16),
    );
    assert!(c.is_compatible());
    let c = run(
        &["--experimental-snapshot-catchup-entries=100"],
        &[],
        None,
        ("3.5.16", HELP_3_5_16),
        ("3.5.13", HELP_3_5_16),
    );
    assert!(!c.is_compatible());
}

// ---- check: 3.5 -> 3.6 -> 3.7 ----

#[test]
fn renamed_flag_warns_in_3_6_with_replacement_and_value() {
    let c = run(
        &[
            "--experimental-initial-corrupt-check=true",
            "--experimental-corrupt-check-time",
            "5m",
        ],
        &[],
        None,
        ("3.5.33", HELP_3_5_16),
        ("3.6.14", HELP_3_6),
    );
    assert!(c.refusals.is_empty(), "{:#?}", c.refusals);
    let msgs = messages(&c.warnings);
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].starts_with("--experimental-initial-corrupt-check is deprecated in etcd 3.6.14 (deprecated in 3.6): use --feature-gates=InitialCorruptCheck=true instead, before any member moves to 3.7"), "{}", msgs[0]);
    assert!(
        msgs[1].contains("use --corrupt-check-time=5m instead"),
        "{}",
        msgs[1]
    );
}

#[test]
fn renamed_flag_refuses_3_7_with_replacement() {
    let c = run(
        &["--experimental-initial-corrupt-check"],
        &[],
        None,
        ("3.6.14", HELP_3_6),
        ("3.7.1", HELP_3_7),
    );
    assert_eq!(c.refusals.len(), 1);
    assert_eq!(
        c.refusals[0].to_string(),
        "--experimental-initial-corrupt-check is not a flag of etcd 3.7.1 (removed in 3.7): use --feature-gates=InitialCorruptCheck=true instead; remove it from this member's etcd flags and restart the supervisor"
    );
}

#[test]
fn v2_and_proxy_flags_refuse_3_6() {
    let c = run(
        &[
            "--enable-v2=false",
            "--proxy",
            "off",
            "--experimental-enable-v2v3",
            "/v2",
        ],
        &[],
        None,
        ("3.5.16", HELP_3_5_16),
        ("3.6.14", HELP_3_6),
    );
    let msgs = messages(&c.refusals);
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert!(msgs[0].contains("(removed in 3.6)") && msgs[0].contains("etcdutl check v2store"));
    assert!(msgs[1].contains("grpc-proxy"));
}

#[test]
fn removed_values_of_3_6() {
    let c = run(
        &["--v2-deprecation=not-yet", "--discovery-fallback", "proxy"],
        &[],
        None,
        ("3.5.16", HELP_3_5_16),
        ("3.6.14", HELP_3_6),
    );
    assert_eq!(c.refusals.len(), 2, "{:#?}", c.refusals);
    // In a 3.6 config file, v2-deprecation is overridden rather than refused.
    let c = run(
        &[],
        &[],
        Some("v2-deprecation: not-yet\n"),
        ("3.5.16", HELP_3_5_16),
        ("3.6.14", HELP_3_6),
    );
    assert!(c.refusals.is_empty());
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].kind, ProblemKind::IgnoredRemovedValue);
    // 3.5 still takes both values.
    let c = run(
        &["--v2-deprecation=not-yet", "--discovery-fallback=proxy"],
        &[],
        None,
        ("3.5.16", HELP_3_5_16),
        ("3.5.16", HELP_3_5_16),
    );
    assert!(c.is_compatible() && c.warnings.is_empty());
}

#[test]
fn deprecated_without_twin_warns_in_3_6_only() {
    let c = run(
        &["--max-snapshots=5"],
        &[],
        None,
        ("3.5.16", HELP_3_5_16),
        ("3.6.14", HELP_3_6),
    );
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].kind, ProblemKind::Deprecated);
    let c = run(
        &["--max-snapshots=5"],
        &[],
        None,
        ("3.5.16", HELP_3_5_16),
        ("3.5.16", HELP_3_5_16),
    );
    assert!(c.warnings.is_empty());
}

#[test]
fn env_and_config_renamed_in_3_6_warn() {
    let c = run(
        &[],
        &[("ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", "true")],
        None,
        ("3.5.16", HELP_3_5_16),
        ("3.6.14", HELP_3_6),
    );
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0]
        .to_string()
        .contains("--feature-gates=InitialCorruptCheck=true"));
    let c = run(
        &[],
        &[],
        Some("experimental-initial-corrupt-check: false\nfeature-gates: X=true\n"),
        ("3.5.16", HELP_3_5_16),
        ("3.6.14", HELP_3_6),
    );
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0]
        .to_string()
        .contains("--feature-gates=InitialCorruptCheck=false"));
    // In 3.7 the config key is no longer read: etcd would start without the setting (seen
    // on 3.7.4: `initial-corrupt-check: false` in its startup line), so it is refused with
    // the replacement written as a config-file line.
    let c = run(
        &[],
        &[],
        Some("experimental-initial-corrupt-check: true\nexperimental-corrupt-check-time: 3m\nnot-a-key: 1\n"),
        ("3.6.14", HELP_3_6),
        ("3.7.1", HELP_3_7),
    );
    assert_eq!(c.refusals.len(), 2, "{:?}", messages(&c.refusals));
    assert!(c.refusals.iter().all(|p| p.kind == ProblemKind::Dropped));
    let msgs = messages(&c.refusals);
    assert_eq!(
        msgs[0],
        "config-file key experimental-initial-corrupt-check is no longer read by etcd 3.7.1 (removed in 3.7), which would start without this setting: write `feature-gates: InitialCorruptCheck=true` instead; change it in this member's etcd config file and restart the supervisor"
    );
    assert!(msgs[1].contains("`corrupt-check-time: 3m`"), "{}", msgs[1]);
    // A key that never was etcd's stays a warning.
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].kind, ProblemKind::UnknownConfigKey);
    // The same through the environment: etcd 3.7 only warns about the variable and ignores it.
    let c = run(
        &[],
        &[("ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", "true")],
        None,
        ("3.6.14", HELP_3_6),
        ("3.7.1", HELP_3_7),
    );
    assert_eq!(c.refusals.len(), 1, "{:?}", messages(&c.warnings));
    assert!(
        c.refusals[0]
            .to_string()
            .contains("`ETCD_FEATURE_GATES=InitialCorruptCheck=true`"),
        "{}",
        c.refusals[0]
    );
    let c = run(
        &[],
        &[("ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", "3m")],
        None,
        ("3.6.14", HELP_3_6),
        ("3.7.1", HELP_3_7),
    );
    assert_eq!(
        messages(&c.refusals),
        ["ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME is no longer read by etcd 3.7.1 (removed in 3.7), which would start without this setting: write `ETCD_CORRUPT_CHECK_TIME=3m` instead; change it in this member's environment and restart the supervisor"]
    );
}

#[test]
fn stale_help_line_does_not_hide_removed_flag() {
    // 3.7's --help still prints --discovery, but the binary refuses it.
    let c = run(
        &["--discovery", "https://d/x"],
        &[],
        None,
        ("3.6.14", HELP_3_6),
        ("3.7.1", HELP_3_7),
    );
    assert_eq!(c.refusals.len(), 1);
    assert!(c.refusals[0].to_string().contains("v3 discovery"));
}

#[test]
fn every_table_flag_is_long_form() {
    let names = RENAMED
        .iter()
        .map(|r| r.old)
        .chain(REMOVED_FLAGS.iter().map(|r| r.flag))
        .chain(REMOVED_VALUES.iter().map(|r| r.flag))
        .chain(HIDDEN_FLAGS.iter().map(|r| r.flag))
        .chain(KNOWN_BOOL_FLAGS.iter().copied());
    for name in names {
        assert!(name.starts_with("--") && !name.starts_with("---"), "{name}");
    }
    for row in RENAMED {
        assert!(row.deprecated_in < row.removed_in && !row.source.is_empty());
    }
    assert_eq!(RENAMED.len(), 23);
}

#[test]
fn replacement_suggestions() {
    assert_eq!(Replacement::Flag("--a").suggest(Some("1")), "--a=1");
    assert_eq!(Replacement::Flag("--a").suggest(None), "--a");
    assert_eq!(
        Replacement::FeatureGate("G").suggest(None),
        "--feature-gates=G=true"
    );
    assert_eq!(
        Replacement::FeatureGate("G").suggest(Some("false")),
        "--feature-gates=G=false"
    );
}

#[test]
fn env_to_flag_maps_like_etcd() {
    assert_eq!(
        env_to_flag("ETCD_LISTEN_CLIENT_URLS").as_deref(),
        Some("listen-client-urls")
    );
    assert_eq!(env_to_flag("ETCD_"), None);
    assert_eq!(env_to_flag("ETCDCTL_API"), None);
}

// ---- is_usage_error ----

#[test]
fn usage_error_by_exit_code_or_message() {
    assert!(is_usage_error(Some(2), ""));
    assert!(is_usage_error(
        Some(2),
        "flag provided but not defined: -debug"
    ));
    assert!(is_usage_error(
        Some(1),
        r#"{"level":"warn","msg":"failed to verify flags","error":"--logger=capnslog is removed in v3.5"}"#
    ));
    assert!(is_usage_error(
        None,
        "invalid value \"x\" for flag -snapshot-count: parse error"
    ));
    assert!(is_usage_error(
        Some(1),
        "error: invalid value \"capnslog2\" for ETCD_LOGGER: bad"
    ));
    assert!(is_usage_error(Some(1), "'false' is not a valid flag"));
    assert!(is_usage_error(
        Some(1),
        "conflicting environment variable is shadowed by corresponding command-line flag"
    ));
}

#[test]
fn not_usage_error() {
    assert!(!is_usage_error(
        Some(1),
        "panic: runtime error: invalid memory address"
    ));
    assert!(!is_usage_error(None, ""));
    assert!(!is_usage_error(Some(0), "listening for client requests"));
    assert!(!is_usage_error(
        Some(1),
        "invalid value in response from peer"
    ));
}

#[test]
fn a_panic_is_not_a_usage_error_even_with_exit_code_2() {
    let panic = "panic: runtime error: invalid memory address\ngoroutine 1 [running]:";
    assert!(!is_usage_failure(Some(2), panic));
    assert!(is_usage_failure(
        Some(2),
        "flag provided but not defined: -debug"
    ));
    assert!(is_usage_failure(
        Some(1),
        "failed to verify flags: --logger=capnslog is removed in v3.5"
    ));
    assert!(!is_usage_failure(
        Some(1),
        "etcdserver: cannot open database"
    ));
}

// ---- each problem carries its table row's minor, hint and source ----

/// The table facts a problem carries: since, hint and source.
fn facts(p: &Problem) -> (Option<Minor>, Option<&str>, Option<&'static str>) {
    (p.since, p.hint.as_deref(), p.source)
}

fn removed_flag(flag: &str) -> &'static RemovedFlag {
    REMOVED_FLAGS.iter().find(|r| r.flag == flag).expect("row")
}

fn removed_value(flag: &str) -> &'static RemovedValue {
    REMOVED_VALUES.iter().find(|r| r.flag == flag).expect("row")
}

fn deprecated(flag: &str) -> &'static Deprecated {
    DEPRECATED.iter().find(|r| r.flag == flag).expect("row")
}

fn renamed_row(old: &str) -> &'static Renamed {
    RENAMED.iter().find(|r| r.old == old).expect("row")
}

/// The environment's or config file's `debug` (removed: a warning) and `logger=capnslog`
/// (its value removed: a refusal), each with its table row's minor, hint and source.
fn assert_debug_warned_and_logger_refused(c: &Compatibility) {
    let (debug, logger) = (removed_flag("--debug"), removed_value("--logger"));
    assert_eq!(
        c.warnings.iter().map(facts).collect::<Vec<_>>(),
        [(Some(debug.removed_in), debug.hint, Some(debug.source))]
    );
    assert_eq!(
        c.refusals.iter().map(facts).collect::<Vec<_>>(),
        [(
            Some(logger.removed_in),
            Some(logger.hint),
            Some(logger.source)
        )]
    );
}

/// `max-snapshots` warned as deprecated, with its row's minor, hint and source.
fn assert_max_snapshots_deprecation_warned(c: &Compatibility) {
    let row = deprecated("--max-snapshots");
    assert_eq!(
        c.warnings.iter().map(facts).collect::<Vec<_>>(),
        [(Some(row.deprecated_in), Some(row.hint), Some(row.source))]
    );
}

/// One refusal: `old`, renamed, with its row's minor and source.
fn assert_refused_once_as_renamed(c: &Compatibility, old: &str) {
    let row = renamed_row(old);
    assert_eq!(c.refusals.len(), 1);
    assert_eq!(
        (c.refusals[0].since, c.refusals[0].source),
        (Some(row.removed_in), Some(row.source))
    );
}

#[test]
fn problems_found_in_flags_carry_their_table_rows_minor_hint_and_source() {
    let c = run(
        &["--debug", "--logger=capnslog"],
        &[],
        None,
        ("3.4.23", HELP_3_4_23),
        ("3.5.16", HELP_3_5_16),
    );
    let (debug, logger) = (removed_flag("--debug"), removed_value("--logger"));
    assert_eq!(
        c.refusals.iter().map(facts).collect::<Vec<_>>(),
        [
            (Some(debug.removed_in), debug.hint, Some(debug.source)),
            (
                Some(logger.removed_in),
                Some(logger.hint),
                Some(logger.source)
            ),
        ]
    );
    let c = run(
        &["--max-snapshots=5"],
        &[],
        None,
        ("3.5.16", HELP_3_5_16),
        ("3.6.14", HELP_3_6),
    );
    assert_max_snapshots_deprecation_warned(&c);
}

#[test]
fn problems_found_in_the_environment_carry_their_table_rows_minor_hint_and_source() {
    let c = run(
        &[],
        &[("ETCD_DEBUG", "true"), ("ETCD_LOGGER", "capnslog")],
        None,
        ("3.4.23", HELP_3_4_23),
        ("3.5.16", HELP_3_5_16),
    );
    assert_debug_warned_and_logger_refused(&c);
    let c = run(
        &[],
        &[("ETCD_MAX_SNAPSHOTS", "5")],
        None,
        ("3.5.16", HELP_3_5_16),
        ("3.6.14", HELP_3_6),
    );
    assert_max_snapshots_deprecation_warned(&c);
    let c = run(
        &[],
        &[("ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", "3m")],
        None,
        ("3.6.14", HELP_3_6),
        ("3.7.1", HELP_3_7),
    );
    assert_refused_once_as_renamed(&c, "--experimental-corrupt-check-time");
}

#[test]
fn problems_found_in_the_config_file_carry_their_table_rows_minor_hint_and_source() {
    let c = run(
        &[],
        &[],
        Some("debug: true\nlogger: capnslog\n"),
        ("3.4.23", HELP_3_4_23),
        ("3.5.16", HELP_3_5_16),
    );
    assert_debug_warned_and_logger_refused(&c);
    let c = run(
        &[],
        &[],
        Some("max-snapshots: 5\n"),
        ("3.5.16", HELP_3_5_16),
        ("3.6.14", HELP_3_6),
    );
    assert_max_snapshots_deprecation_warned(&c);
    let c = run(
        &[],
        &[],
        Some("experimental-initial-corrupt-check: true\n"),
        ("3.6.14", HELP_3_6),
        ("3.7.1", HELP_3_7),
    );
    assert_refused_once_as_renamed(&c, "--experimental-initial-corrupt-check");
}

// ---- config values, the deprecation window, FlagSet and parse edge cases ----

#[test]
fn a_numeric_config_value_is_carried_into_the_suggested_replacement() {
    // YAML reads 1000 as a number, not a string: it must still reach the hint.
    let c = run(
        &[],
        &[],
        Some("experimental-compaction-batch-limit: 1000\n"),
        ("3.6.14", HELP_3_6),
        ("3.7.1", HELP_3_7),
    );
    assert_eq!(c.refusals.len(), 1);
    assert!(
        c.refusals[0]
            .to_string()
            .contains("write `compaction-batch-limit: 1000` instead"),
        "{}",
        c.refusals[0]
    );
}

#[test]
fn a_deprecation_warning_stops_at_the_minor_the_table_names_for_the_removal() {
    // --max-snapshots: deprecated in 3.6, removed in 3.8. A 3.8 help that still lists it is
    // past the window: the flag is accepted and no longer warned about.
    const HELP_3_8: &str =
        "Member:\n  --name 'default'\n    Name.\n  --max-snapshots '5'\n    Still listed.\n";
    let at = |target: &str| {
        run(
            &["--max-snapshots=5"],
            &[],
            None,
            ("3.6.14", HELP_3_6),
            (target, HELP_3_8),
        )
    };
    let last_deprecated = at("3.7.1");
    assert_eq!(last_deprecated.warnings.len(), 1);
    assert_eq!(last_deprecated.warnings[0].kind, ProblemKind::Deprecated);
    let removed = at("3.8.0");
    assert!(
        removed.warnings.is_empty() && removed.refusals.is_empty(),
        "{removed:#?}"
    );
}

#[test]
fn a_help_text_with_flags_is_not_empty() {
    let set = parse_help(HELP_3_4_23);
    assert!(!set.is_empty());
    assert!(FlagSet::new().is_empty());
}

#[test]
fn flag_set_names_are_the_bare_names_in_sorted_order() {
    let mut set = FlagSet::new();
    set.insert("--name", false);
    set.insert("-auto-tls", true);
    set.insert("data-dir", false);
    assert_eq!(
        set.names().collect::<Vec<_>>(),
        ["auto-tls", "data-dir", "name"]
    );
}

#[test]
fn parse_help_skips_lines_whose_name_does_not_start_with_a_letter_or_digit() {
    // Separator lines of dashes, or `---x`, are not flags (and would name "" or "x").
    let set = parse_help("  ------------\n  ---x 'y'\n  --.hidden\n");
    assert_eq!(set.names().collect::<Vec<_>>(), Vec::<&str>::new());
}

#[test]
fn parse_help_marks_a_flag_shown_with_a_true_or_false_default_as_bool_even_if_no_table_knows_it() {
    let set = parse_help("  --future-switch 'true'\n    New.\n  --other-switch 'false'\n    New.\n  --future-count '3'\n    New.\n");
    assert_eq!(set.is_bool("future-switch"), Some(true));
    assert_eq!(set.is_bool("other-switch"), Some(true));
    assert_eq!(set.is_bool("future-count"), Some(false));
}

#[test]
fn parse_args_reads_a_one_letter_flag_and_goes_on() {
    // `-v` is two characters long: a flag (a legacy bool one), not the end of the flags.
    let got = parse_args(&args(&["-v", "--name", "n1"]), &parse_help(HELP_3_5_16));
    let shown: Vec<String> = got.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["--v", "--name=n1"]);
}
