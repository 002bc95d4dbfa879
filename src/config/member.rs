//! This member's etcd configuration, read once with etcd's own precedence.
//!
//! etcd (3.4 to 3.7, `etcdmain/config.go`) reads `--config-file`, else `ETCD_CONFIG_FILE`;
//! with a file it ignores every other flag and `ETCD_*` variable and takes the YAML
//! (through sigs.k8s.io/yaml, so YAML types as JSON sees them: strings, booleans, lists,
//! the nested `client-transport-security` / `peer-transport-security`), with its defaults
//! for what the file leaves out. Without a file, a flag beats its variable, which beats
//! etcd's default. [`read`] is pure: the caller reads the file and passes its text.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use yaml_serde::Value;

/// etcd's default client URL (listen and advertise).
const DEFAULT_CLIENT_URL: &str = "http://localhost:2379";

/// Where one setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A flag after `--` (`--name`).
    Flag(String),
    /// An `ETCD_*` variable.
    Env(String),
    /// A key of the config file.
    File(PathBuf),
    /// etcd's own default.
    EtcdDefault,
    /// The supervisor's choice where etcd's default does not fit (the data dir).
    Supervisor,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "flag --{name}"),
            Source::Env(var) => write!(f, "{var}"),
            Source::File(path) => write!(f, "config file {}", path.display()),
            Source::EtcdDefault => f.write_str("etcd's default"),
            Source::Supervisor => f.write_str("the supervisor's default"),
        }
    }
}

/// TLS of one side (client or peer), as etcd is told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// `cert-file`.
    pub cert_file: Option<PathBuf>,
    /// `key-file`.
    pub key_file: Option<PathBuf>,
    /// `trusted-ca-file`.
    pub trusted_ca_file: Option<PathBuf>,
    /// `client-cert-auth`.
    pub client_cert_auth: bool,
    /// `auto-tls`.
    pub auto_tls: bool,
}

/// What the supervisor knows about the etcd member it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `name`, etcd's default `default`.
    pub name: String,
    /// `data-dir`; etcd's default is `<name>.etcd` in its working directory (with flags,
    /// the supervisor passes `<state-dir>/<name>.etcd` instead).
    pub data_dir: PathBuf,
    /// `wal-dir`, when the WAL is kept outside the data dir.
    pub wal_dir: Option<PathBuf>,
    /// URLs at which this member's client API answers on this host.
    pub client_urls: Vec<String>,
    /// URLs other hosts reach this member's client API at (`advertise-client-urls`,
    /// etcd's default `http://localhost:2379`).
    pub advertised_client_urls: Vec<String>,
    /// `--config-file` / `ETCD_CONFIG_FILE` (absolute), when etcd reads one.
    pub config_file: Option<PathBuf>,
    /// `enable-v2` (a v2 store to check before 3.6).
    pub v2_enabled: bool,
    /// `quota-backend-bytes` as given (0 or absent: etcd's default; negative: no quota).
    pub quota_backend_bytes: Option<i64>,
    /// `initial-cluster`, as given.
    pub initial_cluster: Option<String>,
    /// Client TLS (`client-transport-security` in a file).
    pub client_tls: Tls,
    /// Peer TLS (`peer-transport-security` in a file).
    pub peer_tls: Tls,
    /// Where each setting above came from, by etcd's name for it.
    pub sources: BTreeMap<String, Source>,
    /// True when the supervisor must pass `--data-dir` itself (flags, none given).
    pub data_dir_added: bool,
}

