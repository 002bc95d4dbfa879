//! Reads etcd's db file into the page cache while this member waits for its turn, so the
//! restart at its turn finds the db in memory.
//!
//! Why: bbolt maps the db with `MADV_RANDOM` and etcd's start walks every key, so a db
//! that is no longer in memory (the dress rehearsal's copies pushed it out) comes back one
//! 4 KiB page fault at a time: 7-13 s for a 4 GB db on the bench's disk, where one
//! sequential read of the file takes 7 s and a start from memory 3-5 s. By hand the
//! operator's `etcdctl snapshot save` has just read the db; here the turn's backup was
//! taken while vetting, so nothing else reads it before the stop.
//!
//! The read runs on its own thread in the idle I/O class: the disk serves etcd (its WAL's
//! fsyncs, the member whose turn it is) first, and the read only fills what the disk
//! would leave unused. It is skipped when the db is small (nothing to gain) or when it
//! would not fit in half of the memory available (it would push out what it read, or
//! etcd's own pages). Nothing depends on it: it is only ever faster.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Below this a start reads its db in well under a second: not worth a thread.
pub const MIN_DB: u64 = 256 << 20;

/// How much is read per call (and how often a cancel is looked at).
const CHUNK: usize = 4 << 20;

/// Whether to read a db of `db` bytes ahead, with `available` bytes of memory available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Read it.
    Read,
    /// Too small to gain anything.
    Small,
    /// More than half of the memory available: it would push out what it read.
    NoRoom,
}

/// The rule: read a db of at least [`MIN_DB`] that fits in half of `available`.
pub fn plan(db: u64, available: u64) -> Plan {
    if db < MIN_DB {
        Plan::Small
    } else if db > available / 2 {
        Plan::NoRoom
    } else {
        Plan::Read
    }
}

/// A read in progress; dropping it stops the read at its next chunk.
#[derive(Debug)]
pub struct ReadAhead {
    cancel: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Outcome>>,
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Read: the bytes, and whether that was the whole file (not cancelled).
    Read {
        /// Bytes read.
        bytes: u64,
        /// To the end of the file.
        whole: bool,
    },
    /// Not read, as [`plan`] said.
    Skipped(Plan),
    /// The file could not be looked at or read.
    Failed,
}

impl ReadAhead {
    /// True once the read ended (read through, skipped, cancelled or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the read to end and says how it did.
    pub fn join(mut self) -> Outcome {
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or(Outcome::Failed)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Starts reading the db in `data_dir` for `member` on a thread of its own, which first
/// asks [`plan`] (the file's size and the memory are looked at there too: a data dir on a
/// hung mount must not stall the caller); `None` when the thread could not start. A read
/// ends with one log event with the bytes read and the time taken; a skip is said at debug.
pub fn start(data_dir: &Path, member: &str) -> Option<ReadAhead> {
    let db = super::datadir::db_path(data_dir);
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let member = member.to_owned();
    let thread = std::thread::Builder::new()
        .name("read-ahead".into())
        .spawn(move || run(&db, &member, &flag))
        .ok()?;
    Some(ReadAhead {
        cancel,
        thread: Some(thread),
    })
}

fn run(db: &Path, member: &str, cancel: &AtomicBool) -> Outcome {
    let began = Instant::now();
    let size = match std::fs::metadata(db) {
        Ok(m) => m.len(),
        Err(e) => {
            tracing::debug!(member, db = %db.display(), error = %e, "not reading the db ahead of the restart");
            return Outcome::Failed;
        }
    };
    let available = available(mem_available(), cgroup_room());
    match plan(size, available) {
        Plan::Read => {}
        other => {
            tracing::debug!(member, db = %db.display(), bytes = size, available, plan = ?other, "not reading the db ahead of the restart");
            return Outcome::Skipped(other);
        }
    }
    idle_io_class();
    match read_through(db, cancel) {
        Ok((bytes, whole)) => {
            tracing::info!(member, db = %db.display(), bytes, whole, took_ms = began.elapsed().as_millis() as u64, "db read into memory ahead of the restart");
            Outcome::Read { bytes, whole }
        }
        Err(e) => {
            // Only a lost speed-up: etcd's start reads the db itself.
            tracing::debug!(member, db = %db.display(), error = %e, "reading the db ahead of the restart failed");
            Outcome::Failed
        }
    }
}

/// Reads `db` to its end or until `cancel`: the bytes read, and whether that was all.
fn read_through(db: &Path, cancel: &AtomicBool) -> std::io::Result<(u64, bool)> {
    let mut file = std::fs::File::open(db)?;
    // Sequential: the kernel reads ahead of us in large requests.
    let _ = nix::fcntl::posix_fadvise(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
    );
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok((bytes, false));
        }
        match file.read(&mut buf)? {
            0 => return Ok((bytes, true)),
            n => bytes += n as u64,
        }
    }
}

