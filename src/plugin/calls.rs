//! Outbound HTTP calls that plugins make (`proxy_http_call`), performed off the workers: a
//! control-plane thread runs them on its own tokio runtime. A worker hands a call over with a
//! non-blocking `try_send` on a bounded queue and awaits the answer on a oneshot, which its
//! executor polls like any other task; a full queue fails that call at once. Upstreams are
//! `http://` or `https://` (rustls, the upstream verified against the system's roots and/or
//! `[plugins] upstream_ca_file`, SNI from the upstream's host name; on AWS, a Lambda function
//! URL), one HTTP/1.1 connection per call.

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Header pairs as the ABI carries them (names and values as bytes).
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A call as the plugin made it: pseudo-headers (`:method`, `:path`, `:authority`) among the
/// headers, names lowercase.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub upstream: String,
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub trailers: Pairs,
    pub timeout: Duration,
}

/// The answer: `:status` first among the headers.
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub trailers: Pairs,
}

/// Why a call got no answer (the plugin sees a call with no headers, as in Envoy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    QueueFull,
    UnknownUpstream,
    Timeout,
    Failed(String),
}

type Job = (CallRequest, oneshot::Sender<Result<CallResponse, CallError>>);

/// A worker's handle on the call thread.
#[derive(Clone)]
pub struct CallClient {
    tx: mpsc::Sender<Job>,
}

impl CallClient {
    /// Queues `req`; the answer (or why there is none) comes on the returned receiver.
    pub fn call(&self, req: CallRequest) -> oneshot::Receiver<Result<CallResponse, CallError>> {
        let (otx, orx) = oneshot::channel();
        if let Err(mpsc::error::TrySendError::Full((_, otx)) | mpsc::error::TrySendError::Closed((_, otx))) =
            self.tx.try_send((req, otx))
        {
            let _ = otx.send(Err(CallError::QueueFull));
        }
        orx
    }
}

/// A configured upstream: where its calls connect.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// `https://`: TLS to the upstream, verified.
    pub tls: bool,
}

impl Upstream {
    /// `http://host:port` (the port defaults to 80) or `https://host:port` (443).
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{url:?}: upstreams are http:// or https:// URLs")),
        };
        let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Upstream { host, port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }), tls })
    }
}

/// The TLS client settings for `https://` upstreams.
pub fn tls_client(roots: rustls::RootCertStore) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(c))
}

/// Starts the call thread for these upstreams; it ends when every client is gone.
/// `tls`: the client settings `https://` upstreams need (None: they fail, named).
pub fn start(
    upstreams: HashMap<String, Upstream>,
    queue: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> std::io::Result<(CallClient, std::thread::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<Job>(queue.max(1));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let h = std::thread::Builder::new().name("flowdog-calls".into()).spawn(move || {
        rt.block_on(async move {
            let upstreams = Arc::new(upstreams);
            while let Some((req, reply)) = rx.recv().await {
                let ups = upstreams.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let timeout = req.timeout;
                    let r = match tokio::time::timeout(timeout, perform(&ups, tls, req)).await {
                        Ok(r) => r,
                        Err(_) => Err(CallError::Timeout),
                    };
                    let _ = reply.send(r);
                });
            }
        });
    })?;
    Ok((CallClient { tx }, h))
}

async fn perform(
    ups: &HashMap<String, Upstream>,
    tls: Option<Arc<rustls::ClientConfig>>,
    req: CallRequest,
) -> Result<CallResponse, CallError> {
    let up = ups.get(&req.upstream).ok_or(CallError::UnknownUpstream)?;
    let stream = tokio::net::TcpStream::connect((up.host.as_str(), up.port)).await.map_err(|e| fail(&e))?;
    let _ = stream.set_nodelay(true);
    if !up.tls {
        return exchange(TokioIo::new(stream), req).await;
    }
    let cfg = tls.ok_or_else(|| CallError::Failed("https upstream without TLS settings".into()))?;
    let name = rustls::pki_types::ServerName::try_from(up.host.clone())
        .map_err(|e| CallError::Failed(format!("{}: not a TLS server name: {e}", up.host)))?;
    let s = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, stream)
        .await
        .map_err(|e| CallError::Failed(format!("TLS to {}:{}: {e}", up.host, up.port)))?;
    exchange(TokioIo::new(s), req).await
}

fn fail(e: &dyn std::fmt::Display) -> CallError {
    CallError::Failed(e.to_string())
}

