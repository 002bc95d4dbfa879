//! Backups from real etcd 3.4.23 and 3.5.x: the `backup` and `verify-backup` commands, the
//! turn's step-by-step API (snapshot while running, cold data-dir copy while stopped),
//! free space checked before anything is written (a tiny tmpfs in a private mount
//! namespace), a disk that fills up mid-write, and retention.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_supervisor::backup::BackupMode;
use etcd_supervisor::backup::{
    self, prune, verify, BackupError, BackupPlan, DATA, META, SNAPSHOT, SUMS,
};
use etcd_supervisor::etcd::{Client, ClientConfig, PutRequest, Txn, TxnOp};
use etcd_supervisor::versions::Version;

use crate::support::{Cluster, Net, Release, SUPERVISOR};

/// A finished command.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs `program args`, bounded by two minutes.
fn run<I, S>(program: impl AsRef<OsStr>, args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let dir = tempfile::tempdir().expect("temp");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("out"))
        .stderr(fs::File::create(&err_path).expect("err"));
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code(),
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

fn supervisor<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(SUPERVISOR, args)
}

fn verify_backup(dir: &Path) -> Out {
    supervisor([OsStr::new("verify-backup"), dir.as_os_str()])
}

/// Asserts `verify-backup DIR` fails naming `expected` (the start of the problem).
fn assert_refused(dir: &Path, expected: &str) {
    let out = verify_backup(dir);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains(&format!(": {expected}")),
        "expected {expected:?}; {}",
        out.all()
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.all());
}

fn client(url: &str) -> Client {
    Client::new(ClientConfig {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::new(vec![url.to_owned()])
    })
    .expect("client")
}

/// Writes `txns` transactions of 100 keys with `value_len`-byte values.
async fn load(c: &Client, prefix: &str, txns: usize, value_len: usize) {
    let value = vec![b'v'; value_len];
    for t in 0..txns {
        let ops: Vec<TxnOp> = (0..100)
            .map(|i| TxnOp::Put(PutRequest::new(format!("{prefix}/{t}/{i}"), value.clone())))
            .collect();
        assert!(
            c.txn(&Txn::new().and_then(ops))
                .await
                .expect("txn")
                .succeeded
        );
    }
}

/// `snapshot status -w json` by etcdutl (3.5) or etcdctl (3.4): must succeed.
fn snapshot_status(release: Release, file: &Path) -> String {
    let tool = release.etcdutl().unwrap_or_else(|| release.etcdctl());
    let out = run(
        "env",
        [
            OsStr::new("ETCDCTL_API=3"),
            tool.as_os_str(),
            OsStr::new("snapshot"),
            OsStr::new("status"),
            OsStr::new("-w"),
            OsStr::new("json"),
            file.as_os_str(),
        ],
    );
    assert_eq!(out.code, Some(0), "snapshot status: {}", out.all());
    out.stdout
}

fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).expect("read");
    let at = (at as usize).min(bytes.len() - 1);
    bytes[at] ^= 0xff;
    fs::write(path, bytes).expect("write");
}

/// `cp -a src dst`.
fn copy_dir(src: &Path, dst: &Path) {
    let out = run("cp", [OsStr::new("-a"), src.as_os_str(), dst.as_os_str()]);
    assert_eq!(out.code, Some(0), "cp: {}", out.all());
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn meta_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(META)).expect("meta.json")).expect("meta json")
}

