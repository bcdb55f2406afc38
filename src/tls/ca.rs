//! The root CA that the instances behind the appliance trust.
//!
//! `flowdog ca init --out DIR` makes one for development: an ECDSA P-256 key (`ca.key`, PKCS#8
//! PEM, mode 0600) and a self-signed certificate (`ca.pem`), valid ten years, a CA that may sign
//! one level below it (the appliance's ephemeral intermediate, which signs the leaves). In
//! production the root's key lives in AWS KMS instead and never touches the appliance:
//! `flowdog ca init --kms-key-id ARN --out DIR` has KMS sign the certificate and writes only
//! `ca.pem` ([`init_kms`]).

use super::kms::KmsKey;
use anyhow::{bail, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Where `init_local` wrote the root.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// The root's subject and validity.
#[derive(Debug, Clone)]
pub struct RootSpec {
    pub common_name: String,
    pub valid_days: i64,
}

impl Default for RootSpec {
    fn default() -> Self {
        RootSpec { common_name: "flowdog root CA".into(), valid_days: 3650 }
    }
}

/// The root certificate's parameters: a CA for one level below it (the intermediate), able to
/// sign certificates and CRLs, backdated a day for clocks that lag.
pub fn root_params(spec: &RootSpec) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, spec.common_name.as_str());
    dn.push(DnType::OrganizationName, "flowdog");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(spec.valid_days);
    p
}

fn write_new(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(mode);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o.open(path).with_context(|| {
        if path.exists() && !force {
            format!("{}: exists; flowdog ca init never overwrites a CA (--force replaces it)", path.display())
        } else {
            format!("{}: cannot create", path.display())
        }
    })?;
    f.write_all(data).with_context(|| format!("{}: cannot write", path.display()))?;
    // A replaced file keeps its old mode: set it.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .with_context(|| format!("{}: cannot set mode {mode:o}", path.display()))?;
    Ok(())
}

fn check_spec(spec: &RootSpec) -> Result<()> {
    if spec.valid_days < 1 {
        bail!("the root's validity must be at least a day");
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the directory", dir.display()))
}

/// Makes a local root CA in `dir` (created if missing): `ca.key` (0600) and `ca.pem` (0644).
pub fn init_local(dir: &Path, spec: &RootSpec, force: bool) -> Result<CaFiles> {
    check_spec(spec)?;
    create_dir(dir)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating the root's P-256 key")?;
    let cert = root_params(spec).self_signed(&key).context("signing the root certificate")?;
    let files = CaFiles { key: dir.join("ca.key"), cert: dir.join("ca.pem") };
    write_new(&files.key, key.serialize_pem().as_bytes(), 0o600, force)?;
    write_new(&files.cert, cert.pem().as_bytes(), 0o644, force)?;
    Ok(files)
}

/// Makes a root CA whose key is the KMS key `key`: KMS signs the certificate, and `dir` (created
/// if missing) gets only `ca.pem` (0644). The path of `ca.pem` comes back.
///
/// With `force`, a `ca.key` left in `dir` by a local root is removed: it is not this root's key.
pub fn init_kms(dir: &Path, spec: &RootSpec, key: &KmsKey, force: bool) -> Result<PathBuf> {
    check_spec(spec)?;
    let stale_key = dir.join("ca.key");
    if stale_key.exists() && !force {
        bail!(
            "{}: a local root's key is here, and a KMS root has none; \
             flowdog ca init never overwrites a CA (--force replaces it)",
            stale_key.display()
        );
    }
    // Sign before touching `dir`: a refused KMS call leaves nothing behind.
    let cert =
        root_params(spec).self_signed(key).map_err(|e| key.explain(e)).context("signing the root certificate")?;
    create_dir(dir)?;
    let path = dir.join("ca.pem");
    write_new(&path, cert.pem().as_bytes(), 0o644, force)?;
    if stale_key.exists() {
        std::fs::remove_file(&stale_key).with_context(|| format!("{}: cannot remove", stale_key.display()))?;
    }
    Ok(path)
}

/// What to tell the user after `ca init`: how to make clients trust the root. `kms_key` is the
/// ARN of the root's KMS key, if it has one.
pub fn trust_instructions(cert: &Path, kms_key: Option<&str>) -> String {
    let c = cert.display();
    let key = match kms_key {
        Some(arn) => format!(
            "The root's key stays in KMS ({arn}): the appliance needs kms:GetPublicKey and kms:Sign on it, \
             and there is no key file to guard."
        ),
        None => "Keep the key (ca.key, mode 0600) off the appliance hosts in production: use a KMS key there.".into(),
    };
    format!(
        "To trust this root on the instances behind the appliance:\n\
         \x20 Debian / Ubuntu:      cp {c} /usr/local/share/ca-certificates/flowdog.crt && update-ca-certificates\n\
         \x20 Amazon Linux 2023:    cp {c} /etc/pki/ca-trust/source/anchors/flowdog.pem && update-ca-trust\n\
         \x20 curl, one request:    curl --cacert {c} https://...\n\
         {key}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_util::openssl;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        crate::tls::test_util::scratch("ca", name)
    }

    #[test]
    fn a_root_openssl_accepts_with_a_private_key() {
        let dir = scratch("init");
        let f = init_local(&dir, &RootSpec::default(), false).unwrap();
        assert_eq!(std::fs::metadata(&f.key).unwrap().permissions().mode() & 0o777, 0o600);
        let cert = f.cert.to_str().unwrap();
        let text = openssl(&["x509", "-in", cert, "-noout", "-text"]);
        assert!(text.contains("CA:TRUE, pathlen:1"), "{text}");
        assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
        assert!(text.contains("prime256v1") || text.contains("P-256"), "{text}");
        assert!(text.contains("CN = flowdog root CA"), "{text}");
        // Self-signed and valid now; the key is the certificate's.
        assert!(openssl(&["verify", "-CAfile", cert, cert]).contains(": OK"));
        let from_key = openssl(&["pkey", "-in", f.key.to_str().unwrap(), "-pubout"]);
        let from_cert = openssl(&["x509", "-in", cert, "-noout", "-pubkey"]);
        assert_eq!(from_key, from_cert);
        // Never overwritten by accident.
        let e = init_local(&dir, &RootSpec::default(), false).unwrap_err();
        assert!(format!("{e:#}").contains("never overwrites"), "{e:#}");
        let before = std::fs::read(&f.cert).unwrap();
        init_local(&dir, &RootSpec::default(), true).unwrap();
        assert_ne!(std::fs::read(&f.cert).unwrap(), before, "--force made a new root");
        assert_eq!(std::fs::metadata(&f.key).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
