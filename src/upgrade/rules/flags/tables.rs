//! The facts the compatibility check rests on, as data: flags and values etcd removed or
//! renamed between 3.4 and 3.7, flags its `--help` does not show (or shows but refuses),
//! boolean flags, and the `ETCD_*` variables that are not flags. Each line names its source.

use crate::upgrade::rules::release_facts::VersionRange;
use crate::versions::Version;

/// A `(major, minor)` pair, the granularity at which etcd removes things.
pub type Minor = (u64, u64);

const fn v(major: u64, minor: u64, patch: u64) -> Version {
    Version::new(major, minor, patch)
}

/// "Through the end of this minor": the tables hold for patches not yet released too.
const fn end_of(major: u64, minor: u64) -> Version {
    Version::new(major, minor, u64::MAX)
}

/// What replaces a renamed flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// A flag without the `experimental-` prefix, e.g. `--corrupt-check-time`.
    Flag(&'static str),
    /// A server feature gate, set as `--feature-gates=Name=true`.
    FeatureGate(&'static str),
}

impl Replacement {
    /// The replacement written out, carrying over the old flag's value when there is one.
    pub fn suggest(&self, value: Option<&str>) -> String {
        match (self, value) {
            (Self::Flag(flag), Some(value)) => format!("{flag}={value}"),
            (Self::Flag(flag), None) => (*flag).to_owned(),
            (Self::FeatureGate(gate), value) => {
                format!("--feature-gates={gate}={}", value.unwrap_or("true"))
            }
        }
    }
}

/// A flag renamed to a non-experimental flag or turned into a feature gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    /// The old flag, e.g. `--experimental-initial-corrupt-check`.
    pub old: &'static str,
    /// What to write instead.
    pub new: Replacement,
    /// First minor that warns about the old name.
    pub deprecated_in: Minor,
    /// First minor that refuses the old name.
    pub removed_in: Minor,
    /// Where this is stated.
    pub source: &'static str,
}

// All 23 lines: the deprecation map and `ExperimentalFlagToFeatureMap` of etcd 3.6
// (server/etcdmain/config.go `deprecatedFlags`, server/features/etcd_features.go), the
// 3.6 upgrade guide's "Flags deprecated" list, and the 3.7 guide's "Flags removed" list
// (PR #19959). Cross-checked by diffing the flags defined at tags v3.6.14 and v3.7.0.
const R36: &str = "etcd-io/website docs/v3.6/upgrades/upgrade_3_6.md; server/etcdmain/config.go v3.6 deprecatedFlags; removed by PR #19959 (docs/v3.7/upgrades/upgrade_3_7.md)";
const FG36: &str = "server/features/etcd_features.go v3.6 ExperimentalFlagToFeatureMap; docs/v3.6/upgrades/upgrade_3_6.md; removed by PR #19959 (docs/v3.7/upgrades/upgrade_3_7.md)";

const fn renamed(old: &'static str, new: Replacement, source: &'static str) -> Renamed {
    Renamed {
        old,
        new,
        deprecated_in: (3, 6),
        removed_in: (3, 7),
        source,
    }
}

