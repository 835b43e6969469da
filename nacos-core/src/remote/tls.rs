//! TLS under the gRPC connection (feature `rustls`): the rustls client configuration made
//! from [`GrpcTls`], and the connector tonic's channel opens its TCP+TLS streams with.
//!
//! A Nacos server with `nacos.remote.server.rpc.tls.enableTls=true` speaks TLS on its gRPC
//! port (with `compatibility=true`, the default, plain text as well); HTTP/2 is chosen by
//! ALPN (`h2`), as grpc-java's server expects. The server's certificate is checked
//! against the configured CA file, else the system's roots (rustls-platform-verifier, as
//! reqwest's HTTPS does), for the configured name, else the host the connection goes to.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;

use crate::error::{Error, Result};
use crate::settings::GrpcTls;

/// What a TLS connection needs: the rustls configuration and the name to check.
#[derive(Clone)]
pub(crate) struct Tls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads `settings`' files and makes the client configuration.
///
/// # Errors
/// [`Error::Config`] naming the variable whose file cannot be read or holds no usable
/// certificate or key, or `NACOS_TLS_SERVER_NAME` when it is not a DNS name or IP.
pub(crate) fn tls(settings: &GrpcTls) -> Result<Tls> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("NACOS_GRPC_TLS", "true", format!("TLS: {e}")))?;
    let builder = if settings.trust_all {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAll(provider())))
    } else if let Some(ca) = &settings.ca_file {
        let mut roots = RootCertStore::empty();
        for cert in certificates("NACOS_TLS_CA_FILE", ca)? {
            roots.add(cert).map_err(|e| {
                Error::config(
                    "NACOS_TLS_CA_FILE",
                    ca.display(),
                    format!("CA certificates rustls can use: {e}"),
                )
            })?;
        }
        builder.with_root_certificates(roots)
    } else {
        use rustls_platform_verifier::BuilderVerifierExt;
        builder.with_platform_verifier().map_err(|e| {
            Error::config(
                "NACOS_TLS_CA_FILE",
                "",
                format!("a CA file (the system's roots cannot be read: {e})"),
            )
        })?
    };
    let mut config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates("NACOS_TLS_CERT_FILE", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::config(
                    "NACOS_TLS_KEY_FILE",
                    key.display(),
                    format!("a readable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::config(
                    "NACOS_TLS_KEY_FILE",
                    settings
                        .key_file
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display(),
                    format!("the private key of NACOS_TLS_CERT_FILE: {e}"),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let server_name = match &settings.server_name {
        Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
            Error::config("NACOS_TLS_SERVER_NAME", name, "a DNS name or an IP address")
        })?),
        None => None,
    };
    Ok(Tls {
        config: Arc::new(config),
        server_name,
    })
}

/// Every certificate of the PEM file `path`, at least one.
fn certificates(variable: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let unreadable = |why: String| {
        Error::config(
            variable,
            path.display(),
            format!("a readable PEM file of certificates: {why}"),
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unreadable(e.to_string()))?;
    if certs.is_empty() {
        return Err(unreadable("no certificate in it".to_owned()));
    }
    Ok(certs)
}

/// Opens TCP, then TLS, to the URI's host and port: the connector of a tonic channel.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) tls: Tls,
}

impl tonic::codegen::Service<Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            let name = match tls.server_name {
                Some(name) => name,
                None => ServerName::try_from(host.clone())
                    .map_err(|_| invalid("the host is neither a DNS name nor an IP address"))?,
            };
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = TlsConnector::from(tls.config).connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Accepts any server certificate (`NACOS_TLS_TRUST_ALL`), still checking the handshake's
/// signatures.
#[derive(Debug)]
struct TrustAll(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for TrustAll {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(settings: &GrpcTls) -> String {
        tls(settings).unwrap_err().to_string()
    }

    #[test]
    fn unreadable_or_empty_files_name_their_variable() {
        let dir = std::env::temp_dir().join(format!("nacos-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = error(&GrpcTls {
            ca_file: Some(missing.clone()),
            ..GrpcTls::default()
        });
        assert!(
            e.contains("NACOS_TLS_CA_FILE") && e.contains("missing.pem"),
            "{e}"
        );
        let e = error(&GrpcTls {
            ca_file: Some(empty.clone()),
            ..GrpcTls::default()
        });
        assert!(
            e.contains("NACOS_TLS_CA_FILE") && e.contains("no certificate"),
            "{e}"
        );
        let e = error(&GrpcTls {
            trust_all: true,
            cert_file: Some(empty.clone()),
            key_file: Some(missing),
            ..GrpcTls::default()
        });
        assert!(e.contains("NACOS_TLS_CERT_FILE"), "{e}");
        let e = error(&GrpcTls {
            trust_all: true,
            server_name: Some("not a name!".into()),
            ..GrpcTls::default()
        });
        assert!(e.contains("NACOS_TLS_SERVER_NAME"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn https_servers_take_the_same_files() {
        let config = |ca: &str| {
            crate::settings::Config::builder()
                .service_name("svc")
                .server_addr("https://127.0.0.1:8443")
                .grpc_tls(GrpcTls {
                    ca_file: Some(ca.into()),
                    ..GrpcTls::default()
                })
                .build()
                .unwrap()
        };
        let e = crate::client::NamingClient::new(&config("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.to_string().contains("NACOS_TLS_CA_FILE"), "{e}");
        let dir = std::env::temp_dir().join(format!("nacos-https-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = crate::client::NamingClient::new(&config(empty.to_str().unwrap())).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_connection_offers_h2() {
        let tls = tls(&GrpcTls {
            trust_all: true,
            ..GrpcTls::default()
        })
        .unwrap();
        assert_eq!(tls.config.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
