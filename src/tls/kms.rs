//! A signing key held in AWS KMS, for rcgen: the root CA's private key never leaves KMS.
//!
//! [`KmsKey::connect`] reads the key's public half with `GetPublicKey` and checks that the key
//! can sign (KeyUsage `SIGN_VERIFY`) with a spec we can put in a certificate: `ECC_NIST_P256`
//! (ECDSA with SHA-256) or `RSA_2048`/`RSA_3072`/`RSA_4096` (PKCS #1 v1.5 with SHA-256).
//! Each [`SigningKey::sign`] is then one `Sign` call.
//!
//! The calls block on a current-thread tokio runtime that the key owns. That is only right off
//! the workers, on the control plane, and never from inside another tokio runtime (blocking
//! there panics): the root signs its own certificate at `ca init` and one intermediate at start.
//!
//! The IAM permissions needed on the key are `kms:GetPublicKey` and `kms:Sign`.

use anyhow::{anyhow, bail, Context, Result};
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_lc_rs::signature::{UnparsedPublicKey, VerificationAlgorithm};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyUsageType, MessageType, SigningAlgorithmSpec};
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use std::sync::Mutex;
use std::time::Duration;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The largest message KMS `Sign` takes as `RAW`; a bigger one goes as its SHA-256 (`DIGEST`).
const RAW_MAX: usize = 4096;

/// How long one KMS call may take, retries included, before `ca init` or the start gives up.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A KMS asymmetric key that rcgen signs certificates with.
#[derive(Debug)]
pub struct KmsKey {
    /// The key as `GetPublicKey` names it: its ARN on AWS (moto 5.2 gives the bare key id). The
    /// `Sign` calls use it rather than the id given, which may be an alias that could move.
    key_id: String,
    /// `ECC_NIST_P256`, `RSA_2048`, ...
    spec: String,
    alg: &'static SignatureAlgorithm,
    signing_algorithm: SigningAlgorithmSpec,
    /// Checks each signature KMS returns before it goes into a certificate.
    verify_alg: &'static dyn VerificationAlgorithm,
    /// The SubjectPublicKeyInfo's key bits: the EC point, or the PKCS #1 RSAPublicKey.
    public_key: Vec<u8>,
    client: aws_sdk_kms::Client,
    rt: tokio::runtime::Runtime,
    /// Why the last `sign` failed: rcgen's `Error::RemoteKeyError` carries no message.
    last_error: Mutex<Option<anyhow::Error>>,
}

impl KmsKey {
    /// Connects to KMS with the default credential chain and reads the key's public half.
    ///
    /// `endpoint_url` points the SDK elsewhere than AWS (an emulator, a VPC endpoint). The
    /// region is `region`, else the one in `key_id` if it is an ARN, else the default chain's.
    pub fn connect(key_id: &str, endpoint_url: Option<&str>, region: Option<&str>) -> Result<KmsKey> {
        Self::connect_with(key_id, endpoint_url, region, None)
    }

    /// [`connect`](Self::connect), with fixed credentials instead of the default chain (tests).
    pub(crate) fn connect_with(
        key_id: &str,
        endpoint_url: Option<&str>,
        region: Option<&str>,
        credentials: Option<aws_sdk_kms::config::Credentials>,
    ) -> Result<KmsKey> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime for KMS calls")?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(TimeoutConfig::builder().operation_timeout(OPERATION_TIMEOUT).build());
        // A key lives in one region: a call to another one only answers NotFound.
        if let Some(r) = region.map(str::to_owned).or_else(|| arn_region(key_id)) {
            loader = loader.region(Region::new(r));
        }
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(c) = credentials {
            loader = loader.credentials_provider(c);
        }
        let conf = rt.block_on(loader.load());
        if conf.region().is_none() {
            bail!("KMS key {key_id}: no AWS region: give the key's ARN or a KMS region, or set AWS_REGION");
        }
        let client = aws_sdk_kms::Client::new(&conf);
        let out = rt
            .block_on(client.get_public_key().key_id(key_id).send())
            .map_err(|e| anyhow!("KMS key {key_id}: GetPublicKey failed: {}", kms_error(&e)))?;
        let name = out.key_id().unwrap_or(key_id).to_owned();