/// `--experimental-*` flags deprecated in 3.6 and removed in 3.7, with their replacements.
pub const RENAMED: &[Renamed] = &[
    renamed(
        "--experimental-bootstrap-defrag-threshold-megabytes",
        Replacement::Flag("--bootstrap-defrag-threshold-megabytes"),
        R36,
    ),
    renamed(
        "--experimental-compact-hash-check-enabled",
        Replacement::FeatureGate("CompactHashCheck"),
        FG36,
    ),
    renamed(
        "--experimental-compact-hash-check-time",
        Replacement::Flag("--compact-hash-check-time"),
        R36,
    ),
    renamed(
        "--experimental-compaction-batch-limit",
        Replacement::Flag("--compaction-batch-limit"),
        R36,
    ),
    renamed(
        "--experimental-compaction-sleep-interval",
        Replacement::Flag("--compaction-sleep-interval"),
        R36,
    ),
    renamed(
        "--experimental-corrupt-check-time",
        Replacement::Flag("--corrupt-check-time"),
        R36,
    ),
    renamed(
        "--experimental-distributed-tracing-address",
        Replacement::Flag("--distributed-tracing-address"),
        R36,
    ),
    renamed(
        "--experimental-distributed-tracing-instance-id",
        Replacement::Flag("--distributed-tracing-instance-id"),
        R36,
    ),
    renamed(
        "--experimental-distributed-tracing-sampling-rate",
        Replacement::Flag("--distributed-tracing-sampling-rate"),
        R36,
    ),
    renamed(
        "--experimental-distributed-tracing-service-name",
        Replacement::Flag("--distributed-tracing-service-name"),
        R36,
    ),
    renamed(
        "--experimental-downgrade-check-time",
        Replacement::Flag("--downgrade-check-time"),
        R36,
    ),
    renamed(
        "--experimental-enable-distributed-tracing",
        Replacement::Flag("--enable-distributed-tracing"),
        R36,
    ),
    renamed(
        "--experimental-enable-lease-checkpoint",
        Replacement::FeatureGate("LeaseCheckpoint"),
        FG36,
    ),
    renamed(
        "--experimental-enable-lease-checkpoint-persist",
        Replacement::FeatureGate("LeaseCheckpointPersist"),
        FG36,
    ),
    renamed(
        "--experimental-initial-corrupt-check",
        Replacement::FeatureGate("InitialCorruptCheck"),
        FG36,
    ),
    renamed(
        "--experimental-memory-mlock",
        Replacement::Flag("--memory-mlock"),
        R36,
    ),
    renamed(
        "--experimental-peer-skip-client-san-verification",
        Replacement::Flag("--peer-skip-client-san-verification"),
        R36,
    ),
    renamed(
        "--experimental-snapshot-catchup-entries",
        Replacement::Flag("--snapshot-catchup-entries"),
        R36,
    ),
    renamed(
        "--experimental-stop-grpc-service-on-defrag",
        Replacement::FeatureGate("StopGRPCServiceOnDefrag"),
        FG36,
    ),
    renamed(
        "--experimental-txn-mode-write-with-shared-buffer",
        Replacement::FeatureGate("TxnModeWriteWithSharedBuffer"),
        FG36,
    ),
    renamed(
        "--experimental-warning-apply-duration",
        Replacement::Flag("--warning-apply-duration"),
        R36,
    ),
    renamed(
        "--experimental-warning-unary-request-duration",
        Replacement::Flag("--warning-unary-request-duration"),
        R36,
    ),
    renamed(
        "--experimental-watch-progress-notify-interval",
        Replacement::Flag("--watch-progress-notify-interval"),
        R36,
    ),
];

/// A flag value a later etcd refuses although the flag itself still exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedValue {
    /// The flag, e.g. `--logger`.
    pub flag: &'static str,
    /// The refused value, e.g. `capnslog`.
    pub value: &'static str,
    /// First minor that refuses it.
    pub removed_in: Minor,
    /// Whether the same value in a config file also stops etcd (else it is ignored there).
    pub fails_in_config_file: bool,
    /// What to do instead.
    pub hint: &'static str,
    /// Where this is stated.
    pub source: &'static str,
}

