//! One plugin's instance on one worker: its store, the exports the host calls, the deadline on
//! every call, and what happens after a trap (the instance goes; the next request gets a new
//! one; too many failures disable the plugin on this worker).

use super::calls::{CallClient, CallError, CallResponse};
use super::host::{HttpCtx, Notify, State};
use super::shared::Shared;
use super::{Event, EventTx, PluginInfo};
use crate::intercept::exec::spawn;
use crate::intercept::hook::FlowInfo;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{InstancePre, Store, TypedFunc};

/// The callbacks the host calls, with their (parameter, result) counts; all take and return
/// i32 except none. `plugin check` compares a module's exports with these.
pub const EXPORT_TYPES: &[(&str, (usize, usize))] = &[
    ("proxy_on_memory_allocate", (1, 1)),
    ("proxy_on_context_create", (2, 0)),
    ("proxy_on_vm_start", (2, 1)),
    ("proxy_on_configure", (2, 1)),
    ("proxy_on_tick", (1, 0)),
    ("proxy_on_queue_ready", (2, 0)),
    ("proxy_on_request_headers", (3, 1)),
    ("proxy_on_request_body", (3, 1)),
    ("proxy_on_request_trailers", (2, 1)),
    ("proxy_on_response_headers", (3, 1)),
    ("proxy_on_response_body", (3, 1)),
    ("proxy_on_response_trailers", (2, 1)),
    ("proxy_on_log", (1, 0)),
    ("proxy_on_done", (1, 1)),
    ("proxy_on_delete", (1, 0)),
    ("proxy_on_http_call_response", (5, 0)),
    ("proxy_on_new_connection", (1, 1)),
    ("proxy_on_downstream_data", (3, 1)),
    ("proxy_on_upstream_data", (3, 1)),
    ("proxy_on_downstream_connection_close", (2, 0)),
    ("proxy_on_upstream_connection_close", (2, 0)),
];

type F1 = TypedFunc<i32, ()>;
type F1r = TypedFunc<i32, i32>;
type F2 = TypedFunc<(i32, i32), ()>;
type F2r = TypedFunc<(i32, i32), i32>;
type F3r = TypedFunc<(i32, i32, i32), i32>;
type F5 = TypedFunc<(i32, i32, i32, i32, i32), ()>;

pub struct Exports {
    context_create: F2,
    vm_start: Option<F2r>,
    configure: Option<F2r>,
    tick: Option<F1>,
    queue_ready: Option<F2>,
    pub headers: [Option<F3r>; 2],
    pub body: [Option<F3r>; 2],
    pub trailers: [Option<F2r>; 2],
    log: Option<F1>,
    done: Option<F1r>,
    delete: Option<F1>,
    call_response: Option<F5>,
    new_connection: Option<F1r>,
    /// Downstream, upstream.
    data: [Option<F3r>; 2],
    close: [Option<F2>; 2],
}

struct Live {
    store: Store<State>,
    ex: Exports,
}

/// What the worker's instances share, to make and remake them.
#[derive(Clone)]
pub struct VmEnv {
    pub worker: usize,
    pub shared: Arc<Shared>,
    pub events: EventTx,
    pub calls: Option<CallClient>,
    pub deadline_ticks: u64,
    pub memory_limit: usize,
    pub max_failures: u32,
    pub failure_window: Duration,
}

pub struct Vm {
    pub info: Arc<PluginInfo>,
    pre: InstancePre<State>,
    env: VmEnv,
    live: Option<Live>,
    /// Bumped whenever the instance is dropped: contexts of an older one are orphans.
    pub incarnation: u64,
    /// Contexts of a dropped instance, until their exchanges take them back.
    orphans: HashMap<u32, HttpCtx>,
    failures: VecDeque<Instant>,
    pub disabled: bool,
    next_ctx: u32,
    next_tick: Option<Instant>,
    me: Weak<RefCell<Vm>>,
    /// Callbacks run (for the counters).
    pub calls_made: u64,
    pub traps: u64,
}

/// A callback failed (a trap, the deadline, the memory limit); the instance is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

/// The root context's id in every instance.
const ROOT: u32 = 1;

fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    inst: &wasmtime::Instance,
    store: &mut Store<State>,
    name: &str,
) -> Option<TypedFunc<P, R>> {
    inst.get_typed_func::<P, R>(&mut *store, name).ok()
}

/// A trap or an error, said in one line: the deadline and the memory limit by name.
fn describe(e: &wasmtime::Error, deadline_ms: u64) -> String {
    if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        if *t == wasmtime::Trap::Interrupt {
            return format!("a callback ran past its {deadline_ms} ms deadline");
        }
        return format!("trap: {t}");
    }
    let s = format!("{e}");
    s.lines().next().unwrap_or("").to_owned()
}

impl Vm {
    pub fn new(info: Arc<PluginInfo>, pre: InstancePre<State>, env: VmEnv) -> Rc<RefCell<Vm>> {
        Rc::new_cyclic(|me| {
            RefCell::new(Vm {
                info,
                pre,
                env,
                live: None,
                incarnation: 0,
                orphans: HashMap::new(),
                failures: VecDeque::new(),
                disabled: false,
                next_ctx: ROOT + 1,
                next_tick: None,
                me: me.clone(),
                calls_made: 0,
                traps: 0,
            })
        })
    }

    /// Makes the instance: instantiate, WASI initialisation, the root context, `on_vm_start`,
    /// `on_configure`. An error says which step refused.
    fn make(&mut self) -> Result<Live, String> {
        let engine = self.pre.module().engine().clone();
        let state = State::new(
            self.info.clone(),
            self.env.worker,
            self.env.shared.clone(),
            self.env.events.clone(),
            self.env.memory_limit,
        );
        let mut store = Store::new(&engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.env.deadline_ticks);
        let dl = self.env.deadline_ticks;
        let inst = self.pre.instantiate(&mut store).map_err(|e| format!("instantiating: {}", describe(&e, dl)))?;
        let memory = inst.get_memory(&mut store, "memory");
        let malloc = typed::<i32, i32>(&inst, &mut store, "proxy_on_memory_allocate")
            .or_else(|| typed::<i32, i32>(&inst, &mut store, "malloc"));
        store.data_mut().memory = memory;
        store.data_mut().malloc = malloc;
        store.data_mut().root = ROOT;
        store.data_mut().effective = ROOT;
        // A reactor (cdylib) initialises its runtime in _initialize; a command in _start.
        for init in ["_initialize", "_start"] {
            if let Some(f) = typed::<(), ()>(&inst, &mut store, init) {
                store.set_epoch_deadline(dl);
                f.call(&mut store, ()).map_err(|e| format!("{init}: {}", describe(&e, dl)))?;
                break;
            }
        }
        let context_create = typed::<(i32, i32), ()>(&inst, &mut store, "proxy_on_context_create")
            .ok_or("no proxy_on_context_create export")?;
        let ex = Exports {
            context_create,
            vm_start: typed(&inst, &mut store, "proxy_on_vm_start"),
            configure: typed(&inst, &mut store, "proxy_on_configure"),
            tick: typed(&inst, &mut store, "proxy_on_tick"),
            queue_ready: typed(&inst, &mut store, "proxy_on_queue_ready"),
            headers: [
                typed(&inst, &mut store, "proxy_on_request_headers"),
                typed(&inst, &mut store, "proxy_on_response_headers"),
            ],
            body: [
                typed(&inst, &mut store, "proxy_on_request_body"),
                typed(&inst, &mut store, "proxy_on_response_body"),
            ],
            trailers: [
                typed(&inst, &mut store, "proxy_on_request_trailers"),
                typed(&inst, &mut store, "proxy_on_response_trailers"),
            ],
            log: typed(&inst, &mut store, "proxy_on_log"),
            done: typed(&inst, &mut store, "proxy_on_done"),
            delete: typed(&inst, &mut store, "proxy_on_delete"),
            call_response: typed(&inst, &mut store, "proxy_on_http_call_response"),
            new_connection: typed(&inst, &mut store, "proxy_on_new_connection"),
            data: [
                typed(&inst, &mut store, "proxy_on_downstream_data"),
                typed(&inst, &mut store, "proxy_on_upstream_data"),
            ],
            close: [
                typed(&inst, &mut store, "proxy_on_downstream_connection_close"),
                typed(&inst, &mut store, "proxy_on_upstream_connection_close"),
            ],
        };
        store.set_epoch_deadline(dl);
        ex.context_create
            .call(&mut store, (ROOT as i32, 0))
            .map_err(|e| format!("creating the root context: {}", describe(&e, dl)))?;
        let vm_len = self.info.vm_configuration.len() as i32;
        if let Some(f) = &ex.vm_start {
            store.set_epoch_deadline(dl);
            let ok =
                f.call(&mut store, (ROOT as i32, vm_len)).map_err(|e| format!("on_vm_start: {}", describe(&e, dl)))?;
            if ok == 0 {
                return Err("on_vm_start refused to start (returned false)".into());
            }
        }
        let cfg_len = self.info.configuration.len() as i32;
        if let Some(f) = &ex.configure {
            store.set_epoch_deadline(dl);
            let ok = f
                .call(&mut store, (ROOT as i32, cfg_len))
                .map_err(|e| format!("on_configure: {}", describe(&e, dl)))?;
            if ok == 0 {
                return Err("on_configure refused the plugin's configuration (returned false)".into());
            }
        }
        Ok(Live { store, ex })
    }

