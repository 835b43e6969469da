//! Certificates for the TLS tests, made with rcgen at each run: a CA, a server certificate
//! for `127.0.0.1` and `localhost` signed by it, a client certificate for mutual TLS, and a
//! second, unrelated CA (the wrong one to trust).

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files in a temporary directory (removed on drop).
#[derive(Debug)]
pub struct TestCerts {
    _dir: tempfile::TempDir,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// The server's certificate chain (its certificate, then the CA's).
    pub server_cert: PathBuf,
    /// The server's PKCS#8 private key.
    pub server_key: PathBuf,
    /// The client's certificate.
    pub client_cert: PathBuf,
    /// The client's PKCS#8 private key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("a CA key");
    let pem = params.self_signed(&key).expect("a CA certificate").pem();
    (params, key, pem)
}

/// Makes the certificates.
///
/// # Panics
/// When rcgen fails or the files cannot be written.
#[must_use]
pub fn make() -> TestCerts {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let (ca_params, ca_key, ca_pem) = ca("xtask test CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &issuer).expect("a certificate");
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "nacos test server",
    );
    let (client_pem, client_key) = leaf(vec!["client.test".into()], "nacos test client");
    let (_, _, other_pem) = ca("an unrelated CA");
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("a PEM file");
        path
    };
    TestCerts {
        ca: write("ca.pem", &ca_pem),
        server_cert: write("server.pem", &format!("{server_pem}{ca_pem}")),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_pem),
        client_key: write("client.key", &client_key),
        other_ca: write("other-ca.pem", &other_pem),
        _dir: dir,
    }
}
