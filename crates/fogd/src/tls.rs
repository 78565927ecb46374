//! fogd's own certificate authority and HTTPS server certificate.
//!
//! On first start fogd creates a CA and a server certificate signed by it, and writes the
//! CA certificate to `DIR/ca.pem` for clients to trust (`connection_verify=ca.pem` in the
//! Azure SDK, `REQUESTS_CA_BUNDLE` for az, `--cacert` for curl). Later starts reuse them.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Paths of the PEM files the HTTPS listener uses.
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Loads the certificates from `data_dir`, creating them when absent. `names` are the
/// subject alternative names of the server certificate (host names and IP addresses).
pub fn ensure(data_dir: &Path, names: &[String]) -> Result<TlsFiles> {
    let dir = data_dir.join("tls");
    let files = TlsFiles {
        ca_cert: data_dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    if files.ca_cert.exists() && files.server_cert.exists() && files.server_key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    crate::datadir::restrict(&dir, 0o700)?;

    let ca_key = KeyPair::generate().context("generate CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fogd local certificate authority");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, ca_key).context("self-sign CA")?;

    let server_key = KeyPair::generate().context("generate server key")?;
    let mut server = CertificateParams::new(names.to_vec()).context("server parameters")?;
    server.distinguished_name.push(DnType::CommonName, "fogd");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = server
        .signed_by(&server_key, &ca)
        .context("sign server certificate")?;

    crate::datadir::write_secret(&dir.join("ca-key.pem"), &ca.key().serialize_pem())?;
    crate::datadir::write_secret(&files.server_key, &server_key.serialize_pem())?;
    std::fs::write(
        &files.server_cert,
        format!("{}{}", server_cert.pem(), ca.pem()),
    )
    .context("write server certificate")?;
    std::fs::write(&files.ca_cert, ca.pem()).context("write ca.pem")?;
    // Public: every client needs it (fogd's umask would make it private).
    crate::datadir::restrict(&files.ca_cert, 0o644)?;
    Ok(files)
}
