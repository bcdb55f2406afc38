//! Leaf certificates, minted on the control plane for the workers.
//!
//! At start the minter makes an ephemeral intermediate CA (a P-256 key that lives only in this
//! process) and has the root sign it: the root's key file, or KMS, so the root's key is used
//! once per intermediate and never by the workers. The intermediate signs the leaves. It lives
//! `intermediate_lifetime` and is replaced when a third of that is left, without a restart;
//! leaves never outlive the intermediate that signed them.
//!
//! A worker that needs a leaf sends a [`Request`] over a bounded queue and parks the flow on a
//! oneshot; the minter thread answers from its cache (bounded, keyed by the names the leaf
//! must carry: the upstream certificate's) or mints one with a key from a small pool of keys
//! generated while idle, so the first handshake to a new host pays one signature, not a key
//! generation. A full queue fails the request at once (the worker counts it); nothing blocks a
//! worker.

use super::root::Root;
use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;
use time::{Duration, OffsetDateTime};
use tokio::sync::oneshot;

/// A name a leaf carries (a subject alternative name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Name {
    Dns(String),
    Ip(IpAddr),
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Dns(d) => f.write_str(d),
            Name::Ip(i) => write!(f, "{i}"),
        }
    }
}

/// The minter's settings (`[tls]` in the config).
#[derive(Debug, Clone)]
pub struct MintConfig {
    pub intermediate_lifetime: Duration,
    /// Leaves cached at most.
    pub cache_size: usize,
    /// Leaf keys kept ready.
    pub key_pool: usize,
    /// Requests waiting at most.
    pub queue: usize,
}

impl Default for MintConfig {
    fn default() -> Self {
        MintConfig { intermediate_lifetime: Duration::hours(24), cache_size: 10_000, key_pool: 16, queue: 1024 }
    }
}

/// Why a worker got no leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintError {
    /// The queue to the minter was full.
    QueueFull,
    /// The minter is gone (shutting down).
    Gone,
    /// Signing failed (the names, or the root/KMS), with the cause.
    Failed(String),
}

impl std::fmt::Display for MintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MintError::QueueFull => f.write_str("the minting queue is full"),
            MintError::Gone => f.write_str("the minter has stopped"),
            MintError::Failed(e) => write!(f, "minting failed: {e}"),
        }
    }
}

/// The minter's counters, read by the control plane without locks.
#[derive(Debug, Default)]
pub struct MintStats {
    pub requests: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub minted: AtomicU64,
    pub errors: AtomicU64,
    pub queue_full: AtomicU64,
    /// Requests sent and not yet taken by the minter.
    pub queue_depth: AtomicU64,
    pub cache_entries: AtomicU64,
    /// Minting times (key from the pool or generated, signature, rustls key): total, max.
    pub mint_us_total: AtomicU64,
    pub mint_us_max: AtomicU64,
    /// Leaves minted with a key generated on demand (the pool was empty).
    pub key_pool_empty: AtomicU64,
    pub intermediates: AtomicU64,
    /// When the current intermediate expires (Unix seconds).
    pub intermediate_not_after: AtomicU64,
}

impl MintStats {
    /// The counters with their names, for the counters file and the metrics.
    pub fn named(&self) -> [(&'static str, u64); 13] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("tls_leaf_requests", g(&self.requests)),
            ("tls_leaf_cache_hits", g(&self.cache_hits)),
            ("tls_leaf_cache_misses", g(&self.cache_misses)),
            ("tls_leaf_minted", g(&self.minted)),
            ("tls_leaf_errors", g(&self.errors)),
            ("tls_leaf_queue_full", g(&self.queue_full)),
            ("tls_leaf_queue_depth", g(&self.queue_depth)),
            ("tls_leaf_cache_entries", g(&self.cache_entries)),
            ("tls_leaf_mint_us_total", g(&self.mint_us_total)),
            ("tls_leaf_mint_us_max", g(&self.mint_us_max)),
            ("tls_leaf_key_pool_empty", g(&self.key_pool_empty)),
            ("tls_intermediates", g(&self.intermediates)),
            ("tls_intermediate_not_after", g(&self.intermediate_not_after)),
        ]
    }
}

