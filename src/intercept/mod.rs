//! Interception: for each TCP flow that policy marks, a pair of userspace TCP connections on
//! the worker that owns the flow, and HTTP proxied between them through the hook.
//!
//! ```text
//!  client ──▶ GWLB ──▶ worker: flow table ─▶ Verdict::Intercept ─▶ Interceptor::input
//!                                   pairs[slot] ─▶ client leg (smoltcp, the server's address)
//!                                               └▶ upstream leg (smoltcp, the client's address)
//!  proxy task (hyper server on the client leg ◀▶ hook ◀▶ hyper client on the upstream leg),
//!  run by the worker's executor when a leg wakes it ─▶ bytes into the legs' send buffers
//!  Interceptor::poll: run woken tasks, then let each touched leg send ─▶ Wire::emit
//!  ─▶ the flow's Geneve header for that direction ─▶ GWLB
//! ```
//!
//! The client's SYN is held until the upstream leg's handshake with the server completes
//! (delayed SYN-ACK): a refused connection gets the client a RST, a server that never answers
//! gets it silence, as without the appliance. A pair ends when both legs closed, when it idles
//! past the TCP idle timeout, or when the flow's slot starts a new flow; its memory goes then.

pub mod exec;
pub mod hook;
pub mod proxy;
pub mod tcp;
pub mod tls;
pub mod ws;

use self::exec::Executor;
use self::hook::{FlowInfo, Hook};
use self::proxy::{Ctx, Stats};
use self::tcp::{Leg, LegConfig, PairIo, Sink};
use flowdog_core::Intercepted;
use flowdog_wire::inner;
use flowdog_wire::tcp::flags as tcp_flags;
use smoltcp::socket::tcp::State as TcpState;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpAddress;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

/// What to do with a new intercepted flow when every TCP pair is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Pass it on the fast path, uninspected.
    Pass,
    /// Refuse it: the client gets a RST.
    Refuse,
}

#[derive(Debug, Clone)]
pub struct InterceptConfig {
    /// TCP pairs per worker at most.
    pub max_flows: usize,
    pub when_full: WhenFull,
    pub leg: LegConfig,
    /// How long the upstream handshake may take (SYN retransmissions included) before the pair
    /// is dropped; the client, which got no SYN-ACK, times out on its own.
    pub connect_timeout: Duration,
    /// Data unacknowledged this long: the peer is gone, the leg gives up.
    pub peer_timeout: Duration,
    /// A pair with no packet either way for this long is torn down (GWLB's TCP idle timeout).
    pub idle_timeout: Duration,
    /// Largest body the hook may ask to see whole.
    pub max_body: usize,
}

/// Where the interceptor's packets go: the inner IP packet of `len` bytes for flow `slot`,
/// written by `fill`, towards the client or the server. The worker wraps it in the flow's Geneve
/// header for that direction and transmits it.
pub trait Wire {
    fn emit(&mut self, slot: u32, to_client: bool, len: usize, fill: &mut dyn FnMut(&mut [u8]));
}

struct SlotSink<'a> {
    wire: &'a mut dyn Wire,
    slot: u32,
}

impl Sink for SlotSink<'_> {
    fn emit(&mut self, to_client: bool, len: usize, fill: &mut dyn FnMut(&mut [u8])) {
        self.wire.emit(self.slot, to_client, len, fill);
    }
}

/// The GWLB options of a flow, for the hook.
#[derive(Debug, Clone, Copy, Default)]
pub struct GwlbIds {
    pub vpc_endpoint_id: u64,
    pub attachment_id: u64,
    pub flow_cookie: u32,
}

/// The interceptor's own counters (the worker publishes them with its others).
#[derive(Debug, Default, Clone)]
pub struct TcpCounters {
    pub created: u64,
    pub closed: u64,
    pub timed_out: u64,
    pub refused: u64,
    pub unreachable: u64,
    pub no_pair: u64,
}

enum State {
    /// Upstream handshake under way; the client's SYN waits here.
    Connecting {
        syn: Vec<u8>,
        since: Instant,
    },
    Open,
}

