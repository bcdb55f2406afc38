//! The host side of the ABI: what a plugin instance's store holds ([`State`]) and every
//! function the host offers it (`env.proxy_*` and the WASI preview 1 functions SDK-built
//! modules import).
//!
//! Every function checks its arguments against the guest's memory and answers a bad pointer,
//! a bad length or an unknown enum value with the spec's status (BadArgument, NotFound, ...);
//! none panics. Guest memory is read and written through wasmtime's bounds-checked slices.

use super::abi::{self, BufferType, MapType, MetricType, Status};
use super::calls::{CallRequest, CallResponse, Pairs};
use super::shared::Shared;
use super::{Event, EventTx, PluginInfo};
use crate::intercept::hook::{FlowInfo, LocalResponse};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Linker, Memory, StoreLimits, TypedFunc};

/// A wakeup that can be waited on again after it fired (a paused stream's resume).
#[derive(Default)]
pub struct Notify {
    fired: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    pub fn fire(&self) {
        self.fired.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Ready (and re-armed) once fired.
    pub fn poll(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.fired.replace(false) {
            return std::task::Poll::Ready(());
        }
        self.waker.set(Some(cx.waker().clone()));
        std::task::Poll::Pending
    }
}

/// The request head as it went upstream, readable in the response phase.
pub struct ReqView {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub version: http::Version,
}

/// One HTTP context (a request and its response) or one stream context (a flow: the
/// acceptor's), as one plugin instance sees them.
pub struct HttpCtx {
    pub flow: Rc<FlowInfo>,
    /// A stream context: `body` holds the downstream and upstream data, and `resumed` the
    /// downstream and upstream continues.
    pub stream: bool,
    /// The request head while this plugin holds it (between its headers callback and the
    /// moment it lets go).
    pub req: Option<http::request::Parts>,
    pub req_view: Option<Rc<ReqView>>,
    pub resp: Option<http::response::Parts>,
    pub body: [Vec<u8>; 2],
    pub trailers: [Option<HeaderMap>; 2],
    /// The plugin answered itself (`proxy_send_local_response`).
    pub local: Option<Box<LocalResponse>>,
    /// `proxy_continue_stream` (request, response) since last looked at.
    pub resumed: [bool; 2],
    /// The plugin asked to reset the stream (`proxy_close_stream`).
    pub closed: bool,
    pub notify: Rc<Notify>,
    /// Header names the plugin removed: one added back changes the head's name case.
    removed: Vec<HeaderName>,
    /// The response's status and the bytes counted so far, for the `response.*` properties.
    pub status: Option<StatusCode>,
    pub props: Vec<(Vec<u8>, Vec<u8>)>,
    pub calls_pending: u32,
}

impl HttpCtx {
    pub fn new(flow: Rc<FlowInfo>) -> HttpCtx {
        HttpCtx {
            flow,
            stream: false,
            req: None,
            req_view: None,
            resp: None,
            body: [Vec::new(), Vec::new()],
            trailers: [None, None],
            local: None,
            resumed: [false; 2],
            closed: false,
            notify: Rc::new(Notify::default()),
            removed: Vec::new(),
            status: None,
            props: Vec::new(),
            calls_pending: 0,
        }
    }
}

/// A call a plugin made during a callback, sent when the callback returns.
pub struct NewCall {
    pub token: u32,
    pub context: u32,
    pub request: CallRequest,
}

/// What a plugin instance's store holds.
pub struct State {
    pub plugin: Arc<PluginInfo>,
    pub worker: usize,
    pub shared: Arc<Shared>,
    pub events: EventTx,
    pub memory: Option<Memory>,
    pub malloc: Option<TypedFunc<i32, i32>>,
    pub limits: StoreLimits,
    pub root: u32,
    /// The context host calls act on.
    pub effective: u32,
    pub http: HashMap<u32, HttpCtx>,
    pub tick_ms: u32,
    /// Queues this instance registered, with the enqueue count it saw last.
    pub queues: Vec<(u32, u64)>,
    pub new_calls: Vec<NewCall>,
    pub next_token: u32,
    /// The answer `on_http_call_response` is reading.
    pub call_response: Option<CallResponse>,
    pub done: bool,
    pub props: Vec<(Vec<u8>, Vec<u8>)>,
}

impl State {
    pub fn new(
        plugin: Arc<PluginInfo>,
        worker: usize,
        shared: Arc<Shared>,
        events: EventTx,
        memory_limit: usize,
    ) -> State {
        State {
            plugin,
            worker,
            shared,
            events,
            memory: None,
            malloc: None,
            limits: wasmtime::StoreLimitsBuilder::new().memory_size(memory_limit).instances(1).build(),
            root: 0,
            effective: 0,
            http: HashMap::new(),
            tick_ms: 0,
            queues: Vec::new(),
            new_calls: Vec::new(),
            next_token: 1,
            call_response: None,
            done: false,
            props: Vec::new(),
        }
    }

    fn log(&self, level: i32, msg: &[u8]) {
        self.events.send(Event::Log {
            plugin: self.plugin.name.clone(),
            worker: self.worker,
            level,
            message: String::from_utf8_lossy(msg).into_owned(),
        });
    }
}

type R = wasmtime::Result<i32>;

fn code(r: Result<(), Status>) -> i32 {
    match r {
        Ok(()) => Status::Ok.code(),
        Err(s) => s.code(),
    }
}

fn range(data: &[u8], ptr: i32, len: i32) -> Result<std::ops::Range<usize>, Status> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    let end = p.checked_add(l).ok_or(Status::BadArgument)?;
    if end > data.len() {
        return Err(Status::BadArgument);
    }
    Ok(p..end)
}

/// Runs `f` on the guest bytes at `ptr..ptr+len` and the store's state.
fn with_guest<T>(
    c: &mut Caller<'_, State>,
    ptr: i32,
    len: i32,
    f: impl FnOnce(&[u8], &mut State) -> T,
) -> Result<T, Status> {
    let mem = c.data().memory.ok_or(Status::InternalFailure)?;
    let (data, state) = mem.data_and_store_mut(c);
    let r = range(data, ptr, len)?;
    Ok(f(&data[r], state))
}

