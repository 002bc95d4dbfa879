//! Blocking work (file I/O, hashing, copying, lock probes) off the runtime thread: [`run`]
//! puts a closure on tokio's blocking pool and awaits it. On the supervisor's
//! single-threaded runtime, a multi-GB copy or an open on a hung mount must not stall
//! signals, the health checks or the turn lease's keepalives.
//!
//! A worker that does not finish (it panicked, or the runtime is shutting down) becomes
//! [`WorkerLost`], which each caller's error type takes through its own `From`: the
//! caller's `?` gives its typed error. A caller that needs to say more (which file) makes
//! its closure return `Ok::<_, WorkerLost>(result)` and maps the outer error itself.

use tokio::task::JoinError;

/// A blocking worker that did not finish: it panicked, or the runtime is shutting down.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct WorkerLost(#[from] JoinError);

/// Runs `f` on tokio's blocking pool and returns its result; a worker that did not finish
/// becomes `E` through `From<WorkerLost>`.
pub async fn run<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<WorkerLost> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(WorkerLost(e).into()),
    }
}

impl From<WorkerLost> for String {
    fn from(e: WorkerLost) -> Self {
        e.to_string()
    }
}

impl From<WorkerLost> for std::io::Error {
    fn from(e: WorkerLost) -> Self {
        std::io::Error::other(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn returns_the_result_and_a_panic_becomes_the_callers_error() {
        let ok: Result<u32, String> = run(|| Ok(7)).await;
        assert_eq!(ok, Ok(7));
        let failed: Result<u32, String> = run(|| Err("no".to_owned())).await;
        assert_eq!(failed, Err("no".to_owned()));
        let lost: Result<u32, std::io::Error> = run(|| panic!("worker died")).await;
        let err = lost.unwrap_err();
        assert!(err.to_string().contains("panic"), "{err}");
    }
}