struct Pair {
    id: u64,
    io: Rc<RefCell<PairIo>>,
    state: State,
    flow: FlowInfo,
    last_active: Instant,
    /// The deadline a timer entry is queued for, if any.
    timer: Option<Instant>,
    /// When both legs were first seen closed (TIME-WAIT or CLOSED): the pair lingers a moment
    /// so that smoltcp's delayed ACK of the peers' last FIN still goes out.
    closing: Option<Instant>,
}

/// How long a closed pair lingers: longer than smoltcp's delayed ACK (10 ms), so the peers'
/// FINs are acknowledged and they leave LAST-ACK instead of retransmitting into a gone pair.
const LINGER: Duration = Duration::from_millis(50);

/// The input could not be taken: every TCP pair is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A packet of a flow waiting for the flow acceptor: its frame, and what the header stage
/// learned of it (to run it through the flow stage again once the flow is decided).
pub type HeldPacket = (flowdog_dpdk::Mbuf, flowdog_core::Pending);

pub struct Interceptor {
    cfg: InterceptConfig,
    worker: usize,
    pairs: HashMap<u32, Pair>,
    exec: Executor,
    dirty: Rc<RefCell<Vec<u64>>>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    ctx: Rc<Ctx>,
    generation: u64,
    seed: u64,
    last_sweep: Instant,
    pub counters: TcpCounters,
    /// Where the control plane leaves a reloaded chain for this worker.
    reloads: Option<crate::plugin::reload::Handoff>,
    /// The running chain's generation (0: none yet), and how many reloads this worker took.
    plugin_generation: u64,
    pub plugin_reloads: u64,
    /// Older generations that connections still use, and the calls and failures of the ones
    /// already gone.
    retired: Vec<Rc<crate::plugin::Chain>>,
    retired_counts: (u64, u64),
    /// The flow acceptor's instance (a chain of one), if configured.
    pub(crate) acceptor: Option<Rc<crate::plugin::Chain>>,
    /// New flows waiting for it, with their held packets, and the decisions of one tick.
    pub held: crate::accept::Acceptor<HeldPacket>,
    pub decisions: Vec<crate::accept::Decision<HeldPacket>>,
}

/// Callbacks run and failures of one chain's instances.
fn counts(chain: &crate::plugin::Chain) -> (u64, u64) {
    chain.iter().fold((0, 0), |(c, f), vm| match vm.try_borrow() {
        Ok(v) => (c + v.calls_made, f + v.traps),
        Err(_) => (c, f),
    })
}

fn addr(ipv6: bool, a: &[u8; 16]) -> IpAddr {
    if ipv6 {
        IpAddr::from(*a)
    } else {
        IpAddr::from([a[0], a[1], a[2], a[3]])
    }
}

impl Interceptor {
    /// `tls`: TLS interception (None: intercepted TLS flows are relayed untouched).
    pub fn new(
        cfg: InterceptConfig,
        worker: usize,
        hook: Rc<dyn Hook>,
        tls: Option<tls::TlsCtx>,
        seed: u64,
    ) -> Interceptor {
        let ctx = Rc::new(Ctx {
            hook,
            plugins: RefCell::new(Rc::new(Vec::new())),
            stats: Rc::new(Stats::default()),
            max_body: cfg.max_body,
            tls,
        });
        Interceptor {
            pairs: HashMap::with_capacity(cfg.max_flows),
            cfg,
            worker,
            exec: Executor::new(),
            dirty: Rc::new(RefCell::new(Vec::new())),
            timers: BinaryHeap::new(),
            ctx,
            generation: 0,
            seed,
            last_sweep: Instant::ZERO,
            counters: TcpCounters::default(),
            reloads: None,
            plugin_generation: 0,
            plugin_reloads: 0,
            retired: Vec::new(),
            retired_counts: (0, 0),
            acceptor: None,
            held: crate::accept::Acceptor::new(crate::accept::AcceptorConfig::new(&Default::default(), 1_000_000)),
            decisions: Vec::with_capacity(64),
        }
    }

    /// The plugins' instances on this worker, in order, of generation `generation`: the HTTP
    /// chain, and the flow acceptor if one is configured.
    pub fn with_plugins(mut self, plugins: crate::plugin::Chain, generation: u64) -> Interceptor {
        let (http, acceptor) = crate::plugin::split(plugins);
        *self.ctx.plugins.borrow_mut() = Rc::new(http);
        self.acceptor = acceptor;
        self.plugin_generation = generation;
        self
    }