/// `backup` of a running member: a verified directory that etcd's own tools accept and that
/// `sha256sum -c` checks too; one flipped byte in the snapshot is caught.
async fn on_demand_backup_verifies(release: Release) {
    let cluster = Cluster::start(release, 1);
    let url = cluster.client_urls()[0].clone();
    load(&client(&url), "k", 4, 1024).await;
    let state = cluster.dir().join("state");

    let out = supervisor([
        OsStr::new("backup"),
        OsStr::new("--endpoints"),
        OsStr::new(&url),
        OsStr::new("--state-dir"),
        state.as_os_str(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let dir = PathBuf::from(out.stdout.lines().next().expect("backup dir line"));
    assert_eq!(dir.parent(), Some(backup::backups_dir(&state).as_path()));
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.ends_with(&format!("-m1-{}", release.version())),
        "{name}"
    );
    assert!(
        out.stdout.contains("verified backup of member m1"),
        "{}",
        out.all()
    );
    assert_eq!(entries(dir.parent().unwrap()), [name], "leftovers");
    assert_eq!(entries(&dir), [SUMS, META, SNAPSHOT]);

    let meta = meta_json(&dir);
    assert_eq!(meta["member"], "m1");
    assert_eq!(meta["kind"], "on-demand");
    assert_eq!(meta["mode"], "snapshot");
    assert_eq!(meta["from_version"], release.version());
    assert_eq!(meta["etcd_version"], release.version());
    assert!(meta["to_version"].is_null());
    // One revision per transaction: at least the 4 that loaded the keys.
    assert!(meta["revision"].as_i64().unwrap() >= 5, "{meta}");

    let out = verify_backup(&dir);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("verified"), "{}", out.all());
    let status = snapshot_status(release, &dir.join(SNAPSHOT));
    assert!(status.contains("\"revision\""), "{status}");
    let out = run(
        "sh",
        [
            "-c",
            &format!("cd '{}' && sha256sum -c --quiet SHA256SUMS", dir.display()),
        ],
    );
    assert_eq!(out.code, Some(0), "sha256sum -c: {}", out.all());

    let bad = cluster.dir().join("flipped");
    copy_dir(&dir, &bad);
    flip(&bad.join(SNAPSHOT), 5000);
    assert_refused(&bad, "snapshot.db: sha256 mismatch");
}

/// The turn's steps with `--backup both`: snapshot while etcd runs, a copy refused while etcd
/// holds the data dir, the cold copy once it is stopped; the copy starts as a working member.
async fn turn_backup_with_data_dir(release: Release) {
    let mut cluster = Cluster::start(release, 1);
    let url = cluster.client_urls()[0].clone();
    let c = client(&url);
    load(&c, "k", 3, 1024).await;
    let state = cluster.dir().join("state");
    let data_dir = cluster.members[0].spec.data_dir.clone();
    let from: Version = release.version().parse().unwrap();
    let to = Version::new(from.major, from.minor + 1, 0);
    let plan = BackupPlan::turn(&state, from.clone(), to.clone(), BackupMode::Both, 3)
        .member("m1")
        .data_dir(&data_dir);
    let backups = backup::backups_dir(&state);

    // While etcd runs, the cold copy is refused and leaves nothing behind.
    let pending = plan.begin(&c).await.expect("begin");
    assert!(pending.temp_dir().is_dir());
    let pending = pending.snapshot(&c).await.expect("snapshot");
    let err = pending.copy_data_dir().await.unwrap_err();
    assert!(matches!(err, BackupError::DataDirInUse(_)), "{err}");
    assert!(err.to_string().contains("in use by another etcd"), "{err}");
    assert!(entries(&backups).is_empty(), "{:?}", entries(&backups));

    let pending = plan.begin(&c).await.expect("begin");
    let pending = pending.snapshot(&c).await.expect("snapshot");
    cluster.member(0).stop();
    let pending = pending.copy_data_dir().await.expect("copy");
    let done = pending.finish().await.expect("finish");
    let name = done.dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(&format!("-m1-{from}-to-{to}")), "{name}");
    assert_eq!(entries(&backups), [name]);
    assert!(done.pruned.is_empty());
    let meta = meta_json(&done.dir);
    assert_eq!(meta["kind"], "turn");
    assert_eq!(meta["mode"], "both");
    assert_eq!(meta["to_version"], to.to_string());
    assert_eq!(
        meta["data_dir"]["files"].as_u64().unwrap(),
        done.files as u64 - 2,
        "{meta}"
    );

    let out = verify_backup(&done.dir);
    assert_eq!(out.code, Some(0), "{}", out.all());
    snapshot_status(release, &done.dir.join(SNAPSHOT));
    let copied_db = done.dir.join(DATA).join("member/snap/db");
    assert!(copied_db.is_file());
    assert!(fs::read_dir(done.dir.join(DATA).join("member/wal"))
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".wal")));
    use std::os::unix::fs::MetadataExt;
    for rel in ["member", "member/snap", "member/snap/db", "member/wal"] {
        let a = fs::metadata(data_dir.join(rel)).unwrap().mode();
        let b = fs::metadata(done.dir.join(DATA).join(rel)).unwrap().mode();
        assert_eq!(a, b, "mode of {rel}");
    }

    // The cold copy is a data dir etcd starts from, with every key.
    let restored = cluster.dir().join("restored.etcd");
    copy_dir(&done.dir.join(DATA), &restored);
    cluster.member(0).spec.data_dir = restored;
    cluster.member(0).start();
    cluster.member(0).wait_healthy();
    let count = c
        .range(&etcd_supervisor::etcd::RangeRequest::prefix("k/").count_only())
        .await
        .expect("count");
    assert_eq!(count.count, 300);

    let bad = cluster.dir().join("flipped");
    copy_dir(&done.dir, &bad);
    flip(&bad.join(DATA).join("member/snap/db"), 4096);
    assert_refused(&bad, "data/member/snap/db: sha256 mismatch");
}

