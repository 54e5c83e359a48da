//! HTTPS for the Stratos-compatible API: a self-signed certificate made at first start.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ServerError;

/// Loads `<dir>/tls/cert.pem` and `key.pem`, creating a self-signed pair for localhost first if absent.
pub fn server_config(data_dir: &Path) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let io = |path: &Path, e: std::io::Error| ServerError::Io(format!("{}: {e}", path.display()));
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| ServerError::Tls(format!("creating a self-signed certificate: {e}")))?;
        std::fs::write(&key_path, certified.signing_key.serialize_pem())
            .map_err(|e| io(&key_path, e))?;
        std::fs::write(&cert_path, certified.cert.pem()).map_err(|e| io(&cert_path, e))?;
    }
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert_path.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
