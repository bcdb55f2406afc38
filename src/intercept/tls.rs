//! TLS on an intercepted flow, connecting upstream first (as mitmproxy does).
//!
//! 1. Peek at the client's ClientHello without consuming it (`flowdog_wire::tls`): SNI and
//!    ALPN offer. Not TLS, truncated, malformed or too large: an alert, the flow ends, counted.
//! 2. An SNI that policy excludes from decryption: the legs relay bytes untouched from the
//!    ClientHello on, so the client talks to the real server (its certificate, pinning intact).
//! 3. Open TLS upstream with the same SNI (none: the server's address) and the client's ALPN
//!    offer (what the proxy speaks of it: h2, http/1.1), verifying the server's certificate
//!    against the configured trust store. A certificate that fails gets the client an alert
//!    naming the problem, or a 502 page saying it, as configured, and a log line.
//! 4. Ask the control plane for a leaf that carries the upstream certificate's names (minted
//!    off the worker; the flow waits on a oneshot, the worker goes on).
//! 5. Answer the client's (still unread) ClientHello with that leaf, offering only the ALPN the
//!    server chose, then run the HTTP proxy over the two TLS streams: HTTP/2 when ALPN said h2,
//!    HTTP/1.1 otherwise, through the same hook as cleartext.
//!
//! Session secrets of both legs go to the key log when one is configured.

use super::hook::{FlowInfo, TlsInfo};
use super::proxy::{self, bump, Conn, Io};
use super::tcp::LegStream;
use crate::tls::events::{Cause, Events, Failure};
use crate::tls::mint::{MintClient, Name};
use bytes::Bytes;
use flowdog_wire::tls::{parse_client_hello, ClientHello, HelloError};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::server::ProducesTickets;
use rustls::server::{ClientHello as RustlsHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::CertificateError;
use std::cell::RefCell;
use std::future::poll_fn;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What the client gets when the upstream certificate fails verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUntrusted {
    /// A fatal TLS alert naming the problem (certificate_expired, unknown_ca, ...).
    Alert,
    /// The handshake completes with a leaf for the name asked for, then a 502 page says why.
    BadGateway,
}

/// An SNI pattern excluded from decryption: a name, or `*.suffix` for every name below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniPattern {
    Exact(String),
    Below(String),
}

impl SniPattern {
    pub fn parse(s: &str) -> Result<SniPattern, String> {
        let s = s.trim().to_ascii_lowercase();
        let (below, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s.clone()),
        };
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        if !ok {
            return Err(format!("{s:?} is not a host name or *.name"));
        }
        Ok(if below { SniPattern::Below(name) } else { SniPattern::Exact(name) })
    }

    /// Whether `sni` (lowercase) matches.
    pub fn matches(&self, sni: &str) -> bool {
        match self {
            SniPattern::Exact(n) => sni == n,
            SniPattern::Below(n) => {
                sni.len() > n.len() + 1 && sni.ends_with(n.as_str()) && sni.as_bytes()[sni.len() - n.len() - 1] == b'.'
            }
        }
    }
}

/// What every worker's TLS code shares (made once on the control plane).
pub struct TlsShared {
    pub provider: Arc<rustls::crypto::CryptoProvider>,
    /// Verifies upstream certificates against the trust store; ALPN is set per flow.
    pub upstream: Arc<rustls::ClientConfig>,
    pub mint: MintClient,
    pub exclude: Vec<SniPattern>,
    pub on_untrusted: OnUntrusted,
    pub events: Events,
    /// The largest ClientHello accepted.
    pub max_hello: usize,
}

/// One worker's TLS state: the shared part, and the client-side session resumption state.
pub struct TlsCtx {
    shared: Arc<TlsShared>,
    upstream: Arc<rustls::ClientConfig>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl TlsCtx {
    /// The worker's own session caches, so that no lock is shared between workers.
    pub fn new(shared: Arc<TlsShared>) -> anyhow::Result<TlsCtx> {
        let mut up = (*shared.upstream).clone();
        up.resumption = rustls::client::Resumption::in_memory_sessions(1024);
        Ok(TlsCtx {
            upstream: Arc::new(up),
            shared,
            sessions: rustls::server::ServerSessionMemoryCache::new(4096),
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()?,
        })
    }
}

/// A TLS stream both relay directions can use (one task reads it while the other writes):
/// the worker is single-threaded and a poll never re-enters, so the borrow is never contended.
pub struct Shared<T> {
    inner: Rc<RefCell<T>>,
    leg: LegStream,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared { inner: self.inner.clone(), leg: self.leg.clone() }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Shared<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Shared<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_shutdown(cx)
    }
}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static> Io for Shared<T> {
    fn abort(&self) {
        self.leg.abort();
    }
}