/// A filesystem too small for the backup: refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_space_is_checked_before_anything_is_written() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.client_urls()[0].clone();
    // ~2 MB of data.
    load(&client(&url), "big", 20, 1024).await;
    let mnt = cluster.dir().join("tiny");
    fs::create_dir(&mnt).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs '{m}' || exit 99; \
         '{sup}' backup --endpoints {url} --out '{m}/b'; echo \"rc=$?\"; echo left:; ls -A '{m}'",
        m = mnt.display(),
        sup = SUPERVISOR,
    );
    let out = run(
        "unshare",
        ["--mount", "--propagation", "private", "sh", "-c", &script],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("rc=1\n"), "{}", out.all());
    let left = out.stdout.split("left:\n").nth(1).unwrap_or("?");
    assert_eq!(left.trim(), "", "something was written: {}", out.all());
    assert!(out.stderr.contains("backup needs ~"), "{}", out.all());
    assert!(
        out.stderr
            .contains("MiB free; free space or lower --backup-keep"),
        "{}",
        out.all()
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.all());
}

/// The disk fills up after the check (another writer): ENOSPC mid-snapshot is a typed error
/// and the partial backup is gone. Runs [`disk_full_inner`] in a private mount namespace.
#[test]
fn disk_full_while_writing_removes_the_partial_backup() {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private"])
        .arg(exe)
        .args([
            "backup::disk_full_inner",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("BACKUP_DISK_FULL_INNER", "1");
    let out = cmd.output().expect("unshare");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("DISK FULL CASE PASSED"), "{text}");
}

/// The inner half of [`disk_full_while_writing_removes_the_partial_backup`]: in its own mount
/// namespace, mounts a 16 MiB tmpfs, begins a backup (the check passes), fills the tmpfs up,
/// then takes the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by disk_full_while_writing_removes_the_partial_backup in a mount namespace"]
async fn disk_full_inner() {
    if std::env::var_os("BACKUP_DISK_FULL_INNER").is_none() {
        return;
    }
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.client_urls()[0].clone();
    let c = client(&url);
    load(&c, "k", 10, 1024).await;
    let mnt = cluster.dir().join("small");
    fs::create_dir(&mnt).unwrap();
    let out = run(
        "mount",
        [
            OsStr::new("-t"),
            OsStr::new("tmpfs"),
            OsStr::new("-o"),
            OsStr::new("size=16m"),
            OsStr::new("tmpfs"),
            mnt.as_os_str(),
        ],
    );
    assert_eq!(out.code, Some(0), "mount: {}", out.all());
    let _unmount = Unmount(mnt.clone());

    let plan = BackupPlan::exact(mnt.join("b"));
    let pending = plan.begin(&c).await.expect("the free-space check passes");
    assert!(pending.needed_bytes() < 16 * 1024 * 1024);
    // Someone else takes all but 200 KiB.
    let stat = nix::sys::statvfs::statvfs(&mnt).unwrap();
    let free = stat.blocks_available() * stat.fragment_size();
    fs::write(mnt.join("filler"), vec![0u8; (free - 200 * 1024) as usize]).unwrap();

    let err = pending.snapshot(&c).await.unwrap_err();
    assert!(matches!(err, BackupError::NoSpace { .. }), "{err}");
    assert!(err.to_string().contains("ran out of disk space"), "{err}");
    assert_eq!(entries(&mnt), ["filler"]);
    println!("DISK FULL CASE PASSED");
}

/// Unmounts on drop, so the temp dir below the mount point can be removed.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `--backup-keep N` keeps exactly the newest N turn backups and never an operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_exactly_n() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.client_urls()[0].clone();
    let c = client(&url);
    load(&c, "k", 1, 100).await;
    let state = cluster.dir().join("state");
    let on_demand = supervisor([
        OsStr::new("backup"),
        OsStr::new("--endpoints"),
        OsStr::new(&url),
        OsStr::new("--state-dir"),
        state.as_os_str(),
    ]);
    assert_eq!(on_demand.code, Some(0), "{}", on_demand.all());
    let on_demand = PathBuf::from(on_demand.stdout.lines().next().unwrap());

    // The member is named by the plan's endpoint, whatever the client's first one is.
    let dead = Net::allocate();
    let c = Client::new(ClientConfig {
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::new(vec![
            format!("http://{}:{}", dead.ip, dead.port(0)),
            url.clone(),
        ])
    })
    .expect("client");
    let keep = 2;
    let from = Version::new(3, 5, 16);
    let to = Version::new(3, 6, 0);
    let mut made = Vec::new();
    for i in 0..keep + 2 {
        let plan = BackupPlan::turn(&state, from.clone(), to.clone(), BackupMode::Snapshot, keep)
            .endpoint(&url);
        let pending = plan.begin(&c).await.expect("begin");
        let done = pending
            .snapshot(&c)
            .await
            .expect("snapshot")
            .finish()
            .await
            .expect("finish");
        // Each finish prunes to `keep` (the on-demand backup does not count).
        let expect_pruned = usize::from(i >= keep);
        assert_eq!(
            done.pruned.len(),
            expect_pruned,
            "backup {i}: {:?}",
            done.pruned
        );
        made.push(done.dir);
    }
    let mut want: Vec<String> = made[2..]
        .iter()
        .chain([&on_demand])
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(entries(&backup::backups_dir(&state)), want);
    assert!(!made[0].exists() && !made[1].exists());
    assert_eq!(meta_json(&made[3])["member"], "m1");
}