/// Like [`with_guest`] with two guest byte ranges.
fn with_guest2<T>(
    c: &mut Caller<'_, State>,
    a: (i32, i32),
    b: (i32, i32),
    f: impl FnOnce(&[u8], &[u8], &mut State) -> T,
) -> Result<T, Status> {
    let mem = c.data().memory.ok_or(Status::InternalFailure)?;
    let (data, state) = mem.data_and_store_mut(c);
    let (ra, rb) = (range(data, a.0, a.1)?, range(data, b.0, b.1)?);
    Ok(f(&data[ra], &data[rb], state))
}

fn guest_bytes(c: &mut Caller<'_, State>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    with_guest(c, ptr, len, |d, _| d.to_vec())
}

fn write_guest(c: &mut Caller<'_, State>, at: i32, bytes: &[u8]) -> Result<(), Status> {
    let mem = c.data().memory.ok_or(Status::InternalFailure)?;
    let data = mem.data_mut(c);
    let r = range(data, at, bytes.len() as i32)?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

/// Checks that a return slot of `n` bytes at `at` is inside the guest's memory.
fn check_slot(c: &mut Caller<'_, State>, at: i32, n: i32) -> Result<(), Status> {
    with_guest(c, at, n, |_, _| ())
}

/// Hands `bytes` to the guest: memory from its allocator, the address and length written to
/// the two return slots (empty: a null pointer). A trap in the allocator is the caller's trap.
fn give(c: &mut Caller<'_, State>, bytes: &[u8], ret_ptr: i32, ret_len: i32) -> R {
    if let Err(s) = check_slot(c, ret_ptr, 4).and_then(|_| check_slot(c, ret_len, 4)) {
        return Ok(s.code());
    }
    if bytes.is_empty() {
        // Nothing to hand over: a null pointer, as Envoy gives (the SDKs read it as "none").
        return Ok(code(
            write_guest(c, ret_ptr, &0u32.to_le_bytes()).and_then(|_| write_guest(c, ret_len, &0u32.to_le_bytes())),
        ));
    }
    let Some(malloc) = c.data().malloc.clone() else { return Ok(Status::InternalFailure.code()) };
    let p = malloc.call(&mut *c, bytes.len() as i32)?;
    if p == 0 && !bytes.is_empty() {
        return Ok(Status::InternalFailure.code());
    }
    Ok(code(
        write_guest(c, p, bytes)
            .and_then(|_| write_guest(c, ret_ptr, &p.to_le_bytes()))
            .and_then(|_| write_guest(c, ret_len, &(bytes.len() as u32).to_le_bytes())),
    ))
}

fn give_result(c: &mut Caller<'_, State>, r: Result<Vec<u8>, Status>, ret_ptr: i32, ret_len: i32) -> R {
    match r {
        Ok(b) => give(c, &b, ret_ptr, ret_len),
        Err(s) => Ok(s.code()),
    }
}

fn write_u32(c: &mut Caller<'_, State>, at: i32, v: u32) -> i32 {
    code(write_guest(c, at, &v.to_le_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Header maps

/// Which direction a map type belongs to (0: request, 1: response).
fn map_dir(t: MapType) -> usize {
    match t {
        MapType::RequestHeaders | MapType::RequestTrailers => 0,
        _ => 1,
    }
}

fn authority(p: &http::request::Parts) -> Option<&[u8]> {
    p.headers.get(http::header::HOST).map(|v| v.as_bytes()).or_else(|| p.uri.authority().map(|a| a.as_str().as_bytes()))
}

fn path_of(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The pseudo-headers and headers of a request (the Host header shows as `:authority`).
fn request_pairs(method: &Method, uri: &Uri, headers: &HeaderMap, tls: bool) -> Pairs {
    let mut v = Vec::with_capacity(headers.len() + 4);
    let scheme: &[u8] = uri.scheme_str().map_or(if tls { b"https" } else { b"http" }, |s| s.as_bytes());
    let auth = headers
        .get(http::header::HOST)
        .map(|v| v.as_bytes().to_vec())
        .or_else(|| uri.authority().map(|a| a.as_str().as_bytes().to_vec()))
        .unwrap_or_default();
    v.push((b":authority".to_vec(), auth));
    v.push((b":path".to_vec(), path_of(uri).as_bytes().to_vec()));
    v.push((b":method".to_vec(), method.as_str().as_bytes().to_vec()));
    v.push((b":scheme".to_vec(), scheme.to_vec()));
    for (k, val) in headers {
        if k != http::header::HOST {
            v.push((k.as_str().as_bytes().to_vec(), val.as_bytes().to_vec()));
        }
    }
    v
}

fn plain_pairs(h: &HeaderMap) -> Pairs {
    h.iter().map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
}

fn header_name(name: &[u8]) -> Result<HeaderName, Status> {
    HeaderName::from_bytes(name).map_err(|_| Status::BadArgument)
}

fn header_value(v: &[u8]) -> Result<HeaderValue, Status> {
    HeaderValue::from_bytes(v).map_err(|_| Status::BadArgument)
}

/// Sets a request pseudo-header.
fn set_request_pseudo(p: &mut http::request::Parts, name: &[u8], value: &[u8]) -> Result<(), Status> {
    match name {
        b":method" => p.method = Method::from_bytes(value).map_err(|_| Status::BadArgument)?,
        b":path" => {
            let pq: http::uri::PathAndQuery = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|pq: &http::uri::PathAndQuery| pq.as_str().starts_with('/') || pq.as_str() == "*")
                .ok_or(Status::BadArgument)?;
            let mut parts = std::mem::take(&mut p.uri).into_parts();
            parts.path_and_query = Some(pq);
            p.uri = Uri::from_parts(parts).map_err(|_| Status::BadArgument)?;
        }
        b":authority" => {
            let v = header_value(value)?;
            if p.uri.authority().is_some() {
                let a: http::uri::Authority =
                    std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()).ok_or(Status::BadArgument)?;
                let mut parts = std::mem::take(&mut p.uri).into_parts();
                parts.authority = Some(a);
                p.uri = Uri::from_parts(parts).map_err(|_| Status::BadArgument)?;
            }
            if p.version < http::Version::HTTP_2 || p.headers.contains_key(http::header::HOST) {
                p.headers.insert(http::header::HOST, v);
            }
        }
        // The scheme is the connection's: nothing to change on the wire.
        b":scheme" => {}
        _ => return Err(Status::BadArgument),
    }
    Ok(())
}

enum Op<'a> {
    Add(&'a [u8], &'a [u8]),
    Replace(&'a [u8], &'a [u8]),
    Remove(&'a [u8]),
}

fn apply_plain(h: &mut HeaderMap, op: &Op<'_>, removed: &mut Vec<HeaderName>) -> Result<bool, Status> {
    // Returns whether a removed name came back (the head's name case is then dropped).
    match *op {
        Op::Add(k, v) => {
            let (k, v) = (header_name(k)?, header_value(v)?);
            let back = removed.contains(&k);
            h.append(k, v);
            Ok(back)
        }
        Op::Replace(k, v) => {
            let (k, v) = (header_name(k)?, header_value(v)?);
            let back = removed.contains(&k);
            h.insert(k, v);
            Ok(back)
        }
        Op::Remove(k) => {
            let k = header_name(k)?;
            h.remove(&k);
            if !removed.contains(&k) {
                removed.push(k);
            }
            Ok(false)
        }
    }
}

/// Applies `op` to the map `t` of the effective context.
fn map_op(state: &mut State, t: MapType, op: Op<'_>) -> Result<(), Status> {
    if matches!(t, MapType::CallResponseHeaders | MapType::CallResponseTrailers) {
        let resp = state.call_response.as_mut().ok_or(Status::NotFound)?;
        let list = if t == MapType::CallResponseHeaders { &mut resp.headers } else { &mut resp.trailers };
        let lower = |k: &[u8]| k.to_ascii_lowercase();
        match op {
            Op::Add(k, v) => list.push((lower(k), v.to_vec())),
            Op::Replace(k, v) => {
                let k = lower(k);
                list.retain(|(n, _)| *n != k);
                list.push((k, v.to_vec()));
            }
            Op::Remove(k) => {
                let k = lower(k);
                list.retain(|(n, _)| *n != k);
            }
        }
        return Ok(());
    }
    let ctx = state.http.get_mut(&state.effective).ok_or(Status::NotFound)?;
    let dir = map_dir(t);
    match t {
        MapType::RequestHeaders => {
            let Some(p) = ctx.req.as_mut() else {
                // Past the request phase the head is read-only; a change is not an error.
                return if ctx.req_view.is_some() { Ok(()) } else { Err(Status::NotFound) };
            };
            let name = match &op {
                Op::Add(k, _) | Op::Replace(k, _) | Op::Remove(k) => *k,
            };
            if name.starts_with(b":") {
                return match op {
                    Op::Add(k, v) | Op::Replace(k, v) => set_request_pseudo(p, k, v),
                    Op::Remove(_) => Ok(()),
                };
            }
            if apply_plain(&mut p.headers, &op, &mut ctx.removed)? {
                // hyper keeps the client's header-name case as one map in the extensions; a
                // name the plugin took out and put back is written as it spelled it only
                // if that map goes (every name is then written lowercase).
                p.extensions.clear();
            }
            Ok(())
        }
        MapType::ResponseHeaders => {
            let p = ctx.resp.as_mut().ok_or(Status::NotFound)?;
            if let Op::Add(b":status", v) | Op::Replace(b":status", v) = op {
                p.status = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or(Status::BadArgument)?;
                return Ok(());
            }
            if matches!(&op, Op::Add(k, _) | Op::Replace(k, _) | Op::Remove(k) if k.starts_with(b":")) {
                return Ok(());
            }
            if apply_plain(&mut p.headers, &op, &mut ctx.removed)? {
                p.extensions.clear();
            }
            Ok(())
        }
        MapType::RequestTrailers | MapType::ResponseTrailers => {
            let h = ctx.trailers[dir].as_mut().ok_or(Status::NotFound)?;
            apply_plain(h, &op, &mut ctx.removed).map(|_| ())
        }
        _ => Err(Status::NotFound),
    }
}

/// Every pair of the map `t` of the effective context.
fn map_pairs(state: &State, t: MapType) -> Result<Pairs, Status> {
    if let Some(resp) = state.call_response.as_ref() {
        match t {
            MapType::CallResponseHeaders => return Ok(resp.headers.clone()),
            MapType::CallResponseTrailers => return Ok(resp.trailers.clone()),
            _ => {}
        }
    }
    let ctx = state.http.get(&state.effective).ok_or(Status::NotFound)?;
    let tls = ctx.flow.tls.is_some();
    match t {
        MapType::RequestHeaders => match (&ctx.req, &ctx.req_view) {
            (Some(p), _) => Ok(request_pairs(&p.method, &p.uri, &p.headers, tls)),
            (None, Some(v)) => Ok(request_pairs(&v.method, &v.uri, &v.headers, tls)),
            _ => Err(Status::NotFound),
        },
        MapType::ResponseHeaders => {
            let p = ctx.resp.as_ref().ok_or(Status::NotFound)?;
            let mut v = vec![(b":status".to_vec(), p.status.as_str().as_bytes().to_vec())];
            v.extend(plain_pairs(&p.headers));
            Ok(v)
        }
        MapType::RequestTrailers | MapType::ResponseTrailers => {
            Ok(ctx.trailers[map_dir(t)].as_ref().map(plain_pairs).unwrap_or_default())
        }
        _ => Err(Status::NotFound),
    }
}

fn map_value(state: &State, t: MapType, key: &[u8]) -> Result<Vec<u8>, Status> {
    let key = key.to_ascii_lowercase();
    let pairs = map_pairs(state, t)?;
    let mut found: Option<Vec<u8>> = None;
    for (k, v) in pairs {
        if k == key || (t == MapType::RequestHeaders && key == b"host" && k == b":authority") {
            // Several values of one name are joined with commas, as Envoy does.
            found = Some(match found {
                Some(mut f) => {
                    f.push(b',');
                    f.extend_from_slice(&v);
                    f
                }
                None => v,
            });
        }
    }
    found.ok_or(Status::NotFound)
}

fn set_map(state: &mut State, t: MapType, data: &[u8]) -> Result<(), Status> {
    let pairs = abi::decode_pairs(data).ok_or(Status::BadArgument)?;
    // Everything first checked, so a bad pair leaves the map as it was.
    for (k, v) in &pairs {
        if !k.starts_with(b":") {
            header_name(k)?;
            header_value(v)?;
        }
    }
    let current = map_pairs(state, t)?;
    for (k, _) in current {
        if !k.starts_with(b":") {
            map_op(state, t, Op::Remove(&k))?;
        }
    }
    for (k, v) in pairs {
        if k.starts_with(b":") {
            map_op(state, t, Op::Replace(k, v))?;
        } else {
            map_op(state, t, Op::Add(k, v))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Buffers

fn buffer_get(state: &State, t: BufferType) -> Result<&[u8], Status> {
    match t {
        BufferType::VmConfiguration => Ok(&state.plugin.vm_configuration),
        BufferType::PluginConfiguration => Ok(&state.plugin.configuration),
        BufferType::CallResponseBody => state.call_response.as_ref().map(|r| &r.body[..]).ok_or(Status::NotFound),
        BufferType::RequestBody | BufferType::ResponseBody | BufferType::DownstreamData | BufferType::UpstreamData => {
            let ctx = state.http.get(&state.effective).ok_or(Status::NotFound)?;
            Ok(&ctx.body[body_index(ctx, t)?])
        }
        _ => Err(Status::NotFound),
    }
}

/// Which of a context's two buffers `t` is: the request body or downstream data (0), the
/// response body or upstream data (1); the other kind's buffers are not found in it.
fn body_index(ctx: &HttpCtx, t: BufferType) -> Result<usize, Status> {
    match (t, ctx.stream) {
        (BufferType::RequestBody, false) | (BufferType::DownstreamData, true) => Ok(0),
        (BufferType::ResponseBody, false) | (BufferType::UpstreamData, true) => Ok(1),
        _ => Err(Status::NotFound),
    }
}

/// Replaces `size` bytes at `start` of the buffer with `value` (the spec's set_buffer_bytes:
/// start 0 and size ≥ the length replace all; start at the end appends).
fn buffer_set(state: &mut State, t: BufferType, start: usize, size: usize, value: &[u8]) -> Result<(), Status> {
    let buf = match t {
        BufferType::RequestBody | BufferType::ResponseBody | BufferType::DownstreamData | BufferType::UpstreamData => {
            let ctx = state.http.get_mut(&state.effective).ok_or(Status::NotFound)?;
            let i = body_index(ctx, t)?;
            &mut ctx.body[i]
        }
        BufferType::CallResponseBody => &mut state.call_response.as_mut().ok_or(Status::NotFound)?.body,
        _ => return Err(Status::NotFound),
    };
    if start > buf.len() {
        return Err(Status::BadArgument);
    }
    let end = start.saturating_add(size).min(buf.len());
    buf.splice(start..end, value.iter().copied());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties

fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A property by its path (segments joined by NUL), as Envoy encodes it: strings as bytes,
/// integers as 8-byte little-endian, booleans as one byte.
pub fn property(state: &State, path: &[u8]) -> Option<Vec<u8>> {
    let ctx = state.http.get(&state.effective);
    if let Some(c) = ctx {
        if let Some((_, v)) = c.props.iter().find(|(k, _)| k == path) {
            return Some(v.clone());
        }
    }
    if let Some((_, v)) = state.props.iter().find(|(k, _)| k == path) {
        return Some(v.clone());
    }
    let key: Vec<&[u8]> = path.split(|&b| b == 0).collect();
    let s = |x: &str| Some(x.as_bytes().to_vec());
    match key.as_slice() {
        [b"plugin_name"] => return s(&state.plugin.name),
        [b"plugin_root_id"] => return s(&state.plugin.root_id),
        [b"plugin_vm_id"] => return s(&state.plugin.vm_id),
        [b"flowdog", b"worker"] => return Some(int(state.worker as i64)),
        _ => {}
    }
    let c = ctx?;
    let f = &c.flow;
    let req = c.req.as_ref().map(|p| (&p.method, &p.uri, &p.headers, p.version));
    let req = req.or(c.req_view.as_ref().map(|v| (&v.method, &v.uri, &v.headers, v.version)));
    let header = |name: &str| req.and_then(|r| r.2.get(name)).map(|v| v.as_bytes().to_vec());
    match key.as_slice() {
        [b"source", b"address"] => s(&f.client.to_string()),
        [b"source", b"port"] => Some(int(f.client.port() as i64)),
        [b"destination", b"address"] => s(&f.server.to_string()),
        [b"destination", b"port"] => Some(int(f.server.port() as i64)),
        [b"connection", b"requested_server_name"] => s(f.tls.as_ref().and_then(|t| t.sni.as_deref()).unwrap_or("")),
        [b"connection", b"tls_version"] => f.tls.as_ref().map(|t| t.version.as_bytes().to_vec()),
        [b"connection", b"mtls"] => Some(vec![0]),
        [b"gwlb", b"vpc_endpoint_id"] => s(&format!("vpce-{:017x}", f.vpc_endpoint_id)),
        [b"gwlb", b"attachment_id"] => s(&f.attachment_id.to_string()),
        [b"gwlb", b"flow_cookie"] => s(&format!("{:08x}", f.flow_cookie)),
        [b"flowdog", b"direction"] => s(if c.resp.is_some() || c.status.is_some() { "response" } else { "request" }),
        [b"flowdog", b"network_protocol"] => s(if f.client.is_ipv6() { "ipv6" } else { "ipv4" }),
        [b"flowdog", b"transport_protocol"] => s(&transport_name(f.protocol)),
        [b"request", b"path"] => req.map(|r| path_of(r.1).as_bytes().to_vec()),
        [b"request", b"url_path"] => req.map(|r| r.1.path().as_bytes().to_vec()),
        [b"request", b"query"] => req.map(|r| r.1.query().unwrap_or("").as_bytes().to_vec()),
        [b"request", b"method"] => req.map(|r| r.0.as_str().as_bytes().to_vec()),
        [b"request", b"host"] => c.req.as_ref().and_then(authority).map(|a| a.to_vec()).or_else(|| {
            c.req_view.as_ref().and_then(|v| {
                v.headers
                    .get(http::header::HOST)
                    .map(|h| h.as_bytes().to_vec())
                    .or_else(|| v.uri.authority().map(|a| a.as_str().as_bytes().to_vec()))
            })
        }),
        [b"request", b"scheme"] => s(if f.tls.is_some() { "https" } else { "http" }),
        [b"request", b"protocol"] => req.map(|r| format!("{:?}", r.3).into_bytes()),
        [b"request", b"useragent"] => header("user-agent"),
        [b"request", b"referer"] => header("referer"),
        [b"request", b"id"] => header("x-request-id"),
        [b"request", b"headers", name] => header(std::str::from_utf8(name).ok()?),
        [b"response", b"code"] => c.status.map(|s| int(s.as_u16() as i64)),
        [b"response", b"headers", name] => {
            c.resp.as_ref().and_then(|p| p.headers.get(std::str::from_utf8(name).ok()?)).map(|v| v.as_bytes().to_vec())
        }
        _ => None,
    }
}

/// A transport protocol's name ("tcp", "udp", "icmp", "icmpv6"), else its number.
pub fn transport_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The functions

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn effective_ctx(state: &mut State) -> Result<&mut HttpCtx, Status> {
    state.http.get_mut(&state.effective).ok_or(Status::NotFound)
}

fn parse_pairs_owned(data: &[u8]) -> Result<Pairs, Status> {
    abi::decode_pairs(data)
        .map(|p| p.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec())).collect())
        .ok_or(Status::BadArgument)
}

/// Adds every `env.proxy_*` function to `linker`.
pub fn add_proxy(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", |mut c: Caller<'_, State>, level: i32, ptr: i32, len: i32| -> i32 {
        if !(0..=5).contains(&level) {
            return Status::BadArgument.code();
        }
        code(with_guest(&mut c, ptr, len, |msg, st| st.log(level, msg)))
    })?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: Caller<'_, State>, ret: i32| -> i32 {
        let l = c.data().plugin.log_level;
        write_u32(&mut c, ret, l)
    })?;
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut c: Caller<'_, State>, ret: i32| -> i32 {
        code(write_guest(&mut c, ret, &now_nanos().to_le_bytes()))
    })?;
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut c: Caller<'_, State>, ms: i32| -> i32 {
        c.data_mut().tick_ms = ms as u32;
        Status::Ok.code()
    })?;

    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, State>, t: i32, start: i32, max: i32, ret_ptr: i32, ret_len: i32| -> R {
            let Some(t) = BufferType::from_raw(t) else { return Ok(Status::BadArgument.code()) };
            let r = buffer_get(c.data(), t).and_then(|b| {
                let start = start as u32 as usize;
                if start > b.len() {
                    return Err(Status::BadArgument);
                }
                let end = start.saturating_add(max as u32 as usize).min(b.len());
                Ok(b[start..end].to_vec())
            });
            give_result(&mut c, r, ret_ptr, ret_len)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: Caller<'_, State>, t: i32, ret_len: i32, ret_flags: i32| -> i32 {
            let Some(t) = BufferType::from_raw(t) else { return Status::BadArgument.code() };
            match buffer_get(c.data(), t).map(|b| b.len() as u32) {
                Ok(n) => code(
                    write_guest(&mut c, ret_len, &n.to_le_bytes())
                        .and_then(|_| write_guest(&mut c, ret_flags, &0u32.to_le_bytes())),
                ),
                Err(s) => s.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_, State>, t: i32, start: i32, size: i32, ptr: i32, len: i32| -> i32 {
            let Some(t) = BufferType::from_raw(t) else { return Status::BadArgument.code() };
            code(
                with_guest(&mut c, ptr, len, |v, st| buffer_set(st, t, start as u32 as usize, size as u32 as usize, v))
                    .and_then(|r| r),
            )
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, State>, t: i32, ret_ptr: i32, ret_len: i32| -> R {
            let Some(t) = MapType::from_raw(t) else { return Ok(Status::BadArgument.code()) };
            let r = map_pairs(c.data(), t).map(|p| abi::encode_pairs(p.iter().map(|(k, v)| (&k[..], &v[..]))));
            give_result(&mut c, r, ret_ptr, ret_len)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_, State>, t: i32, ptr: i32, len: i32| -> i32 {
            let Some(t) = MapType::from_raw(t) else { return Status::BadArgument.code() };
            code(with_guest(&mut c, ptr, len, |d, st| set_map(st, t, d)).and_then(|r| r))
        },
    )?;
    linker.func_wrap("env", "proxy_get_header_map_size", |mut c: Caller<'_, State>, t: i32, ret: i32| -> i32 {
        let Some(t) = MapType::from_raw(t) else { return Status::BadArgument.code() };
        match map_pairs(c.data(), t) {
            Ok(p) => {
                let n = abi::encode_pairs(p.iter().map(|(k, v)| (&k[..], &v[..]))).len() as u32;
                write_u32(&mut c, ret, n)
            }
            Err(s) => s.code(),
        }
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, State>, t: i32, kp: i32, kl: i32, ret_ptr: i32, ret_len: i32| -> R {
            let Some(t) = MapType::from_raw(t) else { return Ok(Status::BadArgument.code()) };
            let r = with_guest(&mut c, kp, kl, |k, st| map_value(st, t, k)).and_then(|r| r);
            give_result(&mut c, r, ret_ptr, ret_len)
        },
    )?;
    for (name, kind) in [("proxy_add_header_map_value", 0), ("proxy_replace_header_map_value", 1)] {
        linker.func_wrap(
            "env",
            name,
            move |mut c: Caller<'_, State>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
                let Some(t) = MapType::from_raw(t) else { return Status::BadArgument.code() };
                code(
                    with_guest2(&mut c, (kp, kl), (vp, vl), |k, v, st| {
                        map_op(st, t, if kind == 0 { Op::Add(k, v) } else { Op::Replace(k, v) })
                    })
                    .and_then(|r| r),
                )
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, State>, t: i32, kp: i32, kl: i32| -> i32 {
            let Some(t) = MapType::from_raw(t) else { return Status::BadArgument.code() };
            code(with_guest(&mut c, kp, kl, |k, st| map_op(st, t, Op::Remove(k))).and_then(|r| r))
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, State>, pp: i32, pl: i32, ret_ptr: i32, ret_len: i32| -> R {
            let r = with_guest(&mut c, pp, pl, |p, st| property(st, p).ok_or(Status::NotFound)).and_then(|r| r);
            give_result(&mut c, r, ret_ptr, ret_len)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Caller<'_, State>, pp: i32, pl: i32, vp: i32, vl: i32| -> i32 {
            code(with_guest2(&mut c, (pp, pl), (vp, vl), |p, v, st| {
                let props = match st.http.get_mut(&st.effective) {
                    Some(ctx) => &mut ctx.props,
                    None => &mut st.props,
                };
                props.retain(|(k, _)| k != p);
                props.push((p.to_vec(), v.to_vec()));
            }))
        },
    )?;

    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, State>, kp: i32, kl: i32, ret_ptr: i32, ret_len: i32, ret_cas: i32| -> R {
            if let Err(s) = check_slot(&mut c, ret_cas, 4) {
                return Ok(s.code());
            }
            let r = with_guest(&mut c, kp, kl, |k, st| st.shared.get(k)).and_then(|r| r);
            match r {
                Ok((v, cas)) => {
                    let s = give(&mut c, &v, ret_ptr, ret_len)?;
                    if s == 0 {
                        return Ok(write_u32(&mut c, ret_cas, cas));
                    }
                    Ok(s)
                }
                Err(s) => Ok(s.code()),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_, State>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> i32 {
            match with_guest2(&mut c, (kp, kl), (vp, vl), |k, v, st| st.shared.set(k, v, cas as u32)) {
                Ok(s) => s.code(),
                Err(s) => s.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Caller<'_, State>, np: i32, nl: i32, ret: i32| -> i32 {
            if let Err(s) = check_slot(&mut c, ret, 4) {
                return s.code();
            }
            let r = with_guest(&mut c, np, nl, |n, st| {
                let vm_id = st.plugin.vm_id.clone();
                let id = st.shared.register_queue(vm_id.as_bytes(), n)?;
                if !st.queues.iter().any(|(q, _)| *q == id) {
                    let seq = st.shared.queue_seq(id);
                    st.queues.push((id, seq));
                }
                Ok(id)
            })
            .and_then(|r| r);
            match r {
                Ok(id) => write_u32(&mut c, ret, id),
                Err(s) => s.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Caller<'_, State>, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| -> i32 {
            if let Err(s) = check_slot(&mut c, ret, 4) {
                return s.code();
            }
            match with_guest2(&mut c, (vp, vl), (np, nl), |vm, n, st| st.shared.resolve_queue(vm, n)).and_then(|r| r) {
                Ok(id) => write_u32(&mut c, ret, id),
                Err(s) => s.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Caller<'_, State>, id: i32, ret_ptr: i32, ret_len: i32| -> R {
            let r = c.data().shared.dequeue(id as u32);
            give_result(&mut c, r, ret_ptr, ret_len)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Caller<'_, State>, id: i32, vp: i32, vl: i32| -> i32 {
            match with_guest(&mut c, vp, vl, |v, st| st.shared.enqueue(id as u32, v)) {
                Ok(s) => s.code(),
                Err(s) => s.code(),
            }
        },
    )?;

    /// The effective context, if `stream` names one of its two directions: HTTP contexts have
    /// the request and the response, stream contexts downstream and upstream.
    fn stream_of<'a>(c: &'a mut Caller<'_, State>, stream: i32) -> Result<(&'a mut HttpCtx, usize), Status> {
        let (dir, for_stream) = match stream {
            abi::STREAM_REQUEST => (0, false),
            abi::STREAM_RESPONSE => (1, false),
            abi::STREAM_DOWNSTREAM => (0, true),
            abi::STREAM_UPSTREAM => (1, true),
            _ => return Err(Status::BadArgument),
        };
        let ctx = effective_ctx(c.data_mut())?;
        if ctx.stream != for_stream {
            return Err(Status::BadArgument);
        }
        Ok((ctx, dir))
    }
    fn resume(c: &mut Caller<'_, State>, stream: i32) -> i32 {
        match stream_of(c, stream) {
            Ok((ctx, dir)) => {
                ctx.resumed[dir] = true;
                ctx.notify.fire();
                Status::Ok.code()
            }
            Err(s) => s.code(),
        }
    }
    linker.func_wrap("env", "proxy_continue_stream", |mut c: Caller<'_, State>, stream: i32| -> i32 {
        resume(&mut c, stream)
    })?;
    // ABI 0.1/0.2.0 names, still imported by some SDKs.
    linker.func_wrap("env", "proxy_continue_request", |mut c: Caller<'_, State>| -> i32 {
        resume(&mut c, abi::STREAM_REQUEST)
    })?;
    linker.func_wrap("env", "proxy_continue_response", |mut c: Caller<'_, State>| -> i32 {
        resume(&mut c, abi::STREAM_RESPONSE)
    })?;
    linker.func_wrap("env", "proxy_close_stream", |mut c: Caller<'_, State>, stream: i32| -> i32 {
        match stream_of(&mut c, stream) {
            Ok((ctx, _)) => {
                ctx.closed = true;
                ctx.notify.fire();
                Status::Ok.code()
            }
            Err(s) => s.code(),
        }
    })?;
    linker.func_wrap("env", "proxy_send_local_response", send_local_response)?;
    // ABI 0.1 name of the same.
    linker.func_wrap("env", "proxy_send_http_response", send_local_response)?;

    linker.func_wrap("env", "proxy_http_call", http_call)?;
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: Caller<'_, State>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         ret: i32|
         -> i32 {
            // No gRPC upstreams: the spec lets the host say so.
            let _ = check_slot(&mut c, ret, 4);
            Status::Unimplemented.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_: Caller<'_, State>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> i32 {
            Status::Unimplemented.code()
        },
    )?;
    linker.func_wrap("env", "proxy_grpc_send", |_: Caller<'_, State>, _: i32, _: i32, _: i32, _: i32| -> i32 {
        Status::NotFound.code()
    })?;
    linker.func_wrap("env", "proxy_grpc_cancel", |_: Caller<'_, State>, _: i32| -> i32 { Status::NotFound.code() })?;
    linker.func_wrap("env", "proxy_grpc_close", |_: Caller<'_, State>, _: i32| -> i32 { Status::NotFound.code() })?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Caller<'_, State>, ret_code: i32, ret_ptr: i32, ret_len: i32| -> R {
            // The status of the last gRPC exchange: there are none, so UNIMPLEMENTED.
            let s = write_u32(&mut c, ret_code, abi::GRPC_UNIMPLEMENTED);
            if s != 0 {
                return Ok(s);
            }
            give(&mut c, b"gRPC calls are not available in flowdog", ret_ptr, ret_len)
        },
    )?;

    linker.func_wrap("env", "proxy_set_effective_context", |mut c: Caller<'_, State>, id: i32| -> i32 {
        let st = c.data_mut();
        let id = id as u32;
        if id == st.root || st.http.contains_key(&id) {
            st.effective = id;
            Status::Ok.code()
        } else {
            Status::BadArgument.code()
        }
    })?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_: Caller<'_, State>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> i32 { Status::NotFound.code() },
    )?;
    linker.func_wrap("env", "proxy_done", |mut c: Caller<'_, State>| -> i32 {
        c.data_mut().done = true;
        Status::Ok.code()
    })?;

    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_, State>, t: i32, np: i32, nl: i32, ret: i32| -> i32 {
            let Some(t) = MetricType::from_raw(t) else { return Status::BadArgument.code() };
            if let Err(s) = check_slot(&mut c, ret, 4) {
                return s.code();
            }
            let r = with_guest(&mut c, np, nl, |n, st| match std::str::from_utf8(n) {
                Ok(n) if !n.is_empty() => st.shared.define_metric(t, n),
                _ => Err(Status::BadArgument),
            })
            .and_then(|r| r);
            match r {
                Ok(id) => write_u32(&mut c, ret, id),
                Err(s) => s.code(),
            }
        },
    )?;
    linker.func_wrap("env", "proxy_increment_metric", |c: Caller<'_, State>, id: i32, by: i64| -> i32 {
        c.data().shared.increment_metric(id as u32, by).code()
    })?;
    linker.func_wrap("env", "proxy_record_metric", |c: Caller<'_, State>, id: i32, v: i64| -> i32 {
        c.data().shared.record_metric(id as u32, v as u64).code()
    })?;
    linker.func_wrap("env", "proxy_get_metric", |mut c: Caller<'_, State>, id: i32, ret: i32| -> i32 {
        match c.data().shared.get_metric(id as u32) {
            Ok(v) => code(write_guest(&mut c, ret, &v.to_le_bytes())),
            Err(s) => s.code(),
        }
    })?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    mut c: Caller<'_, State>,
    status: i32,
    _dp: i32,
    _dl: i32,
    bp: i32,
    bl: i32,
    hp: i32,
    hl: i32,
    _grpc: i32,
) -> i32 {
    let Some(code) = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()) else {
        return Status::BadArgument.code();
    };
    let r = with_guest2(&mut c, (bp, bl), (hp, hl), |body, headers, st| -> Result<(), Status> {
        let pairs = abi::decode_pairs(headers).ok_or(Status::BadArgument)?;
        let mut h = HeaderMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if k.starts_with(b":") {
                continue;
            }
            h.append(header_name(k)?, header_value(v)?);
        }
        let ctx = effective_ctx(st)?;
        ctx.local = Some(Box::new(LocalResponse { status: code, headers: h, body: Bytes::copy_from_slice(body) }));
        ctx.notify.fire();
        Ok(())
    });
    self::code(r.and_then(|r| r))
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    mut c: Caller<'_, State>,
    up: i32,
    upl: i32,
    hp: i32,
    hl: i32,
    bp: i32,
    bl: i32,
    tp: i32,
    tl: i32,
    timeout_ms: i32,
    ret: i32,
) -> i32 {
    if let Err(s) = check_slot(&mut c, ret, 4) {
        return s.code();
    }
    let parts = (|| -> Result<_, Status> {
        let upstream = guest_bytes(&mut c, up, upl)?;
        let headers = guest_bytes(&mut c, hp, hl)?;
        let body = guest_bytes(&mut c, bp, bl)?;
        let trailers = guest_bytes(&mut c, tp, tl)?;
        Ok((upstream, parse_pairs_owned(&headers)?, body, parse_pairs_owned(&trailers)?))
    })();
    let (upstream, headers, body, trailers) = match parts {
        Ok(p) => p,
        Err(s) => return s.code(),
    };
    let st = c.data_mut();
    let Ok(upstream) = String::from_utf8(upstream) else { return Status::BadArgument.code() };
    if !st.plugin.upstreams.contains(&upstream) {
        // Envoy's answer for an unknown cluster.
        return Status::BadArgument.code();
    }
    let has = |n: &[u8]| headers.iter().any(|(k, _)| k == n);
    if !has(b":method") || !has(b":path") || !has(b":authority") {
        return Status::BadArgument.code();
    }
    let token = st.next_token;
    st.next_token = st.next_token.wrapping_add(1).max(1);
    let context = st.effective;
    if let Some(ctx) = st.http.get_mut(&context) {
        ctx.calls_pending += 1;
    }
    let timeout = Duration::from_millis((timeout_ms as u32).clamp(1, 600_000) as u64);
    st.new_calls.push(NewCall { token, context, request: CallRequest { upstream, headers, body, trailers, timeout } });
    write_u32(&mut c, ret, token)
}

