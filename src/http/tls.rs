//! TLS settings for the connections jobctl makes itself (API requests, the CloudPSS WebSocket
//! fallback), so they honour a profile's `ca_cert` and `insecure` exactly as reqwest's
//! downloads do: the public web roots plus the profile's certificates, or no verification.

use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The client configuration for a profile's TLS settings: the public web roots plus the
/// profile's `ca_cert` (whose content is `ca_pem`), or no verification when `insecure`.
pub fn client_config(profile: &str, ca_pem: Option<&[u8]>, insecure: bool) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::usage(format!("profile '{profile}': TLS setup failed: {e}")))?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in CertificateDer::pem_slice_iter(ca_pem.unwrap_or_default()) {
            let added = cert
                .map_err(|e| e.to_string())
                .and_then(|c| roots.add(c).map_err(|e| e.to_string()));
            if let Err(e) = added {
                return Err(Error::usage(format!(
                    "profile '{profile}': ca_cert is not a usable PEM certificate: {e}"
                )));
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(config)
}

/// `insecure`: accepts any server certificate, still checking that the server holds its key
/// (the handshake signatures), as reqwest's `danger_accept_invalid_certs` does.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