/// The member's configuration is unusable: said before anything stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberConfigError {
    /// The YAML does not parse.
    #[error("etcd's config file {path} is not valid YAML{at}: {message}; etcd would refuse it too: fix the file (nothing is started or stopped until it parses)", at = line.map(|(l, c)| format!(" at line {l} column {c}")).unwrap_or_default())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Line and column, 1-based, when known.
        line: Option<(usize, usize)>,
        /// The parser's words.
        message: String,
    },
    /// A key has a type etcd cannot read into its setting.
    #[error("etcd's config file {path}: `{key}` {problem}; etcd would refuse it: fix the file")]
    Type {
        /// The file.
        path: PathBuf,
        /// The key (`client-transport-security.cert-file` for nested ones).
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// Reads the member's configuration. `file` is the config file etcd will read (flag, else
/// variable, made absolute) with its text; relative paths resolve against `cwd` (etcd's
/// working directory, which it inherits from the supervisor); `state_dir` holds the data
/// dir the supervisor chooses when flags name none.
pub fn read(
    flags: &HashMap<String, String>,
    env: &HashMap<String, String>,
    file: Option<(&Path, &str)>,
    cwd: &Path,
    state_dir: &Path,
) -> Result<Member, MemberConfigError> {
    match file {
        Some((path, text)) => from_file(path, text, cwd),
        None => Ok(from_flags(flags, env, cwd, state_dir)),
    }
}

/// The config file etcd reads: `--config-file`, else `ETCD_CONFIG_FILE` (etcd reads that
/// variable separately, before deciding whether to look at any other), made absolute.
pub fn config_file(
    flags: &HashMap<String, String>,
    env: &HashMap<String, String>,
    cwd: &Path,
) -> Option<(PathBuf, Source)> {
    let (value, source) = match flags.get("config-file").filter(|v| !v.is_empty()) {
        Some(v) => (v.clone(), Source::Flag("config-file".into())),
        None => (
            env.get("ETCD_CONFIG_FILE")
                .filter(|v| !v.is_empty())?
                .clone(),
            Source::Env("ETCD_CONFIG_FILE".into()),
        ),
    };
    Some((cwd.join(value), source))
}

fn from_flags(
    flags: &HashMap<String, String>,
    env: &HashMap<String, String>,
    cwd: &Path,
    state_dir: &Path,
) -> Member {
    let mut sources = BTreeMap::new();
    let mut lookup = |flag: &str| -> Option<String> {
        let var = format!("ETCD_{}", flag.replace('-', "_").to_uppercase());
        if let Some(v) = flags.get(flag) {
            sources.insert(flag.to_owned(), Source::Flag(flag.to_owned()));
            return Some(v.clone());
        }
        let v = env.get(&var).filter(|v| !v.is_empty())?;
        sources.insert(flag.to_owned(), Source::Env(var));
        Some(v.clone())
    };
    let truthy = |v: Option<String>| {
        v.is_some_and(|v| matches!(v.as_str(), "true" | "1" | "t" | "T" | "TRUE" | "True"))
    };
    let name = lookup("name").unwrap_or_else(|| "default".to_owned());
    let given_dir = lookup("data-dir");
    let data_dir_added = given_dir.is_none();
    // etcd's own default is "<name>.etcd" in its working directory, which under systemd
    // is "/": keep the data with the rest of our state instead.
    let data_dir = match given_dir {
        Some(dir) => cwd.join(dir),
        None => state_dir.join(format!("{name}.etcd")),
    };
    let wal_dir = lookup("wal-dir").map(|d| cwd.join(d));
    let advertised = lookup("advertise-client-urls");
    let listening = lookup("listen-client-urls");
    let tls = |prefix: &str, lookup: &mut dyn FnMut(&str) -> Option<String>| Tls {
        cert_file: lookup(&format!("{prefix}cert-file")).map(|p| cwd.join(p)),
        key_file: lookup(&format!("{prefix}key-file")).map(|p| cwd.join(p)),
        trusted_ca_file: lookup(&format!("{prefix}trusted-ca-file")).map(|p| cwd.join(p)),
        client_cert_auth: truthy(lookup(&format!("{prefix}client-cert-auth"))),
        auto_tls: truthy(lookup(&format!("{prefix}auto-tls"))),
    };
    let client_tls = tls("", &mut lookup);
    let peer_tls = tls("peer-", &mut lookup);
    let v2_enabled = truthy(lookup("enable-v2"));
    // Unparsable is etcd's to refuse at start; here it only loses a warning.
    let quota_backend_bytes = lookup("quota-backend-bytes").and_then(|q| q.trim().parse().ok());
    let initial_cluster = lookup("initial-cluster");
    for key in ["name", "advertise-client-urls", "listen-client-urls"] {
        sources.entry(key.to_owned()).or_insert(Source::EtcdDefault);
    }
    sources
        .entry("data-dir".to_owned())
        .or_insert(Source::Supervisor);
    Member {
        name,
        data_dir,
        wal_dir,
        client_urls: local_client_urls(advertised.as_deref(), listening.as_deref()),
        advertised_client_urls: split_urls(advertised.as_deref().unwrap_or(DEFAULT_CLIENT_URL)),
        config_file: None,
        v2_enabled,
        quota_backend_bytes,
        initial_cluster,
        client_tls,
        peer_tls,
        sources,
        data_dir_added,
    }
}

fn from_file(path: &Path, text: &str, cwd: &Path) -> Result<Member, MemberConfigError> {
    let doc: Value = yaml_serde::from_str(text).map_err(|e| MemberConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.location().map(|l| (l.line(), l.column())),
        // The parser's words without its own " at line L column C": said once, above.
        message: match e.location() {
            Some(l) => e
                .to_string()
                .replace(&format!(" at line {} column {}", l.line(), l.column()), ""),
            None => e.to_string(),
        },
    })?;
    let file = YamlFile {
        path,
        root: match doc {
            // An empty file is etcd's defaults throughout.
            Value::Null => yaml_serde::Mapping::new(),
            Value::Mapping(m) => m,
            _ => {
                return Err(MemberConfigError::Type {
                    path: path.to_path_buf(),
                    key: "(top level)".into(),
                    problem: "is not a mapping of etcd's settings".into(),
                })
            }
        },
    };
    let mut sources = BTreeMap::new();
    let mut note = |key: &str, given: bool| {
        let source = if given {
            Source::File(path.to_path_buf())
        } else {
            Source::EtcdDefault
        };
        sources.insert(key.to_owned(), source);
    };
    let name = file.string(&file.root, "name", "name")?;
    note("name", name.is_some());
    let name = name.unwrap_or_else(|| "default".to_owned());
    let data_dir = file.string(&file.root, "data-dir", "data-dir")?;
    note("data-dir", data_dir.is_some());
    let data_dir = cwd.join(data_dir.unwrap_or_else(|| format!("{name}.etcd")));
    let wal_dir = file
        .string(&file.root, "wal-dir", "wal-dir")?
        .map(|d| cwd.join(d));
    let advertised = file.string(&file.root, "advertise-client-urls", "advertise-client-urls")?;
    note("advertise-client-urls", advertised.is_some());
    let listening = file.string(&file.root, "listen-client-urls", "listen-client-urls")?;
    note("listen-client-urls", listening.is_some());
    let v2_enabled = file.boolean(&file.root, "enable-v2", "enable-v2")?;
    let quota_backend_bytes = file.integer(&file.root, "quota-backend-bytes")?;
    let initial_cluster = file.string(&file.root, "initial-cluster", "initial-cluster")?;
    let client_tls = file.tls("client-transport-security", cwd)?;
    let peer_tls = file.tls("peer-transport-security", cwd)?;
    sources.insert("config-file".to_owned(), Source::File(path.to_path_buf()));
    Ok(Member {
        name,
        data_dir,
        wal_dir,
        client_urls: local_client_urls(advertised.as_deref(), listening.as_deref()),
        advertised_client_urls: split_urls(advertised.as_deref().unwrap_or(DEFAULT_CLIENT_URL)),
        config_file: Some(path.to_path_buf()),
        v2_enabled,
        quota_backend_bytes,
        initial_cluster,
        client_tls,
        peer_tls,
        sources,
        data_dir_added: false,
    })
}

