//! One request and its response through the plugin chain, the way Envoy iterates its filters.
//!
//! Each plugin gets an HTTP context per request. The head goes through the plugins in order:
//! a plugin that returns Continue passes it on; one that pauses while the body is still to come
//! holds it, and the body is given to that plugin (its buffer grows with every chunk, as
//! `StopIterationAndBuffer`) until it lets go, after which the head and the buffered body go on
//! to the next plugin. A plugin that pauses at the end of the stream, or with an outbound call
//! in flight, is waited for: `proxy_continue_stream` or a local response ends the wait. Body
//! chunks that nobody holds flow through one by one. The same holds for the response.
//!
//! A plugin that fails (trap, deadline, disabled) is dropped from this exchange: with
//! `on_failure = "open"` the request goes on as the plugin got it; with "closed" the exchange
//! stops with a 500.

use super::abi::ACTION_PAUSE;
use super::host::{HttpCtx, Notify, ReqView};
use super::vm::{Failed, Vm};
use super::OnFailure;
use crate::intercept::hook::{FlowInfo, LocalResponse};
use crate::intercept::proxy::{BoxError, ProxyBody};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// Why an exchange stops early.
#[derive(Debug)]
pub enum Stop {
    /// A plugin answered itself.
    Local(Box<LocalResponse>),
    /// A plugin with `on_failure = "closed"` failed.
    Failed(String),
    /// A plugin closed the stream (`proxy_close_stream`).
    Closed(String),
    /// A plugin held more body than `max_body_bytes` (request: 413; response: 502).
    TooLarge(String),
}

/// A head the chain can carry: the request's or the response's.
pub trait Head: Sized {
    /// 0: request, 1: response.
    const DIR: usize;
    fn put(self, ctx: &mut HttpCtx);
    fn take(ctx: &mut HttpCtx) -> Option<Self>;
    /// The number of pairs the plugin sees (pseudo-headers included).
    fn count(ctx: &HttpCtx) -> i32;
}

impl Head for http::request::Parts {
    const DIR: usize = 0;
    fn put(self, ctx: &mut HttpCtx) {
        ctx.req = Some(self);
    }
    fn take(ctx: &mut HttpCtx) -> Option<Self> {
        ctx.req.take()
    }
    fn count(ctx: &HttpCtx) -> i32 {
        ctx.req.as_ref().map_or(0, |p| {
            let host = p.headers.contains_key(http::header::HOST) as usize;
            (p.headers.len() - host + 4) as i32
        })
    }
}

impl Head for http::response::Parts {
    const DIR: usize = 1;
    fn put(self, ctx: &mut HttpCtx) {
        ctx.status = Some(self.status);
        ctx.resp = Some(self);
    }
    fn take(ctx: &mut HttpCtx) -> Option<Self> {
        ctx.resp.take()
    }
    fn count(ctx: &HttpCtx) -> i32 {
        ctx.resp.as_ref().map_or(0, |p| p.headers.len() as i32 + 1)
    }
}

/// What came out of the chain for one piece of body: the head if it was let go just now, and
/// the body bytes that may go on (None: held by a plugin).
pub struct Out<H> {
    pub head: Option<H>,
    pub data: Option<Bytes>,
}

struct Stage {
    vm: Rc<RefCell<Vm>>,
    id: u32,
    inc: u64,
    notify: Rc<Notify>,
    name: String,
    on_failure: OnFailure,
    dead: Cell<bool>,
}

#[derive(Default, Clone, Copy)]
struct DirState {
    /// The plugin holding the head or the body, if any.
    held: Option<usize>,
    /// What it holds is the head (and the body after it), not only body.
    head_held: bool,
}

#[derive(Clone, Copy)]
enum Kind {
    Headers,
    Body,
    Trailers,
}

enum Act {
    Continue,
    Pause,
}

/// A request's and its response's way through the chain of one worker.
pub struct Exchange {
    stages: Vec<Stage>,
    dirs: [Cell<DirState>; 2],
    /// A plugin with `on_failure = "closed"` could not even start this exchange.
    refused: Option<String>,
    /// The most body one plugin may hold.
    max_body: usize,
}

