//! TLS for `PostgresStore` with rustls, following libpq's `sslmode` words.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::unique::StoreError;

/// How much of the server's certificate is checked (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// `require`: encrypted, the certificate is not checked (libpq's behaviour without a root
    /// certificate).
    Encrypt,
    /// `verify-ca` (or `require` with `sslrootcert`): the chain ends at a trusted root.
    Chain,
    /// `verify-full`: the chain and the host name.
    Full,
}

/// The connector for `verify` with the roots in `root_cert` (a PEM file) or, without one,
/// the Mozilla roots (`webpki-roots`).
pub(super) fn connector(
    verify: Verify,
    root_cert: Option<&str>,
) -> Result<MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(StoreError::new)?;
    let algorithms = provider.signature_verification_algorithms;
    let config = if verify == Verify::Encrypt {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(algorithms)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        StoreError::new(format!("cannot read sslrootcert `{path}`: {e}"))
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(StoreError::new(format!(
                        "sslrootcert `{path}` holds no usable certificate"
                    )));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(StoreError::new)?;
        let verifier: Arc<dyn ServerCertVerifier> = if verify == Verify::Full {
            webpki
        } else {
            Arc::new(ChainOnly(webpki))
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `sslmode=require`: encryption without authentication of the server, as in libpq. The
/// handshake's signatures are still checked against the presented certificate.
#[derive(Debug)]
struct EncryptOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must end at a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Splits libpq's TLS words out of a connection string (URL or `key=value` form), since
/// tokio-postgres knows only `sslmode=disable|prefer|require`: returns the string for
/// tokio-postgres, the verification asked for (`None`: no TLS), and `sslrootcert`.
pub(super) fn split_tls_params(url: &str) -> (String, Option<Verify>, Option<String>) {
    let mut verify = None;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> Option<String> {
        match key {
            "sslmode" => {
                let (mode, v) = match value {
                    "require" => ("require", Some(Verify::Encrypt)),
                    "verify-ca" => ("require", Some(Verify::Chain)),
                    "verify-full" => ("require", Some(Verify::Full)),
                    other => (other, None),
                };
                verify = v;
                Some(format!("sslmode={mode}"))
            }
            "sslrootcert" => {
                root = Some(value.to_owned());
                None
            }
            _ => Some(format!("{key}={value}")),
        }
    };
    let rewritten = if let Some((base, query)) = url
        .split_once('?')
        .filter(|_| url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        let params: Vec<String> = query
            .split('&')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                take(k, v)
            })
            .collect();
        if params.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", params.join("&"))
        }
    } else if url.contains("://") {
        url.to_owned()
    } else {
        url.split_whitespace()
            .filter_map(|pair| match pair.split_once('=') {
                Some((k, v)) => take(k, v),
                None => Some(pair.to_owned()),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    if verify == Some(Verify::Encrypt) && root.is_some() {
        // libpq: `require` with a root certificate checks the chain, as `verify-ca`.
        verify = Some(Verify::Chain);
    }
    (rewritten, verify, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_words_are_understood() {
        let (url, verify, root) = split_tls_params("postgres://u@h/db");
        assert_eq!(
            (url.as_str(), verify, root),
            ("postgres://u@h/db", None, None)
        );
        let (url, verify, _) =
            split_tls_params("postgres://u@h/db?sslmode=require&application_name=x");
        assert_eq!(url, "postgres://u@h/db?sslmode=require&application_name=x");
        assert_eq!(verify, Some(Verify::Encrypt));
        let (url, verify, root) =
            split_tls_params("postgresql://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem");
        assert_eq!(url, "postgresql://u@h/db?sslmode=require");
        assert_eq!(
            (verify, root.as_deref()),
            (Some(Verify::Full), Some("/ca.pem"))
        );
        let (url, verify, _) = split_tls_params("postgres://u@h/db?sslmode=require&sslrootcert=/c");
        assert_eq!(
            (url.as_str(), verify),
            ("postgres://u@h/db?sslmode=require", Some(Verify::Chain))
        );
        let (url, verify, _) = split_tls_params("host=h user=u sslmode=verify-ca");
        assert_eq!(
            (url.as_str(), verify),
            ("host=h user=u sslmode=require", Some(Verify::Chain))
        );
        let (_, verify, _) = split_tls_params("postgres://u@h/db?sslmode=disable");
        assert_eq!(verify, None);
    }
}
