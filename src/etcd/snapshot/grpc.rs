//! The snapshot call itself: `Maintenance/Snapshot` on a connection of its own (see
//! [`Client::rpc_own`]: a stalled writer must not stall the turn lease's keepalive), each
//! message's chunk handed to the writer (`persist`), the stream's end status read before
//! the file is renamed into place.

use std::path::Path;

use super::check::{SnapshotError, SnapshotInfo};
use super::persist::{Ending, Part};
use super::Snap;
use crate::etcd::client::{convert, Client, Fail};
use crate::etcd::error::EtcdError;

impl Client {
    /// One snapshot of a normalized endpoint, without a time limit of its own (the caller's
    /// `timeout` drops it, and with it the temporary file).
    pub(super) async fn snapshot_grpc(
        &self,
        endpoint: &str,
        dest: &Path,
    ) -> Result<SnapshotInfo, Snap> {
        let rpc = self.rpc_own(endpoint).await.map_err(|err| {
            if err.is_transport() || err.is_unavailable() {
                Snap::Skip(err)
            } else {
                Snap::Stop(err)
            }
        })?;
        let mut stream = match rpc.maintenance_client().snapshot().await {
            Ok(stream) => stream,
            Err(err) => {
                return Err(match convert(endpoint, err) {
                    Fail::NotSent(err) => Snap::Skip(err),
                    Fail::Answer(err) if err.is_unavailable() => Snap::Skip(err),
                    Fail::Answer(err) | Fail::Broken(err) => Snap::Stop(err),
                    Fail::TimedOut => Snap::Stop(timed_out(endpoint)),
                })
            }
        };

        let part = Part::<etcd_client::SnapshotResponse>::begin(dest).map_err(Snap::Stop)?;
        let received = async {
            let mut any = false;
            loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        any = true;
                        if !part.send(message).await {
                            // The writer stopped: its error says why.
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(err) => {
                        return Err(match convert(endpoint, err) {
                            // etcd refused the call (auth) before sending anything: its answer.
                            Fail::Answer(err) if !any => err,
                            // etcd ended the stream with an error status.
                            Fail::Answer(EtcdError::Api { code, message, .. }) => {
                                EtcdError::Snapshot {
                                    endpoint: endpoint.to_owned(),
                                    source: SnapshotError::Server { code, message },
                                }
                            }
                            Fail::Answer(err) | Fail::NotSent(err) | Fail::Broken(err) => err,
                            Fail::TimedOut => timed_out(endpoint),
                        });
                    }
                }
            }
        }
        .await;
        let Ending { digest, version } =
            part.finish(endpoint, received).await.map_err(Snap::Stop)?;
        tracing::info!(
            endpoint,
            path = %dest.display(),
            size = digest.size,
            storage_version = version.as_deref().unwrap_or(""),
            "snapshot written"
        );
        Ok(SnapshotInfo {
            path: dest.to_path_buf(),
            endpoint: endpoint.to_owned(),
            size: digest.size,
            sha256: digest.sha256,
            storage_version: version,
        })
    }
}

fn timed_out(endpoint: &str) -> EtcdError {
    EtcdError::Grpc {
        endpoint: endpoint.to_owned(),
        reason: "timed out".to_owned(),
    }
}
