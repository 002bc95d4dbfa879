//! `scripts/demo` runs end to end (plain output, this build's supervisor, a loopback
//! address and ports of the test's own): the rollout finishes, writes were acknowledged,
//! none lost, and nothing it started is left behind.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{wait_for, Net, SUPERVISOR};

#[test]
fn demo_rolls_three_members_and_loses_nothing() {
    let net = Net::allocate();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo");
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["--kill-after=10", "150"])
        .arg(&script)
        .args(["--plain", "--supervisor", SUPERVISOR])
        .env("DEMO_IP", &net.ip)
        .env("DEMO_PORT", net.port(0).to_string())
        .output()
        .expect("run scripts/demo");
    let took = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("rollout 3.5.16 -> 3.5.30: "), "{text}");
    assert!(text.contains("\nlost: 0\n"), "{text}");
    let acked: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("writes acknowledged: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of writes: {text}"));
    assert!(acked > 0, "{text}");
    // The rollout as status --watch showed it, in plain blocks.
    assert!(text.contains("upgrade turn: held by"), "{text}");
    assert!(!text.contains('\x1b'), "plain output: {text:?}");
    // Cleaned up: its temp dir and every process that ran from it are gone.
    let work = text
        .lines()
        .find_map(|l| l.strip_prefix("workdir: "))
        .and_then(|l| l.strip_suffix(" (removed)"))
        .unwrap_or_else(|| panic!("no workdir line: {text}"))
        .to_owned();
    assert!(!Path::new(&work).exists(), "{work} left behind");
    wait_for(Duration::from_secs(10), || {
        let left = Command::new("pgrep").args(["-f", &work]).output().ok()?;
        left.stdout.is_empty().then_some(())
    })
    .unwrap_or_else(|_| panic!("processes of {work} left running"));
    println!("demo took {took:?}:\n{text}");
}