    /// How new flows wait for the flow acceptor; `ticks_per_ms` is the worker's clock.
    pub fn with_acceptor(mut self, section: &crate::accept::AcceptorSection, ticks_per_ms: u64) -> Interceptor {
        self.held = crate::accept::Acceptor::new(crate::accept::AcceptorConfig::new(section, ticks_per_ms));
        self
    }

    /// The flow acceptor of the running generation (new flows are asked it).
    pub fn acceptor(&self) -> Option<&Rc<crate::plugin::Chain>> {
        self.acceptor.as_ref()
    }

    /// Where this worker takes reloaded chains from.
    pub fn with_reloads(mut self, reloads: crate::plugin::reload::Handoff) -> Interceptor {
        self.reloads = Some(reloads);
        self
    }

    /// Takes a reloaded chain if the control plane left one: its instances are made here, on
    /// the worker's thread, and new connections get them; open connections keep theirs.
    fn take_reload(&mut self) {
        let Some(next) = self.reloads.as_ref().and_then(|r| r.take()) else {
            return;
        };
        let vms = match next.instantiate(self.worker, false) {
            Ok(v) => v,
            Err(e) => {
                let what = format!("generation {}: {e:#}", next.generation);
                next.events.send(crate::plugin::Event::Failed { plugin: next.names(), worker: self.worker, what });
                return;
            }
        };
        let (http, acceptor) = crate::plugin::split(vms);
        let old = std::mem::replace(&mut *self.ctx.plugins.borrow_mut(), Rc::new(http));
        self.retired.push(old);
        if let Some(old) = std::mem::replace(&mut self.acceptor, acceptor) {
            self.retired.push(old);
        }
        self.plugin_generation = next.generation;
        self.plugin_reloads += 1;
        next.events.send(crate::plugin::Event::Swapped { worker: self.worker, generation: next.generation });
    }

    /// Plugin timers and queues (`on_tick`, `on_queue_ready`), reloads, and the end of
    /// generations no connection uses any more; the worker calls this on its own tick.
    pub fn poll_plugins(&mut self) {
        self.take_reload();
        if !self.retired.is_empty() {
            let mut gone = (0, 0);
            self.retired.retain(|c| {
                let keep = Rc::strong_count(c) > 1;
                if !keep {
                    let (n, f) = counts(c);
                    gone = (gone.0 + n, gone.1 + f);
                }
                keep
            });
            self.retired_counts = (self.retired_counts.0 + gone.0, self.retired_counts.1 + gone.1);
        }
        let chain = self.ctx.plugins.borrow().clone();
        if chain.is_empty() && self.acceptor.is_none() {
            return;
        }
        let now = std::time::Instant::now();
        for vm in chain.iter().chain(self.acceptor.iter().flat_map(|a| a.iter())) {
            if let Ok(mut v) = vm.try_borrow_mut() {
                v.poll(now);
            }
        }
    }

    /// Plugin callbacks run and plugin failures on this worker, every generation together.
    pub fn plugin_counts(&self) -> (u64, u64) {
        let chains = std::iter::once(self.ctx.plugins.borrow().clone())
            .chain(self.acceptor.iter().cloned())
            .chain(self.retired.iter().cloned());
        chains.fold(self.retired_counts, |(c, f), chain| {
            let (n, g) = counts(&chain);
            (c + n, f + g)
        })
    }

    /// The generation of the chain new connections get (0: no plugins were ever loaded).
    pub fn plugin_generation(&self) -> u64 {
        self.plugin_generation
    }

    pub fn when_full(&self) -> WhenFull {
        self.cfg.when_full
    }

    /// Open TCP pairs.
    pub fn active(&self) -> usize {
        self.pairs.len()
    }

    /// The HTTP and WebSocket counters of the proxy tasks.
    pub fn http_stats(&self) -> &Stats {
        &self.ctx.stats
    }

    /// Tasks not finished (connections being proxied).
    pub fn tasks(&self) -> usize {
        self.exec.live()
    }

