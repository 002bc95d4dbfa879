//! The rustls configuration of a gRPC connection, from the same files and with the same
//! rules as the gateway's HTTP client (`transport.rs`): a CA bundle replaces the system's
//! roots, a client certificate goes with its key, and ALPN offers HTTP/2 (and HTTP/1.1,
//! so that a TLS server without HTTP/2 still completes the handshake and we can fall back).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use super::GrpcError;

/// The TLS files of a `ClientConfig`, kept for connections made outside the HTTP client
/// (gRPC snapshots), which read them again when they connect.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFiles {
    /// CA bundle (PEM); `None`: the system's roots.
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// Builds the client configuration; every problem names its file.
pub(super) fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, GrpcError> {
    let setup = GrpcError::Setup;
    let mut roots = RootCertStore::empty();
    match &files.cacert {
        Some(cacert) => {
            let pem = read(cacert, "CA bundle (--cacert)")?;
            let certs = certificates(&pem)
                .map_err(|e| setup(format!("CA bundle {}: {e}", cacert.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(setup(format!(
                    "CA bundle {} holds no usable PEM certificate",
                    cacert.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(&read(cert, "client certificate (--cert)")?)
                .map_err(|e| setup(format!("client certificate {}: {e}", cert.display())))?;
            let key_der = PrivateKeyDer::from_pem_slice(&read(key, "client key (--key)")?)
                .map_err(|e| setup(format!("client key {}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                setup(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(setup(
            "a client certificate (--cert) and its key (--key) go together: give both or neither"
                .to_owned(),
        )),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".to_owned());
    }
    Ok(certs)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, GrpcError> {
    std::fs::read(path)
        .map_err(|e| GrpcError::Setup(format!("cannot read the {what} {}: {e}", path.display())))
}
