//! A throw-away PKI for mTLS tests: a CA plus server and client certificates, generated with
//! rcgen at test time (well under a millisecond each) and written as PEM files to a temp dir.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::error::{HarnessError, Result};

/// PEM files of one certificate and its private key.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, PKCS#8, ECDSA P-256).
    pub key: PathBuf,
    /// Subject in the RFC 2253 form that nats-server's `verify_and_map` matches against a
    /// user name, e.g. `CN=node1`.
    pub subject: String,
}

/// A test certificate authority with its files in a temp dir (removed on drop).
pub struct TestPki {
    dir: TempDir,
    ca_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn tls_err(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Tls(e.to_string())
}

impl TestPki {
    /// Creates a new CA (`CN=gslb test CA`) and writes `ca.pem`.
    pub fn new() -> Result<TestPki> {
        let dir = tempfile::Builder::new()
            .prefix("gslb-pki-")
            .tempdir()
            .map_err(tls_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "gslb test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = params.self_signed(&key).map_err(tls_err)?;
        let ca_file = dir.path().join("ca.pem");
        fs::write(&ca_file, cert.pem()).map_err(tls_err)?;
        Ok(TestPki {
            dir,
            ca_file,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM): `ca_file` for the server, `add_root_certificates` for clients.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The temp dir holding all files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `localhost`, `127.0.0.1` and `::1`, usable for both server and
    /// client auth (so it also serves cluster routes). Files: `<name>.pem`, `<name>-key.pem`.
    pub fn server_cert(&self, name: &str) -> Result<CertFiles> {
        self.leaf(
            name,
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate with subject `CN=<common_name>` (no SANs). Files: `<common_name>.pem`,
    /// `<common_name>-key.pem`.
    pub fn client_cert(&self, common_name: &str) -> Result<CertFiles> {
        self.leaf(
            common_name,
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    fn leaf(
        &self,
        cn: &str,
        sans: Vec<String>,
        eku: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<CertFiles> {
        let mut params = CertificateParams::new(sans).map_err(tls_err)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = eku;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(tls_err)?;
        let stem: String = cn
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let cert_path = self.dir.path().join(format!("{stem}.pem"));
        let key_path = self.dir.path().join(format!("{stem}-key.pem"));
        fs::write(&cert_path, cert.pem()).map_err(tls_err)?;
        fs::write(&key_path, key.serialize_pem()).map_err(tls_err)?;
        Ok(CertFiles {
            cert: cert_path,
            key: key_path,
            subject: format!("CN={cn}"),
        })
    }

    /// A top-level nats-server `tls {}` block for `server` signed by this CA. With `verify`,
    /// clients must present a certificate of this CA (mTLS); `extra` goes inside the block
    /// (e.g. `"verify_and_map: true"` or `"timeout: 2"`).
    pub fn server_tls_block(&self, server: &CertFiles, verify: bool, extra: &str) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify}\n  {extra}\n}}\n",
            server.cert.display(),
            server.key.display(),
            self.ca_file.display()
        )
    }
}