fn shared<T>(t: T, leg: &LegStream) -> Shared<T> {
    Shared { inner: Rc::new(RefCell::new(t)), leg: leg.clone() }
}

/// Always the one leaf minted for this connection.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: RustlsHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

// TLS alert descriptions (RFC 8446 §6).
const ALERT_UNEXPECTED_MESSAGE: u8 = 10;
const ALERT_HANDSHAKE_FAILURE: u8 = 40;
const ALERT_BAD_CERTIFICATE: u8 = 42;
const ALERT_CERTIFICATE_REVOKED: u8 = 44;
const ALERT_CERTIFICATE_EXPIRED: u8 = 45;
const ALERT_CERTIFICATE_UNKNOWN: u8 = 46;
const ALERT_UNKNOWN_CA: u8 = 48;
const ALERT_DECODE_ERROR: u8 = 50;
const ALERT_INTERNAL_ERROR: u8 = 80;

/// Sends a fatal alert in a plaintext record (the handshake has not started on this leg).
async fn alert(client: &mut LegStream, description: u8) {
    let _ = proxy::write_all(client, &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]).await;
}

fn cert_alert(e: &CertificateError) -> u8 {
    match e {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => ALERT_CERTIFICATE_EXPIRED,
        CertificateError::UnknownIssuer => ALERT_UNKNOWN_CA,
        CertificateError::Revoked => ALERT_CERTIFICATE_REVOKED,
        CertificateError::BadEncoding
        | CertificateError::BadSignature
        | CertificateError::NotValidForName
        | CertificateError::NotValidForNameContext { .. } => ALERT_BAD_CERTIFICATE,
        _ => ALERT_CERTIFICATE_UNKNOWN,
    }
}

/// The rustls error inside an I/O error from tokio-rustls, if that is what it is.
fn rustls_error(e: &std::io::Error) -> Option<rustls::Error> {
    e.get_ref().and_then(|x| x.downcast_ref::<rustls::Error>()).cloned()
}

fn cause(e: std::io::Error) -> Cause {
    match rustls_error(&e) {
        Some(t) => Cause::Tls(t),
        None => Cause::Io(e.kind()),
    }
}

/// The names the upstream certificate carries (DNS and IP subject alternative names, else its
/// common name); `fallback` when it has none usable.
fn upstream_names(cert: &[u8], fallback: Name) -> Vec<Name> {
    let mut names = Vec::new();
    if let Ok((_, x)) = x509_parser::parse_x509_certificate(cert) {
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => names.push(Name::Dns(d.to_ascii_lowercase())),
                    x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                        4 => names.push(Name::Ip(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()))),
                        16 => names.push(Name::Ip(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()))),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        if names.is_empty() {
            if let Some(cn) = x.subject().iter_common_name().next().and_then(|c| c.as_str().ok()) {
                names.push(Name::Dns(cn.to_ascii_lowercase()));
            }
        }
    }
    // A name rcgen would refuse (not IA5) is left out rather than failing the leaf.
    names.retain(|n| match n {
        Name::Dns(d) => !d.is_empty() && d.is_ascii(),
        Name::Ip(_) => true,
    });
    if names.is_empty() {
        names.push(fallback);
    }
    // Many names (CDN certificates carry hundreds) make a slow leaf: the first 100 will do.
    names.truncate(100);
    names
}