/// Values removed from still-existing flags.
pub const REMOVED_VALUES: &[RemovedValue] = &[
    // server/embed/config_logging.go v3.5 setupLogging: `--logger=capnslog is removed in
    // v3.5` (exit 1); the team saw the same for ETCD_LOGGER and `logger: capnslog` in YAML.
    RemovedValue {
        flag: "--logger",
        value: "capnslog",
        removed_in: (3, 5),
        fails_in_config_file: true,
        hint: "use --logger=zap (with --log-outputs=stderr, or a file path)",
        source: "server/embed/config_logging.go v3.5; docs/v3.5/upgrades/upgrade_3_5.md 'Deprecated etcd --logger capnslog'",
    },
    // server/etcdmain/config.go v3.6.0: the --v2-deprecation choices no longer include
    // "not-yet" (flag parse fails, exit 2); a config-file value other than
    // write-only-skip-check is overridden by the default (v3.6.14 config.go, parse()).
    RemovedValue {
        flag: "--v2-deprecation",
        value: "not-yet",
        removed_in: (3, 6),
        fails_in_config_file: false,
        hint: "drop it (3.6 enforces write-only) after `etcdutl check v2store` reports no custom v2 data",
        source: "server/etcdmain/config.go v3.6.0 v2deprecation choices; docs/v3.6/upgrades/upgrade_3_6.md 'Original default flag'",
    },
    // server/etcdmain/config.go v3.6 validate(): `v2 proxy is deprecated, and
    // --discovery-fallback can't be configured as "proxy"`; only the flag/env path calls it.
    RemovedValue {
        flag: "--discovery-fallback",
        value: "proxy",
        removed_in: (3, 6),
        fails_in_config_file: false,
        hint: "use --discovery-fallback=exit (the 3.6 default) or drop it",
        source: "server/etcdmain/config.go v3.6 validate(); docs/v3.6/upgrades/upgrade_3_6.md 'Original default flag'",
    },
];

/// A flag a later etcd no longer defines at all (and that has no renamed twin in [`RENAMED`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedFlag {
    /// The flag.
    pub flag: &'static str,
    /// First minor that refuses it.
    pub removed_in: Minor,
    /// What to do instead, where there is something.
    pub hint: Option<&'static str>,
    /// Where this is stated.
    pub source: &'static str,
}

const V35: &str = "CHANGELOG-3.5.md v3.5.0 deprecations; docs/v3.5/upgrades/upgrade_3_5.md";
const V36: &str = "docs/v3.6/upgrades/upgrade_3_6.md 'Flags removed'";
const V2_GONE: &str = "v2 API and v2 store are gone in 3.6: remove it, after `etcdutl check v2store` (etcd 3.5.32+) reports no custom v2 data";
const PROXY_GONE: &str =
    "the v2 proxy is gone in 3.6: remove it (use `etcd grpc-proxy` for a v3 proxy)";

/// Flags removed outright, with a hint where etcd documents a replacement.
pub const REMOVED_FLAGS: &[RemovedFlag] = &[
    RemovedFlag { flag: "--debug", removed_in: (3, 5), hint: Some("use --log-level=debug"), source: V35 },
    RemovedFlag { flag: "--log-package-levels", removed_in: (3, 5), hint: Some("use --log-level (zap has no per-package levels)"), source: V35 },
    RemovedFlag { flag: "--log-output", removed_in: (3, 5), hint: Some("use --log-outputs"), source: V35 },
    RemovedFlag { flag: "--experimental-backend-bbolt-freelist-type", removed_in: (3, 5), hint: Some("use --backend-bbolt-freelist-type"), source: "CHANGELOG-3.5.md v3.5.0 deprecations" },
    // CHANGELOG-3.4.md (PR #17330, #17665): a 3.4-only flag for joining a 3.5 cluster while
    // downgrading; no 3.5 release defines it (flag diff of v3.4.45 against v3.5.33).
    RemovedFlag { flag: "--next-cluster-version-compatible", removed_in: (3, 5), hint: Some("it only matters to 3.4 members during a downgrade from 3.5: remove it"), source: "CHANGELOG-3.4.md (etcd PR #17330)" },
    RemovedFlag { flag: "--enable-v2", removed_in: (3, 6), hint: Some(V2_GONE), source: V36 },
    RemovedFlag { flag: "--experimental-enable-v2v3", removed_in: (3, 6), hint: Some(V2_GONE), source: V36 },
    RemovedFlag { flag: "--proxy", removed_in: (3, 6), hint: Some(PROXY_GONE), source: V36 },
    RemovedFlag { flag: "--proxy-failure-wait", removed_in: (3, 6), hint: Some(PROXY_GONE), source: V36 },
    RemovedFlag { flag: "--proxy-refresh-interval", removed_in: (3, 6), hint: Some(PROXY_GONE), source: V36 },
    RemovedFlag { flag: "--proxy-dial-timeout", removed_in: (3, 6), hint: Some(PROXY_GONE), source: V36 },
    RemovedFlag { flag: "--proxy-write-timeout", removed_in: (3, 6), hint: Some(PROXY_GONE), source: V36 },
    RemovedFlag { flag: "--proxy-read-timeout", removed_in: (3, 6), hint: Some(PROXY_GONE), source: V36 },
    // docs/v3.7/upgrades/upgrade_3_7.md: "the v2 discovery service ... all gone"; flag diff
    // v3.6.14 -> v3.7.0. (3.7's --help still lists both: see NOT_DEFINED_DESPITE_HELP.)
    RemovedFlag { flag: "--discovery", removed_in: (3, 7), hint: Some("v2 discovery is gone in 3.7: use v3 discovery (--discovery-endpoints, --discovery-token) or --initial-cluster"), source: "docs/v3.7/upgrades/upgrade_3_7.md 'V2 store'" },
    RemovedFlag { flag: "--discovery-proxy", removed_in: (3, 7), hint: Some("v2 discovery is gone in 3.7: remove it"), source: "docs/v3.7/upgrades/upgrade_3_7.md 'V2 store'" },
];

