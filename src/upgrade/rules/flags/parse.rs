//! Reading flags: the flag list of a binary out of its `--help`, and this member's argument
//! vector split the way Go's `flag` package splits it.

use std::collections::BTreeMap;
use std::fmt;

use super::tables::{bare, in_list, KNOWN_BOOL_FLAGS};

/// The long flag names one etcd binary accepts, and which of them are boolean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagSet {
    /// Bare name (no dashes) to "is a boolean flag".
    flags: BTreeMap<String, bool>,
}

impl FlagSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a flag (`--name`, `-name` or `name`).
    pub fn insert(&mut self, name: &str, is_bool: bool) {
        self.flags.insert(bare(name).to_owned(), is_bool);
    }

    /// Whether the set holds the flag (`--name`, `-name` or `name`).
    pub fn contains(&self, name: &str) -> bool {
        self.flags.contains_key(bare(name))
    }

    /// Whether the flag is boolean, if the set holds it.
    pub fn is_bool(&self, name: &str) -> Option<bool> {
        self.flags.get(bare(name)).copied()
    }

    /// Number of flags.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether the set is empty (e.g. the help text was not etcd's).
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// The bare flag names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.flags.keys().map(String::as_str)
    }
}

/// Reads the flags out of `etcd --help`.
///
/// etcd prints each flag on its own line, indented, as `--name 'default'`, `--name 10` or
/// a bare `--name`, with its description on the following, deeper-indented lines. Usage
/// lines (`etcd --config-file`) start with `etcd` and are skipped. A flag is boolean when
/// its shown default is `true`/`false` or it is in [`KNOWN_BOOL_FLAGS`] (help omits some
/// defaults).
pub fn parse_help(help_text: &str) -> FlagSet {
    let mut set = FlagSet::new();
    for line in help_text.lines() {
        if !line.starts_with(char::is_whitespace) {
            continue;
        }
        let Some(rest) = line.trim_start().strip_prefix("--") else {
            continue;
        };
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            continue;
        }
        let default = rest[name_len..].trim().trim_matches('\'');
        let is_bool = default == "true" || default == "false" || in_list(KNOWN_BOOL_FLAGS, name);
        set.insert(name, is_bool);
    }
    set
}

/// One flag as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedFlag {
    /// Bare name, without dashes.
    pub name: String,
    /// The value, when one was given with `=` or taken from the next argument.
    pub value: Option<String>,
}

impl PassedFlag {
    /// `--name` as this module prints it.
    pub fn flag(&self) -> String {
        format!("--{}", self.name)
    }
}

impl fmt::Display for PassedFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "--{}={value}", self.name),
            None => write!(f, "--{}", self.name),
        }
    }
}

/// Splits etcd's arguments the way Go's `flag` package does.
///
/// `-name` and `--name` are the same; `--name=value` carries its value; a boolean flag
/// without `=` is true and never takes the next argument; any other flag takes the next
/// argument as its value, even one starting with `-`. Parsing stops at the first
/// non-flag argument or after `--`, as Go's does. `running` (the flag set of the version
/// this member runs) says which flags are boolean, with [`KNOWN_BOOL_FLAGS`] as fallback;
/// for a flag known to neither, the next argument is taken as its value unless it looks
/// like a flag (Go would have refused such a flag anyway).
pub fn parse_args(args: &[String], running: &FlagSet) -> Vec<PassedFlag> {
    let mut passed = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg.len() < 2 || !arg.starts_with('-') || arg == "--" {
            break;
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            break; // Go: "bad flag syntax"; etcd exits 2 before reading further.
        }
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (body, None),
        };
        let is_bool = running
            .is_bool(name)
            .or_else(|| in_list(KNOWN_BOOL_FLAGS, name).then_some(true));
        let value = match (value, is_bool) {
            (Some(value), _) => Some(value),
            (None, Some(true)) => None,
            (None, Some(false)) => rest.next().cloned(),
            (None, None) => match rest.as_slice().first() {
                Some(next) if !next.starts_with('-') => rest.next().cloned(),
                _ => None,
            },
        };
        passed.push(PassedFlag {
            name: name.to_owned(),
            value,
        });
    }
    passed
}