/// Serves an intercepted connection whose client spoke first with a TLS record. Returns true
/// when relay tasks own the legs now; false when the legs are to be closed.
pub(super) async fn serve(client: LegStream, upstream: LegStream, conn: Rc<Conn>) -> bool {
    let ctx = conn.ctx.clone();
    let stats = &ctx.stats;
    let Some(tls) = ctx.tls.as_ref() else {
        // No CA configured: nothing to answer with; the bytes pass through.
        bump(&stats.tls_no_ca);
        super::ws::relay(client, Bytes::new(), upstream, Bytes::new(), false, ctx.clone(), (*conn.flow).clone()).await;
        return true;
    };
    let sh = &tls.shared;
    let (c_addr, s_addr) = (conn.flow.client, conn.flow.server);
    let fail = |f: Failure, host: Option<&str>, c: Cause| sh.events.failure(f, c_addr, s_addr, host, c);

    // 1. The ClientHello, peeked.
    let max = sh.max_hello;
    let want = max + 512;
    let head = poll_fn(|cx| {
        client.poll_peek(cx, want, |d| !matches!(parse_client_hello(d, max), Err(HelloError::Incomplete)))
    })
    .await;
    let hello: ClientHello = match parse_client_hello(&head, max) {
        Ok(h) => h,
        Err(HelloError::Incomplete) if head.len() < want => {
            // The client stopped sending (FIN, reset) before its ClientHello was whole.
            bump(&stats.tls_client_gone);
            return false;
        }
        Err(e) => {
            bump(&stats.tls_bad_client_hello);
            let e = if e == HelloError::Incomplete { HelloError::TooLarge } else { e };
            fail(Failure::BadClientHello, None, Cause::Hello(e));
            let desc = if e == HelloError::NotTls { ALERT_UNEXPECTED_MESSAGE } else { ALERT_DECODE_ERROR };
            alert(&mut client.clone(), desc).await;
            return false;
        }
    };
    let sni = hello.sni.as_deref();

    // 2. Excluded from decryption: relay from the ClientHello on.
    if let Some(s) = sni {
        if sh.exclude.iter().any(|p| p.matches(s)) {
            bump(&stats.tls_excluded);
            super::ws::relay(client, Bytes::new(), upstream, Bytes::new(), false, ctx.clone(), (*conn.flow).clone())
                .await;
            return true;
        }
    }

    // 3. Upstream first, with the client's SNI and ALPN.
    let offer: Vec<Vec<u8>> =
        hello.alpn.iter().filter(|p| p.as_slice() == b"h2" || p.as_slice() == b"http/1.1").cloned().collect();
    let mut ucfg = (*tls.upstream).clone();
    ucfg.alpn_protocols = offer;
    let server_name = match sni.map(|s| ServerName::try_from(s.to_string())) {
        Some(Ok(n)) => n,
        _ => ServerName::IpAddress(s_addr.ip().into()),
    };
    let fallback = match sni {
        Some(s) => Name::Dns(s.to_string()),
        None => Name::Ip(s_addr.ip()),
    };
    let up = match tokio_rustls::TlsConnector::from(Arc::new(ucfg))
        .connect(server_name, TokioIo::new(upstream.clone()))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let err = rustls_error(&e);
            if let Some(rustls::Error::InvalidCertificate(ce)) = &err {
                bump(&stats.tls_upstream_rejected);
                let desc = cert_alert(ce);
                fail(Failure::UpstreamRejected, sni, Cause::Tls(rustls::Error::InvalidCertificate(ce.clone())));
                upstream.abort();
                match sh.on_untrusted {
                    OnUntrusted::Alert => alert(&mut client.clone(), desc).await,
                    OnUntrusted::BadGateway => bad_gateway(tls, client, &hello, fallback, &conn, ce).await,
                }
            } else {
                bump(&stats.tls_upstream_failed);
                fail(Failure::UpstreamFailed, sni, cause(e));
                alert(&mut client.clone(), ALERT_HANDSHAKE_FAILURE).await;
            }
            return false;
        }
    };
    let (names, chosen) = {
        let c = up.get_ref().1;
        let names = match c.peer_certificates().and_then(|p| p.first()) {
            Some(cert) => upstream_names(cert, fallback),
            None => vec![fallback],
        };
        (names, c.alpn_protocol().map(<[u8]>::to_vec))
    };

    // 4. The leaf, from the control plane.
    let leaf = match sh.mint.leaf(names).await {
        Ok(l) => l,
        Err(e) => {
            bump(&stats.tls_mint_failed);
            fail(Failure::MintFailed, sni, Cause::Mint(e));
            alert(&mut client.clone(), ALERT_INTERNAL_ERROR).await;
            return false;
        }
    };

    // 5. The client's handshake, then HTTP.
    let h2 = chosen.as_deref() == Some(b"h2");
    let Some(accepted) = accept(tls, &client, leaf, chosen.into_iter().collect(), &conn, sni).await else {
        return false;
    };
    bump(&stats.tls_intercepted);
    // What the plugins read as connection.requested_server_name and connection.tls_version.
    let version = match accepted.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLSv1.3",
    };
    let info = TlsInfo { sni: sni.map(str::to_owned), version };
    let conn = Rc::new(conn.with_flow(FlowInfo { tls: Some(info), ..(*conn.flow).clone() }));
    let c = shared(TokioIo::new(accepted), &client);
    let u = shared(TokioIo::new(up), &upstream);
    if h2 {
        bump(&stats.tls_h2);
        proxy::h2(c, u, conn).await
    } else {
        proxy::h1(c, u, conn).await
    }
}