/// Retention never deletes the last backup that verifies, even when it is the oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_last_verified_backup() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.client_urls()[0].clone();
    let c = client(&url);
    load(&c, "k", 1, 100).await;
    let state = cluster.dir().join("state");
    let backups = backup::backups_dir(&state);
    let (from, to) = (Version::new(3, 5, 16), Version::new(3, 6, 0));
    let take = |keep: u32| {
        let plan = BackupPlan::turn(&state, from.clone(), to.clone(), BackupMode::Snapshot, keep);
        let c = c.clone();
        async move {
            let pending = plan.begin(&c).await.expect("begin");
            pending
                .snapshot(&c)
                .await
                .expect("snapshot")
                .finish()
                .await
                .expect("finish")
        }
    };
    let mut made = Vec::new();
    for _ in 0..4 {
        made.push(take(10).await.dir);
    }
    // Corrupt all but the oldest.
    for dir in &made[1..] {
        flip(&dir.join(SNAPSHOT), 3000);
    }
    let pruned = prune(&backups, 2, None).expect("prune");
    assert_eq!(pruned.deleted, [made[1].clone()]);
    assert_eq!(
        pruned.kept,
        [made[3].clone(), made[2].clone(), made[0].clone()]
    );
    assert_eq!(pruned.failed_verification.len(), 3);
    assert!(verify(&made[0]).is_ok());

    // A new verified backup becomes the one that must stay; the rest go by age.
    let newest = take(2).await;
    assert_eq!(newest.pruned, [made[2].clone(), made[0].clone()]);
    let mut want = vec![
        made[3].file_name().unwrap().to_string_lossy().into_owned(),
        newest
            .dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    ];
    want.sort();
    assert_eq!(entries(&backups), want);
}