/// Puts the calling thread in the idle I/O class (served only when the disk has nothing
/// else to do); a kernel or scheduler without classes reads at the normal class.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;
const IOPRIO_CLASS_IDLE: libc::c_long = 3;
const IOPRIO_CLASS_SHIFT: libc::c_long = 13;

fn idle_io_class() {
    // SAFETY: ioprio_set takes three integers and touches no memory of ours; `0` names the
    // calling thread.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
}

/// The memory a read may fill: the host's available memory, bounded by the room under a
/// container's (or a unit's) memory limit, which bounds its page cache as well; 0 when
/// neither is known.
fn available(host: Option<u64>, limit: Option<u64>) -> u64 {
    match (host, limit) {
        (Some(host), Some(limit)) => host.min(limit),
        (host, limit) => host.or(limit).unwrap_or(0),
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn mem_available() -> Option<u64> {
    parse_mem_available(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// The room left under this process's cgroup memory limit (v2, or v1's memory
/// controller); `None` without a limit or when it cannot be read. The usage counts page
/// cache too, so this errs on the side of not reading.
fn cgroup_room() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_room_in(&cgroups, Path::new("/sys/fs/cgroup"))
}

/// [`cgroup_room`] for the cgroups listed in `cgroups` (`/proc/self/cgroup`'s lines)
/// under the cgroup filesystem at `root`.
fn cgroup_room_in(cgroups: &str, root: &Path) -> Option<u64> {
    let (dir, limit, usage) = cgroup_files(cgroups)?;
    let dir = root.join(dir.trim_start_matches('/'));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    room(&read(limit)?, &read(usage)?)
}

/// Where the memory limit and usage of the cgroup named in `/proc/self/cgroup` live,
/// under the cgroup filesystem: the directory, the limit's file, the usage's file. v1's
/// memory controller first (a hybrid host has both, and its v2 tree then has no memory
/// controller).
fn cgroup_files(cgroups: &str) -> Option<(String, &'static str, &'static str)> {
    let entries: Vec<(&str, &str)> = cgroups
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?, parts.next()?))
        })
        .collect();
    if let Some((_, path)) = entries
        .iter()
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "memory"))
    {
        return Some((
            format!("memory{path}"),
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
        ));
    }
    let (_, path) = entries
        .iter()
        .find(|(controllers, _)| controllers.is_empty())?;
    Some((path.to_string(), "memory.max", "memory.current"))
}

