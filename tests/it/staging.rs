//! Staging: a drop becomes a pinned candidate only when whole and checked; every bad input is
//! quarantined in `rejected/` with its own reason, and is never executed.
//!
//! Most tests drive the library's watcher directly (with a [`Reaper`] in this process, so
//! they need nextest's process-per-test). Bad drops are shell scripts that record every run
//! in `marks/ran` (`$0 $*`) and create `marks/served` when run as a server: "never executed"
//! means `ran` does not exist; where the private copy must be probed, `ran` holds exactly one
//! `--version` run of a copy under `versions/.install-*`, and `served` never appears.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_supervisor::process::reaper::Reaper;
use etcd_supervisor::staging::{Candidate, StagingError, StagingWatcher, WatchOptions};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::support::mounts::is_root;
use crate::support::{Release, SUPERVISOR};

const CANDIDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Log lines of this test's thread (the watcher runs on the test's current-thread runtime).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Fixture {
    staging: PathBuf,
    state: PathBuf,
    marks: PathBuf,
    logs: Logs,
    reaper: Option<Reaper>,
    watcher: Option<(StagingWatcher, mpsc::Receiver<Candidate>)>,
    _log_guard: tracing::subscriber::DefaultGuard,
    // Dropped last.
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("etcd-sup-staging-")
            .tempdir()
            .unwrap();
        let staging = tmp.path().join("staging");
        let state = tmp.path().join("state");
        let marks = tmp.path().join("marks");
        for dir in [&staging, &state, &marks] {
            fs::create_dir(dir).unwrap();
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        Fixture {
            staging,
            state,
            marks,
            logs,
            reaper: None,
            watcher: None,
            _log_guard: guard,
            tmp,
        }
    }

    fn options(&self) -> WatchOptions {
        WatchOptions {
            probe_timeout: Duration::from_secs(2),
            ..WatchOptions::new(&self.staging, &self.state)
        }
    }

    fn reaper(&mut self) -> Reaper {
        self.reaper
            .get_or_insert_with(|| Reaper::start().unwrap())
            .clone()
    }

    fn start(&mut self) {
        let opts = self.options();
        self.start_with(opts);
    }

    fn start_with(&mut self, opts: WatchOptions) {
        let reaper = self.reaper();
        self.watcher = Some(StagingWatcher::start(opts, reaper).expect("watcher starts"));
    }

    fn stop(&mut self) {
        self.watcher = None;
    }

    async fn candidate(&mut self) -> Candidate {
        let rx = &mut self.watcher.as_mut().expect("watcher running").1;
        match tokio::time::timeout(CANDIDATE_TIMEOUT, rx.recv()).await {
            Ok(Some(c)) => c,
            other => panic!(
                "no candidate within {CANDIDATE_TIMEOUT:?} ({other:?}); staging: {:?}; log:\n{}",
                self.listing(&self.staging),
                self.logs.text()
            ),
        }
    }

    async fn no_candidate(&mut self, wait: Duration) {
        let rx = &mut self.watcher.as_mut().expect("watcher running").1;
        if let Ok(Some(c)) = tokio::time::timeout(wait, rx.recv()).await {
            panic!("unexpected candidate {c:?}");
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    fn write(&self, name: &str, bytes: &[u8], mode: u32) {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Writes `NAME.sha256` for `bytes`, in sha256sum's format.
    fn write_sum(&self, name: &str, bytes: &[u8]) {
        self.write(
            &format!("{name}.sha256"),
            format!("{}  {name}\n", sha256(bytes)).as_bytes(),
            0o644,
        );
    }

    /// A shell script that records each run and would "serve" when run without --version.
    fn trap(&self, on_version: &str) -> Vec<u8> {
        let marks = self.marks.display();
        format!(
            "#!/bin/sh\necho \"$0 $*\" >> {marks}/ran\nif [ \"$1\" = \"--version\" ]; then\n{on_version}\nexit 0\nfi\ntouch {marks}/served\n"
        )
        .into_bytes()
    }

    fn ran(&self) -> Vec<String> {
        fs::read_to_string(self.marks.join("ran"))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn served(&self) -> bool {
        self.marks.join("served").exists()
    }

    fn listing(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Everything under `versions/`, temp dirs included.
    fn versions(&self) -> Vec<String> {
        self.listing(&self.state.join("versions"))
    }

    /// Waits for `rejected/NAME.reason` and returns it.
    async fn reason(&self, name: &str) -> String {
        let path = self.staging.join("rejected").join(format!("{name}.reason"));
        let deadline = Instant::now() + CANDIDATE_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                if text.ends_with('\n') {
                    return text;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} was not refused; staging: {:?}; log:\n{}",
                self.listing(&self.staging),
                self.logs.text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for `accepted/NAME.accepted` (written once the move is done) and returns it.
    async fn accepted(&self, name: &str) -> String {
        let path = self
            .staging
            .join("accepted")
            .join(format!("{name}.accepted"));
        let deadline = Instant::now() + CANDIDATE_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{name} was not moved to accepted/; staging: {:?}",
                self.listing(&self.staging)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `name` is refused and checks the common promises: one reason line with
    /// a time and `needle`, the file (and its checksum) moved, nothing pinned, no temp dir
    /// left, nothing run.
    async fn assert_refused(&self, name: &str, needle: &str) -> String {
        let reason = self.reason(name).await;
        assert_eq!(reason.lines().count(), 1, "one line: {reason}");
        assert!(reason.contains(needle), "expected {needle:?} in: {reason}");
        assert!(
            reason.starts_with("20") && reason.contains("Z refused: "),
            "a UTC time first: {reason}"
        );
        let rejected = self.staging.join("rejected");
        assert!(
            fs::symlink_metadata(rejected.join(name)).is_ok(),
            "{name} kept in rejected/: {:?}",
            self.listing(&rejected)
        );
        assert!(
            fs::symlink_metadata(self.path(name)).is_err(),
            "{name} still staged"
        );
        assert!(
            !self.path(&format!("{name}.sha256")).exists(),
            "checksum still staged"
        );
        assert!(
            self.versions().iter().all(|v| !v.starts_with('.')),
            "temp dir left: {:?}",
            self.versions()
        );
        assert!(!self.served(), "a refused file was run as a server");
        reason
    }

    fn assert_never_ran(&self) {
        assert!(
            self.ran().is_empty(),
            "a refused file was executed: {:?}",
            self.ran()
        );
        assert!(!self.served());
    }

    /// The only runs are one `--version` of a private copy under versions/.install-*.
    fn assert_only_the_copy_was_probed(&self) {
        let ran = self.ran();
        let prefix = format!("{}/.install-", self.state.join("versions").display());
        assert_eq!(ran.len(), 1, "exactly one run: {ran:?}");
        assert!(
            ran[0].starts_with(&prefix) && ran[0].ends_with("/etcd --version"),
            "the private copy was probed, not the staged file: {ran:?}"
        );
        assert!(!self.served(), "the refused binary was run as a server");
    }
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---- bad inputs: refused with their own reason, never executed -------------------------

#[tokio::test]
async fn bad_checksum_is_refused_and_never_run() {
    let mut fx = Fixture::new();
    fx.start();
    let script = fx.trap("echo 'etcd Version: 3.5.16'");
    fx.write("etcd-bad", &script, 0o755);
    fx.write_sum("etcd-bad", b"other bytes");
    let reason = fx.assert_refused("etcd-bad", "does not match").await;
    assert!(reason.contains("from etcd-bad.sha256"), "{reason}");
    assert!(fx.staging.join("rejected/etcd-bad.sha256").exists());
    assert_eq!(read(&fx.staging.join("rejected/etcd-bad")), script);
    fx.assert_never_ran();
    assert!(fx.versions().is_empty());
}

#[tokio::test]
async fn malformed_checksum_file_is_refused() {
    let mut fx = Fixture::new();
    fx.start();
    fx.write("etcd-mal", &fx.trap("echo 'etcd Version: 3.5.16'"), 0o755);
    fx.write("etcd-mal.sha256", b"not a checksum\n", 0o644);
    fx.assert_refused("etcd-mal", "malformed").await;
    fx.assert_never_ran();
}

#[tokio::test]
async fn missing_checksum_waits_with_one_log_line_and_nothing_runs() {
    let mut fx = Fixture::new();
    fx.start();
    fx.write("etcd-nosum", &fx.trap("echo 'etcd Version: 3.5.16'"), 0o755);
    // Keep the directory busy: every write is an event, every event a rescan.
    for i in 0..8 {
        fs::write(fx.path(".noise"), format!("{i}")).unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    fx.no_candidate(Duration::from_millis(300)).await;
    // Quiet directory, quiet watcher: its own scans (which open the directory) must not
    // wake it for more scans.
    let scans = |logs: &str| logs.matches("scanned the staging directory").count();
    let before = scans(&fx.logs.text());
    assert!(before <= 24, "{before} scans for 9 writes");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        scans(&fx.logs.text()),
        before,
        "rescans with nothing happening"
    );
    let logs = fx.logs.text();
    let waiting = logs
        .lines()
        .filter(|l| l.contains("etcd-nosum: waiting for its checksum"))
        .count();
    assert_eq!(waiting, 1, "exactly one waiting line:\n{logs}");
    assert!(fx.path("etcd-nosum").exists(), "still staged");
    assert!(!fx.staging.join("rejected").exists());
    fx.assert_never_ran();
    assert!(fx.versions().is_empty());
}

#[tokio::test]
async fn file_still_being_written_is_accepted_only_when_whole() {
    let mut fx = Fixture::new();
    fx.start();
    let bytes = read(&Release::V3_5.etcd());
    let path = fx.path("etcd");
    let writer = {
        let bytes = bytes.clone();
        let sum_path = fx.path("etcd.sha256");
        std::thread::spawn(move || {
            let mut f = fs::File::create(&path).unwrap();
            for chunk in bytes.chunks(1 << 20) {
                f.write_all(chunk).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(40));
            }
            drop(f);
            fs::write(sum_path, format!("{}  etcd\n", sha256(&bytes))).unwrap();
        })
    };
    let c = fx.candidate().await;
    writer.join().unwrap();
    assert_eq!(c.version.to_string(), Release::V3_5.version());
    assert_eq!(c.sha256, sha256(&bytes));
    assert!(!c.already_pinned);
    assert_eq!(read(&c.binary), bytes, "the pinned copy is the whole file");
    assert!(!fx.staging.join("rejected").exists(), "nothing refused");
    fx.accepted("etcd").await;
    let waiting = fx
        .logs
        .text()
        .lines()
        .filter(|l| l.contains("etcd: waiting for its checksum"))
        .count();
    assert!(waiting <= 1, "waiting logged {waiting} times");
}

#[tokio::test]
async fn symlink_is_refused() {
    let mut fx = Fixture::new();
    fx.start();
    let script = fx.trap("echo 'etcd Version: 3.5.16'");
    let outside = fx.tmp.path().join("outside-etcd");
    fs::write(&outside, &script).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    symlink(&outside, fx.path("etcd-link")).unwrap();
    fx.write_sum("etcd-link", &script);
    fx.assert_refused("etcd-link", "etcd-link is a symlink")
        .await;
    assert!(fs::symlink_metadata(fx.staging.join("rejected/etcd-link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(read(&outside), script, "the link's target is untouched");
    fx.assert_never_ran();
}

#[tokio::test]
async fn fifo_is_refused_without_hanging_the_watcher() {
    let mut fx = Fixture::new();
    fx.start();
    nix::unistd::mkfifo(
        &fx.path("etcd-fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    fx.write_sum("etcd-fifo", b"whatever");
    fx.assert_refused("etcd-fifo", "is a fifo, not a regular file")
        .await;
}

#[tokio::test]
async fn world_writable_is_refused() {
    let mut fx = Fixture::new();
    fx.start();
    let script = fx.trap("echo 'etcd Version: 3.5.16'");
    fx.write("etcd-ww", &script, 0o757);
    fx.write_sum("etcd-ww", &script);
    fx.assert_refused("etcd-ww", "etcd-ww is world-writable (mode 0757)")
        .await;
    fx.assert_never_ran();
}

#[tokio::test]
async fn group_writable_is_refused() {
    let mut fx = Fixture::new();
    fx.start();
    let script = fx.trap("echo 'etcd Version: 3.5.16'");
    fx.write("etcd-gw", &script, 0o775);
    fx.write_sum("etcd-gw", &script);
    fx.assert_refused("etcd-gw", "etcd-gw is group-writable (mode 0775)")
        .await;
    fx.assert_never_ran();
}

#[tokio::test]
async fn writable_checksum_file_is_refused() {
    let mut fx = Fixture::new();
    fx.start();
    let script = fx.trap("echo 'etcd Version: 3.5.16'");
    fx.write("etcd-wsum", &script, 0o755);
    let sum = format!("{}  etcd-wsum\n", sha256(&script));
    // The checksum file's mode is set before its content lands, as a careless copy would.
    let tmp = fx.path(".wsum");
    fs::write(&tmp, sum).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).unwrap();
    fs::rename(&tmp, fx.path("etcd-wsum.sha256")).unwrap();
    fx.assert_refused("etcd-wsum", "etcd-wsum.sha256 is world-writable")
        .await;
    fx.assert_never_ran();
}

#[tokio::test]
async fn foreign_owner_is_refused() {
    // CI runs as root; a developer's run without root says so instead of passing blind.
    assert!(
        is_root(),
        "needs root to chown a file to another owner: run the suite as root (CI does)"
    );
    let mut fx = Fixture::new();
    fx.start();
    let script = fx.trap("echo 'etcd Version: 3.5.16'");
    let tmp = fx.path(".owned");
    fs::write(&tmp, &script).unwrap();
    std::os::unix::fs::chown(&tmp, Some(65534), Some(65534)).unwrap();
    fs::rename(&tmp, fx.path("etcd-nobody")).unwrap();
    fx.write_sum("etcd-nobody", &script);
    fx.assert_refused("etcd-nobody", "etcd-nobody is owned by uid 65534")
        .await;
    fx.assert_never_ran();
}

#[tokio::test]
async fn empty_file_is_refused() {
    let mut fx = Fixture::new();
    fx.start();
    fx.write("etcd-empty", b"", 0o755);
    fx.write_sum("etcd-empty", b"");
    fx.assert_refused("etcd-empty", "etcd-empty is empty").await;
    fx.assert_never_ran();
}

#[tokio::test]
async fn lying_version_is_probed_only_as_the_private_copy_and_refused() {
    let mut fx = Fixture::new();
    fx.start();
    let script = fx.trap("echo 'etcdctl version: 3.5.16'");
    fx.write("etcd-liar", &script, 0o755);
    fx.write_sum("etcd-liar", &script);
    let reason = fx
        .assert_refused("etcd-liar", "did not print an etcd server version")
        .await;
    assert!(reason.contains("etcdctl version: 3.5.16"), "{reason}");
    fx.assert_only_the_copy_was_probed();
    assert!(fx.versions().is_empty(), "the copy is gone");
}

#[tokio::test]
async fn hanging_version_probe_times_out() {
    let mut fx = Fixture::new();
    let opts = WatchOptions {
        probe_timeout: Duration::from_secs(1),
        ..fx.options()
    };
    fx.start_with(opts);
    let script = fx.trap("exec sleep 30");
    fx.write("etcd-hang", &script, 0o755);
    fx.write_sum("etcd-hang", &script);
    let started = Instant::now();
    fx.assert_refused("etcd-hang", "did not answer within 1s")
        .await;
    assert!(started.elapsed() < Duration::from_secs(15));
    fx.assert_only_the_copy_was_probed();
}

#[tokio::test]
async fn bad_companion_refuses_the_whole_drop() {
    let mut fx = Fixture::new();
    fx.start();
    let etcd = read(&Release::V3_5.etcd());
    let ctl = read(&Release::V3_5.etcdctl());
    fx.write("etcd-x", &etcd, 0o755);
    fx.write("etcdctl-x", &ctl, 0o755);
    fx.write_sum("etcdctl-x", b"not etcdctl");
    fx.write_sum("etcd-x", &etcd);
    let reason = fx.assert_refused("etcd-x", "etcdctl-x: sha256").await;
    assert!(reason.contains("does not match"), "{reason}");
    let companion = fx.reason("etcdctl-x").await;
    assert!(
        companion.contains("refused together with etcd-x"),
        "{companion}"
    );
    assert!(fx.versions().is_empty(), "nothing pinned");
}

// ---- good drops -----------------------------------------------------------------------

#[tokio::test]
async fn two_drops_at_once_are_both_processed() {
    let mut fx = Fixture::new();
    fx.start();
    let a = read(&Release::V3_4.etcd());
    let b = read(&Release::V3_5.etcd());
    fx.write("etcd-a", &a, 0o755);
    fx.write("etcd-b", &b, 0o755);
    fx.write_sum("etcd-a", &a);
    fx.write_sum("etcd-b", &b);
    let first = fx.candidate().await;
    let second = fx.candidate().await;
    let mut got = vec![first.version.to_string(), second.version.to_string()];
    got.sort();
    let mut want = vec![Release::V3_4.version(), Release::V3_5.version()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(fx.versions(), want);
    fx.accepted("etcd-a").await;
    fx.accepted("etcd-b").await;
    let accepted = fx.listing(&fx.staging.join("accepted"));
    for name in ["etcd-a", "etcd-a.sha256", "etcd-a.accepted", "etcd-b"] {
        assert!(
            accepted.contains(&name.to_string()),
            "{name} in {accepted:?}"
        );
    }
    assert_eq!(fx.listing(&fx.staging), ["accepted"]);
}

#[tokio::test]
async fn same_version_staged_twice_is_a_no_op() {
    let mut fx = Fixture::new();
    fx.start();
    let bytes = read(&Release::V3_5.etcd());
    fx.write("etcd-first", &bytes, 0o755);
    fx.write_sum("etcd-first", &bytes);
    let first = fx.candidate().await;
    assert!(!first.already_pinned);
    let pinned_meta = fs::metadata(&first.binary).unwrap();

    fx.write("etcd-again", &bytes, 0o755);
    fx.write_sum("etcd-again", &bytes);
    let again = fx.candidate().await;
    assert!(again.already_pinned, "{again:?}");
    assert_eq!(again.version, first.version);
    assert_eq!(again.dir, first.dir);
    let meta = fs::metadata(&again.binary).unwrap();
    assert_eq!(
        (meta.ino(), meta.mtime()),
        (pinned_meta.ino(), pinned_meta.mtime()),
        "the pinned binary was not replaced"
    );
    assert!(!fx.staging.join("rejected").exists());
    let note = fx.accepted("etcd-again").await;
    assert!(note.contains("was already pinned"), "{note}");
}

#[tokio::test]
async fn same_version_with_other_bytes_is_refused() {
    let mut fx = Fixture::new();
    fx.start();
    let real = read(&Release::V3_5.etcd());
    fx.write("etcd-real", &real, 0o755);
    fx.write_sum("etcd-real", &real);
    let pinned = fx.candidate().await;
    let version = Release::V3_5.version();

    let impostor = fx.trap(&format!("echo 'etcd Version: {version}'"));
    fx.write("etcd-impostor", &impostor, 0o755);
    fx.write_sum("etcd-impostor", &impostor);
    let reason = fx
        .assert_refused(
            "etcd-impostor",
            &format!("{version} is already pinned with different contents"),
        )
        .await;
    assert!(reason.contains(&sha256(&impostor)), "{reason}");
    fx.assert_only_the_copy_was_probed();
    assert_eq!(read(&pinned.binary), real, "the pinned binary is untouched");
    assert_eq!(fx.versions(), [version]);
}

#[tokio::test]
async fn sha256sums_verifies_a_drop_with_companions() {
    let mut fx = Fixture::new();
    let etcd = read(&Release::V3_5.etcd());
    let ctl = read(&Release::V3_5.etcdctl());
    let utl = read(&Release::V3_5.etcdutl().expect("3.5 has etcdutl"));
    fx.write("etcd", &etcd, 0o755);
    fx.write("etcdctl", &ctl, 0o755);
    fx.write("etcdutl", &utl, 0o755);
    fx.write("README", b"dropped by mistake", 0o644);
    // Three formats in one file: text mode, binary mode, BSD.
    let sums = format!(
        "{}  etcd\n{} *etcdctl\nSHA256 (etcdutl) = {}\n",
        sha256(&etcd),
        sha256(&ctl),
        sha256(&utl)
    );
    fx.write("SHA256SUMS", sums.as_bytes(), 0o644);
    // Dropped while the supervisor was down: found by the first scan.
    fx.start();
    let c = fx.candidate().await;
    assert_eq!(c.version.to_string(), Release::V3_5.version());
    assert_eq!(c.companions, ["etcdctl", "etcdutl"]);
    assert_eq!(
        fx.listing(&c.dir),
        [
            "etcd",
            "etcd.sha256",
            "etcdctl",
            "etcdctl.sha256",
            "etcdutl",
            "etcdutl.sha256"
        ]
    );
    assert_eq!(read(&c.dir.join("etcdutl")), utl);
    fx.accepted("etcdutl").await;
    // SHA256SUMS lists nothing still staged: it moved along with the drop.
    assert_eq!(fx.listing(&fx.staging), ["README", "accepted"]);
    assert_eq!(
        read(&fx.staging.join("accepted/etcd.SHA256SUMS")),
        sums.as_bytes()
    );
    // Left alone, said once.
    assert_eq!(
        fx.logs
            .text()
            .lines()
            .filter(|l| l.contains("README: not part of an etcd drop"))
            .count(),
        1
    );
}

#[tokio::test]
async fn accepted_drops_are_not_processed_again_after_a_restart() {
    let mut fx = Fixture::new();
    let bytes = read(&Release::V3_4.etcd());
    fx.write("etcd", &bytes, 0o755);
    fx.write_sum("etcd", &bytes);
    fx.start();
    let c = fx.candidate().await;
    assert_eq!(c.version.to_string(), Release::V3_4.version());
    assert_eq!(c.staged_name, "etcd");
    fx.accepted("etcd").await;
    fx.stop();
    fx.start();
    fx.no_candidate(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn poll_only_mode_finds_drops() {
    let mut fx = Fixture::new();
    let opts = WatchOptions {
        inotify: false,
        poll_interval: Some(Duration::from_millis(200)),
        ..fx.options()
    };
    fx.start_with(opts);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bytes = read(&Release::V3_4.etcd());
    fx.write("etcd", &bytes, 0o755);
    fx.write_sum("etcd", &bytes);
    let c = fx.candidate().await;
    assert_eq!(c.version.to_string(), Release::V3_4.version());
    fx.accepted("etcd").await;
}

#[tokio::test]
async fn detection_latency_is_well_under_a_second_plus_verification() {
    let mut fx = Fixture::new();
    fx.start();
    let bytes = read(&Release::V3_5.etcd());
    fx.write("etcd", &bytes, 0o755);
    // Let the binary's own events settle, so the clock starts at the commit marker.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let logs = fx.logs.clone();
    let line = format!("{}  etcd\n", sha256(&bytes));
    let started = Instant::now();
    fs::write(fx.path("etcd.sha256"), line).unwrap();
    // Detection: the watcher starts checking the drop (inotify, debounce, scan, plan).
    let detected = async {
        while !logs.text().contains("staged etcd is ready") {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        started.elapsed()
    };
    let (c, detected) = tokio::join!(fx.candidate(), detected);
    let latency = started.elapsed();
    println!(
        "staging latency: checksum written -> drop detected in {detected:?}, candidate {} received in {latency:?} ({} MB hashed twice, copied, probed)",
        c.version,
        bytes.len() / 1_000_000
    );
    // Generous bounds for a loaded 2-core runner; the figures above are what it took
    // (typically tens of milliseconds to detect, about a second end to end).
    assert!(
        detected < Duration::from_secs(5),
        "detection took {detected:?}"
    );
    assert!(latency < Duration::from_secs(30), "took {latency:?}");
    fx.accepted("etcd").await;
}

// ---- the staging dir itself -----------------------------------------------------------

#[tokio::test]
async fn staging_dir_is_created_or_refused_with_a_clear_error() {
    let fx = Fixture::new();
    let reaper = Reaper::start().unwrap();

    let created = fx.tmp.path().join("new-staging");
    let (_w, _rx) =
        StagingWatcher::start(WatchOptions::new(&created, &fx.state), reaper.clone()).unwrap();
    let meta = fs::metadata(&created).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);

    let orphan = fx.tmp.path().join("no/such/parent/staging");
    let err =
        StagingWatcher::start(WatchOptions::new(&orphan, &fx.state), reaper.clone()).unwrap_err();
    assert!(matches!(err, StagingError::NoParent(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&orphan.display().to_string()) && text.contains("does not exist"),
        "{text}"
    );
    assert!(err.is_usage(), "{err}");

    let file = fx.tmp.path().join("a-file");
    fs::write(&file, "x").unwrap();
    let err =
        StagingWatcher::start(WatchOptions::new(&file, &fx.state), reaper.clone()).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("{} is not a directory", file.display())),
        "{err}"
    );
}

// ---- `etcd-supervisor stage` ----------------------------------------------------------

fn stage_cmd(args: &[&Path]) -> std::process::Output {
    // No reaper runs yet in this process: it would collect this child's status.
    Command::new(SUPERVISOR)
        .arg("stage")
        .args(args)
        .output()
        .expect("run stage")
}

#[tokio::test]
async fn stage_command_end_to_end() {
    let mut fx = Fixture::new();
    let staging = fx.tmp.path().join("fresh/staging");
    fs::create_dir(fx.tmp.path().join("fresh")).unwrap();
    fx.staging = staging.clone();
    let etcd = Release::V3_5.etcd();
    let ctl = Release::V3_5.etcdctl();
    let utl = Release::V3_5.etcdutl().expect("3.5 has etcdutl");
    let out = stage_cmd(&[
        &etcd,
        Path::new("--with"),
        &ctl,
        Path::new("--with"),
        &utl,
        Path::new("--staging-dir"),
        &staging,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let sum = sha256(&read(&etcd));
    let h = &sum[..12];
    assert_eq!(
        stdout.trim_end(),
        format!(
            "staged etcd-{h} (sha256 {sum}) with etcdctl-{h}, etcdutl-{h} in {}",
            staging.display()
        )
    );
    assert_eq!(stdout.lines().count(), 1);
    assert_eq!(
        fs::metadata(&staging).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fx.listing(&staging),
        [
            format!("etcd-{h}"),
            format!("etcd-{h}.sha256"),
            format!("etcdctl-{h}"),
            format!("etcdctl-{h}.sha256"),
            format!("etcdutl-{h}"),
            format!("etcdutl-{h}.sha256"),
        ],
        "no temp files left"
    );
    let line = fs::read_to_string(staging.join(format!("etcd-{h}.sha256"))).unwrap();
    assert_eq!(line, format!("{sum}  etcd-{h}\n"));

    // Staging the same drop again while it waits changes nothing.
    let again = stage_cmd(&[&etcd, Path::new("--staging-dir"), &staging]);
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).starts_with(&format!("already staged etcd-{h}")));

    // A stage that died before its commit marker is redone, not reported as staged.
    fs::remove_file(staging.join(format!("etcd-{h}.sha256"))).unwrap();
    let redo = stage_cmd(&[&etcd, Path::new("--staging-dir"), &staging]);
    assert_eq!(redo.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&redo.stdout).starts_with(&format!("staged etcd-{h}")));
    assert_eq!(
        fs::read_to_string(staging.join(format!("etcd-{h}.sha256"))).unwrap(),
        line
    );

    let opts = WatchOptions::new(&staging, &fx.state);
    fx.start_with(opts);
    let c = fx.candidate().await;
    assert_eq!(c.version.to_string(), Release::V3_5.version());
    assert_eq!(c.sha256, sum);
    assert_eq!(c.staged_name, format!("etcd-{h}"));
    assert_eq!(c.companions, ["etcdctl", "etcdutl"]);
    assert_eq!(read(&c.dir.join("etcdctl")), read(&ctl));
    fx.accepted(&format!("etcd-{h}")).await;
    assert_eq!(fx.listing(&staging), ["accepted"]);
}

#[test]
fn stage_never_executes_and_refuses_bad_sources_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let script = dir.path().join("etcd-script");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch {}\necho 'etcd Version: 3.5.16'\n",
            marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let out = stage_cmd(&[&script, Path::new("--state-dir"), &state]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "stage executed the file");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&state.join("staging").display().to_string())
    );

    let cases: Vec<(Vec<PathBuf>, &str)> = vec![
        (vec![dir.path().join("nope")], "it does not exist"),
        (
            vec![dir.path().to_path_buf()],
            "it is a directory, not a regular file",
        ),
        (vec![PathBuf::from("/dev/null")], "not a regular file"),
        (
            vec![script.clone(), "--with".into(), script.clone()],
            "--with takes etcdctl and etcdutl",
        ),
        (
            vec![Release::V3_5.etcdctl()],
            "this looks like etcdctl; stage the etcd server binary",
        ),
    ];
    let empty = dir.path().join("etcd-empty");
    fs::write(&empty, "").unwrap();
    let mut cases = cases;
    cases.push((vec![empty], "it is empty"));
    for (args, needle) in cases {
        let staging = dir.path().join("bad-staging");
        let mut all: Vec<&Path> = args.iter().map(PathBuf::as_path).collect();
        all.push(Path::new("--staging-dir"));
        all.push(&staging);
        let out = stage_cmd(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!staging.exists(), "{args:?}: nothing staged");
    }
}

mod tarball;
