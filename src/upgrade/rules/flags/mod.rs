//! Command-line compatibility of this member's etcd settings with a target etcd version.
//!
//! This module owns: reading the flag list out of `etcd --help`, splitting an argument
//! vector the way Go's `flag` package does, the tables of flags and values etcd removed or
//! renamed between 3.4 and 3.7, and the verdict for one member (refuse or warn) over its
//! flags, its `ETCD_*` environment and its `--config-file` YAML. It also classifies a failed
//! start as a usage error (the second line of defence). Everything here is pure: text in,
//! data out.
//!
//! How etcd treats each source (etcd's own code, `server/etcdmain/config.go`, and checks by
//! the team on real binaries): an unknown flag makes Go's flag parser exit 2 ("flag provided
//! but not defined"); an unknown `ETCD_*` variable is only logged ("unrecognized environment
//! variable"); unknown config-file keys are ignored (sigs.k8s.io/yaml then encoding/json);
//! a removed *value* fails wherever etcd reads it. When a config file is in use, etcd ignores
//! other flags' values and the environment entirely, though it still parses the flags. A
//! renamed `experimental-*` key or variable the target no longer reads is refused all the
//! same: etcd would start, silently without the setting (3.7 with 3.6's names).

use std::fmt;

use crate::versions::Version;

pub mod parse;
pub mod tables;

pub use parse::{parse_args, parse_help, FlagSet, PassedFlag};
pub use tables::*;

/// Where a problem was found; says where the fix goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// This member's etcd command-line flags.
    Flag,
    /// An environment variable of this member, by name.
    Env(String),
    /// A top-level key of this member's `--config-file`.
    ConfigFile,
}

impl Origin {
    fn place(&self) -> &'static str {
        match self {
            Self::Flag => "this member's etcd flags",
            Self::Env(_) => "this member's environment",
            Self::ConfigFile => "this member's etcd config file",
        }
    }
}

impl Replacement {
    /// The replacement as it is written where the old setting was found: a flag, a
    /// config-file line (`feature-gates: Name=true`), or an `ETCD_*` variable.
    pub fn suggest_in(&self, origin: &Origin, value: Option<&str>) -> String {
        let env_name = |flag: &str| format!("ETCD_{}", flag.to_ascii_uppercase().replace('-', "_"));
        match (origin, self) {
            (Origin::Flag, _) => self.suggest(value),
            (Origin::ConfigFile, Self::Flag(flag)) => {
                format!("{}: {}", bare(flag), value.unwrap_or("true"))
            }
            (Origin::ConfigFile, Self::FeatureGate(gate)) => {
                format!("feature-gates: {gate}={}", value.unwrap_or("true"))
            }
            (Origin::Env(_), Self::Flag(flag)) => {
                format!("{}={}", env_name(bare(flag)), value.unwrap_or("true"))
            }
            (Origin::Env(_), Self::FeatureGate(gate)) => {
                format!("ETCD_FEATURE_GATES={gate}={}", value.unwrap_or("true"))
            }
        }
    }
}

/// What kind of incompatibility was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A flag the target does not define: etcd exits 2.
    UnknownFlag,
    /// A value the target refuses: etcd exits 1 (or 2 for choice flags).
    RemovedValue,
    /// A value the target refuses but will not read, because a config file is in use.
    IgnoredRemovedValue,
    /// An `ETCD_*` variable naming no flag of the target: etcd warns and ignores it.
    UnknownEnv,
    /// A config-file key the target does not know: etcd ignores it.
    UnknownConfigKey,
    /// A renamed setting the target no longer reads from the config file or the
    /// environment: etcd starts without it, silently, so it is refused like a flag.
    Dropped,
    /// Still accepted by the target, but deprecated.
    Deprecated,
    /// The config file is not a YAML mapping: etcd would not start.
    UnreadableConfig,
}