    /// Makes the first instance; an error is the plugin's (its name and the step in it).
    pub fn start(&mut self) -> anyhow::Result<()> {
        let live = self
            .make()
            .map_err(|e| anyhow::anyhow!("plugin {} ({}): {e}", self.info.name, self.info.file.display()))?;
        self.live = Some(live);
        self.after_call();
        Ok(())
    }

    /// True when there is an instance to call (made anew after a failure), false when the
    /// plugin is disabled or cannot be made.
    pub fn ensure(&mut self) -> bool {
        if self.disabled {
            return false;
        }
        if self.live.is_some() {
            return true;
        }
        match self.make() {
            Ok(l) => {
                self.live = Some(l);
                self.after_call();
                true
            }
            Err(e) => {
                self.failed(e);
                false
            }
        }
    }

    fn failed(&mut self, what: String) {
        self.traps += 1;
        self.env.events.send(Event::Failed { plugin: self.info.name.clone(), worker: self.env.worker, what });
        let now = Instant::now();
        self.failures.push_back(now);
        while self.failures.front().is_some_and(|t| now.duration_since(*t) > self.env.failure_window) {
            self.failures.pop_front();
        }
        if self.failures.len() as u32 >= self.env.max_failures && !self.disabled {
            self.disabled = true;
            self.env.events.send(Event::Disabled {
                plugin: self.info.name.clone(),
                worker: self.env.worker,
                failures: self.failures.len() as u32,
                window_secs: self.env.failure_window.as_secs(),
            });
        }
        // The instance's state may be anything now: it goes. Its open contexts become orphans,
        // and their exchanges are woken to take back what they lent it.
        if let Some(mut live) = self.live.take() {
            for (id, ctx) in live.store.data_mut().http.drain() {
                ctx.notify.fire();
                self.orphans.insert(id, ctx);
            }
        }
        self.incarnation += 1;
        self.next_tick = None;
    }

    /// Runs one callback on context `ctx` under the deadline: None when the module lacks it.
    /// Err: it failed (already logged and counted; the instance is gone).
    pub fn call<R>(
        &mut self,
        ctx: u32,
        f: impl FnOnce(&Exports, &mut Store<State>) -> Option<wasmtime::Result<R>>,
    ) -> Result<Option<R>, Failed> {
        let Some(live) = self.live.as_mut() else { return Err(Failed) };
        live.store.data_mut().effective = ctx;
        live.store.set_epoch_deadline(self.env.deadline_ticks);
        self.calls_made += 1;
        match f(&live.ex, &mut live.store) {
            None => Ok(None),
            Some(Ok(r)) => {
                self.after_call();
                Ok(Some(r))
            }
            Some(Err(e)) => {
                let what = describe(&e, self.env.callback_deadline_ms());
                self.failed(what);
                Err(Failed)
            }
        }
    }

