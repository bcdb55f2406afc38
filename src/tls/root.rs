//! The root CA as the appliance loads it at start, to sign its ephemeral intermediate.
//!
//! The root's certificate is a file (`ca.pem`, from `flowdog ca init`); its key is either a local
//! file (`ca.key`, for development) or a KMS key (production: the key never leaves KMS, and
//! signing the intermediate is one `kms:Sign` call). [`Root::load`] refuses a root whose key is not
//! the certificate's, or whose certificate is not a CA, before anything is signed with it.

use super::kms::KmsKey;
use anyhow::{anyhow, bail, Context, Result};
use rcgen::{Issuer, KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::PathBuf;

/// Where the root comes from: its certificate, and exactly one of a key file and a KMS key.
#[derive(Debug, Clone, Default)]
pub struct RootSource {
    /// The root certificate, PEM (`ca.pem`).
    pub cert: PathBuf,
    /// The root's private key, PKCS #8 PEM (`ca.key`).
    pub key: Option<PathBuf>,
    /// The root's KMS key: an ARN, a key id or an alias.
    pub kms_key_id: Option<String>,
    /// Where to reach KMS instead of AWS's endpoint (an emulator, a VPC endpoint).
    pub kms_endpoint_url: Option<String>,
    /// The KMS region, if neither the key's ARN nor the default chain gives it.
    pub kms_region: Option<String>,
}

/// The root's private key: a local key pair, or a KMS key that signs remotely.
#[derive(Debug)]
pub enum RootSigner {
    Kms(KmsKey),
    Local(KeyPair),
}

impl RootSigner {
    /// Turns an rcgen error from signing with this key into its cause: for KMS, KMS's own error
    /// (rcgen only says `RemoteKeyError`).
    pub fn explain(&self, e: rcgen::Error) -> anyhow::Error {
        match self {
            RootSigner::Kms(k) => k.explain(e),
            RootSigner::Local(_) => anyhow!(e),
        }
    }
}

impl PublicKeyData for RootSigner {
    fn der_bytes(&self) -> &[u8] {
        match self {
            RootSigner::Kms(k) => k.der_bytes(),
            RootSigner::Local(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            RootSigner::Kms(k) => k.algorithm(),
            RootSigner::Local(k) => k.algorithm(),
        }
    }
}

impl SigningKey for RootSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            RootSigner::Kms(k) => k.sign(msg),
            RootSigner::Local(k) => k.sign(msg),
        }
    }
}

/// The loaded root: its key, checked against its certificate.
#[derive(Debug)]
pub struct Root {
    pub signer: RootSigner,
    pub cert_der: CertificateDer<'static>,
    /// The certificate as it was in the file, one PEM block.
    pub cert_pem: String,
}

impl Root {
    /// Reads the root's certificate, connects to its key, and checks that the key is the
    /// certificate's and that the certificate is a CA.
    pub fn load(src: &RootSource) -> Result<Root> {
        Self::load_with(src, None)
    }

    /// [`load`](Self::load), with fixed KMS credentials instead of the default chain (tests).
    pub(crate) fn load_with(src: &RootSource, credentials: Option<aws_sdk_kms::config::Credentials>) -> Result<Root> {
        let cert_path = src.cert.display();
        if src.kms_key_id.is_none() && (src.kms_endpoint_url.is_some() || src.kms_region.is_some()) {
            // Only a KMS key uses them: set without one, they are a mistake worth naming.
            bail!("root CA {cert_path}: a KMS endpoint or region is set, but no KMS key id");
        }
        let text = std::fs::read_to_string(&src.cert).with_context(|| format!("root CA {cert_path}: cannot read"))?;
        let (cert_der, cert_pem) = one_certificate(&text).with_context(|| format!("root CA {cert_path}"))?;
        let cert_key = {
            let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
                .map_err(|e| anyhow!("root CA {cert_path}: not an X.509 certificate: {e}"))?;
            check_ca(&x509).with_context(|| format!("root CA {cert_path}"))?;
            x509.public_key().subject_public_key.data.to_vec()
        };

        let (signer, what) = match (&src.key, &src.kms_key_id) {
            (Some(key), None) => {
                let pem = std::fs::read_to_string(key)
                    .with_context(|| format!("root CA key {}: cannot read", key.display()))?;
                let pair = KeyPair::from_pem(&pem).map_err(|e| {
                    anyhow!("root CA key {}: not a private key rcgen can sign with: {e}", key.display())
                })?;
                (RootSigner::Local(pair), format!("root CA key {}", key.display()))
            }
            (None, Some(id)) => {
                let k =
                    KmsKey::connect_with(id, src.kms_endpoint_url.as_deref(), src.kms_region.as_deref(), credentials)?;
                let what = format!("KMS key {}", k.key_id());
                (RootSigner::Kms(k), what)
            }
            (Some(_), Some(_)) => bail!("root CA {cert_path}: both a key file and a KMS key id are set; set one"),
            (None, None) => bail!("root CA {cert_path}: neither a key file nor a KMS key id is set; set one"),
        };
        if signer.der_bytes() != cert_key.as_slice() {
            bail!("{what} is not the key of the root certificate {cert_path}: they come from different CAs");
        }
        Ok(Root { signer, cert_der, cert_pem })
    }