    /// One packet of an intercepted flow: `inner` is its inner IP packet.
    pub fn input(
        &mut self,
        wire: &mut dyn Wire,
        v: &Intercepted,
        inner: &mut [u8],
        ids: GwlbIds,
        now: Instant,
    ) -> Result<(), Full> {
        tcp::set_clock(now);
        if v.tcp_flags & tcp_flags::SYN != 0 {
            clamp_mss(inner, self.cfg.leg.mtu);
        }
        if v.new {
            if let Some(old) = self.pairs.remove(&v.slot) {
                self.retire(old);
            }
        }
        let Some(p) = self.pairs.get_mut(&v.slot) else {
            return self.start(wire, v, inner, ids, now);
        };
        p.last_active = now;
        let mut sink = SlotSink { wire, slot: v.slot };
        match &mut p.state {
            State::Connecting { syn, .. } => {
                if v.from_client {
                    // A retransmitted SYN replaces the held one; a RST gives up.
                    let flags = v.tcp_flags;
                    if flags & tcp_flags::RST != 0 {
                        let p = self.pairs.remove(&v.slot).expect("present");
                        self.retire(p);
                        return Ok(());
                    }
                    if flags & tcp_flags::SYN != 0 {
                        *syn = inner.to_vec();
                    }
                    return Ok(());
                }
                let mut io = p.io.borrow_mut();
                if let Some(ts) = syn_options(inner).tsval {
                    // The server's SYN-ACK: the client leg will speak with the server's clock.
                    io.legs[0].follow_timestamps(ts, now);
                }
                io.legs[1].poll(now, Some(inner), &mut sink);
            }
            State::Open => {
                let leg = if v.from_client { 0 } else { 1 };
                p.io.borrow_mut().legs[leg].poll(now, Some(inner), &mut sink);
            }
        }
        self.settle(wire, v.slot, now);
        Ok(())
    }