impl Exchange {
    /// Opens an HTTP context in every plugin of the chain.
    pub fn new(chain: &[Rc<RefCell<Vm>>], flow: Rc<FlowInfo>, max_body: usize) -> Exchange {
        let mut stages = Vec::with_capacity(chain.len());
        let mut refused = None;
        for vm in chain {
            let mut v = vm.borrow_mut();
            let (name, on_failure) = (v.info.name.clone(), v.info.on_failure);
            match v.new_http(flow.clone()) {
                Some((id, inc, notify)) => {
                    stages.push(Stage { vm: vm.clone(), id, inc, notify, name, on_failure, dead: Cell::new(false) })
                }
                None if on_failure == OnFailure::Closed && refused.is_none() => refused = Some(name),
                None => {}
            }
        }
        Exchange { stages, dirs: Default::default(), refused, max_body }
    }

    fn with_ctx<T>(&self, i: usize, f: impl FnOnce(&mut HttpCtx) -> T) -> Option<T> {
        let s = &self.stages[i];
        let mut vm = s.vm.borrow_mut();
        vm.ctx(s.id, s.inc).map(f)
    }

    /// Calls one callback of plugin `i`. Err: the plugin failed (logged and counted already).
    fn invoke(&self, i: usize, dir: usize, kind: Kind, eos: bool) -> Result<Act, Failed> {
        let s = &self.stages[i];
        let mut vm = s.vm.borrow_mut();
        if !vm.alive(s.inc) {
            return Err(Failed);
        }
        let n = {
            let ctx = vm.ctx(s.id, s.inc).ok_or(Failed)?;
            ctx.resumed[dir] = false;
            match kind {
                Kind::Headers if dir == 0 => <http::request::Parts as Head>::count(ctx),
                Kind::Headers => <http::response::Parts as Head>::count(ctx),
                Kind::Body => ctx.body[dir].len() as i32,
                Kind::Trailers => ctx.trailers[dir].as_ref().map_or(0, |t| t.len() as i32),
            }
        };
        let (id, eos) = (s.id as i32, eos as i32);
        let r = vm.call(s.id, |ex, st| match kind {
            Kind::Headers => ex.headers[dir].as_ref().map(|f| f.call(st, (id, n, eos))),
            Kind::Body => ex.body[dir].as_ref().map(|f| f.call(st, (id, n, eos))),
            Kind::Trailers => ex.trailers[dir].as_ref().map(|f| f.call(st, (id, n))),
        })?;
        Ok(if r == Some(ACTION_PAUSE) { Act::Pause } else { Act::Continue })
    }

    /// After a callback: did the plugin answer, close, or resume?
    fn verdict(&self, i: usize, dir: usize) -> Result<bool, Stop> {
        let name = &self.stages[i].name;
        self.with_ctx(i, |ctx| {
            if let Some(l) = ctx.local.take() {
                return Err(Stop::Local(l));
            }
            if ctx.closed {
                return Err(Stop::Closed(name.clone()));
            }
            Ok(std::mem::take(&mut ctx.resumed[dir]))
        })
        .unwrap_or(Ok(false))
    }

    /// Plugin `i` failed: drop it from this exchange, or stop it (fail closed).
    fn failed(&self, i: usize) -> Result<(), Stop> {
        let s = &self.stages[i];
        s.dead.set(true);
        match s.on_failure {
            OnFailure::Open => Ok(()),
            OnFailure::Closed => Err(Stop::Failed(s.name.clone())),
        }
    }

    /// Waits until plugin `i` resumes direction `dir` (or answers, closes, fails).
    async fn wait(&self, i: usize, dir: usize) -> Result<(), Stop> {
        loop {
            let alive = {
                let s = &self.stages[i];
                s.vm.borrow().alive(s.inc)
            };
            if !alive {
                return self.failed(i);
            }
            if self.verdict(i, dir)? {
                return Ok(());
            }
            let n = self.stages[i].notify.clone();
            poll_fn(|cx| n.poll(cx)).await;
        }
    }

    fn pending_calls(&self, i: usize) -> u32 {
        self.with_ctx(i, |c| c.calls_pending).unwrap_or(0)
    }