/// A flag still accepted but deprecated, with no renamed twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecated {
    /// The flag.
    pub flag: &'static str,
    /// First minor that warns about it.
    pub deprecated_in: Minor,
    /// First minor expected to refuse it.
    pub removed_in: Minor,
    /// What to do instead.
    pub hint: &'static str,
    /// Where this is stated.
    pub source: &'static str,
}

/// Deprecated flags without a renamed twin (server/etcdmain/config.go v3.6 `deprecatedFlags`).
pub const DEPRECATED: &[Deprecated] = &[
    Deprecated {
        flag: "--max-snapshots",
        deprecated_in: (3, 6),
        removed_in: (3, 8),
        hint: "remove it (etcd 3.6 deprecates it, to be decommissioned in 3.8)",
        source: "server/etcdmain/config.go v3.6 deprecatedFlags",
    },
    Deprecated {
        flag: "--v2-deprecation",
        deprecated_in: (3, 6),
        removed_in: (3, 8),
        hint: "remove it unless you need write-only-skip-check (3.6 enforces the default)",
        source: "server/etcdmain/config.go v3.6 deprecatedFlags",
    },
];

/// A flag whose presence in `etcd --help` does not match what the binary defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpMismatch {
    /// The flag.
    pub flag: &'static str,
    /// Releases where the mismatch holds.
    pub versions: VersionRange,
    /// Where this was found.
    pub source: &'static str,
}

// etcd's help text is hand-written (server/etcdmain/help.go), separate from the flag
// definitions. These ranges come from comparing help.go with the `fs.*Var` definitions
// at every tag v3.4.0..v3.7.1; the 3.4.23 and 3.5.16 binaries' --help agree.
const HIDDEN_SRC: &str =
    "flag defined in etcdmain/config.go or embed/config.go but absent from etcdmain/help.go";

const fn hm(
    flag: &'static str,
    first: Version,
    last: Version,
    source: &'static str,
) -> HelpMismatch {
    HelpMismatch {
        flag,
        versions: VersionRange::new(first, last),
        source,
    }
}