    /// A packet of an intercepted flow with no pair: a SYN starts one, anything else is late
    /// (the pair ended) and dropped.
    fn start(
        &mut self,
        wire: &mut dyn Wire,
        v: &Intercepted,
        inner: &[u8],
        ids: GwlbIds,
        now: Instant,
    ) -> Result<(), Full> {
        let flags = v.tcp_flags;
        if !v.from_client || flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) != tcp_flags::SYN {
            self.counters.no_pair += 1;
            return Ok(());
        }
        if self.pairs.len() >= self.cfg.max_flows {
            return Err(Full);
        }
        let Some(s) = summarize(inner) else {
            self.counters.no_pair += 1;
            return Ok(());
        };
        let ipv6 = s.ip_version == 6;
        let client = SocketAddr::new(addr(ipv6, &s.src), s.src_port);
        let server = SocketAddr::new(addr(ipv6, &s.dst), s.dst_port);
        self.generation += 1;
        let id = (self.generation << 32) | v.slot as u64;
        let seed = self.seed ^ self.generation.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let client_leg = Leg::new(IpAddress::from(server.ip()), true, &self.cfg.leg, seed, now);
        let mut upstream_leg = Leg::new(IpAddress::from(client.ip()), false, &self.cfg.leg, seed.rotate_left(17), now);
        if upstream_leg
            .connect((IpAddress::from(server.ip()), server.port()), (IpAddress::from(client.ip()), client.port()))
            .is_err()
        {
            self.counters.no_pair += 1;
            return Ok(());
        }
        upstream_leg.socket().set_timeout(Some(self.cfg.connect_timeout));
        if let Some(ts) = syn_options(inner).tsval {
            upstream_leg.follow_timestamps(ts, now);
        }
        let io = Rc::new(RefCell::new(PairIo::new([client_leg, upstream_leg], id, self.dirty.clone())));
        let flow = FlowInfo {
            client,
            server,
            vpc_endpoint_id: ids.vpc_endpoint_id,
            attachment_id: ids.attachment_id,
            flow_cookie: ids.flow_cookie,
            worker: self.worker,
            protocol: 6,
            tls: None,
        };
        self.counters.created += 1;
        self.pairs.insert(
            v.slot,
            Pair {
                id,
                io,
                state: State::Connecting { syn: inner.to_vec(), since: now },
                flow,
                last_active: now,
                timer: None,
                closing: None,
            },
        );
        let p = self.pairs.get_mut(&v.slot).expect("just inserted");
        p.io.borrow_mut().legs[1].poll(now, None, &mut SlotSink { wire, slot: v.slot });
        self.settle(wire, v.slot, now);
        Ok(())
    }

    /// After a leg of `slot` was polled: state changes (the upstream handshake ended, both legs
    /// closed) and the pair's next timer.
    fn settle(&mut self, wire: &mut dyn Wire, slot: u32, now: Instant) {
        let Some(p) = self.pairs.get_mut(&slot) else { return };
        let mut sink = SlotSink { wire, slot };
        let connecting = match &p.state {
            State::Connecting { since, .. } => Some(*since),
            State::Open => None,
        };
        if let Some(since) = connecting {
            let up = p.io.borrow_mut().legs[1].socket().state();
            match up {
                TcpState::Established => {
                    let syn = std::mem::take(syn_mut(&mut p.state).expect("connecting"));
                    let mut io = p.io.borrow_mut();
                    let peer_timeout = Some(self.cfg.peer_timeout);
                    io.legs[1].socket().set_timeout(peer_timeout);
                    let c = io.legs[0].socket();
                    let server = p.flow.server;
                    // The listen cannot fail: a fresh socket, a non-zero port.
                    let _ = c.listen((IpAddress::from(server.ip()), server.port()));
                    c.set_timeout(peer_timeout);
                    io.legs[0].poll(now, Some(&syn), &mut sink);
                    drop(io);
                    p.state = State::Open;
                    exec::spawn(proxy::proxy(p.io.clone(), self.ctx.clone(), p.flow.clone()));
                }
                TcpState::Closed | TcpState::TimeWait => {
                    // Refused (a RST), or no answer until the connect timeout.
                    if now - since >= self.cfg.connect_timeout {
                        self.counters.unreachable += 1;
                    } else {
                        // The client leg has no listening socket: smoltcp answers the held
                        // SYN with a RST, as the server did.
                        let syn = syn_mut(&mut p.state).map(std::mem::take).unwrap_or_default();
                        p.io.borrow_mut().legs[0].poll(now, Some(&syn), &mut sink);
                        self.counters.refused += 1;
                    }
                    let p = self.pairs.remove(&slot).expect("present");
                    self.retire(p);
                    return;
                }
                _ => {}
            }
        } else {
            let mut io = p.io.borrow_mut();
            let done = |s: TcpState| matches!(s, TcpState::Closed | TcpState::TimeWait);
            if done(io.legs[0].socket().state()) && done(io.legs[1].socket().state()) {
                let since = *p.closing.get_or_insert(now);
                if now - since >= LINGER {
                    drop(io);
                    let p = self.pairs.remove(&slot).expect("present");
                    self.counters.closed += 1;
                    self.retire(p);
                    return;
                }
            }
        }
        // The next timer: the earlier of the legs' (retransmission, delayed ACK, ...).
        let next = {
            let mut io = p.io.borrow_mut();
            let a = io.legs[0].poll_at(now);
            let b = io.legs[1].poll_at(now);
            let legs = match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match (legs, p.closing) {
                (Some(t), Some(c)) => Some(t.min(c + LINGER)),
                (t, c) => t.or(c.map(|c| c + LINGER)),
            }
        };
        if let Some(at) = next {
            if p.timer.is_none_or(|t| at < t || t <= now) {
                p.timer = Some(at);
                self.timers.push(Reverse((at, p.id)));
            }
        }
    }

    /// Forgets a pair: both legs aborted (its tasks see the sockets closed and end), memory
    /// freed when the last task lets go.
    fn retire(&mut self, p: Pair) {
        let mut io = p.io.borrow_mut();
        for l in &mut io.legs {
            l.socket().abort();
        }
    }

    /// The worker's periodic work: run woken proxy tasks, send what they wrote, fire due
    /// timers, expire idle pairs.
    pub fn poll(&mut self, wire: &mut dyn Wire, now: Instant) {
        tcp::set_clock(now);
        self.exec.run(256);
        // Pairs whose tasks wrote (or read, opening the window).
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        for id in dirty {
            self.poll_pair(wire, id, now, true);
        }
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let slot = id as u32;
            match self.pairs.get_mut(&slot) {
                Some(p) if p.id == id && p.timer == Some(at) => p.timer = None,
                _ => continue,
            }
            self.poll_pair(wire, id, now, false);
        }
        if now - self.last_sweep >= Duration::from_secs(1) {
            self.last_sweep = now;
            let idle = self.cfg.idle_timeout;
            let stale: Vec<u32> =
                self.pairs.iter().filter(|(_, p)| now - p.last_active > idle).map(|(s, _)| *s).collect();
            for s in stale {
                if let Some(p) = self.pairs.remove(&s) {
                    self.counters.timed_out += 1;
                    self.retire(p);
                }
            }
        }
    }

    fn poll_pair(&mut self, wire: &mut dyn Wire, id: u64, now: Instant, by_task: bool) {
        let slot = id as u32;
        let Some(p) = self.pairs.get_mut(&slot) else { return };
        if p.id != id {
            return;
        }
        if by_task {
            p.io.borrow_mut().clear_dirty();
        }
        {
            let mut sink = SlotSink { wire: &mut *wire, slot };
            let mut io = p.io.borrow_mut();
            for l in &mut io.legs {
                l.poll(now, None, &mut sink);
            }
        }
        self.settle(wire, slot, now);
    }

    /// Whether proxy tasks wait to run (the worker then polls again soon).
    pub fn busy(&self) -> bool {
        self.exec.has_ready() || !self.dirty.borrow().is_empty()
    }
}

