//! Outbound HTTP calls that plugins make (`proxy_http_call`), performed off the workers: a
//! control-plane thread runs them on its own tokio runtime. A worker hands a call over with a
//! non-blocking `try_send` on a bounded queue and awaits the answer on a oneshot, which its
//! executor polls like any other task; a full queue fails that call at once.

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
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
}

impl Upstream {
    /// `http://host:port` (the port defaults to 80).
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{url:?}: only http:// upstreams are supported"));
        }
        let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Upstream { host, port: uri.port_u16().unwrap_or(80) })
    }
}

/// Starts the call thread for these upstreams; it ends when every client is gone.
pub fn start(
    upstreams: HashMap<String, Upstream>,
    queue: usize,
) -> std::io::Result<(CallClient, std::thread::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<Job>(queue.max(1));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let h = std::thread::Builder::new().name("flowdog-calls".into()).spawn(move || {
        rt.block_on(async move {
            let upstreams = std::sync::Arc::new(upstreams);
            while let Some((req, reply)) = rx.recv().await {
                let ups = upstreams.clone();
                tokio::spawn(async move {
                    let timeout = req.timeout;
                    let r = match tokio::time::timeout(timeout, perform(&ups, req)).await {
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

async fn perform(ups: &HashMap<String, Upstream>, req: CallRequest) -> Result<CallResponse, CallError> {
    let up = ups.get(&req.upstream).ok_or(CallError::UnknownUpstream)?;
    let fail = |e: &dyn std::fmt::Display| CallError::Failed(e.to_string());
    let stream = tokio::net::TcpStream::connect((up.host.as_str(), up.port)).await.map_err(|e| fail(&e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<bytes::Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
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
        assert!(Upstream::parse("https://x").unwrap_err().contains("only http://"));
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
        let ups = HashMap::from([("authz".to_owned(), Upstream { host: "127.0.0.1".into(), port })]);
        let (client, h) = start(ups, 4).unwrap();
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
}
