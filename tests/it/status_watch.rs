//! `status --watch` against a real cluster: in a real terminal (a tmux pane, captured) it
//! redraws in place and follows a rollout without holding up any member's stop (its watch
//! keeps off the turn holder's member); with stdout not a terminal it prints plain blocks,
//! one per change.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::rollout::{stage, wait_all_on, FAST};
use crate::support::{wait_for, Cluster, Proc, Release, SUPERVISOR};

const HEADER: &str = "etcd-supervisor status --watch";

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str) -> Tmux {
        Tmux {
            socket: format!("etcd-sup-watch-{}-{tag}", std::process::id()),
        }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// The visible pane, or the whole history with `-S -`.
    fn capture(&self, extra: &[&str]) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "w"];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&self.cmd(&args).stdout).into_owned()
    }

    fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", "w"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// A member row of a screen, cut at the header's column offsets (the ROLE cell may be
/// empty, so splitting at whitespace would shift the columns).
#[derive(Debug)]
struct Row {
    version: String,
    phase: String,
}

/// The member rows of the last frame on a screen.
fn rows(screen: &str) -> Vec<Row> {
    let Some(header) = screen.lines().rfind(|l| l.starts_with("NAME ")) else {
        return Vec::new();
    };
    let at = |col: &str| header.find(col).expect("column");
    let cell = |line: &str, col: &str| {
        let start = at(col);
        line.get(start..)
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned()
    };
    screen
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| ["m1 ", "m2 ", "m3 "].iter().any(|p| l.starts_with(p)))
        .map(|l| Row {
            version: cell(l, "VERSION"),
            phase: cell(l, "PHASE"),
        })
        .collect()
}

#[test]
fn watch_in_a_terminal_redraws_in_place_and_follows_a_rollout() {
    // From 3.5.30: etcd's graceful stop waits for open watches from there on, so a watch
    // left on the member about to stop would show as a slow stop.
    let (from, to) = (Release::V3_5Newest, Release::V3_5Go);
    let (from_v, to_v) = (from.version(), to.version());
    let cluster = Cluster::start_supervised(from, 3, FAST);
    let tmux = Tmux::new(&cluster.net.base_port.to_string());
    let stderr = cluster.dir().join("watch.stderr");
    let command = format!(
        "{SUPERVISOR} status --watch --interval 300ms --endpoints {} 2>{}",
        cluster.client_urls().join(","),
        stderr.display()
    );
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "w",
        "-x",
        "150",
        "-y",
        "30",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let first = wait_for(Duration::from_secs(20), || {
        let screen = tmux.capture(&[]);
        let r = rows(&screen);
        (r.len() == 3 && r.iter().all(|row| row.version == from_v)).then_some(screen)
    })
    .unwrap_or_else(|_| panic!("no members on screen: {}", tmux.capture(&[])));
    assert!(
        first.starts_with(HEADER),
        "the frame starts at the top:\n{first}"
    );
    assert!(first.contains("upgrade turn: free"), "{first}");
    assert!(!first.contains('\x1b'), "{first}");

    for i in 0..3 {
        stage(&cluster, i, &to.etcd());
    }
    // Sample the screen as the rollout moves: someone holds the turn with a phase shown,
    // then every member runs the target and is idle again.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut moving, mut done) = (None, None);
    while Instant::now() < deadline && done.is_none() {
        let screen = tmux.capture(&[]);
        let r = rows(&screen);
        if moving.is_none()
            && screen.contains("upgrade turn: held by")
            && r.iter().any(|row| row.phase != "idle" && row.phase != "-")
        {
            moving = Some(screen.clone());
        }
        if r.len() == 3
            && r.iter()
                .all(|row| row.version == to_v && row.phase == "idle")
            && screen.contains("turn: free")
        {
            done = Some(screen);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let moving = moving.unwrap_or_else(|| panic!("never saw the turn held: {}", tmux.capture(&[])));
    let done = done.unwrap_or_else(|| {
        panic!(
            "never saw all on {to_v}: {}\n{}",
            tmux.capture(&[]),
            cluster.logs()
        )
    });
    println!(
        "--- status --watch mid-rollout ---\n{}\n--- after ---\n{}",
        moving.trim_end(),
        done.trim_end()
    );
    // Drawn in place: the header once in the whole history, nothing scrolled off.
    let history = tmux.capture(&["-S", "-"]);
    assert_eq!(history.matches(HEADER).count(), 1, "scrolled:\n{history}");
    wait_all_on(&cluster, &to_v, Duration::from_secs(10));
    // The watch stayed off each member while it stopped: no stop waited for it.
    let stops = crate::fast_stop::swap_stops(&cluster);
    assert_eq!(stops.len(), 3, "{stops:#?}");
    assert!(
        stops.iter().all(|l| crate::fast_stop::quick_clean_stop(l)),
        "a stop held up (by our watch?): {stops:#?}"
    );

    // Ctrl-C ends it (the pane's only process), with the cursor shown again.
    tmux.cmd(&["send-keys", "-t", "w", "C-c"]);
    wait_for(Duration::from_secs(10), || (!tmux.alive()).then_some(()))
        .expect("status --watch stops on Ctrl-C");
    let errors = fs::read_to_string(&stderr).unwrap_or_default();
    assert!(!errors.contains("ERROR"), "{errors}");
}

#[test]
fn watch_without_a_terminal_prints_a_block_per_change() {
    let cluster = Cluster::start_supervised(Release::V3_5, 1, FAST);
    let out = cluster.dir().join("watch.out");
    let mut watch = Proc::spawn(
        Command::new(SUPERVISOR).args([
            "status",
            "--watch",
            "--interval",
            "200ms",
            "--endpoints",
            &cluster.client_urls()[0],
        ]),
        &out,
    );
    let text = || fs::read_to_string(&out).unwrap_or_default();
    wait_for(Duration::from_secs(20), || {
        text().contains("upgrade turn: free").then_some(())
    })
    .unwrap_or_else(|_| panic!("no first block: {}", text()));
    // Nothing changes: no new block, however many times it asks.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(text().matches(HEADER).count(), 1, "{}", text());
    stage(&cluster, 0, &Release::V3_5Newest.etcd());
    wait_all_on(&cluster, "3.5.30", Duration::from_secs(90));
    wait_for(Duration::from_secs(20), || {
        let t = text();
        let last = t.rsplit(HEADER).next().unwrap_or_default().to_owned();
        let r = rows(&last);
        (r.len() == 1 && r[0].version == "3.5.30" && last.contains("turn: free")).then_some(())
    })
    .unwrap_or_else(|_| panic!("the new version never showed: {}", text()));
    let t = text();
    let blocks = t.matches(HEADER).count();
    assert!(blocks >= 3, "a block per change (staged, turn, done): {t}");
    assert!(!t.contains('\x1b'), "plain text only: {t:?}");
    watch.signal(Signal::SIGINT);
    let status = watch
        .wait_timeout(Duration::from_secs(10))
        .expect("stops on SIGINT");
    assert_eq!(status.code(), Some(0), "{t}");
}