fn syn_mut(s: &mut State) -> Option<&mut Vec<u8>> {
    match s {
        State::Connecting { syn, .. } => Some(syn),
        State::Open => None,
    }
}

fn summarize(packet: &[u8]) -> Option<inner::Summary> {
    let proto = match packet.first()? >> 4 {
        4 => 0x0800,
        6 => 0x86DD,
        _ => return None,
    };
    inner::summarize(proto, packet).ok()
}

/// What a SYN or SYN-ACK says in its TCP options: where its MSS value sits (offset in the
/// packet) and its timestamp value, if it has them.
#[derive(Debug, Default, Clone, Copy)]
struct SynOptions {
    /// Where the TCP header starts.
    l4: usize,
    mss_at: Option<usize>,
    tsval: Option<u32>,
    ipv6: bool,
}

fn syn_options(packet: &[u8]) -> SynOptions {
    let mut o = SynOptions::default();
    let Some(s) = summarize(packet) else { return o };
    o.ipv6 = s.ip_version == 6;
    let l4 = s.l4_offset;
    o.l4 = l4;
    if s.tcp_flags & tcp_flags::SYN == 0 || packet.len() < l4 + 20 {
        return o;
    }
    let hlen = ((packet[l4 + 12] >> 4) as usize) * 4;
    if hlen < 20 || packet.len() < l4 + hlen {
        return o;
    }
    let opts = &packet[l4 + 20..l4 + hlen];
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    break;
                }
                if kind == 2 && len == 4 {
                    o.mss_at = Some(l4 + 20 + i + 2);
                }
                if kind == 8 && len == 10 {
                    o.tsval = Some(u32::from_be_bytes([opts[i + 2], opts[i + 3], opts[i + 4], opts[i + 5]]));
                }
                i += len;
            }
        }
    }
    o
}