/// The room under a limit of `limit` bytes with `usage` in use; `None` without a limit
/// (`max`) or when either does not parse.
fn room(limit: &str, usage: &str) -> Option<u64> {
    let limit: u64 = limit.trim().parse().ok()?;
    let usage: u64 = usage.trim().parse().ok()?;
    Some(limit.saturating_sub(usage))
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_db_that_fits_in_half_the_memory_available_and_is_worth_it() {
        let gib = 1u64 << 30;
        assert_eq!(plan(4 * gib, 16 * gib), Plan::Read);
        assert_eq!(plan(MIN_DB, 2 * MIN_DB), Plan::Read, "both bounds included");
        assert_eq!(plan(MIN_DB - 1, 16 * gib), Plan::Small);
        assert_eq!(plan(4 * gib + 1, 8 * gib), Plan::NoRoom);
        assert_eq!(plan(4 * gib, 0), Plan::NoRoom, "unknown memory: no read");
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let meminfo =
            "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(22_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn a_cgroup_limit_is_found_for_v1_and_v2_and_leaves_its_room() {
        let hybrid = "4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            cgroup_files(hybrid),
            Some((
                "memory/process_api/abc".into(),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes"
            ))
        );
        let unified = "0::/system.slice/etcd.service\n";
        assert_eq!(
            cgroup_files(unified),
            Some((
                "/system.slice/etcd.service".into(),
                "memory.max",
                "memory.current"
            ))
        );
        assert_eq!(cgroup_files("3:cpu,cpuacct:/\n"), None);
        assert_eq!(room("8589934592\n", "6442450944\n"), Some(2 << 30));
        assert_eq!(room("1000", "2000"), Some(0), "over its limit: no room");
        assert_eq!(room("max\n", "6442450944\n"), None, "no limit");
        assert_eq!(room("1000", "lots"), None);
    }

    #[test]
    fn the_reading_thread_alone_goes_to_the_idle_io_class() {
        // SAFETY (both calls): ioprio_get takes two integers; `0` is the calling thread.
        let class_of_this_thread =
            || unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) } >> IOPRIO_CLASS_SHIFT;
        let before = class_of_this_thread();
        let inside = std::thread::spawn(move || {
            idle_io_class();
            class_of_this_thread()
        })
        .join()
        .unwrap();
        assert_eq!(inside, IOPRIO_CLASS_IDLE);
        assert_ne!(before, IOPRIO_CLASS_IDLE);
        assert_eq!(
            class_of_this_thread(),
            before,
            "the caller's class is untouched"
        );
    }

    /// The share of `path`'s pages in the page cache, asked of the kernel (`mincore`).
    fn resident(path: &Path) -> f64 {
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a private read-only map of `len` bytes of an open file, unmapped below;
        // mincore writes one byte per page into `vec`, which has that many.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        vec.iter().filter(|b| *b & 1 == 1).count() as f64 / vec.len() as f64
    }

    #[test]
    fn a_db_out_of_memory_is_back_in_memory_once_read_ahead() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let db = crate::process::datadir::db_path(dir.path());
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let mut file = std::fs::File::create(&db).unwrap();
        let block = vec![9u8; 1 << 20];
        for _ in 0..(MIN_DB >> 20) + 8 {
            file.write_all(&block).unwrap();
        }
        file.sync_all().unwrap();
        let out_of_memory = || {
            let _ = nix::fcntl::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
            resident(&db)
        };
        assert!(out_of_memory() < 0.1, "the test could not evict the file");
        let reading = start(dir.path(), "m1").expect("the thread starts");
        let deadline = Instant::now() + std::time::Duration::from_secs(120);
        while !reading.is_finished() {
            assert!(Instant::now() < deadline, "a read of 264 MiB never ended");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let size = ((MIN_DB >> 20) + 8) << 20;
        assert_eq!(
            reading.join(),
            Outcome::Read {
                bytes: size,
                whole: true
            }
        );
        let after = resident(&db);
        assert!(after > 0.9, "only {after:.2} of the db is in memory");

        // Too small a db, or none: no read at all.
        std::fs::write(&db, b"small").unwrap();
        let small = start(dir.path(), "m1").expect("the thread starts");
        assert_eq!(small.join(), Outcome::Skipped(Plan::Small));
        std::fs::remove_file(&db).unwrap();
        let none = start(dir.path(), "m1").expect("the thread starts");
        assert_eq!(none.join(), Outcome::Failed);
    }

    #[test]
    fn the_room_is_read_from_the_cgroup_filesystem_and_bounds_the_host_memory() {
        let root = tempfile::tempdir().unwrap();
        let v1 = root.path().join("memory/process_api/abc");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "8589934592\n").unwrap();
        std::fs::write(v1.join("memory.usage_in_bytes"), "6442450944\n").unwrap();
        let hybrid = "4:memory:/process_api/abc\n0::/\n";
        assert_eq!(cgroup_room_in(hybrid, root.path()), Some(2 << 30));
        let v2 = root.path().join("system.slice/etcd.service");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("memory.max"), "max\n").unwrap();
        std::fs::write(v2.join("memory.current"), "1000\n").unwrap();
        let unified = "0::/system.slice/etcd.service\n";
        assert_eq!(cgroup_room_in(unified, root.path()), None, "no limit");
        assert_eq!(cgroup_room_in("0::/gone\n", root.path()), None);

        assert_eq!(available(Some(16 << 30), Some(2 << 30)), 2 << 30);
        assert_eq!(available(Some(2 << 30), Some(16 << 30)), 2 << 30);
        assert_eq!(available(Some(3), None), 3);
        assert_eq!(available(None, Some(4)), 4);
        assert_eq!(available(None, None), 0);
        assert!(
            mem_available().is_some_and(|b| b > 0),
            "this host's MemAvailable"
        );
    }

    #[test]
    fn dropping_the_handle_tells_the_read_to_stop() {
        let cancel = Arc::new(AtomicBool::new(false));
        let handle = ReadAhead {
            cancel: cancel.clone(),
            thread: Some(std::thread::spawn(|| Outcome::Failed)),
        };
        drop(handle);
        assert!(cancel.load(Ordering::Relaxed));
    }

    #[test]
    fn reads_the_whole_file_or_stops_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::write(&db, vec![7u8; CHUNK * 2 + 5]).unwrap();
        let go = AtomicBool::new(false);
        assert_eq!(
            read_through(&db, &go).unwrap(),
            ((CHUNK * 2 + 5) as u64, true)
        );
        let stop = AtomicBool::new(true);
        assert_eq!(read_through(&db, &stop).unwrap(), (0, false));
        assert!(read_through(&dir.path().join("none"), &go).is_err());
    }
}