    /// The head through plugins `from..`: Some when every one let it go, None when one holds it
    /// for the body.
    async fn run_head<H: Head>(&self, from: usize, mut head: H, eos: bool) -> Result<Option<H>, Stop> {
        if let Some(name) = &self.refused {
            return Err(Stop::Failed(name.clone()));
        }
        for i in from..self.stages.len() {
            if self.stages[i].dead.get() {
                continue;
            }
            self.with_ctx(i, |c| head.put(c));
            let r = self.invoke(i, H::DIR, Kind::Headers, eos);
            let back = |h: &mut Option<H>| *h = self.with_ctx(i, H::take).flatten();
            let mut got: Option<H> = None;
            match r {
                Err(Failed) => {
                    back(&mut got);
                    self.failed(i)?;
                }
                Ok(act) => {
                    let resumed = self.verdict(i, H::DIR)?;
                    if matches!(act, Act::Pause) && !resumed {
                        if eos || self.pending_calls(i) > 0 {
                            self.wait(i, H::DIR).await?;
                        } else {
                            self.dirs[H::DIR].set(DirState { held: Some(i), head_held: true });
                            return Ok(None);
                        }
                    }
                    back(&mut got);
                }
            }
            // A failed instance's context is an orphan; the head is taken back from it too.
            head = got.ok_or_else(|| Stop::Failed(self.stages[i].name.clone()))?;
        }
        Ok(Some(head))
    }

    /// The head of a request or a response. Some: it may go on now; None: a plugin holds it
    /// until it has seen (some of) the body: feed the body to [`Exchange::data`].
    pub async fn head<H: Head>(&self, head: H, eos: bool) -> Result<Option<H>, Stop> {
        self.run_head(0, head, eos).await
    }

    /// Body bytes given to the holding plugin `h` (appended to its buffer): Some(buffer) when
    /// it lets them go.
    async fn body_at(&self, h: usize, dir: usize, data: &[u8], eos: bool) -> Result<Option<Bytes>, Stop> {
        let held = self.with_ctx(h, |c| {
            c.body[dir].extend_from_slice(data);
            c.body[dir].len()
        });
        if held.unwrap_or(0) > self.max_body {
            return Err(Stop::TooLarge(self.stages[h].name.clone()));
        }
        let take = |s: &Self| s.with_ctx(h, |c| Bytes::from(std::mem::take(&mut c.body[dir]))).unwrap_or_default();
        match self.invoke(h, dir, Kind::Body, eos) {
            Err(Failed) => {
                let b = take(self);
                self.failed(h)?;
                Ok(Some(b))
            }
            Ok(act) => {
                let resumed = self.verdict(h, dir)?;
                if matches!(act, Act::Pause) && !resumed {
                    if !eos {
                        return Ok(None);
                    }
                    self.wait(h, dir).await?;
                }
                Ok(Some(take(self)))
            }
        }
    }

    /// A piece of body (`eos`: the last). Returns the head if a plugin let it go just now, and
    /// the bytes that go on.
    pub async fn data<H: Head>(&self, chunk: Bytes, eos: bool) -> Result<Out<H>, Stop> {
        let dir = H::DIR;
        let mut head: Option<H> = None;
        let mut data = chunk;
        let mut from = 0;
        loop {
            let st = self.dirs[dir].get();
            if let Some(h) = st.held {
                match self.body_at(h, dir, &data, eos).await? {
                    None => return Ok(Out { head: None, data: None }),
                    Some(b) => {
                        self.dirs[dir].set(DirState::default());
                        if st.head_held {
                            head = self.with_ctx(h, H::take).flatten();
                        }
                        data = b;
                        from = h + 1;
                    }
                }
            }
            if let Some(hd) = head.take() {
                match self.run_head(from, hd, eos && data.is_empty()).await? {
                    Some(hd) => head = Some(hd),
                    // Held again further on: the bytes go to that plugin.
                    None => continue,
                }
            }
            break;
        }
        // Nobody holds anything before `from`: the bytes go through the rest one plugin at a time.
        for i in from..self.stages.len() {
            if self.stages[i].dead.get() {
                continue;
            }
            self.with_ctx(i, |c| {
                c.body[dir].clear();
                c.body[dir].extend_from_slice(&data);
            });
            let take = |s: &Self| s.with_ctx(i, |c| Bytes::from(std::mem::take(&mut c.body[dir]))).unwrap_or_default();
            match self.invoke(i, dir, Kind::Body, eos) {
                Err(Failed) => {
                    data = take(self);
                    self.failed(i)?;
                }
                Ok(act) => {
                    let resumed = self.verdict(i, dir)?;
                    if matches!(act, Act::Pause) && !resumed {
                        if !eos {
                            self.dirs[dir].set(DirState { held: Some(i), head_held: false });
                            return Ok(Out { head, data: None });
                        }
                        self.wait(i, dir).await?;
                    }
                    data = take(self);
                }
            }
        }
        Ok(Out { head, data: Some(data) })
    }

