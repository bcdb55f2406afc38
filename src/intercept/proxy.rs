//! HTTP through an intercepted flow: hyper's server on the client leg, hyper's client on the
//! upstream leg, the hook between them.
//!
//! The protocol is the client's: a connection that opens with the HTTP/2 preface is HTTP/2
//! with prior knowledge (h2c) on both legs, anything else HTTP/1.1 on both (the server spoke
//! whatever the client speaks before the appliance was there). HTTP/1.1 header-name case is kept
//! as each side sent it. Bodies stream through with hyper's back-pressure unless the hook asks
//! for one whole (capped). A malformed request gets hyper's 400 and closes its connection only;
//! an upstream that fails gets the client a 502, or, mid-response, the response cut short.
//! When the server closes its side, the client's connection closes after the response in
//! flight, as it would have without the appliance.

use super::exec::{spawn, LocalExec, Signal};
use super::hook::{request_host, Decision, FlowInfo, Hook, LocalResponse, RequestInfo};
use super::tcp::{LegStream, PairIo, Side};
use super::tls::TlsCtx;
use super::ws;
use crate::plugin::http::{stop_status, through, Exchange, Stop};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy sends: a peer's, streamed, one it made, or one out of the plugin chain.
/// Boxed without `Send`: bodies live on their worker (hyper's connections there run on the
/// worker's own executor and never ask for `Send`).
pub struct ProxyBody(std::pin::Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError>>>);

impl ProxyBody {
    pub fn new(b: impl http_body::Body<Data = Bytes, Error = BoxError> + 'static) -> ProxyBody {
        ProxyBody(Box::pin(b))
    }
}

impl http_body::Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.0.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Counters the proxy tasks bump; the worker publishes them with its own.
#[derive(Default, Debug)]
pub struct Stats {
    pub requests: Cell<u64>,
    pub responses: Cell<u64>,
    pub local_responses: Cell<u64>,
    pub blocked: Cell<u64>,
    pub bad_requests: Cell<u64>,
    pub upstream_errors: Cell<u64>,
    pub ws_connections: Cell<u64>,
    pub ws_messages: Cell<u64>,
    pub ws_errors: Cell<u64>,
    pub tls_intercepted: Cell<u64>,
    pub tls_h2: Cell<u64>,
    pub tls_excluded: Cell<u64>,
    pub tls_no_ca: Cell<u64>,
    pub tls_bad_client_hello: Cell<u64>,
    pub tls_client_gone: Cell<u64>,
    pub tls_client_failed: Cell<u64>,
    pub tls_upstream_rejected: Cell<u64>,
    pub tls_upstream_failed: Cell<u64>,
    pub tls_mint_failed: Cell<u64>,
    /// Exchanges a plugin failed closed or closed itself.
    pub plugin_failures: Cell<u64>,
}

pub fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// What every proxy task of one worker shares.
pub struct Ctx {
    pub hook: Rc<dyn Hook>,
    /// The plugin chain's instances on this worker, in order (empty: no plugins): the newest
    /// generation, which new connections take.
    pub plugins: RefCell<Rc<crate::plugin::Chain>>,
    pub stats: Rc<Stats>,
    /// Largest body collected whole for the hook.
    pub max_body: usize,
    /// TLS interception; None without a CA (TLS flows are then relayed untouched).
    pub tls: Option<TlsCtx>,
}

/// A byte stream the proxy runs over: a leg, or TLS over a leg. Clones share the stream (the
/// relay's two directions); `abort` resets the leg underneath.
pub trait Io: hyper::rt::Read + hyper::rt::Write + Unpin + Clone + 'static {
    fn abort(&self);
}

impl Io for LegStream {
    fn abort(&self) {
        LegStream::abort(self)
    }
}

/// One intercepted connection.
pub struct Conn {
    pub ctx: Rc<Ctx>,
    pub flow: Rc<FlowInfo>,
    /// The plugin chain this connection started with; it keeps it to the end, whatever
    /// reloads happen meanwhile.
    pub plugins: Rc<crate::plugin::Chain>,
    /// The connection switched to WebSocket (a 101 answering `Upgrade: websocket`).
    websocket: Cell<bool>,
}

impl Conn {
    pub fn new(ctx: Rc<Ctx>, flow: FlowInfo) -> Conn {
        let plugins = ctx.plugins.borrow().clone();
        Conn { ctx, flow: Rc::new(flow), plugins, websocket: Cell::new(false) }
    }

    /// The same connection with what its TLS handshake told (SNI, version, ALPN).
    pub fn with_flow(&self, flow: FlowInfo) -> Conn {
        Conn { ctx: self.ctx.clone(), flow: Rc::new(flow), plugins: self.plugins.clone(), websocket: Cell::new(false) }
    }
}

