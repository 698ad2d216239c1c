//! `ssl:` remotes, as OVS's own clients (ovn-nbctl, ovn-controller) speak them: the client
//! presents its certificate (ovsdb-server started with `--ca-cert` requires one) and accepts a
//! server whose certificate the CA signed. Like OVS, it does not match the server's name
//! against the certificate: OVN's certificates (ovs-pki's, Kube-OVN's) name a role, not a
//! host, and the members are dialled by address. The chain, its validity and the handshake
//! signatures are checked as usual.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::{Error, Result};

/// OVS's SSL settings (`--private-key`, `--certificate`, `--ca-cert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub private_key: PathBuf,
    pub certificate: PathBuf,
    pub ca_cert: PathBuf,
}

impl TlsFiles {
    /// The files of a directory laid out as Kube-OVN's `kube-ovn-tls` Secret is mounted
    /// (`key`, `cert`, `cacert`).
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            private_key: dir.join("key"),
            certificate: dir.join("cert"),
            ca_cert: dir.join("cacert"),
        }
    }
}

fn tls_error(what: &str, path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what} {}: {detail}", path.display()))
}

/// The rustls configuration for `files`.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&files.ca_cert)
        .map_err(|e| tls_error("reading the CA certificate", &files.ca_cert, e))?
    {
        let cert = cert.map_err(|e| tls_error("the CA certificate", &files.ca_cert, e))?;
        roots
            .add(cert)
            .map_err(|e| tls_error("the CA certificate", &files.ca_cert, e))?;
    }
    if roots.is_empty() {
        return Err(tls_error(
            "the CA certificate",
            &files.ca_cert,
            "no certificate in it",
        ));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .map_err(|e| tls_error("reading the certificate", &files.certificate, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error("the certificate", &files.certificate, e))?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        .map_err(|e| tls_error("the private key", &files.private_key, e))?;
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_error("the CA certificate", &files.ca_cert, e))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SignedByCa { inner }))
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls_error("the certificate and key", &files.certificate, e))?;
    Ok(Arc::new(config))
}

/// The server name to present: the address or host of `host:port`.
pub fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| Error::Tls(format!("{host}: {e}")))
}

/// Everything WebPKI checks but the name (see the module's comment).
#[derive(Debug)]
struct SignedByCa {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for SignedByCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