// ---------------------------------------------------------------------------------------------
// WASI preview 1: what SDK-built modules import. No files, no sockets: standard output and
// error go to the appliance's log, everything else is refused with the errno a sandbox gives.

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSYS: i32 = 52;
const ERRNO_SPIPE: i32 = 70;

fn errno(r: Result<(), Status>) -> i32 {
    if r.is_ok() {
        ERRNO_SUCCESS
    } else {
        ERRNO_FAULT
    }
}

pub fn add_wasi(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    const W: &str = "wasi_snapshot_preview1";
    linker.func_wrap(W, "fd_write", |mut c: Caller<'_, State>, fd: i32, iovs: i32, n: i32, ret: i32| -> i32 {
        if fd != 1 && fd != 2 {
            return ERRNO_BADF;
        }
        let r = with_guest(&mut c, iovs, n.saturating_mul(8), |iov, _| iov.to_vec()).and_then(|iov| {
            let mut out = Vec::new();
            for e in iov.chunks_exact(8) {
                let p = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                let l = i32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                out.extend(guest_bytes(&mut c, p, l)?);
            }
            Ok(out)
        });
        match r {
            Ok(out) => {
                let text = out.strip_suffix(b"\n").unwrap_or(&out);
                if !text.is_empty() {
                    c.data().log(if fd == 2 { 4 } else { 2 }, text);
                }
                errno(write_guest(&mut c, ret, &(out.len() as u32).to_le_bytes()))
            }
            Err(_) => ERRNO_FAULT,
        }
    })?;
    linker.func_wrap(W, "fd_read", |_: Caller<'_, State>, _: i32, _: i32, _: i32, _: i32| -> i32 { ERRNO_BADF })?;
    linker.func_wrap(W, "fd_close", |_: Caller<'_, State>, _: i32| -> i32 { ERRNO_BADF })?;
    linker.func_wrap(W, "fd_seek", |_: Caller<'_, State>, fd: i32, _: i64, _: i32, _: i32| -> i32 {
        if (0..=2).contains(&fd) {
            ERRNO_SPIPE
        } else {
            ERRNO_BADF
        }
    })?;
    linker.func_wrap(W, "fd_fdstat_get", |mut c: Caller<'_, State>, fd: i32, ret: i32| -> i32 {
        if !(0..=2).contains(&fd) {
            return ERRNO_BADF;
        }
        // filetype character device (2), no flags, no rights beyond what the host lets it do.
        let mut stat = [0u8; 24];
        stat[0] = 2;
        errno(write_guest(&mut c, ret, &stat))
    })?;
    linker.func_wrap(W, "fd_fdstat_set_flags", |_: Caller<'_, State>, _: i32, _: i32| -> i32 { ERRNO_BADF })?;
    linker.func_wrap(W, "fd_filestat_get", |_: Caller<'_, State>, _: i32, _: i32| -> i32 { ERRNO_BADF })?;
    // No pre-opened directories.
    linker.func_wrap(W, "fd_prestat_get", |_: Caller<'_, State>, _: i32, _: i32| -> i32 { ERRNO_BADF })?;
    linker.func_wrap(W, "fd_prestat_dir_name", |_: Caller<'_, State>, _: i32, _: i32, _: i32| -> i32 { ERRNO_BADF })?;
    linker.func_wrap(
        W,
        "path_open",
        |_: Caller<'_, State>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32, _: i32| -> i32 {
            ERRNO_BADF
        },
    )?;
    for name in ["args_sizes_get", "environ_sizes_get"] {
        linker.func_wrap(W, name, |mut c: Caller<'_, State>, count: i32, size: i32| -> i32 {
            errno(
                write_guest(&mut c, count, &0u32.to_le_bytes())
                    .and_then(|_| write_guest(&mut c, size, &0u32.to_le_bytes())),
            )
        })?;
    }
    for name in ["args_get", "environ_get"] {
        linker.func_wrap(W, name, |_: Caller<'_, State>, _: i32, _: i32| -> i32 { ERRNO_SUCCESS })?;
    }
    linker.func_wrap(W, "clock_time_get", |mut c: Caller<'_, State>, id: i32, _precision: i64, ret: i32| -> i32 {
        let t = match id {
            0 => now_nanos(),
            1..=3 => MONO.with(|m| m.elapsed().as_nanos() as u64),
            _ => return ERRNO_INVAL,
        };
        errno(write_guest(&mut c, ret, &t.to_le_bytes()))
    })?;
    linker.func_wrap(W, "clock_res_get", |mut c: Caller<'_, State>, id: i32, ret: i32| -> i32 {
        if !(0..=3).contains(&id) {
            return ERRNO_INVAL;
        }
        errno(write_guest(&mut c, ret, &1u64.to_le_bytes()))
    })?;
    linker.func_wrap(W, "random_get", |mut c: Caller<'_, State>, ptr: i32, len: i32| -> i32 {
        let mut buf = vec![0u8; len.max(0) as usize];
        let mut at = 0;
        while at < buf.len() {
            // The kernel's CSPRNG; a short read only means "ask again".
            let n = urandom(&mut buf[at..]);
            if n <= 0 {
                return ERRNO_NOSYS;
            }
            at += n as usize;
        }
        errno(write_guest(&mut c, ptr, &buf))
    })?;
    linker.func_wrap(W, "sched_yield", |_: Caller<'_, State>| -> i32 { ERRNO_SUCCESS })?;
    linker
        .func_wrap(W, "poll_oneoff", |_: Caller<'_, State>, _: i32, _: i32, _: i32, _: i32| -> i32 { ERRNO_NOSYS })?;
    linker.func_wrap(W, "proc_exit", |_: Caller<'_, State>, status: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::msg(format!("the plugin called proc_exit({status})")))
    })?;
    Ok(())
}

thread_local! {
    static MONO: std::time::Instant = std::time::Instant::now();
}

/// Bytes from the kernel's CSPRNG (/dev/urandom): a plugin's random_get is rare, and this needs
/// no unsafe and no seeding (aws-lc's generator takes tens of milliseconds to start in a debug
/// build, long enough to trip a callback's deadline).
fn urandom(buf: &mut [u8]) -> isize {
    use std::io::Read;
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read(buf)) {
        Ok(n) => n as isize,
        Err(_) => -1,
    }
}