/// One incompatibility, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// Where it was found.
    pub origin: Origin,
    /// The offending setting as written (`--debug`, `ETCD_LOGGER=capnslog`, `debug`).
    pub subject: String,
    /// The version that objects.
    pub target: Version,
    /// The minor that removed (or deprecated) it, when the tables know.
    pub since: Option<Minor>,
    /// What to do instead, when known.
    pub hint: Option<String>,
    /// Where the fact comes from, when it comes from a table.
    pub source: Option<&'static str>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (subject, target, place) = (&self.subject, &self.target, self.origin.place());
        let since = |verb: &str| {
            self.since
                .map(|(major, minor)| format!(" ({verb} in {major}.{minor})"))
                .unwrap_or_default()
        };
        let hint = self
            .hint
            .as_deref()
            .map(|h| format!(": {h}"))
            .unwrap_or_default();
        match self.kind {
            ProblemKind::UnknownFlag => write!(
                f,
                "{subject} is not a flag of etcd {target}{}{hint}; remove it from {place} and restart the supervisor",
                since("removed")
            ),
            ProblemKind::RemovedValue => write!(
                f,
                "{subject} is refused by etcd {target}{}{hint}; change it in {place} and restart the supervisor",
                since("removed")
            ),
            ProblemKind::IgnoredRemovedValue => write!(
                f,
                "{subject} is ignored while a config file is in use, and etcd {target} would refuse it{}{hint}; remove it from {place}",
                since("removed")
            ),
            ProblemKind::UnknownEnv => write!(
                f,
                "{subject} names no flag of etcd {target}{}, which only warns about it and ignores it{hint}; remove it from {place}",
                since("removed")
            ),
            ProblemKind::UnknownConfigKey => write!(
                f,
                "config-file key {subject} is unknown to etcd {target}{}, which ignores it{hint}; remove it from {place}",
                since("removed")
            ),
            ProblemKind::Dropped => write!(
                f,
                "{}{subject} is no longer read by etcd {target}{}, which would start without this setting{hint}; change it in {place} and restart the supervisor",
                if self.origin == Origin::ConfigFile { "config-file key " } else { "" },
                since("removed")
            ),
            ProblemKind::Deprecated => write!(
                f,
                "{subject} is deprecated in etcd {target}{}{hint}; change it in {place} before the next minor upgrade",
                since("deprecated")
            ),
            ProblemKind::UnreadableConfig => write!(
                f,
                "the config file is not a YAML mapping ({subject}), so etcd {target} would not start; fix {place}"
            ),
        }
    }
}

/// The verdict for one member: refusals stop the upgrade, warnings are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compatibility {
    /// The version the member runs now.
    pub running: Version,
    /// The version it would move to.
    pub target: Version,
    /// Settings that would stop the target from starting.
    pub refusals: Vec<Problem>,
    /// Settings the target ignores or deprecates.
    pub warnings: Vec<Problem>,
}

impl Compatibility {
    /// Whether nothing stops the target from starting.
    pub fn is_compatible(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// Context shared by the three checks.
struct Target<'a> {
    version: &'a Version,
    minor: Minor,
    flags: &'a FlagSet,
}

impl Target<'_> {
    /// Whether the target binary defines the flag (help text corrected by the tables).
    fn accepts(&self, name: &str) -> bool {
        (self.flags.contains(name) && !in_range_table(NOT_DEFINED_DESPITE_HELP, name, self.version))
            || in_range_table(HIDDEN_FLAGS, name, self.version)
            || in_list(ALWAYS_ACCEPTED, name)
    }

    /// Why the target lacks `name` and what to use instead, from the tables.
    fn removal(
        &self,
        name: &str,
        value: Option<&str>,
    ) -> (Option<Minor>, Option<String>, Option<&'static str>) {
        if let Some(row) = REMOVED_FLAGS
            .iter()
            .find(|row| bare(row.flag) == bare(name) && row.removed_in <= self.minor)
        {
            return (
                Some(row.removed_in),
                row.hint.map(str::to_owned),
                Some(row.source),
            );
        }
        if let Some(row) = RENAMED
            .iter()
            .find(|row| bare(row.old) == bare(name) && row.removed_in <= self.minor)
        {
            let hint = format!("use {} instead", row.new.suggest(value));
            return (Some(row.removed_in), Some(hint), Some(row.source));
        }
        (None, None, None)
    }

