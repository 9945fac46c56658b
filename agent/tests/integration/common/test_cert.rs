//! A self-signed TLS certificate for `127.0.0.1` and `localhost`, made per test with the
//! `openssl` tool. Shared by the `agent` crate's tests (`agent/tests/integration/common`)
//! and the end-to-end tests (`tests/tests/e2e/common/notify.rs`, which include this file by
//! path).
#![allow(dead_code, reason = "the end-to-end tests use only part of it")]

use std::path::PathBuf;
use std::process::Command;

/// The certificate and its key, in a temporary directory that lives as long as this value.
pub struct TestCert {
    /// The certificate (PEM): a client trusts the server with it as its CA file.
    pub cert_file: PathBuf,
    /// The certificate with its key, for a `native_tls::TlsAcceptor`.
    pub identity: native_tls::Identity,
    _dir: tempfile::TempDir,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key_file)
            .arg("-out")
            .arg(&cert_file)
            .output()
            .expect("run openssl (the openssl package)");
        assert!(out.status.success(), "openssl req: {out:?}");
        let cert = std::fs::read(&cert_file).expect("read cert");
        let key = std::fs::read(&key_file).expect("read key");
        let identity = native_tls::Identity::from_pkcs8(&cert, &key).expect("identity");
        TestCert {
            cert_file,
            identity,
            _dir: dir,
        }
    }

    /// A TLS acceptor serving this certificate.
    pub fn acceptor(&self) -> native_tls::TlsAcceptor {
        native_tls::TlsAcceptor::new(self.identity.clone()).expect("TLS acceptor")
    }
}