/// A worker's request: the names the leaf must carry, sorted and without duplicates.
struct Request {
    names: Vec<Name>,
    reply: oneshot::Sender<Result<Arc<CertifiedKey>, MintError>>,
}

/// The workers' side: cheap to clone, one per worker.
#[derive(Clone)]
pub struct MintClient {
    tx: SyncSender<Request>,
    stats: Arc<MintStats>,
}

impl MintClient {
    /// A leaf (with the intermediate after it) for `names`; the flow waits, the worker does not.
    pub async fn leaf(&self, mut names: Vec<Name>) -> Result<Arc<CertifiedKey>, MintError> {
        names.sort();
        names.dedup();
        let (reply, rx) = oneshot::channel();
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tx.try_send(Request { names, reply }) {
            self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                TrySendError::Full(_) => {
                    self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                    MintError::QueueFull
                }
                TrySendError::Disconnected(_) => MintError::Gone,
            });
        }
        rx.await.unwrap_or(Err(MintError::Gone))
    }

    pub fn stats(&self) -> &Arc<MintStats> {
        &self.stats
    }
}

/// The intermediate in use: its issuer (key and name) and certificate.
struct Intermediate {
    issuer: CertifiedIssuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    renew_at: OffsetDateTime,
}

struct Cached {
    leaf: Arc<CertifiedKey>,
    not_after: OffsetDateTime,
}

/// The control plane's half: owns the root, the intermediate, the cache and the key pool.
pub struct Minter {
    root: Root,
    cfg: MintConfig,
    inter: Intermediate,
    cache: HashMap<Vec<Name>, Cached>,
    /// Insertion order, for evicting the oldest when the cache is full.
    order: VecDeque<Vec<Name>>,
    pool: Vec<KeyPair>,
    stats: Arc<MintStats>,
}

fn p256() -> Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating a P-256 key")
}

/// The intermediate's parameters: a CA that signs leaves only (path length 0).
pub fn intermediate_params(lifetime: Duration, now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("flowdog intermediate {}", now.unix_timestamp()));
    dn.push(DnType::OrganizationName, "flowdog");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    // Clocks behind ours still accept it.
    p.not_before = now - Duration::hours(1);
    p.not_after = now + lifetime;
    p
}

/// A leaf's parameters for `names` (the first is also the common name), valid until `not_after`.
pub fn leaf_params(names: &[Name], not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(first) = names.first() {
        let cn = first.to_string();
        // X.509 caps a common name at 64 characters; the SANs carry the names anyway.
        if cn.len() <= 64 {
            dn.push(DnType::CommonName, cn);
        }
    }
    dn.push(DnType::OrganizationName, "flowdog");
    p.distinguished_name = dn;
    p.subject_alt_names = names
        .iter()
        .map(|n| {
            Ok(match n {
                Name::Dns(d) => SanType::DnsName(d.as_str().try_into().with_context(|| format!("DNS name {d:?}"))?),
                Name::Ip(i) => SanType::IpAddress(*i),
            })
        })
        .collect::<Result<_>>()?;
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = not_before;
    p.not_after = not_after;
    Ok(p)
}

impl Minter {
    /// Makes the first intermediate (the root signs it now: a failure stops the start).
    pub fn new(root: Root, cfg: MintConfig) -> Result<Minter> {
        let stats = Arc::new(MintStats::default());
        let inter = Self::make_intermediate(&root, &cfg, &stats)?;
        Ok(Minter { root, cfg, inter, cache: HashMap::new(), order: VecDeque::new(), pool: Vec::new(), stats })
    }

    fn make_intermediate(root: &Root, cfg: &MintConfig, stats: &MintStats) -> Result<Intermediate> {
        let now = OffsetDateTime::now_utc();
        let params = intermediate_params(cfg.intermediate_lifetime, now);
        let (not_before, not_after) = (params.not_before, params.not_after);
        let issuer = root.issuer()?;
        let inter = CertifiedIssuer::signed_by(params, p256()?, &issuer)
            .map_err(|e| root.signer.explain(e))
            .context("the root signing the intermediate")?;
        stats.intermediates.fetch_add(1, Ordering::Relaxed);
        stats.intermediate_not_after.store(not_after.unix_timestamp().max(0) as u64, Ordering::Relaxed);
        Ok(Intermediate { issuer: inter, not_before, not_after, renew_at: not_after - cfg.intermediate_lifetime / 3 })
    }

