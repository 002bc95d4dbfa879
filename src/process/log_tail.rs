//! The last lines etcd wrote to stderr. etcd's stderr goes through the supervisor, which
//! copies every byte to its own stderr unchanged and keeps the tail, so that when a new
//! version exits the driver can tell a usage error (this member's flags) from a crash (the
//! version's fault) and quote the lines in the reason. If the supervisor dies, etcd dies
//! with it (PR_SET_PDEATHSIG), so nothing is written to a pipe nobody reads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Copies `pipe` to the supervisor's stderr until it closes, keeping the tail.
pub async fn tee(mut pipe: tokio::net::unix::pipe::Receiver, tail: LogTail) {
    let mut out = tokio::io::stderr();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                tail.push(&buf[..n]);
                // A failing stderr must not stall etcd: the bytes are dropped, the tail kept.
                let _ = out.write_all(&buf[..n]).await;
            }
        }
    }
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
}