    /// Trailers end the body: what is held is let go (the plugins see the end of the stream),
    /// then every plugin sees the trailers.
    pub async fn trailers<H: Head>(&self, trailers: HeaderMap) -> Result<(Out<H>, HeaderMap), Stop> {
        let dir = H::DIR;
        let out = self.data::<H>(Bytes::new(), true).await?;
        let mut t = trailers;
        for i in 0..self.stages.len() {
            if self.stages[i].dead.get() {
                continue;
            }
            self.with_ctx(i, |c| c.trailers[dir] = Some(std::mem::take(&mut t)));
            let r = self.invoke(i, dir, Kind::Trailers, true);
            t = self.with_ctx(i, |c| c.trailers[dir].take()).flatten().unwrap_or_default();
            match r {
                Err(Failed) => self.failed(i)?,
                Ok(act) => {
                    let resumed = self.verdict(i, dir)?;
                    if matches!(act, Act::Pause) && !resumed {
                        self.wait(i, dir).await?;
                    }
                }
            }
        }
        Ok((out, t))
    }

    /// The request head as it went upstream, for the plugins to read while the response
    /// passes.
    pub fn request_sent(&self, p: &http::request::Parts) {
        let view = Rc::new(ReqView {
            method: p.method.clone(),
            uri: p.uri.clone(),
            headers: p.headers.clone(),
            version: p.version,
        });
        for i in 0..self.stages.len() {
            self.with_ctx(i, |c| c.req_view = Some(view.clone()));
        }
    }

    /// Plugins in this exchange (not failed).
    pub fn active(&self) -> usize {
        self.stages.iter().filter(|s| !s.dead.get()).count()
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        for s in &self.stages {
            if let Ok(mut vm) = s.vm.try_borrow_mut() {
                vm.finish(s.id, s.inc);
            }
        }
    }
}

/// What a client gets when the chain stopped a request.
pub fn stop_status(stop: &Stop) -> (StatusCode, String) {
    match stop {
        Stop::Local(l) => (l.status, String::new()),
        Stop::Failed(name) => (StatusCode::INTERNAL_SERVER_ERROR, format!("plugin {name} failed\n")),
        Stop::Closed(name) => (StatusCode::FORBIDDEN, format!("closed by plugin {name}\n")),
        Stop::TooLarge(name) => {
            (StatusCode::PAYLOAD_TOO_LARGE, format!("plugin {name} held more body than max_body_bytes\n"))
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Local(l) => write!(f, "a plugin answered {} after the head had gone", l.status),
            Stop::Failed(n) => write!(f, "plugin {n} failed"),
            Stop::Closed(n) => write!(f, "plugin {n} closed the stream"),
            Stop::TooLarge(n) => write!(f, "plugin {n} held more body than max_body_bytes"),
        }
    }
}

impl std::error::Error for Stop {}