    /// The renamed setting `name` if the target removed its old name: read from the config
    /// file or the environment, it would be dropped without a word.
    fn dropped(&self, name: &str, value: Option<&str>, origin: Origin) -> Option<Problem> {
        let row = RENAMED
            .iter()
            .find(|row| bare(row.old) == bare(name) && row.removed_in <= self.minor)?;
        let subject = match &origin {
            Origin::Env(var) => var.clone(),
            _ => bare(name).to_owned(),
        };
        Some(Problem {
            since: Some(row.removed_in),
            hint: Some(format!(
                "write `{}` instead",
                row.new.suggest_in(&origin, value)
            )),
            source: Some(row.source),
            ..self.problem(ProblemKind::Dropped, origin, subject)
        })
    }

    /// A deprecation warning for an accepted flag or key, if the target deprecates it.
    fn deprecation(
        &self,
        name: &str,
        value: Option<&str>,
    ) -> Option<(Minor, String, &'static str)> {
        let deprecated = |since: Minor, until: Minor| since <= self.minor && self.minor < until;
        if let Some(row) = RENAMED.iter().find(|row| {
            bare(row.old) == bare(name) && deprecated(row.deprecated_in, row.removed_in)
        }) {
            let (major, minor) = row.removed_in;
            let hint = format!(
                "use {} instead, before any member moves to {major}.{minor}, which refuses it",
                row.new.suggest(value)
            );
            return Some((row.deprecated_in, hint, row.source));
        }
        DEPRECATED
            .iter()
            .find(|row| {
                bare(row.flag) == bare(name) && deprecated(row.deprecated_in, row.removed_in)
            })
            .map(|row| (row.deprecated_in, row.hint.to_owned(), row.source))
    }

    /// The removed value `value` of flag `name`, if the target refuses it.
    fn removed_value(&self, name: &str, value: &str) -> Option<&'static RemovedValue> {
        REMOVED_VALUES.iter().find(|row| {
            bare(row.flag) == bare(name)
                && row.value == value.trim()
                && row.removed_in <= self.minor
        })
    }

    fn problem(&self, kind: ProblemKind, origin: Origin, subject: String) -> Problem {
        Problem {
            kind,
            origin,
            subject,
            target: self.version.clone(),
            since: None,
            hint: None,
            source: None,
        }
    }
}

/// Checks this member's flags, `ETCD_*` environment and config file against `target`.
///
/// `passed` comes from [`parse_args`] on the member's etcd arguments, `target_flags` from
/// [`parse_help`] on the target binary's `--help`. Pass `config_yaml` only when etcd will
/// use a config file (`--config-file` or `ETCD_CONFIG_FILE`): etcd then ignores the
/// values of other flags and the whole environment, so those are judged accordingly.
/// `running` is the version the member runs now; it is carried into the verdict so that a
/// report can name both ends of the move (the target's flag set, not `running`, decides).
pub fn check(
    passed: &[PassedFlag],
    env: &[(String, String)],
    config_yaml: Option<&str>,
    running: &Version,
    target: &Version,
    target_flags: &FlagSet,
) -> Compatibility {
    let t = Target {
        version: target,
        minor: target.minor_version(),
        flags: target_flags,
    };
    let mut out = Compatibility {
        running: running.clone(),
        target: target.clone(),
        refusals: Vec::new(),
        warnings: Vec::new(),
    };
    let config_in_use = config_yaml.is_some();
    check_flags(&t, passed, config_in_use, &mut out);
    if !config_in_use {
        check_env(&t, env, &mut out);
    }
    if let Some(yaml) = config_yaml {
        check_config(&t, yaml, &mut out);
    }
    out
}