    /// A new HTTP context for `flow`: its id, the instance's incarnation and its wakeup.
    pub fn new_http(&mut self, flow: Rc<FlowInfo>) -> Option<(u32, u64, Rc<Notify>)> {
        self.new_ctx(flow, false)
    }

    /// A new stream context for `flow` (then [`Vm::on_new_connection`]).
    pub fn new_stream(&mut self, flow: Rc<FlowInfo>) -> Option<(u32, u64, Rc<Notify>)> {
        self.new_ctx(flow, true)
    }

    /// `proxy_on_new_connection`: the plugin's action (Continue when it lacks the callback).
    pub fn on_new_connection(&mut self, id: u32) -> Result<i32, Failed> {
        let r = self.call(id, |ex, s| ex.new_connection.as_ref().map(|f| f.call(s, id as i32)))?;
        Ok(r.unwrap_or(super::abi::ACTION_CONTINUE))
    }

    /// `proxy_on_downstream_data` (`downstream`) or `proxy_on_upstream_data` with `data` as the
    /// stream context's buffer: the plugin's action (Continue when it lacks the callback).
    pub fn on_stream_data(
        &mut self,
        id: u32,
        inc: u64,
        downstream: bool,
        data: &[u8],
        eos: bool,
    ) -> Result<i32, Failed> {
        let i = if downstream { 0 } else { 1 };
        let Some(ctx) = self.ctx(id, inc) else { return Err(Failed) };
        ctx.body[i].clear();
        ctx.body[i].extend_from_slice(data);
        let n = data.len() as i32;
        let r = self.call(id, |ex, s| ex.data[i].as_ref().map(|f| f.call(s, (id as i32, n, eos as i32))))?;
        Ok(r.unwrap_or(super::abi::ACTION_CONTINUE))
    }

    /// The end of a stream context: the close callbacks (`peer` closed it) when `closed`,
    /// then `on_log`, `on_done`, `on_delete`, and the context goes.
    pub fn finish_stream(&mut self, id: u32, inc: u64, closed: Option<i32>) {
        if let Some(peer) = closed {
            for i in 0..2 {
                if self.alive(inc) {
                    let _ = self.call(id, |ex, s| ex.close[i].as_ref().map(|f| f.call(s, (id as i32, peer))));
                }
            }
        }
        self.finish(id, inc);
    }

    fn new_ctx(&mut self, flow: Rc<FlowInfo>, stream: bool) -> Option<(u32, u64, Rc<Notify>)> {
        if !self.ensure() {
            return None;
        }
        let id = self.next_ctx;
        self.next_ctx = if self.next_ctx == u32::MAX { ROOT + 1 } else { self.next_ctx + 1 };
        let mut ctx = HttpCtx::new(flow);
        ctx.stream = stream;
        let notify = ctx.notify.clone();
        self.live.as_mut()?.store.data_mut().http.insert(id, ctx);
        self.call(id, |ex, s| Some(ex.context_create.call(s, (id as i32, ROOT as i32)))).ok()?;
        Some((id, self.incarnation, notify))
    }

    /// Context `id` of incarnation `inc`, live or orphaned.
    pub fn ctx(&mut self, id: u32, inc: u64) -> Option<&mut HttpCtx> {
        if inc == self.incarnation {
            self.live.as_mut()?.store.data_mut().http.get_mut(&id)
        } else {
            self.orphans.get_mut(&id)
        }
    }

    /// Whether context `id` of incarnation `inc` still lives in the current instance.
    pub fn alive(&self, inc: u64) -> bool {
        inc == self.incarnation && self.live.is_some()
    }

    /// The end of an exchange: `on_log`, `on_done`, `on_delete`, and the context goes.
    pub fn finish(&mut self, id: u32, inc: u64) {
        if !self.alive(inc) {
            self.orphans.remove(&id);
            return;
        }
        let _ = self.call(id, |ex, s| ex.log.as_ref().map(|f| f.call(s, id as i32)));
        if self.alive(inc) {
            let _ = self.call(id, |ex, s| ex.done.as_ref().map(|f| f.call(s, id as i32)));
        }
        if self.alive(inc) {
            let _ = self.call(id, |ex, s| ex.delete.as_ref().map(|f| f.call(s, id as i32)));
        }
        if let Some(live) = self.live.as_mut() {
            live.store.data_mut().http.remove(&id);
        }
        self.orphans.remove(&id);
    }

