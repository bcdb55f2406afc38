//! TLS interception's certificates and secrets: the root CA (`flowdog ca init`, a key file or
//! KMS), the ephemeral intermediate and the leaves minted off the workers, and the key log.
//! The TLS connections themselves are in `intercept::tls`.

pub mod ca;
pub mod events;
pub mod kms;
pub mod mint;
pub mod root;

use crate::config::TlsSection;
use crate::intercept::tls::{OnUntrusted, SniPattern, TlsShared};
use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;

/// TLS interception, started: what the workers share, and the control plane's side.
pub struct TlsRuntime {
    pub shared: Arc<TlsShared>,
    pub mint_stats: Arc<mint::MintStats>,
    pub events_dropped: Arc<std::sync::atomic::AtomicU64>,
    /// The minter's and the event writer's threads; they end when the workers are gone.
    pub threads: Vec<std::thread::JoinHandle<()>>,
    /// The root certificate's subject, for the start-up log line.
    pub root_subject: String,
}

/// The trust store upstream certificates are verified against.
pub fn upstream_roots(cfg: &TlsSection) -> Result<rustls::RootCertStore> {
    trust_store(cfg.upstream_system_roots, cfg.upstream_ca_file.as_deref(), "tls")
}

/// A trust store of the system's roots (`system`) and/or a PEM bundle; `section` names the
/// config section the settings come from (`upstream_system_roots`, `upstream_ca_file`) in
/// errors.
pub fn trust_store(system: bool, ca_file: Option<&std::path::Path>, section: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    if system {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 && ca_file.is_none() {
            bail!(
                "{section}.upstream_system_roots: no system root certificate found ({}); install ca-certificates \
                 or set {section}.upstream_ca_file",
                found.errors.first().map(|e| e.to_string()).unwrap_or_else(|| "the bundle is empty".into())
            );
        }
    }
    if let Some(f) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(f)
            .with_context(|| format!("{section}.upstream_ca_file: {}: cannot read", f.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("{section}.upstream_ca_file: {}: {e}", f.display()))?;
        if certs.is_empty() {
            bail!("{section}.upstream_ca_file: {}: no certificate in it", f.display());
        }
        for c in certs {
            roots.add(c).map_err(|e| anyhow!("{section}.upstream_ca_file: {}: {e}", f.display()))?;
        }
    }
    Ok(roots)
}

/// Loads the root, makes the first intermediate, starts the minter and the event writer, and
/// builds what the workers share. None when the config has no `[tls] root_cert`.
pub fn start(cfg: &TlsSection) -> Result<Option<TlsRuntime>> {
    let Some(src) = cfg.root_source() else { return Ok(None) };
    let root = root::Root::load(&src)?;
    let root_subject = x509_parser::parse_x509_certificate(&root.cert_der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "?".into());
    let minter = mint::Minter::new(root, cfg.mint_config())?;
    let mint_stats = minter.stats().clone();
    let (mint, mint_thread) = minter.start()?;
    let (events, ev_thread) = events::start(cfg.keylog_file.as_deref(), 4096)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut upstream = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(upstream_roots(cfg)?)
        .with_no_client_auth();
    if events.secrets {
        upstream.key_log = Arc::new(events.clone());
    }
    let exclude = cfg
        .exclude_sni
        .iter()
        .map(|p| SniPattern::parse(p).map_err(|e| anyhow!("tls.exclude_sni: {e}")))
        .collect::<Result<_>>()?;
    let events_dropped = events.dropped.clone();
    let shared = Arc::new(TlsShared {
        provider,
        upstream: Arc::new(upstream),
        mint,
        exclude,
        on_untrusted: if cfg.on_untrusted_upstream == "502" { OnUntrusted::BadGateway } else { OnUntrusted::Alert },
        events,
        max_hello: cfg.max_client_hello_bytes,
    });
    Ok(Some(TlsRuntime { shared, mint_stats, events_dropped, threads: vec![mint_thread, ev_thread], root_subject }))
}

/// What the certificate tests share: a scratch directory, and openssl as the judge.
#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;
    use std::process::Command;

    /// An empty directory under the temporary directory, unique to this process.
    pub fn scratch(kind: &str, name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flowdog-{kind}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Runs openssl, which must succeed; its standard output.
    pub fn openssl(args: &[&str]) -> String {
        let o = Command::new("openssl").args(args).output().expect("openssl (scripts/setup.sh installs it)");
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}