fn full(b: impl Into<Bytes>) -> ProxyBody {
    ProxyBody::new(Full::new(b.into()).map_err(|e: Infallible| match e {}))
}

fn streamed(b: Incoming) -> ProxyBody {
    ProxyBody::new(b.map_err(BoxError::from))
}

fn local(r: LocalResponse) -> Response<ProxyBody> {
    let mut resp = Response::new(full(r.body));
    *resp.status_mut() = r.status;
    *resp.headers_mut() = r.headers;
    resp
}

/// A plain-text answer of the proxy's own (400, 403, 413, 502).
pub fn status(code: StatusCode, text: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(full(text));
    *r.status_mut() = code;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

/// The upstream connection requests go out on.
#[derive(Clone)]
enum Upstream {
    H1(Rc<RefCell<hyper::client::conn::http1::SendRequest<ProxyBody>>>),
    H2(hyper::client::conn::http2::SendRequest<ProxyBody>),
}

impl Upstream {
    async fn send(&self, req: Request<ProxyBody>) -> hyper::Result<Response<Incoming>> {
        match self {
            Upstream::H1(s) => {
                poll_fn(|cx| s.borrow_mut().poll_ready(cx)).await?;
                let f = s.borrow_mut().send_request(req);
                f.await
            }
            Upstream::H2(s) => {
                let mut s = s.clone();
                poll_fn(|cx| s.poll_ready(cx)).await?;
                s.send_request(req).await
            }
        }
    }
}

/// Proxies one intercepted connection until both sides are done, then closes both legs.
pub async fn proxy(pair: Rc<RefCell<PairIo>>, ctx: Rc<Ctx>, flow: FlowInfo) {
    let client = LegStream::new(pair.clone(), Side::Client);
    let upstream = LegStream::new(pair.clone(), Side::Upstream);
    // Three bytes tell a TLS record from HTTP; the HTTP/2 preface needs its whole length.
    let head = poll_fn(|cx| {
        client.poll_peek(cx, H2_PREFACE.len(), |d| {
            flowdog_wire::tls::looks_like_tls(d).is_some() && !H2_PREFACE.starts_with(d)
        })
    })
    .await;
    let conn = Rc::new(Conn::new(ctx, flow));
    let handed_over = if flowdog_wire::tls::looks_like_tls(&head) == Some(true) {
        super::tls::serve(client, upstream, conn).await
    } else if head == H2_PREFACE {
        h2(client, upstream, conn).await
    } else {
        h1(client, upstream, conn).await
    };
    if !handed_over {
        close_both(&pair);
    }
}

/// Closes both legs (FIN, after what is queued), unless already closed.
pub fn close_both(pair: &Rc<RefCell<PairIo>>) {
    let mut p = pair.borrow_mut();
    for l in &mut p.legs {
        l.socket().close();
    }
    p.touch();
}

/// Runs `conn` until it ends; when `upstream_done` is set first, asks it to finish the
/// exchange in flight and close (`shutdown`).
async fn drive<F: Future>(conn: F, upstream_done: &Signal, shutdown: impl Fn(std::pin::Pin<&mut F>)) -> F::Output {
    let mut conn = pin!(conn);
    let mut shut = false;
    poll_fn(|cx| {
        if !shut && upstream_done.poll_set(cx).is_ready() {
            shutdown(conn.as_mut());
            shut = true;
        }
        conn.as_mut().poll(cx)
    })
    .await
}

/// The upstream side of an upgraded HTTP/1.1 connection, once hyper's client let go of it.
type UpstreamParts<U> = Rc<RefCell<Option<(U, Bytes)>>>;

/// HTTP/1.1. Returns true when the connection was upgraded (the relay tasks own the legs now).
///
/// hyper's own upgrade mechanism wants `Send` streams and the legs are not (they live on one
/// worker), so an upgrade is done by hand: both connections run "without shutdown", and after a
/// 101 each gives back its stream and the bytes it had read past the exchange.
pub async fn h1<C: Io, U: Io>(client: C, upstream: U, conn: Rc<Conn>) -> bool {
    let stats = conn.ctx.stats.clone();
    let (sender, mut uconn) = match hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake::<_, ProxyBody>(upstream)
        .await
    {
        Ok(x) => x,
        Err(_) => return false,
    };
    let upstream_done = Rc::new(Signal::default());
    let upgraded = Rc::new(Cell::new(false));
    let upstream_parts: UpstreamParts<U> = Rc::new(RefCell::new(None));
    let (d, parts) = (upstream_done.clone(), upstream_parts.clone());
    spawn(async move {
        // It ends after a 101 too, possibly before the request's task has seen the response:
        // keep the stream either way, the server side decides.
        if poll_fn(|cx| uconn.poll_without_shutdown(cx)).await.is_ok() {
            let p = uconn.into_parts();
            *parts.borrow_mut() = Some((p.io, p.read_buf));
        }
        d.set();
    });
    let up = Upstream::H1(Rc::new(RefCell::new(sender)));
    let (c, u) = (conn.clone(), upgraded.clone());
    let svc = hyper::service::service_fn(move |req| Box::pin(handle(req, up.clone(), c.clone(), u.clone())));
    let mut server =
        hyper::server::conn::http1::Builder::new().preserve_header_case(true).serve_connection(client, svc);
    let mut shut = false;
    let res = poll_fn(|cx| {
        if !shut && !upgraded.get() && upstream_done.poll_set(cx).is_ready() {
            // The server closed its side: finish the exchange in flight, then close.
            std::pin::Pin::new(&mut server).graceful_shutdown();
            shut = true;
        }
        server.poll_without_shutdown(cx)
    })
    .await;
    match res {
        Ok(()) if upgraded.get() => {
            let client = server.into_parts();
            poll_fn(|cx| upstream_done.poll_set(cx)).await;
            let Some((s_io, s_buf)) = upstream_parts.borrow_mut().take() else { return false };
            let websocket = conn.websocket.get();
            spawn(ws::relay(
                client.io,
                client.read_buf,
                s_io,
                s_buf,
                websocket,
                conn.ctx.clone(),
                (*conn.flow).clone(),
            ));
            true
        }
        Ok(()) => false,
        Err(e) => {
            if e.is_parse() || e.is_parse_too_large() {
                bump(&stats.bad_requests);
            }
            false
        }
    }
}

/// HTTP/2 with prior knowledge.
pub async fn h2<C: Io, U: Io>(client: C, upstream: U, conn: Rc<Conn>) -> bool {
    let (sender, uconn) =
        match hyper::client::conn::http2::Builder::new(LocalExec).handshake::<_, ProxyBody>(upstream).await {
            Ok(x) => x,
            Err(_) => return false,
        };
    let upstream_done = Rc::new(Signal::default());
    let d = upstream_done.clone();
    spawn(async move {
        let _ = uconn.await;
        d.set();
    });
    let up = Upstream::H2(sender);
    let c = conn.clone();
    let no_upgrade = Rc::new(Cell::new(false));
    let svc = hyper::service::service_fn(move |req| handle(req, up.clone(), c.clone(), no_upgrade.clone()));
    let server = hyper::server::conn::http2::Builder::new(LocalExec).serve_connection(client, svc);
    if let Err(e) = drive(server, &upstream_done, |c| c.graceful_shutdown()).await {
        if e.is_parse() {
            bump(&conn.ctx.stats.bad_requests);
        }
    }
    false
}

/// What the client gets when the plugin chain stopped an exchange (counted).
fn stopped(ctx: &Ctx, stop: Stop) -> Response<ProxyBody> {
    match stop {
        Stop::Local(l) => {
            bump(&ctx.stats.local_responses);
            local(*l)
        }
        other => {
            bump(&ctx.stats.plugin_failures);
            let (code, text) = stop_status(&other);
            let mut r = status(code, text);
            if matches!(other, Stop::Closed(_)) {
                r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            r
        }
    }
}

/// What the client gets instead when the hook answers or blocks (counted); None: go on.
fn answer(ctx: &Ctx, d: Decision) -> Option<Response<ProxyBody>> {
    match d {
        Decision::Continue => None,
        Decision::Respond(r) => {
            bump(&ctx.stats.local_responses);
            Some(local(r))
        }
        Decision::Block => {
            bump(&ctx.stats.blocked);
            Some(status(StatusCode::FORBIDDEN, "blocked by flowdog\n"))
        }
    }
}

/// One request: the hook, the plugin chain, upstream, the chain and the hook again.
async fn handle(
    req: Request<Incoming>,
    up: Upstream,
    conn: Rc<Conn>,
    upgraded: Rc<Cell<bool>>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (ctx, flow) = (&conn.ctx, &conn.flow);
    bump(&ctx.stats.requests);
    let wants_upgrade = req.headers().contains_key(http::header::UPGRADE);
    let (mut parts, body) = req.into_parts();
    if wants_upgrade {
        // WebSocket extensions (permessage-deflate) would hide the messages from the hook:
        // offer none, so the two sides agree on plain frames (which both must support).
        parts.headers.remove(http::header::SEC_WEBSOCKET_EXTENSIONS);
    }
    if let Some(r) = answer(ctx, ctx.hook.on_request(flow, &mut parts)) {
        return Ok(r);
    }
    let ex = (!conn.plugins.is_empty()).then(|| Rc::new(Exchange::new(&conn.plugins, conn.flow.clone(), ctx.max_body)));
    let (parts, body) = match &ex {
        Some(ex) => match through(ex, parts, body).await {
            Ok((p, b)) => {
                ex.request_sent(&p);
                (p, b)
            }
            Err(stop) => return Ok(stopped(ctx, stop)),
        },
        None => match hook_request_body(ctx, flow, parts, body).await {
            Ok(x) => x,
            Err(r) => return Ok(r),
        },
    };
    let info = RequestInfo { method: parts.method.clone(), uri: parts.uri.clone(), host: request_host(&parts) };
    let resp = match up.send(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(_) => {
            bump(&ctx.stats.upstream_errors);
            return Ok(status(StatusCode::BAD_GATEWAY, "upstream failed\n"));
        }
    };
    bump(&ctx.stats.responses);
    // (HTTP/2 has no upgrades: there `upgraded` stays false.)
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS && wants_upgrade && !upgraded.get() {
        let websocket = resp
            .headers()
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        conn.websocket.set(websocket);
        upgraded.set(true);
    }
    let (mut rp, rbody) = resp.into_parts();
    if let Some(r) = answer(ctx, ctx.hook.on_response(flow, &info, &mut rp)) {
        return Ok(r);
    }
    if let Some(ex) = &ex {
        return Ok(match through(ex, rp, rbody).await {
            Ok((rp, b)) => Response::from_parts(rp, b),
            Err(Stop::TooLarge(name)) => {
                bump(&ctx.stats.plugin_failures);
                status(StatusCode::BAD_GATEWAY, format!("plugin {name} held more response body than max_body_bytes\n"))
            }
            Err(stop) => stopped(ctx, stop),
        });
    }
    if ctx.hook.wants_response_body(flow, &info, &rp) {
        let mut whole = match Limited::new(rbody, ctx.max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                bump(&ctx.stats.upstream_errors);
                return Ok(status(StatusCode::BAD_GATEWAY, "response body too large to inspect\n"));
            }
        };
        if let Some(r) = answer(ctx, ctx.hook.on_response_body(flow, &info, &rp, &mut whole)) {
            return Ok(r);
        }
        rp.headers.remove(http::header::TRANSFER_ENCODING);
        rp.headers.insert(http::header::CONTENT_LENGTH, whole.len().into());
        return Ok(Response::from_parts(rp, full(whole)));
    }
    Ok(Response::from_parts(rp, streamed(rbody)))
}

/// The request body for the hook: collected whole when it asks (capped: 413 beyond), else
/// streamed. Err: the answer the client gets instead.
async fn hook_request_body(
    ctx: &Ctx,
    flow: &FlowInfo,
    mut parts: http::request::Parts,
    body: Incoming,
) -> Result<(http::request::Parts, ProxyBody), Response<ProxyBody>> {
    if !ctx.hook.wants_request_body(flow, &parts) {
        return Ok((parts, streamed(body)));
    }
    let mut whole = match Limited::new(body, ctx.max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(status(StatusCode::PAYLOAD_TOO_LARGE, "request body too large to inspect\n")),
    };
    if let Some(r) = answer(ctx, ctx.hook.on_request_body(flow, &parts, &mut whole)) {
        return Err(r);
    }
    // The length changed with the body, or the client sent it chunked: say the new one.
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts.headers.insert(http::header::CONTENT_LENGTH, whole.len().into());
    Ok((parts, full(whole)))
}

/// Reads some bytes from a hyper stream: 0 at the end.
pub async fn read_some<R: hyper::rt::Read + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut rb = hyper::rt::ReadBuf::new(buf);
    poll_fn(|cx| std::pin::Pin::new(&mut *r).poll_read(cx, rb.unfilled())).await?;
    Ok(rb.filled().len())
}

/// Writes all of `buf` to a hyper stream.
pub async fn write_all<W: hyper::rt::Write + Unpin>(w: &mut W, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = poll_fn(|cx| std::pin::Pin::new(&mut *w).poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// Closes a hyper stream's sending side.
pub async fn shutdown<W: hyper::rt::Write + Unpin>(w: &mut W) {
    let _ = poll_fn(|cx| std::pin::Pin::new(&mut *w).poll_shutdown(cx)).await;
}