    /// The current intermediate's certificate.
    pub fn intermediate_der(&self) -> CertificateDer<'static> {
        self.inter.issuer.der().clone()
    }

    pub fn stats(&self) -> &Arc<MintStats> {
        &self.stats
    }

    /// Replaces the intermediate when its renewal time has come. A failure (KMS unreachable)
    /// keeps the old one and is retried on the next call.
    pub fn renew_if_due(&mut self, now: OffsetDateTime) -> Result<bool> {
        if now < self.inter.renew_at {
            return Ok(false);
        }
        self.inter = Self::make_intermediate(&self.root, &self.cfg, &self.stats)?;
        Ok(true)
    }

    /// Adds one key to the pool if it is not full; false when it is.
    pub fn refill_one(&mut self) -> bool {
        if self.pool.len() >= self.cfg.key_pool {
            return false;
        }
        match p256() {
            Ok(k) => {
                self.pool.push(k);
                true
            }
            Err(_) => false,
        }
    }

    /// A leaf for `names` (sorted, deduplicated): from the cache, or minted.
    pub fn leaf(&mut self, names: &[Name]) -> Result<Arc<CertifiedKey>, MintError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let now = OffsetDateTime::now_utc();
        // A cached leaf is used while more than a tenth of the intermediate's lifetime is left.
        let margin = self.cfg.intermediate_lifetime / 10;
        if let Some(c) = self.cache.get(names) {
            if c.not_after - now > margin {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(c.leaf.clone());
            }
        }
        self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let leaf = self.mint(names, now).map_err(|e| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            MintError::Failed(format!("{e:#}"))
        })?;
        let us = t.elapsed().as_micros() as u64;
        self.stats.minted.fetch_add(1, Ordering::Relaxed);
        self.stats.mint_us_total.fetch_add(us, Ordering::Relaxed);
        self.stats.mint_us_max.fetch_max(us, Ordering::Relaxed);
        if self.cache.len() >= self.cfg.cache_size {
            while let Some(old) = self.order.pop_front() {
                if self.cache.remove(&old).is_some() {
                    break;
                }
            }
        }
        if self.cache.insert(names.to_vec(), Cached { leaf: leaf.clone(), not_after: self.inter.not_after }).is_none() {
            self.order.push_back(names.to_vec());
        }
        self.stats.cache_entries.store(self.cache.len() as u64, Ordering::Relaxed);
        Ok(leaf)
    }

    fn mint(&mut self, names: &[Name], now: OffsetDateTime) -> Result<Arc<CertifiedKey>> {
        if names.is_empty() {
            anyhow::bail!("no name to put in the leaf");
        }
        let key = match self.pool.pop() {
            Some(k) => k,
            None => {
                self.stats.key_pool_empty.fetch_add(1, Ordering::Relaxed);
                p256()?
            }
        };
        let not_before = (now - Duration::hours(1)).max(self.inter.not_before);
        let params = leaf_params(names, not_before, self.inter.not_after)?;
        let cert = params.signed_by(&key, &self.inter.issuer).context("signing the leaf")?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&der).context("loading the leaf key")?;
        Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone(), self.intermediate_der()], signer)))
    }

    /// Starts the minter thread; the workers get clones of the returned client. The thread ends
    /// when every client is gone.
    pub fn start(mut self) -> Result<(MintClient, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::sync_channel(self.cfg.queue.max(1));
        let stats = self.stats.clone();
        // The first handshakes should not wait for key generation.
        while self.refill_one() {}
        let h = std::thread::Builder::new()
            .name("flowdog-mint".into())
            .spawn(move || self.serve(rx))
            .context("starting the minter thread")?;
        Ok((MintClient { tx, stats }, h))
    }

    fn serve(mut self, rx: Receiver<Request>) {
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(req) => {
                    self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                    let r = self.leaf(&req.names);
                    // The flow may be gone already: nothing to do then.
                    let _ = req.reply.send(r);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.renew_if_due(OffsetDateTime::now_utc()) {
                        eprintln!("flowdog: tls: renewing the intermediate CA failed (the current one stays): {e:#}");
                    }
                    // Idle: top up the key pool, a few keys per pause.
                    for _ in 0..4 {
                        if !self.refill_one() {
                            break;
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::{init_local, RootSpec};
    use crate::tls::root::RootSource;
    use std::process::Command;

    fn minter(name: &str, cfg: MintConfig) -> (Minter, std::path::PathBuf) {
        let dir = crate::tls::test_util::scratch("mint", name);
        let f = init_local(&dir, &RootSpec::default(), false).unwrap();
        let root = Root::load(&RootSource { cert: f.cert, key: Some(f.key), ..Default::default() }).unwrap();
        (Minter::new(root, cfg).unwrap(), dir)
    }

    /// Writes a DER certificate as PEM (openssl converts it).
    fn write_pem(path: &std::path::Path, der: &[u8]) {
        let tmp = path.with_extension("der");
        std::fs::write(&tmp, der).unwrap();
        let ok = Command::new("openssl")
            .args(["x509", "-inform", "DER", "-in"])
            .arg(&tmp)
            .arg("-out")
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl x509 -inform DER");
    }

    /// openssl verifies leaf → intermediate → root for `host`, as a TLS server certificate.
    fn verify(dir: &std::path::Path, leaf: &CertifiedKey, host: &str) -> String {
        write_pem(&dir.join("leaf.pem"), &leaf.cert[0]);
        write_pem(&dir.join("inter.pem"), &leaf.cert[1]);
        let o = Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-verify_hostname", host, "-CAfile"])
            .arg(dir.join("ca.pem"))
            .arg("-untrusted")
            .arg(dir.join("inter.pem"))
            .arg(dir.join("leaf.pem"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }

    #[test]
    fn leaves_chain_to_the_root_and_are_cached() {
        let (mut m, dir) = minter("chain", MintConfig { key_pool: 2, ..Default::default() });
        while m.refill_one() {}
        let names = vec![
            Name::Dns("a.example".into()),
            Name::Dns("*.b.example".into()),
            Name::Ip("198.18.2.10".parse().unwrap()),
        ];
        let leaf = m.leaf(&names).unwrap();
        assert_eq!(leaf.cert.len(), 2, "leaf and intermediate");
        for host in ["a.example", "x.b.example"] {
            let out = verify(&dir, &leaf, host);
            assert!(out.contains(": OK"), "{host}: {out}");
        }
        assert!(!verify(&dir, &leaf, "c.example").contains(": OK"), "a name the upstream did not have");
        // The same names: the cached leaf.
        let again = m.leaf(&names).unwrap();
        assert!(Arc::ptr_eq(&leaf, &again));
        let s = m.stats();
        assert_eq!((s.cache_hits.load(Ordering::Relaxed), s.minted.load(Ordering::Relaxed)), (1, 1));
        assert!(m.leaf(&[]).is_err(), "no names, no leaf");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cache_is_bounded_and_the_intermediate_renews() {
        let (mut m, dir) = minter("bounded", MintConfig { cache_size: 3, key_pool: 0, ..Default::default() });
        for i in 0..10 {
            m.leaf(&[Name::Dns(format!("h{i}.example"))]).unwrap();
        }
        assert_eq!(m.stats().cache_entries.load(Ordering::Relaxed), 3);
        assert_eq!(m.stats().key_pool_empty.load(Ordering::Relaxed), 10);
        let before = m.intermediate_der();
        assert!(!m.renew_if_due(OffsetDateTime::now_utc()).unwrap());
        assert!(m.renew_if_due(OffsetDateTime::now_utc() + Duration::hours(20)).unwrap());
        assert_ne!(before, m.intermediate_der());
        let leaf = m.leaf(&[Name::Dns("new.example".into())]).unwrap();
        assert_eq!(leaf.cert[1], m.intermediate_der(), "new leaves come from the new intermediate");
        assert!(verify(&dir, &leaf, "new.example").contains(": OK"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_thread_answers_workers_and_ends_with_them() {
        let (m, dir) = minter("thread", MintConfig::default());
        let (client, h) = m.start().unwrap();
        let leaf = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(client.leaf(vec![Name::Dns("w.example".into()), Name::Dns("w.example".into())]))
            .unwrap();
        assert!(verify(&dir, &leaf, "w.example").contains(": OK"));
        assert_eq!(client.stats().queue_depth.load(Ordering::Relaxed), 0);
        drop(client);
        h.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