/// Flags a release accepts although its `--help` does not list them.
pub const HIDDEN_FLAGS: &[HelpMismatch] = &[
    hm("--enable-grpc-gateway", v(3, 4, 0), v(3, 4, 28), HIDDEN_SRC),
    hm("--enable-grpc-gateway", v(3, 5, 0), v(3, 5, 11), HIDDEN_SRC),
    hm("--log-output", v(3, 4, 0), end_of(3, 4), HIDDEN_SRC),
    hm("--unsafe-no-fsync", v(3, 4, 10), v(3, 4, 28), HIDDEN_SRC),
    hm(
        "--experimental-enable-lease-checkpoint-persist",
        v(3, 4, 20),
        v(3, 4, 28),
        HIDDEN_SRC,
    ),
    hm(
        "--experimental-enable-lease-checkpoint-persist",
        v(3, 5, 2),
        v(3, 5, 11),
        HIDDEN_SRC,
    ),
    hm("--client-cert-file", v(3, 5, 0), v(3, 5, 11), HIDDEN_SRC),
    hm("--client-key-file", v(3, 5, 0), v(3, 5, 11), HIDDEN_SRC),
    hm(
        "--peer-client-cert-file",
        v(3, 5, 0),
        v(3, 5, 11),
        HIDDEN_SRC,
    ),
    hm(
        "--peer-client-key-file",
        v(3, 5, 0),
        v(3, 5, 11),
        HIDDEN_SRC,
    ),
    hm("--raft-read-timeout", v(3, 5, 0), v(3, 5, 11), HIDDEN_SRC),
    hm("--raft-write-timeout", v(3, 5, 0), v(3, 5, 11), HIDDEN_SRC),
    hm(
        "--experimental-downgrade-check-time",
        v(3, 5, 0),
        v(3, 5, 11),
        HIDDEN_SRC,
    ),
    hm(
        "--experimental-memory-mlock",
        v(3, 5, 0),
        v(3, 5, 11),
        HIDDEN_SRC,
    ),
    hm(
        "--experimental-compact-hash-check-enabled",
        v(3, 5, 5),
        v(3, 5, 9),
        HIDDEN_SRC,
    ),
    hm(
        "--experimental-compact-hash-check-time",
        v(3, 5, 5),
        v(3, 5, 9),
        HIDDEN_SRC,
    ),
    hm(
        "--experimental-snapshot-catchup-entries",
        v(3, 5, 14),
        end_of(3, 5),
        HIDDEN_SRC,
    ),
];

/// Names a release's `--help` lists but the binary does not define (typos, stale help).
pub const NOT_DEFINED_DESPITE_HELP: &[HelpMismatch] = &[
    // help.go v3.6.0..v3.6.4 lists the config-file spelling; the flag is ...-catchup-entries.
    hm(
        "--experimental-snapshot-catch-up-entries",
        v(3, 6, 0),
        v(3, 6, 4),
        "etcdmain/help.go v3.6.0 vs embed/config.go",
    ),
    hm(
        "--discovery",
        v(3, 7, 0),
        end_of(3, 7),
        "etcdmain/help.go v3.7.0 vs embed/config.go (v2 discovery removed)",
    ),
    hm(
        "--discovery-proxy",
        v(3, 7, 0),
        end_of(3, 7),
        "etcdmain/help.go v3.7.0 vs embed/config.go (v2 discovery removed)",
    ),
];

/// Flags every 3.4–3.7 release accepts without listing them in `--help`.
///
/// `--config-file` and `--version` are real flags shown only in the usage lines; the others
/// are pre-3.0 flags that etcdmain registers as `flags.IgnoredFlag` and only logs about
/// (`ignored` in etcdmain/config.go, identical v3.4.0..v3.7.1).
pub const ALWAYS_ACCEPTED: &[&str] = &[
    "--config-file",
    "--version",
    "--cluster-active-size",
    "--cluster-remove-delay",
    "--cluster-sync-interval",
    "--config",
    "--force",
    "--max-result-buffer",
    "--max-retry-attempts",
    "--peer-election-timeout",
    "--peer-heartbeat-interval",
    "--retry-interval",
    "--snapshot",
    "--v",
    "--vv",
];

