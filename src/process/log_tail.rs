//! The last lines etcd wrote to stderr. etcd's stderr goes through the supervisor, which
//! copies every byte to its own stderr unchanged and keeps the tail, so that when a new
//! version exits the driver can tell a usage error (this member's flags) from a crash (the
//! version's fault) and quote the lines in the reason. If the supervisor dies, etcd dies
//! with it (PR_SET_PDEATHSIG), so nothing is written to a pipe nobody reads. A supervisor
//! that re-executes itself hands the pipe over ([`Tee::hand_over`]) instead.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Lines kept.
const LINES: usize = 40;

/// A line longer than this is cut (etcd's JSON lines are far shorter).
const LINE_MAX: usize = 4096;

/// A shared handle on the tail of one process's stderr (the run loop clears it per start).
#[derive(Debug, Clone, Default)]
pub struct LogTail(Arc<Mutex<Tail>>);

#[derive(Debug, Default)]
struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl LogTail {
    /// Forgets what was kept (a new process starts).
    pub fn clear(&self) {
        let mut t = self.lock();
        t.lines.clear();
        t.partial.clear();
    }

    /// The kept lines, oldest first, the unfinished last one included.
    pub fn text(&self) -> String {
        let t = self.lock();
        let mut out: Vec<String> = t.lines.iter().cloned().collect();
        if !t.partial.is_empty() {
            out.push(String::from_utf8_lossy(&t.partial).into_owned());
        }
        out.join("\n")
    }

    /// Adds bytes as they came.
    pub fn push(&self, bytes: &[u8]) {
        let mut t = self.lock();
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&t.partial).into_owned();
                t.partial.clear();
                t.lines.push_back(line);
                if t.lines.len() > LINES {
                    t.lines.pop_front();
                }
            } else if t.partial.len() < LINE_MAX {
                t.partial.push(b);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        // A panic while holding the lock cannot leave the tail inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running copy of one pipe to the supervisor's stderr. It can be stopped between two
/// chunks to hand the pipe to the re-executed supervisor: what was read is written and
/// flushed, what was not stays in the pipe for the next reader.
#[derive(Debug)]
pub struct Tee {
    /// The pipe's read end (a duplicate, close-on-exec until handed over).
    fd: OwnedFd,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Tee {
    /// Starts copying `fd`, the read end of a pipe, keeping the tail in `tail`.
    pub fn spawn(fd: OwnedFd, tail: LogTail) -> std::io::Result<Self> {
        let keep = fd.try_clone()?;
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(tee(pipe, tail, stopped));
        Ok(Self {
            fd: keep,
            stop,
            task,
        })
    }

    /// Stops the copy and returns the pipe's read end.
    pub async fn hand_over(self) -> OwnedFd {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.fd
    }
}

/// Copies `pipe` to the supervisor's stderr until it closes or `stop` fires, keeping the
/// tail. A dropped `stop` (the process handle went away) does not end the copy: etcd's last
/// lines after its exit still pass through.
async fn tee(
    mut pipe: tokio::net::unix::pipe::Receiver,
    tail: LogTail,
    stop: oneshot::Receiver<()>,
) {
    let mut out = tokio::io::stderr();
    let mut buf = vec![0u8; 16 * 1024];
    let mut stop = Some(stop);
    loop {
        let stopped = async {
            match stop.as_mut() {
                Some(rx) => rx.await.is_ok(),
                None => std::future::pending().await,
            }
        };
        // `read` is cancel-safe: a stop never loses bytes already taken from the pipe.
        let read = tokio::select! {
            biased;
            asked = stopped => Err(asked),
            r = pipe.read(&mut buf) => Ok(r),
        };
        match read {
            Err(true) => break,
            Err(false) => stop = None,
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                tail.push(&buf[..n]);
                // A failing stderr must not stall etcd: the bytes are dropped, the tail kept.
                let _ = out.write_all(&buf[..n]).await;
            }
        }
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_across_chunks() {
        let tail = LogTail::default();
        for i in 0..50 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        tail.push(b"flag provided but not ");
        tail.push(b"defined: -debug");
        let text = tail.text();
        assert!(text.starts_with("line 10\n"), "{text}");
        assert!(
            text.ends_with("flag provided but not defined: -debug"),
            "{text}"
        );
        tail.clear();
        assert_eq!(tail.text(), "");
    }

    #[tokio::test]
    async fn a_handed_over_pipe_loses_nothing() {
        use std::io::{Read, Write};
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut write = std::fs::File::from(write);
        write.write_all(b"a\n").unwrap();
        let tail = LogTail::default();
        let tee = Tee::spawn(read, tail.clone()).unwrap();
        tokio::task::yield_now().await;
        let fd = tee.hand_over().await;
        write.write_all(b"b\n").unwrap();
        drop(write);
        let mut rest = String::new();
        std::fs::File::from(fd).read_to_string(&mut rest).unwrap();
        let copied = tail.text();
        assert!(
            (copied == "a" && rest == "b\n") || (copied.is_empty() && rest == "a\nb\n"),
            "tail {copied:?}, left in the pipe {rest:?}"
        );
    }
}