    /// The root as rcgen's issuer of the intermediate: its subject, key identifier and key usages
    /// come from the certificate.
    pub fn issuer(&self) -> Result<Issuer<'_, &RootSigner>> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.signer).context("reading the root certificate as an issuer")
    }
}

/// The one certificate in a PEM file: its DER, and its PEM block as written.
fn one_certificate(text: &str) -> Result<(CertificateDer<'static>, String)> {
    let mut certs = CertificateDer::pem_slice_iter(text.as_bytes());
    let der = match certs.next() {
        Some(c) => c.map_err(|e| anyhow!("not PEM: {e}"))?,
        None => bail!("no PEM CERTIFICATE in it"),
    };
    if certs.next().is_some() {
        bail!("more than one certificate in it: give the root alone");
    }
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let block = text
        .find(BEGIN)
        .and_then(|start| text[start..].find(END).map(|len| &text[start..start + len + END.len()]))
        .ok_or_else(|| anyhow!("no PEM CERTIFICATE block in it"))?;
    Ok((der, format!("{block}\n")))
}

/// A root must be a CA (basicConstraints cA) allowed to sign certificates (keyCertSign, where
/// the certificate restricts its key usage at all).
fn check_ca(x509: &x509_parser::certificate::X509Certificate<'_>) -> Result<()> {
    let bc = x509.basic_constraints().map_err(|e| anyhow!("bad basicConstraints: {e}"))?;
    if !bc.is_some_and(|bc| bc.value.ca) {
        bail!("not a CA certificate (basicConstraints has no cA): it cannot sign the intermediate");
    }
    let ku = x509.key_usage().map_err(|e| anyhow!("bad keyUsage: {e}"))?;
    if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
        bail!("its key usage does not allow signing certificates (no keyCertSign)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::ca::{self, RootSpec};
    use super::*;
    use crate::tls::test_util::openssl;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa};
    use std::path::Path;
    use std::process::Command;

    fn scratch(name: &str) -> PathBuf {
        crate::tls::test_util::scratch("root", name)
    }

    fn local(dir: &Path) -> RootSource {
        RootSource { cert: dir.join("ca.pem"), key: Some(dir.join("ca.key")), ..Default::default() }
    }

    /// Signs an intermediate with the root and has openssl check the chain.
    fn intermediate_verifies(root: &Root, dir: &Path) {
        let issuer = root.issuer().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "flowdog intermediate");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let cert = p.signed_by(&key, &issuer).map_err(|e| root.signer.explain(e)).unwrap();
        let (root_pem, inter_pem) = (dir.join("root-check.pem"), dir.join("intermediate.pem"));
        std::fs::write(&root_pem, &root.cert_pem).unwrap();
        std::fs::write(&inter_pem, cert.pem()).unwrap();
        let out = openssl(&["verify", "-CAfile", root_pem.to_str().unwrap(), inter_pem.to_str().unwrap()]);
        assert!(out.contains(": OK"), "{out}");
    }

    #[test]
    fn a_local_root_loads_and_signs_an_intermediate() {
        let dir = scratch("local");
        ca::init_local(&dir, &RootSpec::default(), false).unwrap();
        let root = Root::load(&local(&dir)).unwrap();
        assert!(matches!(root.signer, RootSigner::Local(_)));
        assert_eq!(root.cert_pem, std::fs::read_to_string(dir.join("ca.pem")).unwrap());
        intermediate_verifies(&root, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_from_another_root_is_refused() {
        let (a, b) = (scratch("mismatch-a"), scratch("mismatch-b"));
        ca::init_local(&a, &RootSpec::default(), false).unwrap();
        ca::init_local(&b, &RootSpec::default(), false).unwrap();
        let src = RootSource { key: Some(b.join("ca.key")), ..local(&a) };
        let e = format!("{:#}", Root::load(&src).unwrap_err());
        let (key, cert) = (b.join("ca.key"), a.join("ca.pem"));
        assert!(
            e.contains(&format!(
                "root CA key {} is not the key of the root certificate {}",
                key.display(),
                cert.display()
            )),
            "{e}"
        );
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn exactly_one_key_source_and_a_ca_certificate() {
        let dir = scratch("sources");
        ca::init_local(&dir, &RootSpec::default(), false).unwrap();
        let both = RootSource { kms_key_id: Some("alias/root".into()), ..local(&dir) };
        let e = format!("{:#}", Root::load(&both).unwrap_err());
        assert!(e.contains("both a key file and a KMS key id"), "{e}");
        let neither = RootSource { key: None, ..local(&dir) };
        let e = format!("{:#}", Root::load(&neither).unwrap_err());
        assert!(e.contains("neither a key file nor a KMS key id"), "{e}");
        let stray = RootSource { key: None, kms_region: Some("us-east-1".into()), ..local(&dir) };
        let e = format!("{:#}", Root::load(&stray).unwrap_err());
        assert!(e.contains("no KMS key id"), "{e}");

        // A leaf certificate with its own key: matching, but not a CA.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = CertificateParams::new(vec!["www.example.test".into()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.join("leaf.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("leaf.key"), key.serialize_pem()).unwrap();
        let src = RootSource { cert: dir.join("leaf.pem"), key: Some(dir.join("leaf.key")), ..Default::default() };
        let e = format!("{:#}", Root::load(&src).unwrap_err());
        assert!(e.contains("leaf.pem") && e.contains("not a CA certificate"), "{e}");

        // Two certificates in the file.
        let two = format!("{}{}", std::fs::read_to_string(dir.join("ca.pem")).unwrap(), leaf.pem());
        std::fs::write(dir.join("two.pem"), two).unwrap();
        let e = format!("{:#}", Root::load(&RootSource { cert: dir.join("two.pem"), ..local(&dir) }).unwrap_err());
        assert!(e.contains("more than one certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// moto's server mode (scripts/setup.sh installs moto[server]) on a free local port, killed
    /// on drop.
    struct Moto {
        child: std::process::Child,
        url: String,
    }

    impl Moto {
        fn start() -> Moto {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("moto_server (scripts/setup.sh installs moto[server])");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "moto_server did not listen on port {port}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Moto { child, url: format!("http://127.0.0.1:{port}") }
        }

        fn credentials() -> aws_sdk_kms::config::Credentials {
            aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "flowdog-tests")
        }

        /// Makes a SIGN_VERIFY key of `spec` and gives its ARN.
        fn create_key(&self, spec: aws_sdk_kms::types::KeySpec) -> String {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let conf = aws_sdk_kms::Config::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .endpoint_url(&self.url)
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(Self::credentials())
                .build();
            let client = aws_sdk_kms::Client::from_conf(conf);
            let out = rt
                .block_on(
                    client.create_key().key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify).key_spec(spec).send(),
                )
                .unwrap();
            out.key_metadata().unwrap().arn().unwrap().to_owned()
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The KMS path end to end against moto: `ca init` through KMS, then the root as the
    /// appliance loads it signs an intermediate that openssl accepts under it.
    #[test]
    fn a_kms_root_loads_and_signs_an_intermediate() {
        let moto = Moto::start();
        for spec in [aws_sdk_kms::types::KeySpec::EccNistP256, aws_sdk_kms::types::KeySpec::Rsa2048] {
            let arn = moto.create_key(spec.clone());
            let key = KmsKey::connect_with(&arn, Some(&moto.url), None, Some(Moto::credentials())).unwrap();
            assert_eq!(key.spec(), spec.as_str());
            let dir = scratch(&format!("kms-{}", spec.as_str()));
            let cert = ca::init_kms(&dir, &RootSpec::default(), &key, false).unwrap();
            assert!(!dir.join("ca.key").exists());
            let text = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
            assert!(text.contains("CA:TRUE, pathlen:1"), "{text}");

            let src = RootSource {
                cert,
                kms_key_id: Some(arn.clone()),
                kms_endpoint_url: Some(moto.url.clone()),
                kms_region: Some("us-east-1".into()),
                ..Default::default()
            };
            let root = Root::load_with(&src, Some(Moto::credentials())).unwrap();
            // moto names a key by its bare id, AWS by its ARN.
            assert!(matches!(&root.signer, RootSigner::Kms(k) if arn.ends_with(k.key_id())));
            intermediate_verifies(&root, &dir);

            // Another KMS key than the certificate's is refused.
            let other = moto.create_key(spec.clone());
            let src = RootSource { kms_key_id: Some(other.clone()), ..src };
            let e = format!("{:#}", Root::load_with(&src, Some(Moto::credentials())).unwrap_err());
            let other_id = other.rsplit('/').next().unwrap();
            assert!(e.contains("is not the key of the root certificate") && e.contains(other_id), "{e}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