fn check_flags(
    t: &Target<'_>,
    passed: &[PassedFlag],
    config_in_use: bool,
    out: &mut Compatibility,
) {
    for flag in passed {
        let value = flag.value.as_deref();
        if !t.accepts(&flag.name) {
            let (since, hint, source) = t.removal(&flag.name, value);
            out.refusals.push(Problem {
                since,
                hint,
                source,
                ..t.problem(ProblemKind::UnknownFlag, Origin::Flag, flag.flag())
            });
            continue;
        }
        if let Some(row) = value.and_then(|value| t.removed_value(&flag.name, value)) {
            let kind = if config_in_use {
                ProblemKind::IgnoredRemovedValue
            } else {
                ProblemKind::RemovedValue
            };
            let problem = Problem {
                since: Some(row.removed_in),
                hint: Some(row.hint.to_owned()),
                source: Some(row.source),
                ..t.problem(kind, Origin::Flag, flag.to_string())
            };
            if config_in_use {
                out.warnings.push(problem);
            } else {
                out.refusals.push(problem);
            }
            continue;
        }
        if let Some((since, hint, source)) = t.deprecation(&flag.name, value) {
            out.warnings.push(Problem {
                since: Some(since),
                hint: Some(hint),
                source: Some(source),
                ..t.problem(ProblemKind::Deprecated, Origin::Flag, flag.flag())
            });
        }
    }
}

/// The flag an `ETCD_*` variable sets (`ETCD_LOG_LEVEL` -> `log-level`), as etcd's
/// `flags.FlagToEnv` maps them; `None` for other variables.
pub fn env_to_flag(var: &str) -> Option<String> {
    let rest = var.strip_prefix("ETCD_")?;
    (!rest.is_empty()).then(|| rest.to_ascii_lowercase().replace('_', "-"))
}

fn check_env(t: &Target<'_>, env: &[(String, String)], out: &mut Compatibility) {
    for (var, value) in env {
        // etcd skips empty values (pkg/flags/flag.go setFlagFromEnv: `if val != ""`).
        if value.is_empty() || NON_FLAG_ENV.iter().any(|(name, _)| name == var) {
            continue;
        }
        let Some(name) = env_to_flag(var) else {
            continue;
        };
        let origin = Origin::Env(var.clone());
        if let Some(problem) = (!t.accepts(&name))
            .then(|| t.dropped(&name, Some(value), origin.clone()))
            .flatten()
        {
            out.refusals.push(problem);
        } else if !t.accepts(&name) {
            let (since, hint, source) = t.removal(&name, Some(value));
            out.warnings.push(Problem {
                since,
                hint,
                source,
                ..t.problem(ProblemKind::UnknownEnv, origin, var.clone())
            });
        } else if let Some(row) = t.removed_value(&name, value) {
            out.refusals.push(Problem {
                since: Some(row.removed_in),
                hint: Some(row.hint.to_owned()),
                source: Some(row.source),
                ..t.problem(ProblemKind::RemovedValue, origin, format!("{var}={value}"))
            });
        } else if let Some((since, hint, source)) = t.deprecation(&name, Some(value)) {
            out.warnings.push(Problem {
                since: Some(since),
                hint: Some(hint),
                source: Some(source),
                ..t.problem(ProblemKind::Deprecated, origin, var.clone())
            });
        }
    }
}

