//! The signals the supervisor handles: TERM and INT stop etcd, HUP reloads the supervisor
//! (a re-exec in place, see `reexec`), the others are forwarded.

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};

/// The signals the supervisor forwards to etcd.
pub struct Signals {
    source: Source,
}

enum Source {
    Os(Box<OsSignals>),
    /// Unit tests deliver "signals" through a channel instead of the process.
    #[cfg(test)]
    Channel(tokio::sync::mpsc::UnboundedReceiver<Signal>),
}

struct OsSignals {
    term: SignalStream,
    int: SignalStream,
    hup: SignalStream,
    quit: SignalStream,
    usr1: SignalStream,
    usr2: SignalStream,
}

impl Signals {
    /// Subscribes to every handled signal.
    pub fn subscribe() -> std::io::Result<Self> {
        Ok(Self {
            source: Source::Os(Box::new(OsSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: signal(SignalKind::hangup())?,
                quit: signal(SignalKind::quit())?,
                usr1: signal(SignalKind::user_defined1())?,
                usr2: signal(SignalKind::user_defined2())?,
            })),
        })
    }

    /// Signals sent through a channel, for tests of the run loop.
    #[cfg(test)]
    pub(crate) fn from_channel(rx: tokio::sync::mpsc::UnboundedReceiver<Signal>) -> Self {
        Self {
            source: Source::Channel(rx),
        }
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Signal {
        match &mut self.source {
            Source::Os(os) => tokio::select! {
                _ = os.term.recv() => Signal::SIGTERM,
                _ = os.int.recv() => Signal::SIGINT,
                _ = os.hup.recv() => Signal::SIGHUP,
                _ = os.quit.recv() => Signal::SIGQUIT,
                _ = os.usr1.recv() => Signal::SIGUSR1,
                _ = os.usr2.recv() => Signal::SIGUSR2,
            },
            #[cfg(test)]
            Source::Channel(rx) => match rx.recv().await {
                Some(sig) => sig,
                None => std::future::pending().await,
            },
        }
    }
}
