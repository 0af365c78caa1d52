//! TLS (and the TLS half of WSS): the certificate files are read once, when the config is
//! validated, into a rustls [`ServerConfig`]; the handshake itself runs in each connection's
//! own task.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A TLS setting that could not be loaded: the listener key it came from and what is wrong
/// (naming the file).
#[derive(Debug)]
pub(crate) struct LoadError {
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

impl LoadError {
    fn new(key: &'static str, message: String) -> LoadError {
        LoadError { key, message }
    }
}

/// Builds the server side of TLS 1.2 and 1.3 (rustls' safe defaults) from PEM files. With a
/// `client_ca_file` clients are asked for a certificate signed by one of its CAs (checked
/// chain, validity period and key usage); `require_client_cert` makes it mandatory.
pub(crate) fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
    require_client_cert: bool,
) -> Result<Arc<ServerConfig>, LoadError> {
    // One explicit provider rather than a process-wide default, so nothing else in the
    // process (a client library installing its own) can change what the broker uses.
    let provider: Arc<CryptoProvider> = Arc::new(ring::default_provider());
    let chain = read_certs(cert_file).map_err(|m| LoadError::new("cert_file", m))?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        LoadError::new(
            "key_file",
            format!(
                "{}: no usable private key (PKCS#8, RSA or SEC1 PEM): {e}",
                key_file.display()
            ),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::new("protocol", e.to_string()))?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let err = |m: String| LoadError::new("client_ca_file", m);
            let mut roots = RootCertStore::empty();
            for ca in read_certs(ca_file).map_err(err)? {
                roots
                    .add(ca)
                    .map_err(|e| err(format!("{}: {e}", ca_file.display())))?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !require_client_cert {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| err(format!("{}: {e}", ca_file.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        LoadError::new(
            "key_file",
            format!(
                "{} does not go with {}: {e}",
                key_file.display(),
                cert_file.display()
            ),
        )
    })?;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// Runs the server handshake. With `want_identity`, the client certificate's subject CN is
/// returned, and a certificate without one fails the connection (the CN is its username).
pub(crate) async fn accept<S>(
    acceptor: &TlsAcceptor,
    io: S,
    want_identity: bool,
) -> io::Result<(TlsStream<S>, Option<String>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stream = acceptor.accept(io).await?;
    if !want_identity {
        return Ok((stream, None));
    }
    let cn = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(common_name);
    match cn {
        Some(cn) => Ok((stream, Some(cn))),
        None => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "client certificate has no subject CN to use as username",
        )),
    }
}

/// The first subject Common Name of a DER certificate.
pub(crate) fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_read_from_the_subject() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "thingmq");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-42");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("device-42"));
    }

    #[test]
    fn certificate_without_a_common_name_has_none() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), None);
    }
}
