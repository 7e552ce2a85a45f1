//! TLS to the broker (feature `tls`): rustls with the `ring` provider (no C toolchain for
//! aws-lc), trusting the certificate authorities the caller gives as PEM.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::error::BusError;

/// A rumqttc TLS transport trusting exactly the certificates in `ca_pem`.
pub(crate) fn transport(ca_pem: &[u8]) -> Result<rumqttc::Transport, BusError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| BusError::Options(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| bad("CA certificate PEM", &e))?;
        roots.add(cert).map_err(|e| bad("CA certificate", &e))?;
    }
    if roots.is_empty() {
        return Err(BusError::Options(
            "no certificate found in the CA PEM".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_pem_without_certificates() {
        assert!(matches!(transport(b""), Err(BusError::Options(_))));
        assert!(matches!(transport(b"not pem"), Err(BusError::Options(_))));
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(transport(broken).is_err());
    }
}