/// One request and its answer over `io` (HTTP/1.1).
async fn exchange<I>(io: I, req: CallRequest) -> Result<CallResponse, CallError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<bytes::Bytes>>(io).await.map_err(|e| fail(&e))?;
    tokio::spawn(conn);
    let mut b = http::Request::builder();
    let mut path = "/".to_owned();
    for (k, v) in &req.headers {
        match &k[..] {
            b":method" => b = b.method(&v[..]),
            b":path" => path = String::from_utf8_lossy(v).into_owned(),
            b":authority" => b = b.header(http::header::HOST, &v[..]),
            k if k.starts_with(b":") => {}
            k => b = b.header(k, &v[..]),
        }
    }
    let request = b.uri(path).body(Full::new(bytes::Bytes::from(req.body))).map_err(|e| fail(&e))?;
    let resp = sender.send_request(request).await.map_err(|e| fail(&e))?;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.map_err(|e| fail(&e))?;
    let trailers = collected.trailers().map(pairs).unwrap_or_default();
    let mut headers = vec![(b":status".to_vec(), parts.status.as_str().as_bytes().to_vec())];
    headers.extend(pairs(&parts.headers));
    Ok(CallResponse { headers, body: collected.to_bytes().to_vec(), trailers })
}

fn pairs(h: &http::HeaderMap) -> Pairs {
    h.iter().map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = Upstream::parse("http://198.18.2.10:9000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("198.18.2.10", 9000));
        assert_eq!(Upstream::parse("http://authz.lab.test").unwrap().port, 80);
        let t = Upstream::parse("https://abc.lambda-url.us-east-1.on.aws/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("abc.lambda-url.us-east-1.on.aws", 443, true));
        assert!(Upstream::parse("ftp://x").unwrap_err().contains("http:// or https://"));
        assert!(Upstream::parse("nope nope").is_err());
    }

    #[test]
    fn a_call_over_loopback() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\nx-a: b\r\n\r\n{\"Accept\": true}").unwrap();
            head
        });
        let ups = HashMap::from([("authz".to_owned(), Upstream { host: "127.0.0.1".into(), port, tls: false })]);
        let (client, h) = start(ups, 4, None).unwrap();
        let req = CallRequest {
            upstream: "authz".into(),
            headers: vec![
                (b":method".to_vec(), b"POST".to_vec()),
                (b":path".to_vec(), b"/decide".to_vec()),
                (b":authority".to_vec(), b"authz".to_vec()),
            ],
            body: b"{}".to_vec(),
            trailers: vec![],
            timeout: Duration::from_secs(5),
        };
        let rx = client.call(req.clone());
        let resp = rx.blocking_recv().unwrap().unwrap();
        assert_eq!(resp.headers[0], (b":status".to_vec(), b"200".to_vec()));
        assert!(resp.headers.contains(&(b"x-a".to_vec(), b"b".to_vec())));
        assert_eq!(resp.body, b"{\"Accept\": true}");
        let head = server.join().unwrap();
        assert!(head.starts_with("POST /decide HTTP/1.1\r\n"), "{head}");
        let mut unknown = req;
        unknown.upstream = "nope".into();
        assert_eq!(client.call(unknown).blocking_recv().unwrap().unwrap_err(), CallError::UnknownUpstream);
        drop(client);
        h.join().unwrap();
    }

    #[test]
    fn a_call_over_tls_is_verified() {
        use std::io::{Read, Write};
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        let der = cert.der().clone();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let scfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![der.clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap(),
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            // The first connection is refused by the client (untrusted), the second served.
            for served in [false, true] {
                let (s, _) = l.accept().unwrap();
                let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(scfg.clone()).unwrap(), s);
                let mut buf = [0u8; 1024];
                let Ok(n) = tls.read(&mut buf) else {
                    assert!(!served, "the trusted client's handshake failed");
                    continue;
                };
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /tls HTTP/1.1"));
                tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
                tls.flush().unwrap();
            }
        });
        let up = Upstream::parse(&format!("https://localhost:{port}")).unwrap();
        let ups = HashMap::from([("authz".to_owned(), up)]);
        let req = CallRequest {
            upstream: "authz".into(),
            headers: vec![(b":method".to_vec(), b"GET".to_vec()), (b":path".to_vec(), b"/tls".to_vec())],
            body: vec![],
            trailers: vec![],
            timeout: Duration::from_secs(5),
        };
        // Not trusted: no answer, and the reason names TLS.
        let (client, h) = start(ups.clone(), 4, Some(tls_client(rustls::RootCertStore::empty()).unwrap())).unwrap();
        match client.call(req.clone()).blocking_recv().unwrap() {
            Err(CallError::Failed(why)) => assert!(why.contains("TLS to localhost"), "{why}"),
            r => panic!("an untrusted upstream answered: {r:?}"),
        }
        drop(client);
        h.join().unwrap();
        // Trusted.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let (client, h) = start(ups, 4, Some(tls_client(roots).unwrap())).unwrap();
        let resp = client.call(req).blocking_recv().unwrap().unwrap();
        assert_eq!((resp.headers[0].1.as_slice(), resp.body.as_slice()), (&b"200"[..], &b"ok"[..]));
        drop(client);
        h.join().unwrap();
        server.join().unwrap();
    }
}
