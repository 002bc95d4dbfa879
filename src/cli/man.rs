//! The man pages and shell completions, generated from the clap definitions (the Debian
//! package ships their output; see the hidden `man` and `completions` subcommands).

use clap::CommandFactory;

use super::{Cli, ManArgs};

/// Why a man page could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ManError {
    /// No such subcommand.
    #[error("no man page for {0:?}; see `etcd-supervisor man --list`")]
    NoSuchPage(String),
    /// clap_mangen failed to render.
    #[error("cannot render the man page: {0}")]
    Render(#[from] std::io::Error),
}

/// `etcd-supervisor completions SHELL` (hidden): the completion script.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut public_command(), "etcd-supervisor", &mut out);
    out
}

/// The command line without its hidden subcommands: clap_complete would offer them.
fn public_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("etcd-supervisor")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .propagate_version(true);
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    for arg in full.get_arguments() {
        cmd = cmd.arg(arg.clone());
    }
    for sub in full.get_subcommands().filter(|c| !c.is_hide_set()) {
        cmd = cmd.subcommand(sub.clone());
    }
    cmd
}

/// `etcd-supervisor man [SUBCOMMAND | --list]` (hidden): a roff page. The main
/// page lists the subcommands (each has its own `etcd-supervisor-NAME(1)` page) and adds the
/// environment, files and exit status, which clap does not describe.
pub fn man(args: &ManArgs) -> Result<Vec<u8>, ManError> {
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let subcommands: Vec<clap::Command> = root
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    if args.list {
        let mut names = vec![root.get_name().to_owned()];
        names.extend(subcommands.iter().map(page_name));
        return Ok(format!("{}\n", names.join("\n")).into_bytes());
    }
    let mut out = Vec::new();
    match &args.subcommand {
        Some(name) => match subcommands.iter().find(|c| c.get_name() == name) {
            Some(sub) => clap_mangen::Man::new(sub.clone()).render(&mut out)?,
            None => return Err(ManError::NoSuchPage(name.clone())),
        },
        None => render_main_page(root, &mut out)?,
    }
    Ok(out)
}

/// `etcd-supervisor-run` for `run`: clap's display name of a built subcommand.
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned()
}

/// The main page: clap_mangen's sections, then ENVIRONMENT, FILES and EXIT STATUS.
fn render_main_page(root: clap::Command, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap_mangen::roff::{bold, roman, Roff};

    let mut env: Vec<(String, String)> = Vec::new();
    for sub in root.get_subcommands().filter(|c| !c.is_hide_set()) {
        for arg in sub.get_arguments() {
            let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let var = var.to_string_lossy().into_owned();
            let flag = format!("--{long}");
            match env.iter_mut().find(|(v, _)| *v == var) {
                Some((_, f)) if f.contains(&flag) => {}
                Some((_, f)) => f.push_str(&format!(", {flag}")),
                None => env.push((var, flag)),
            }
        }
    }
    env.sort();

    let page = clap_mangen::Man::new(root);
    page.render_title(w)?;
    page.render_name_section(w)?;
    page.render_synopsis_section(w)?;
    page.render_description_section(w)?;
    page.render_options_section(w)?;
    page.render_subcommands_section(w)?;

    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]).text([roman(
        "Every option also reads the variable named after it; a flag beats the variable. \
         ETCD_* variables pass through to etcd unchanged, and run reads the member name, \
         data dir, client URLs and TLS files from them as etcd does (with ETCD_CONFIG_FILE \
         or --config-file, from that YAML only, as etcd does).",
    )]);
    for (var, flags) in &env {
        roff.control("TP", [] as [&str; 0])
            .text([bold(var.as_str())])
            .text([roman(format!("same as {flags}"))]);
    }
    roff.control("TP", [] as [&str; 0])
        .text([bold(crate::config::PASSWORD_ENV)])
        .text([roman(
            "the password of --user (never a flag: ps shows flags)",
        )]);
    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/default/etcd-supervisor",
            "ETCD_SUPERVISOR_* settings read by the systemd unit",
        ),
        (
            "/etc/default/etcd",
            "etcd's own ETCD_* settings, shared with Debian's etcd unit",
        ),
        (
            "/var/lib/etcd-supervisor/versions/X.Y.Z/etcd",
            "pinned etcd binaries; current points at the one running",
        ),
        (
            "/var/lib/etcd-supervisor/staging/",
            "drop a new etcd and its NAME.sha256 here to roll it out",
        ),
        (
            "/var/lib/etcd-supervisor/backups/",
            "verified backups taken before each swap",
        ),
        (
            "/var/lib/etcd-supervisor/state.json",
            "the upgrade turn's persisted state",
        ),
    ] {
        roff.control("TP", [] as [&str; 0])
            .text([bold(path)])
            .text([roman(what)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, when) in [
        ("0", "etcd stopped as asked, or the command succeeded"),
        (
            "N, 128+N",
            "etcd's own exit code, or 128+N when etcd died of signal N",
        ),
        ("1", "a runtime failure the supervisor could not get past"),
        ("2", "a usage or configuration error"),
    ] {
        roff.control("TP", [] as [&str; 0])
            .text([bold(code)])
            .text([roman(when)]);
    }
    roff.control("SH", ["SEE ALSO"]).text([roman(
        "etcd(1), etcdctl(1), systemd.service(5), systemd.exec(5)",
    )]);
    roff.to_writer(w)?;
    page.render_version_section(w)
}