/// Boolean flags of etcd 3.4–3.7: `fs.BoolVar` in etcdmain/config.go and embed/config.go at
/// every tag v3.4.0..v3.7.1 (no name is bool in one release and not in another), plus the
/// ignored legacy flags (`IgnoredFlag.IsBoolFlag` is true in pkg/flags/ignored.go).
///
/// Needed because `--help` omits the default of some bool flags (e.g. `--enable-grpc-gateway`).
pub const KNOWN_BOOL_FLAGS: &[&str] = &[
    "--auto-tls",
    "--client-cert-auth",
    "--debug",
    "--discovery-insecure-skip-tls-verify",
    "--discovery-insecure-transport",
    "--enable-distributed-tracing",
    "--enable-grpc-gateway",
    "--enable-log-rotation",
    "--enable-pprof",
    "--enable-v2",
    "--experimental-compact-hash-check-enabled",
    "--experimental-enable-distributed-tracing",
    "--experimental-enable-lease-checkpoint",
    "--experimental-enable-lease-checkpoint-persist",
    "--experimental-initial-corrupt-check",
    "--experimental-memory-mlock",
    "--experimental-peer-skip-client-san-verification",
    "--experimental-stop-grpc-service-on-defrag",
    "--experimental-txn-mode-write-with-shared-buffer",
    "--force-new-cluster",
    "--initial-election-tick-advance",
    "--memory-mlock",
    "--next-cluster-version-compatible",
    "--peer-auto-tls",
    "--peer-client-cert-auth",
    "--peer-skip-client-san-verification",
    "--pre-vote",
    "--socket-reuse-address",
    "--socket-reuse-port",
    "--strict-reconfig-check",
    "--unsafe-no-fsync",
    "--version",
    "--cluster-active-size",
    "--cluster-remove-delay",
    "--cluster-sync-interval",
    "--config",
    "--force",
    "--max-result-buffer",
    "--max-retry-attempts",
    "--peer-election-timeout",
    "--peer-heartbeat-interval",
    "--retry-interval",
    "--snapshot",
    "--v",
    "--vv",
];

/// `ETCD_*` variables etcd reads that are not flags, so must not be reported as unknown.
pub const NON_FLAG_ENV: &[(&str, &str)] = &[
    (
        "ETCD_UNSUPPORTED_ARCH",
        "server/etcdmain/etcd.go checkSupportArch (3.4–3.7)",
    ),
    (
        "ETCD_VERIFY",
        "client/pkg/verify/verify.go (3.5+): extra consistency checks",
    ),
    (
        "ETCD_CLIENT_DEBUG",
        "client/v3/logger.go: client-side gRPC log level",
    ),
    // 3.5+ warns "cannot set special environment variable" and unsets it (etcdmain/config.go).
    (
        "ETCD_VERSION",
        "server/etcdmain/config.go configFromCmdLine (3.5+)",
    ),
];

/// Top-level config-file keys that are not flag names.
pub const CONFIG_ONLY_KEYS: &[HelpMismatch] = &[
    hm(
        "client-transport-security",
        v(3, 4, 0),
        end_of(3, 7),
        "embed/config.go configYAML json tags",
    ),
    hm(
        "peer-transport-security",
        v(3, 4, 0),
        end_of(3, 7),
        "embed/config.go configYAML json tags",
    ),
    hm(
        "socket-options",
        v(3, 5, 10),
        end_of(3, 7),
        "embed/config.go json tag (3.5.10+)",
    ),
    hm(
        "experimental-snapshot-catch-up-entries",
        v(3, 5, 14),
        end_of(3, 6),
        "embed/config.go json tag of ExperimentalSnapshotCatchUpEntries",
    ),
    hm(
        "discovery-config",
        v(3, 6, 0),
        end_of(3, 7),
        "embed/config.go json tag (3.6+)",
    ),
    hm(
        "feature-gates",
        v(3, 6, 0),
        end_of(3, 7),
        "embed/config.go ServerFeatureGatesJSON (3.6+)",
    ),
];

/// Strips leading dashes: `--name`, `-name` and `name` all name the same Go flag.
pub(crate) fn bare(name: &str) -> &str {
    name.trim_start_matches('-')
}

pub(crate) fn in_list(list: &[&str], name: &str) -> bool {
    list.iter().any(|item| bare(item) == bare(name))
}

pub(crate) fn in_range_table(table: &[HelpMismatch], name: &str, version: &Version) -> bool {
    table
        .iter()
        .any(|row| bare(row.flag) == bare(name) && row.versions.contains(version))
}