    /// Sends the outbound calls the last callback made, and arms the tick it asked for.
    fn after_call(&mut self) {
        let Some(live) = self.live.as_mut() else { return };
        let st = live.store.data_mut();
        let tick_ms = st.tick_ms;
        let new_calls = std::mem::take(&mut st.new_calls);
        if tick_ms == 0 {
            self.next_tick = None;
        } else if self.next_tick.is_none() {
            self.next_tick = Some(Instant::now() + Duration::from_millis(tick_ms as u64));
        }
        for c in new_calls {
            let inc = self.incarnation;
            let rx = match &self.env.calls {
                Some(client) => Some(client.call(c.request)),
                None => None,
            };
            let me = self.me.clone();
            spawn(async move {
                let r = match rx {
                    Some(rx) => rx.await.unwrap_or(Err(CallError::Failed("the call thread is gone".into()))),
                    None => Err(CallError::UnknownUpstream),
                };
                if let Some(vm) = me.upgrade() {
                    vm.borrow_mut().deliver(c.token, c.context, inc, r);
                }
            });
        }
    }

    /// An outbound call's answer: `on_http_call_response` on the context that made it.
    fn deliver(&mut self, token: u32, ctx: u32, inc: u64, r: Result<CallResponse, CallError>) {
        if !self.alive(inc) {
            return;
        }
        let Some(live) = self.live.as_mut() else { return };
        let st = live.store.data_mut();
        if ctx != ROOT && !st.http.contains_key(&ctx) {
            return; // the exchange ended meanwhile
        }
        let resp = r.unwrap_or_default();
        let (nh, nb, nt) = (resp.headers.len() as i32, resp.body.len() as i32, resp.trailers.len() as i32);
        st.call_response = Some(resp);
        let _ = self
            .call(ctx, |ex, s| ex.call_response.as_ref().map(|f| f.call(s, (ctx as i32, token as i32, nh, nb, nt))));
        if let Some(live) = self.live.as_mut() {
            let st = live.store.data_mut();
            st.call_response = None;
            if let Some(c) = st.http.get_mut(&ctx) {
                c.calls_pending = c.calls_pending.saturating_sub(1);
                c.notify.fire();
            }
        }
    }

    /// Timers and queues: `on_tick` when the period the plugin set is due, `on_queue_ready`
    /// for registered queues with new items.
    pub fn poll(&mut self, now: Instant) {
        if self.disabled {
            return;
        }
        if self.next_tick.is_some_and(|t| now >= t) {
            let period = self.live.as_ref().map_or(0, |l| l.store.data().tick_ms);
            self.next_tick = (period > 0).then(|| now + Duration::from_millis(period as u64));
            let _ = self.call(ROOT, |ex, s| ex.tick.as_ref().map(|f| f.call(s, ROOT as i32)));
        }
        let ready: Vec<u32> = match self.live.as_mut() {
            Some(live) => {
                let st = live.store.data_mut();
                let shared = st.shared.clone();
                st.queues
                    .iter_mut()
                    .filter_map(|(id, seen)| {
                        let seq = shared.queue_seq(*id);
                        (seq != *seen).then(|| {
                            *seen = seq;
                            *id
                        })
                    })
                    .collect()
            }
            None => return,
        };
        for q in ready {
            let _ = self.call(ROOT, |ex, s| ex.queue_ready.as_ref().map(|f| f.call(s, (ROOT as i32, q as i32))));
        }
    }

    /// When `poll` next has something to do (a tick), if ever.
    pub fn next_tick(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Whether the instance registered queues (then `poll` must run often).
    pub fn has_queues(&self) -> bool {
        self.live.as_ref().is_some_and(|l| !l.store.data().queues.is_empty())
    }
}

impl VmEnv {
    fn callback_deadline_ms(&self) -> u64 {
        self.deadline_ticks
    }
}