/// A head and its body through the chain: returns the head once every plugin let it go, and
/// the body as it comes out of the chain (what the plugins buffered first, then the rest chunk
/// by chunk). When the whole body was held with the head and its length changed, the
/// Content-Length says the new one.
pub async fn through<H: Head + HeadLength + 'static>(
    ex: &Rc<Exchange>,
    head: H,
    mut body: Incoming,
) -> Result<(H, ProxyBody), Stop> {
    let eos = body.is_end_stream();
    let mut ended = eos;
    let mut prefix: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut head = match ex.head(head, eos).await? {
        Some(h) => h,
        None => loop {
            let (out, trailers) = match body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => {
                        ended = body.is_end_stream();
                        (ex.data::<H>(d, ended).await?, None)
                    }
                    Err(f) => match f.into_trailers() {
                        Ok(t) => {
                            ended = true;
                            let (o, t) = ex.trailers::<H>(t).await?;
                            (o, Some(t))
                        }
                        Err(_) => continue,
                    },
                },
                None => {
                    ended = true;
                    (ex.data::<H>(Bytes::new(), true).await?, None)
                }
                // The peer's body broke off while a plugin held the head: nothing to send.
                Some(Err(_)) => return Err(Stop::Closed("(the peer's body failed)".into())),
            };
            if let Some(d) = out.data.filter(|d| !d.is_empty()) {
                prefix.push_back(Frame::data(d));
            }
            if let Some(t) = trailers {
                prefix.push_back(Frame::trailers(t));
            }
            if let Some(h) = out.head {
                break h;
            }
            if ended {
                return Err(Stop::Failed("(the chain held the head past the end of the body)".into()));
            }
        },
    };
    if ended {
        let len: usize = prefix.iter().filter_map(|f| f.data_ref()).map(|d| d.len()).sum();
        head.fix_length(len);
    }
    let inner = if ended { None } else { Some(body) };
    let b = PluginBody::<H> { prefix, inner, ex: ex.clone(), pending: None, eos_sent: ended, _head: PhantomData };
    Ok((head, ProxyBody::new(b)))
}

/// Heads whose Content-Length the chain may correct.
pub trait HeadLength {
    fn fix_length(&mut self, len: usize);
}

fn fix(headers: &mut HeaderMap, len: usize) {
    if let Some(v) = headers.get(http::header::CONTENT_LENGTH) {
        if v.to_str().ok().and_then(|s| s.parse::<usize>().ok()) != Some(len) {
            headers.insert(http::header::CONTENT_LENGTH, len.into());
        }
    }
}

impl HeadLength for http::request::Parts {
    fn fix_length(&mut self, len: usize) {
        fix(&mut self.headers, len)
    }
}

impl HeadLength for http::response::Parts {
    fn fix_length(&mut self, len: usize) {
        // A HEAD's or a 304's Content-Length describes a body that is not there.
        if self.status != StatusCode::NOT_MODIFIED {
            fix(&mut self.headers, len)
        }
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<Vec<Frame<Bytes>>, Stop>>>>;

/// A body coming out of the chain.
struct PluginBody<H> {
    prefix: VecDeque<Frame<Bytes>>,
    inner: Option<Incoming>,
    ex: Rc<Exchange>,
    pending: Option<Pending>,
    eos_sent: bool,
    _head: PhantomData<fn() -> H>,
}

fn frames<H>(out: Out<H>, trailers: Option<HeaderMap>) -> Vec<Frame<Bytes>> {
    let mut v = Vec::with_capacity(2);
    if let Some(d) = out.data.filter(|d| !d.is_empty()) {
        v.push(Frame::data(d));
    }
    if let Some(t) = trailers {
        v.push(Frame::trailers(t));
    }
    v
}

impl<H: Head + 'static> http_body::Body for PluginBody<H> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(f) = this.prefix.pop_front() {
                return Poll::Ready(Some(Ok(f)));
            }
            if let Some(p) = this.pending.as_mut() {
                match p.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => {
                        this.pending = None;
                        match r {
                            Ok(f) => {
                                this.prefix.extend(f);
                                continue;
                            }
                            Err(stop) => return Poll::Ready(Some(Err(Box::new(stop)))),
                        }
                    }
                }
            }
            let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
            let ex = this.ex.clone();
            match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => {
                        let eos = this.inner.as_ref().is_none_or(|b| b.is_end_stream());
                        this.eos_sent |= eos;
                        this.pending = Some(Box::pin(async move { Ok(frames(ex.data::<H>(d, eos).await?, None)) }));
                    }
                    Err(f) => {
                        if let Ok(t) = f.into_trailers() {
                            this.eos_sent = true;
                            this.pending = Some(Box::pin(async move {
                                let (o, t) = ex.trailers::<H>(t).await?;
                                Ok(frames(o, Some(t)))
                            }));
                        }
                    }
                },
                Poll::Ready(None) => {
                    this.inner = None;
                    if !this.eos_sent {
                        this.eos_sent = true;
                        this.pending =
                            Some(Box::pin(async move { Ok(frames(ex.data::<H>(Bytes::new(), true).await?, None)) }));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Box::new(e)))),
            }
        }
    }
}