/// A YAML scalar as etcd's YAML-to-JSON step would stringify it.
fn scalar(value: &yaml_serde::Value) -> Option<String> {
    match value {
        yaml_serde::Value::String(s) => Some(s.clone()),
        yaml_serde::Value::Bool(b) => Some(b.to_string()),
        yaml_serde::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn check_config(t: &Target<'_>, yaml: &str, out: &mut Compatibility) {
    let unreadable =
        |why: String| t.problem(ProblemKind::UnreadableConfig, Origin::ConfigFile, why);
    let doc: yaml_serde::Value = match yaml_serde::from_str(yaml) {
        Ok(doc) => doc,
        Err(err) => {
            out.refusals.push(unreadable(err.to_string()));
            return;
        }
    };
    let map = match doc {
        yaml_serde::Value::Null => return,
        yaml_serde::Value::Mapping(map) => map,
        _ => {
            out.refusals
                .push(unreadable("top level is not a mapping".to_owned()));
            return;
        }
    };
    for (key, value) in &map {
        let Some(key) = key.as_str() else {
            continue;
        };
        // encoding/json matches field names case-insensitively.
        let name = key.to_ascii_lowercase();
        let value = scalar(value);
        let known = t.accepts(&name) || in_range_table(CONFIG_ONLY_KEYS, &name, t.version);
        if let Some(problem) = (!known)
            .then(|| t.dropped(&name, value.as_deref(), Origin::ConfigFile))
            .flatten()
        {
            out.refusals.push(problem);
            continue;
        }
        if !known {
            let (since, hint, source) = t.removal(&name, value.as_deref());
            out.warnings.push(Problem {
                since,
                hint,
                source,
                ..t.problem(
                    ProblemKind::UnknownConfigKey,
                    Origin::ConfigFile,
                    key.to_owned(),
                )
            });
            continue;
        }
        if let Some(row) = value.as_deref().and_then(|v| t.removed_value(&name, v)) {
            let subject = format!("{key}: {}", row.value);
            let kind = if row.fails_in_config_file {
                ProblemKind::RemovedValue
            } else {
                ProblemKind::IgnoredRemovedValue
            };
            let problem = Problem {
                since: Some(row.removed_in),
                hint: Some(row.hint.to_owned()),
                source: Some(row.source),
                ..t.problem(kind, Origin::ConfigFile, subject)
            };
            if row.fails_in_config_file {
                out.refusals.push(problem);
            } else {
                out.warnings.push(problem);
            }
            continue;
        }
        if let Some((since, hint, source)) = t.deprecation(&name, value.as_deref()) {
            out.warnings.push(Problem {
                since: Some(since),
                hint: Some(hint),
                source: Some(source),
                ..t.problem(ProblemKind::Deprecated, Origin::ConfigFile, key.to_owned())
            });
        }
    }
}

/// Log fragments that mean etcd refused its configuration, with where each comes from.
pub const USAGE_ERROR_MARKERS: &[(&str, &str)] = &[
    // Go's flag package (etcdmain then exits 2).
    ("flag provided but not defined", "Go flag package"),
    ("bad flag syntax", "Go flag package"),
    ("flag needs an argument", "Go flag package"),
    ("invalid boolean value", "Go flag package"),
    // etcdmain/etcd.go (3.4–3.7): every configuration error is logged with this, then exit 1.
    (
        "failed to verify flags",
        "etcdmain/etcd.go startEtcdOrProxyV2",
    ),
    // etcdmain/config.go parse(): a stray positional argument.
    ("is not a valid flag", "etcdmain/config.go parse"),
    // embed/config_logging.go (3.5+).
    ("is removed in v3.5", "embed/config_logging.go setupLogging"),
    // pkg/flags/flag.go verifyEnv: the same setting as flag and ETCD_* variable (fatal).
    (
        "conflicting environment variable is shadowed",
        "pkg/flags/flag.go verifyEnv",
    ),
    // embed/config.go (3.6): an experimental flag together with its replacement.
    (
        "cannot specify both flags",
        "embed/config.go SetFeatureGatesFromExperimentalFlags (3.6)",
    ),
    (
        "unrecognized feature gate",
        "pkg/featuregate/feature_gate.go (3.6+)",
    ),
    (
        "v2 proxy is deprecated, and --discovery-fallback",
        "etcdmain/config.go validate (3.6+)",
    ),
];

/// [`is_usage_error`], unless the output shows a crash: Go's runtime exits with 2 on a panic
/// too, and a panic is the version's fault.
pub fn is_usage_failure(exit_code: Option<i32>, log_tail: &str) -> bool {
    let crashed = ["panic:", "fatal error:", "goroutine "]
        .iter()
        .any(|m| log_tail.contains(m));
    !crashed && is_usage_error(exit_code, log_tail)
}

/// Whether a failed etcd start was a refusal of its flags, environment or config file.
///
/// Exit code 2 is Go's flag parser (etcdmain `parse` calls `os.Exit(2)` on any flag error);
/// otherwise the log tail is searched for [`USAGE_ERROR_MARKERS`] and for Go's
/// `invalid value "x" for flag -name` / etcd's `invalid value "x" for ETCD_NAME`.
pub fn is_usage_error(exit_code: Option<i32>, log_tail: &str) -> bool {
    if exit_code == Some(2) {
        return true;
    }
    let marked = USAGE_ERROR_MARKERS
        .iter()
        .any(|(marker, _)| log_tail.contains(marker));
    marked
        || log_tail.lines().any(|line| {
            line.find("invalid value ").is_some_and(|at| {
                let after = &line[at..];
                after.contains(" for flag -") || after.contains(" for ETCD_")
            })
        })
}

#[cfg(test)]
mod tests;