        let usage = out.key_usage();
        if usage != Some(&KeyUsageType::SignVerify) {
            let usage = usage.map_or("none", |u| u.as_str());
            bail!("KMS key {name}: its key usage is {usage}, not SIGN_VERIFY: a root CA's key must sign");
        }
        // KeySpec replaced CustomerMasterKeySpec; emulators (moto 5.2) still only fill the old one.
        #[allow(deprecated)]
        let spec = out
            .key_spec()
            .map(|s| s.as_str().to_owned())
            .or_else(|| out.customer_master_key_spec().map(|s| s.as_str().to_owned()))
            .ok_or_else(|| anyhow!("KMS key {name}: GetPublicKey gave no key spec"))?;
        let (alg, signing_algorithm, verify_alg): (_, _, &'static dyn VerificationAlgorithm) = match spec.as_str() {
            "ECC_NIST_P256" => (
                &rcgen::PKCS_ECDSA_P256_SHA256,
                SigningAlgorithmSpec::EcdsaSha256,
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            ),
            "RSA_2048" | "RSA_3072" | "RSA_4096" => (
                &rcgen::PKCS_RSA_SHA256,
                SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            ),
            other => {
                bail!("KMS key {name}: key spec {other} is not supported: use ECC_NIST_P256 or RSA_2048/3072/4096")
            }
        };
        let algorithms = out.signing_algorithms();
        if !algorithms.is_empty() && !algorithms.contains(&signing_algorithm) {
            bail!("KMS key {name}: it does not offer the signing algorithm {}", signing_algorithm.as_str());
        }

        let spki = out.public_key().ok_or_else(|| anyhow!("KMS key {name}: GetPublicKey gave no public key"))?;
        let (_, info) = SubjectPublicKeyInfo::from_der(spki.as_ref())
            .map_err(|e| anyhow!("KMS key {name}: its public key is not a SubjectPublicKeyInfo: {e}"))?;
        let kind_matches = match info.parsed() {
            Ok(PublicKey::EC(point)) => spec == "ECC_NIST_P256" && point.data().len() == 65,
            Ok(PublicKey::RSA(_)) => spec.starts_with("RSA_"),
            _ => false,
        };
        if !kind_matches {
            bail!("KMS key {name}: its public key is not a {spec} key");
        }
        Ok(KmsKey {
            public_key: info.subject_public_key.data.to_vec(),
            key_id: name,
            spec,
            alg,
            signing_algorithm,
            verify_alg,
            client,
            rt,
            last_error: Mutex::new(None),
        })
    }

    /// The key as KMS names it: its ARN (on AWS).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key's KMS key spec: `ECC_NIST_P256`, `RSA_2048`, ...
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Signs `msg` with KMS, and checks the signature against the public key before handing it
    /// out: a certificate with a bad signature would only fail later, on every client.
    pub fn sign_checked(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let (message, message_type) = if msg.len() <= RAW_MAX {
            // RAW where it fits: KMS hashes it. (moto 5.2 does not implement DIGEST: it hashes
            // the digest again.)
            (msg.to_vec(), MessageType::Raw)
        } else {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
            (digest.as_ref().to_vec(), MessageType::Digest)
        };
        let out = self
            .rt
            .block_on(
                self.client
                    .sign()
                    .key_id(&self.key_id)
                    .message(Blob::new(message))
                    .message_type(message_type)
                    .signing_algorithm(self.signing_algorithm.clone())
                    .send(),
            )
            .map_err(|e| anyhow!("KMS key {}: Sign failed: {}", self.key_id, kms_error(&e)))?;
        let sig = out.signature().ok_or_else(|| anyhow!("KMS key {}: Sign gave no signature", self.key_id))?;
        UnparsedPublicKey::new(self.verify_alg, &self.public_key).verify(msg, sig.as_ref()).map_err(|_| {
            anyhow!("KMS key {}: the signature from Sign does not verify with its public key", self.key_id)
        })?;
        Ok(sig.as_ref().to_vec())
    }

    /// Turns an rcgen error from signing with this key into the KMS error behind it, if any.
    pub fn explain(&self, e: rcgen::Error) -> anyhow::Error {
        let last = self.last_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        match (e, last) {
            (rcgen::Error::RemoteKeyError, Some(cause)) => cause,
            (e, _) => anyhow!(e),
        }
    }
}

impl PublicKeyData for KmsKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl SigningKey for KmsKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_checked(msg).map_err(|e| {
            *self.last_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

/// The region in a KMS ARN: `arn:PARTITION:kms:REGION:ACCOUNT:key/ID` (or `alias/NAME`).
fn arn_region(key_id: &str) -> Option<String> {
    let mut parts = key_id.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) if !region.is_empty() => Some(region.to_owned()),
        _ => None,
    }
}

/// KMS's error code and message where it answered, else the whole chain (no connection, ...).
fn kms_error<E, R>(e: &aws_sdk_kms::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_arn() {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(arn_region(arn).as_deref(), Some("eu-west-1"));
        assert_eq!(arn_region("arn:aws-cn:kms:cn-north-1:111122223333:alias/root").as_deref(), Some("cn-north-1"));
        assert_eq!(arn_region("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
        assert_eq!(arn_region("alias/root"), None);
        assert_eq!(arn_region("arn:aws:s3:::bucket"), None);
    }
}