type ClientTls = tokio_rustls::server::TlsStream<TokioIo<LegStream>>;

/// The handshake with the client, with `leaf` and the ALPN `alpn` (empty: none).
async fn accept(
    tls: &TlsCtx,
    client: &LegStream,
    leaf: Arc<CertifiedKey>,
    alpn: Vec<Vec<u8>>,
    conn: &Conn,
    sni: Option<&str>,
) -> Option<ClientTls> {
    let sh = &tls.shared;
    let mut scfg = rustls::ServerConfig::builder_with_provider(sh.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .ok()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(leaf)));
    scfg.alpn_protocols = alpn;
    scfg.session_storage = tls.sessions.clone();
    scfg.ticketer = tls.ticketer.clone();
    if sh.events.secrets {
        scfg.key_log = Arc::new(sh.events.clone());
    }
    match tokio_rustls::TlsAcceptor::from(Arc::new(scfg)).accept(TokioIo::new(client.clone())).await {
        Ok(s) => Some(s),
        Err(e) => {
            use std::io::ErrorKind::*;
            let gone = rustls_error(&e).is_none()
                && matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe);
            let (counter, failure) = if gone {
                (&conn.ctx.stats.tls_client_gone, Failure::ClientGone)
            } else {
                (&conn.ctx.stats.tls_client_failed, Failure::ClientFailed)
            };
            bump(counter);
            sh.events.failure(failure, conn.flow.client, conn.flow.server, sni, cause(e));
            None
        }
    }
}

/// The upstream certificate failed and the config asks for a page: the client's handshake
/// completes with a leaf for the name it asked for, and every request gets a 502 saying why.
async fn bad_gateway(
    tls: &TlsCtx,
    client: LegStream,
    hello: &ClientHello,
    name: Name,
    conn: &Rc<Conn>,
    e: &CertificateError,
) {
    let Ok(leaf) = tls.shared.mint.leaf(vec![name.clone()]).await else {
        bump(&conn.ctx.stats.tls_mint_failed);
        return;
    };
    let alpn = if hello.alpn.iter().any(|p| p == b"http/1.1") { vec![b"http/1.1".to_vec()] } else { Vec::new() };
    let Some(s) = accept(tls, &client, leaf, alpn, conn, hello.sni.as_deref()).await else { return };
    let text = Bytes::from(format!(
        "flowdog: the certificate of {name} failed verification: {e}\nThe request was not sent.\n"
    ));
    let svc = hyper::service::service_fn(move |_req| {
        let mut r = proxy::status(http::StatusCode::BAD_GATEWAY, text.clone());
        r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        std::future::ready(Ok::<_, std::convert::Infallible>(r))
    });
    let _ = hyper::server::conn::http1::Builder::new().keep_alive(false).serve_connection(TokioIo::new(s), svc).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_patterns() {
        let bank = SniPattern::parse("*.Bank.example").unwrap();
        assert!(bank.matches("www.bank.example"));
        assert!(bank.matches("a.b.bank.example"));
        assert!(!bank.matches("bank.example"));
        assert!(!bank.matches("notbank.example"));
        let one = SniPattern::parse("pinned.example.com").unwrap();
        assert!(one.matches("pinned.example.com"));
        assert!(!one.matches("x.pinned.example.com"));
        assert!(SniPattern::parse("*.").is_err());
        assert!(SniPattern::parse("a..b").is_err());
        assert!(SniPattern::parse("a b").is_err());
    }
}