/// smoltcp fills a segment up to the peer's MSS, or its own MTU less 40 bytes, without counting
/// its own TCP options: with timestamps on, every full segment would be 12 bytes over the path
/// MTU (dropped where the path is exactly that MTU) or over the leg's own MTU (dropped by
/// smoltcp, then retransmitted at the same size forever). So a SYN or SYN-ACK reaches the leg
/// with its MSS lowered to what a segment may carry once the options are in: at most the leg's
/// MTU less the IP and TCP headers, and 12 bytes less with timestamps. The checksum follows.
fn clamp_mss(packet: &mut [u8], leg_mtu: usize) {
    let o = syn_options(packet);
    let Some(at) = o.mss_at else { return };
    let options = if o.tsval.is_some() { 12 } else { 0 };
    let ip_header = if o.ipv6 { 40 } else { 20 };
    let room = leg_mtu.saturating_sub(ip_header + 20 + options).min(u16::MAX as usize) as u16;
    let old = u16::from_be_bytes([packet[at], packet[at + 1]]);
    let new = old.saturating_sub(options as u16).min(room).max(536);
    if new == old {
        return;
    }
    packet[at..at + 2].copy_from_slice(&new.to_be_bytes());
    let ck = o.l4 + 16;
    let sum = u16::from_be_bytes([packet[ck], packet[ck + 1]]);
    packet[ck..ck + 2].copy_from_slice(&flowdog_wire::checksum::update16(sum, old, new).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowdog_wire::tcp::Packet as TcpPacket;
    use std::net::Ipv4Addr;

    /// An IPv4 SYN from 198.18.1.10:40000 to 198.18.2.10:80 with these TCP options.
    fn syn(options: &[u8]) -> Vec<u8> {
        let tcp_len = 20 + options.len();
        let mut p = vec![0u8; 20 + tcp_len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 18, 1, 10]);
        p[16..20].copy_from_slice(&[198, 18, 2, 10]);
        let sum = !flowdog_wire::checksum::ipv4_header(p[..20].first_chunk().unwrap());
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = tcp_flags::SYN;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t[20..].copy_from_slice(options);
        let mut tp = TcpPacket::new_checked(&mut p[20..]).unwrap();
        tp.fill_checksum_v4(Ipv4Addr::new(198, 18, 1, 10), Ipv4Addr::new(198, 18, 2, 10));
        p
    }

    fn mss_and_checksum_ok(p: &[u8]) -> (u16, bool) {
        let t = TcpPacket::new_checked(&p[20..]).unwrap();
        (
            u16::from_be_bytes([p[42], p[43]]),
            t.verify_checksum_v4(Ipv4Addr::new(198, 18, 1, 10), Ipv4Addr::new(198, 18, 2, 10)),
        )
    }

    #[test]
    fn mss_lowered_by_the_timestamp_option_with_a_valid_checksum() {
        // MSS 1460, SACK permitted, timestamps, NOP, window scale 7: Linux's SYN.
        let opts = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        let mut p = syn(&opts);
        assert_eq!(mss_and_checksum_ok(&p), (1460, true));
        clamp_mss(&mut p, 8500);
        assert_eq!(mss_and_checksum_ok(&p), (1448, true));
        // A jumbo peer (MSS 8961) behind a leg whose MTU is 1942: what fits the leg's MTU.
        let mut j = syn(&[2, 4, 0x23, 0x01, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]);
        clamp_mss(&mut j, 1942);
        assert_eq!(mss_and_checksum_ok(&j), (1942 - 40 - 12, true));
        // Without timestamps the MSS stays, unless the leg's MTU is smaller.
        let mut q = syn(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2]);
        clamp_mss(&mut q, 8500);
        assert_eq!(mss_and_checksum_ok(&q), (1460, true));
        clamp_mss(&mut q, 1400);
        assert_eq!(mss_and_checksum_ok(&q), (1360, true));
        // MSS after the timestamps, and the timestamp value read for the legs' clocks.
        let mut t = syn(&[1, 1, 8, 10, 0, 0, 0x30, 0x39, 0, 0, 0, 0, 2, 4, 0x05, 0xb4, 1, 3, 3, 7]);
        assert_eq!(syn_options(&t).tsval, Some(12345));
        clamp_mss(&mut t, 8500);
        let tp = TcpPacket::new_checked(&t[20..]).unwrap();
        assert!(tp.verify_checksum_v4(Ipv4Addr::new(198, 18, 1, 10), Ipv4Addr::new(198, 18, 2, 10)));
        assert_eq!(u16::from_be_bytes([t[54], t[55]]), 1448);
        // Broken options are left alone, never a panic.
        let mut r = syn(&[2, 4, 0x05, 0xb4, 8, 0, 0, 0]);
        clamp_mss(&mut r, 8500);
        let mut s = syn(&[2, 4, 0x05, 0xb4, 8, 30, 0, 0]);
        clamp_mss(&mut s, 8500);
        assert_eq!(mss_and_checksum_ok(&s).0, 1460);
    }
}