/// A parsed config file, for typed reads that name the key on error.
struct YamlFile<'a> {
    path: &'a Path,
    root: yaml_serde::Mapping,
}

impl YamlFile<'_> {
    fn type_error(&self, key: &str, problem: &str) -> MemberConfigError {
        MemberConfigError::Type {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            problem: problem.to_owned(),
        }
    }

    /// A string setting; null or absent is unset (etcd keeps its default), an empty string
    /// too (etcd treats it as not given).
    fn string(
        &self,
        map: &yaml_serde::Mapping,
        key: &str,
        shown: &str,
    ) -> Result<Option<String>, MemberConfigError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Sequence(_)) => Err(self.type_error(
                shown,
                "is a list; etcd reads it as one string (comma-separated URLs)",
            )),
            Some(_) => Err(self.type_error(shown, "must be a string (quote it)")),
        }
    }

    /// A boolean setting; null or absent is false (etcd's default for all of them).
    fn boolean(
        &self,
        map: &yaml_serde::Mapping,
        key: &str,
        shown: &str,
    ) -> Result<bool, MemberConfigError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.type_error(shown, "must be true or false (unquoted)")),
        }
    }

    /// An integer setting; null or absent is unset.
    fn integer(
        &self,
        map: &yaml_serde::Mapping,
        key: &str,
    ) -> Result<Option<i64>, MemberConfigError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.type_error(key, "must be a whole number of bytes")),
            Some(_) => Err(self.type_error(key, "must be a number (unquoted)")),
        }
    }

    fn tls(&self, section: &str, cwd: &Path) -> Result<Tls, MemberConfigError> {
        let map = match self.root.get(section) {
            None | Some(Value::Null) => return Ok(Tls::default()),
            Some(Value::Mapping(m)) => m,
            Some(_) => return Err(self.type_error(section, "must be a mapping of TLS settings")),
        };
        let path = |key: &str| -> Result<Option<PathBuf>, MemberConfigError> {
            Ok(self
                .string(map, key, &format!("{section}.{key}"))?
                .map(|p| cwd.join(p)))
        };
        Ok(Tls {
            cert_file: path("cert-file")?,
            key_file: path("key-file")?,
            trusted_ca_file: path("trusted-ca-file")?,
            client_cert_auth: self.boolean(
                map,
                "client-cert-auth",
                &format!("{section}.client-cert-auth"),
            )?,
            auto_tls: self.boolean(map, "auto-tls", &format!("{section}.auto-tls"))?,
        })
    }
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Client URLs reachable from this host: listening ones first (wildcard hosts replaced by
/// loopback, so the local member is asked on this host), then advertised ones. etcd's
/// default is `http://localhost:2379`.
fn local_client_urls(advertised: Option<&str>, listening: Option<&str>) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    let split = |s: &str| -> Vec<String> {
        split_urls(s)
            .into_iter()
            .filter(|u| !u.starts_with("unix"))
            .map(|u| {
                u.replace("://0.0.0.0", "://127.0.0.1")
                    .replace("://[::]", "://[::1]")
            })
            .collect()
    };
    for url in listening
        .map(split)
        .unwrap_or_default()
        .into_iter()
        .chain(advertised.map(split).unwrap_or_default())
    {
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    if urls.is_empty() {
        urls.push(DEFAULT_CLIENT_URL.to_owned());
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcd's etcd.conf.yml.sample (v3.5.16), trimmed to the keys read here.
    const SAMPLE: &str = "\
# This is the configuration file for the etcd server.
name: 'm1'
data-dir: /var/lib/etcd/m1
wal-dir:
snapshot-count: 10000
listen-peer-urls: http://10.0.0.1:2380
listen-client-urls: https://10.0.0.1:2379,https://127.0.0.1:2379
advertise-client-urls: https://10.0.0.1:2379
initial-cluster: m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380
enable-v2: true
proxy: 'off'
client-transport-security:
  cert-file: /etc/etcd/server.pem
  key-file: server-key.pem
  client-cert-auth: true
  trusted-ca-file: /etc/etcd/ca.pem
  auto-tls: false
peer-transport-security:
  cert-file:
  auto-tls: true
log-outputs: [stderr]
";

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> Result<Member, MemberConfigError> {
        read(
            &map(&[("name", "ignored")]),
            &map(&[("ETCD_DATA_DIR", "/ignored")]),
            Some((Path::new("/etc/etcd/etcd.yml"), text)),
            Path::new("/work"),
            Path::new("/var/lib/es"),
        )
    }

    #[test]
    fn the_sample_is_read_with_yaml_types_and_flags_are_ignored() {
        let m = file(SAMPLE).unwrap();
        assert_eq!(m.name, "m1");
        assert_eq!(m.data_dir, PathBuf::from("/var/lib/etcd/m1"));
        assert_eq!(m.wal_dir, None);
        assert_eq!(
            m.client_urls,
            ["https://10.0.0.1:2379", "https://127.0.0.1:2379"]
        );
        assert_eq!(m.advertised_client_urls, ["https://10.0.0.1:2379"]);
        assert!(m.v2_enabled);
        assert_eq!(
            m.initial_cluster.as_deref(),
            Some("m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380")
        );
        assert_eq!(
            m.client_tls,
            Tls {
                cert_file: Some("/etc/etcd/server.pem".into()),
                key_file: Some("/work/server-key.pem".into()),
                trusted_ca_file: Some("/etc/etcd/ca.pem".into()),
                client_cert_auth: true,
                auto_tls: false,
            }
        );
        assert!(m.peer_tls.auto_tls && m.peer_tls.cert_file.is_none());
        assert_eq!(m.config_file, Some(PathBuf::from("/etc/etcd/etcd.yml")));
        assert!(!m.data_dir_added);
        assert_eq!(
            m.sources["name"],
            Source::File(PathBuf::from("/etc/etcd/etcd.yml"))
        );
    }

    #[test]
    fn what_the_file_leaves_out_takes_etcds_defaults() {
        let m = file("snapshot-count: 5\n").unwrap();
        assert_eq!(m.name, "default");
        assert_eq!(m.data_dir, PathBuf::from("/work/default.etcd"));
        assert_eq!(m.client_urls, ["http://localhost:2379"]);
        assert_eq!(m.sources["data-dir"], Source::EtcdDefault);
        let empty = file("").unwrap();
        assert_eq!(empty.name, "default");
        let named = file("name: db1\n").unwrap();
        assert_eq!(named.data_dir, PathBuf::from("/work/db1.etcd"));
    }

    #[test]
    fn bad_yaml_names_the_file_and_the_line() {
        let err = file("name: m1\ndata-dir: [unclosed\nx: 1\n").unwrap_err();
        match &err {
            MemberConfigError::Syntax { path, line, .. } => {
                assert_eq!(path, Path::new("/etc/etcd/etcd.yml"));
                assert!(line.is_some_and(|(l, _)| l >= 2), "{line:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("/etc/etcd/etcd.yml"), "{err}");
        assert!(err.to_string().contains("line"), "{err}");
        // The location is said once, not again in the parser's words.
        let (l, c) = match &err {
            MemberConfigError::Syntax { line: Some(at), .. } => *at,
            _ => unreachable!(),
        };
        let at = format!("line {l} column {c}");
        assert_eq!(err.to_string().matches(&at).count(), 1, "{err}");
    }

    #[test]
    fn wrong_types_are_named_by_key() {
        let err = file("listen-client-urls: [http://a:1, http://b:2]\n").unwrap_err();
        assert!(err.to_string().contains("listen-client-urls"), "{err}");
        let err = file("client-transport-security:\n  client-cert-auth: 'yes'\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("client-transport-security.client-cert-auth"),
            "{err}"
        );
        let err = file("- a\n- b\n").unwrap_err();
        assert!(err.to_string().contains("mapping"), "{err}");
    }

    #[test]
    fn the_config_file_flag_beats_its_variable_and_is_made_absolute() {
        let cwd = Path::new("/srv");
        let (p, s) = config_file(
            &map(&[("config-file", "etcd.yml")]),
            &map(&[("ETCD_CONFIG_FILE", "/x.yml")]),
            cwd,
        )
        .unwrap();
        assert_eq!(
            (p, s),
            ("/srv/etcd.yml".into(), Source::Flag("config-file".into()))
        );
        let (p, s) = config_file(&map(&[]), &map(&[("ETCD_CONFIG_FILE", "/x.yml")]), cwd).unwrap();
        assert_eq!(
            (p, s),
            ("/x.yml".into(), Source::Env("ETCD_CONFIG_FILE".into()))
        );
        assert_eq!(config_file(&map(&[]), &map(&[]), cwd), None);
    }

    #[test]
    fn flags_read_tls_and_say_where_each_setting_came_from() {
        let m = read(
            &map(&[
                ("name", "m1"),
                ("cert-file", "/c.pem"),
                ("client-cert-auth", "true"),
            ]),
            &map(&[("ETCD_TRUSTED_CA_FILE", "/ca.pem"), ("ETCD_NAME", "env")]),
            None,
            Path::new("/"),
            Path::new("/var/lib/es"),
        )
        .unwrap();
        assert_eq!(m.name, "m1");
        assert_eq!(m.sources["name"], Source::Flag("name".into()));
        assert_eq!(
            m.sources["trusted-ca-file"],
            Source::Env("ETCD_TRUSTED_CA_FILE".into())
        );
        assert_eq!(m.sources["data-dir"], Source::Supervisor);
        assert!(m.client_tls.client_cert_auth);
        assert_eq!(m.client_tls.trusted_ca_file, Some("/ca.pem".into()));
        assert!(m.data_dir_added);
    }

    #[test]
    fn the_quota_is_read_from_a_flag_before_its_variable_and_as_a_number_from_a_file() {
        let flags = |f: &[(&str, &str)], e: &[(&str, &str)]| {
            read(&map(f), &map(e), None, Path::new("/"), Path::new("/s"))
                .unwrap()
                .quota_backend_bytes
        };
        let env = [("ETCD_QUOTA_BACKEND_BYTES", "4096")];
        assert_eq!(flags(&[("quota-backend-bytes", "8192")], &env), Some(8192));
        assert_eq!(flags(&[], &env), Some(4096));
        assert_eq!(flags(&[("quota-backend-bytes", "-1")], &[]), Some(-1));
        assert_eq!(flags(&[], &[]), None);
        assert_eq!(flags(&[("quota-backend-bytes", "8GB")], &[]), None);
        assert_eq!(
            file("quota-backend-bytes: 8589934592\n")
                .unwrap()
                .quota_backend_bytes,
            Some(8 << 30)
        );
        assert_eq!(file("name: m1\n").unwrap().quota_backend_bytes, None);
        let err = file("quota-backend-bytes: '8589934592'\n").unwrap_err();
        assert!(err.to_string().contains("quota-backend-bytes"), "{err}");
    }
}