/// `verify-backup` names the first problem: missing directory, missing SHA256SUMS, a listed
/// file missing, an extra file, a bad snapshot trailer, unreadable meta.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_backup_names_what_is_wrong() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.client_urls()[0].clone();
    load(&client(&url), "k", 1, 100).await;
    let good = cluster.dir().join("good");
    let out = supervisor([
        OsStr::new("backup"),
        OsStr::new("--endpoints"),
        OsStr::new(&url),
        OsStr::new("--out"),
        good.as_os_str(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(out.stdout.lines().next(), Some(good.to_str().unwrap()));
    assert_eq!(verify_backup(&good).code, Some(0));

    // --out never replaces anything.
    let again = supervisor([
        OsStr::new("backup"),
        OsStr::new("--endpoints"),
        OsStr::new(&url),
        OsStr::new("--out"),
        good.as_os_str(),
    ]);
    assert_eq!(again.code, Some(1), "{}", again.all());
    assert!(again.stderr.contains("already exists"), "{}", again.all());

    let case = |name: &str| {
        let dir = cluster.dir().join(name);
        copy_dir(&good, &dir);
        dir
    };
    let resum = |dir: &Path| {
        let out = run(
            "sh",
            [
                "-c",
                &format!(
                    "cd '{}' && sha256sum meta.json snapshot.db > SHA256SUMS",
                    dir.display()
                ),
            ],
        );
        assert_eq!(out.code, Some(0), "{}", out.all());
    };

    assert_refused(&cluster.dir().join("nope"), "no such backup directory");

    let d = case("no-sums");
    fs::remove_file(d.join(SUMS)).unwrap();
    assert_refused(&d, "SHA256SUMS: missing");

    let d = case("listed-missing");
    fs::remove_file(d.join(SNAPSHOT)).unwrap();
    assert_refused(&d, "snapshot.db: listed in SHA256SUMS but missing");

    let d = case("extra");
    fs::write(d.join("notes.txt"), b"hello").unwrap();
    assert_refused(&d, "notes.txt: not listed in SHA256SUMS");

    let d = case("bad-trailer");
    let len = fs::metadata(d.join(SNAPSHOT)).unwrap().len();
    flip(&d.join(SNAPSHOT), len - 1);
    resum(&d);
    assert_refused(&d, "snapshot.db: bad sha256 trailer");

    let d = case("bad-meta");
    fs::write(d.join(META), b"{\"format\": 1, \"member\": ").unwrap();
    resum(&d);
    assert_refused(&d, "meta.json: unreadable");
}

/// `backup` with every endpoint down: exit 1, one clear line, nothing written.
#[test]
fn backup_with_all_endpoints_down() {
    let net = Net::allocate();
    let state = tempfile::tempdir().unwrap();
    let urls = format!(
        "http://{ip}:{a},http://{ip}:{b}",
        ip = net.ip,
        a = net.port(0),
        b = net.port(1)
    );
    let out = supervisor([
        OsStr::new("backup"),
        OsStr::new("--endpoints"),
        OsStr::new(&urls),
        OsStr::new("--state-dir"),
        state.path().as_os_str(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.all());
    assert!(
        out.stderr.contains(&format!(
            "cannot read the status of the member at http://{}:{}",
            net.ip,
            net.port(0)
        )),
        "{}",
        out.all()
    );
    assert!(out.stdout.is_empty(), "{}", out.all());
    assert!(
        entries(state.path()).is_empty(),
        "{:?}",
        entries(state.path())
    );
}

macro_rules! per_release {
    ($($test:ident),* $(,)?) => {
        mod v3_4 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Release::V3_4).await;
                }
            )*
        }
        mod v3_5 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Release::V3_5).await;
                }
            )*
        }
    };
}

per_release!(on_demand_backup_verifies, turn_backup_with_data_dir);
