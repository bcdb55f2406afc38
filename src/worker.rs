//! The worker: one per pinned lcore, run to completion, no locks, no syscalls, no allocation.
//!
//! ```text
//!   rx_burst(32) ──▶ pass 1, each mbuf: FastPath::headers ─▶ done: answered / steered / dropped
//!                                                          └▶ flow: prefetch its two bucket tag lines
//!                    pass 2, each flow packet: prefetch the entry line its tag points at
//!                    pass 3, each flow packet: FastPath::flow_stage ──▶ Transmit ──▶ TxBuffer
//!   rings from other workers ──▶ the same, steered           (flush at 32 or by the TSC timer)
//!   every ~10 µs: sweep a few flow-table buckets; every ~10 ms: publish counters
//! ```

use crate::accept::Decision;
use crate::intercept::hook::FlowInfo;
use crate::intercept::{GwlbIds, HeldPacket, Interceptor, WhenFull, Wire};
use flowdog_core::counters::{CounterSlot, DropCause};
use flowdog_core::{FastPath, FlowKey, Held, HeldFlow, Intercepted, Pending, Stage, Verdict};
use flowdog_dpdk::eal::{prefetch, rdtsc};
use flowdog_dpdk::{Burst, Mbuf, Mempool, RingConsumer, RingProducer, RxQueue, TxBuffer, TxQueue};
use smoltcp::time::Instant;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub const BURST: usize = 32;

/// Everything one worker owns.
pub struct Worker {
    pub index: usize,
    rxq: RxQueue,
    tx: TxBuffer<BURST>,
    pub fast: FastPath,
    /// Rings from every other worker (packets whose flows this worker owns).
    inbound: Vec<RingConsumer>,
    /// Rings to every other worker, indexed by worker (None for this one).
    outbound: Vec<Option<RingProducer>>,
    slot: Arc<CounterSlot>,
    stop: Arc<AtomicBool>,
    burst: Burst<BURST>,
    /// The burst's packets that go on to the flow stage, between the passes (the first `k` of
    /// each array), and what the header pass learned of each (filled in place).
    held: [Option<Mbuf>; BURST],
    pending: [Pending; BURST],
    /// Packets steered to a worker without a ring (never expected), counted with `ring_full`.
    unroutable: u64,
    /// The control plane's interface: frames for the appliance itself go out on the first ring;
    /// worker 0 also transmits what the control plane sends back on the second.
    control: Option<RingProducer>,
    control_tx: Option<RingConsumer>,
    /// Written at every publish (TSC): the control plane's proof that this worker runs.
    heartbeat: Arc<AtomicU64>,
    /// Where the interception layer's packets come from.
    pool: Mempool,
    wire: WireStats,
    flush_ticks: u64,
    tick_ticks: u64,
    ticks_per_us: u64,
    publish_ticks: u64,
    last_flush: u64,
    last_tick: u64,
    last_publish: u64,
}

/// How often the worker does its periodic work, in TSC ticks.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub flush: u64,
    pub tick: u64,
    pub publish: u64,
    /// TSC ticks per microsecond (the interception layer's clock).
    pub us: u64,
}

impl Timers {
    pub fn from_hz(tsc_hz: u64, flush_us: u64) -> Timers {
        Timers {
            flush: tsc_hz / 1_000_000 * flush_us,
            tick: tsc_hz / 100_000,
            publish: tsc_hz / 100,
            us: (tsc_hz / 1_000_000).max(1),
        }
    }
}

/// What the interception layer's packets did on their way out.
#[derive(Debug, Default, Clone, Copy)]
struct WireStats {
    tx: u64,
    no_mbuf: u64,
    no_header: u64,
}

/// The interception layer's way out: each packet a leg sends gets the flow's outer headers for
/// its direction (the Geneve header GWLB last sent that way) in a fresh mbuf, then the port's
/// transmit buffer.
struct WorkerWire<'a> {
    fast: &'a FastPath,
    pool: Mempool,
    tx: &'a mut TxBuffer<BURST>,
    stats: &'a mut WireStats,
}

impl Wire for WorkerWire<'_> {
    fn emit(&mut self, slot: u32, to_client: bool, len: usize, fill: &mut dyn FnMut(&mut [u8])) {
        let client_dir = self.fast.table.entry(slot as usize).initiator;
        let dir = if to_client { client_dir.reverse() } else { client_dir };
        let Some(outer) = self.fast.outer(slot as usize, dir) else {
            self.stats.no_header += 1;
            return;
        };
        let Ok(mut m) = Mbuf::alloc(&self.pool) else {
            self.stats.no_mbuf += 1;
            return;
        };
        if !m.append(outer.len() + len) {
            self.stats.no_mbuf += 1;
            return;
        }
        let f = m.data_mut();
        fill(&mut f[outer.len()..]);
        outer.write(f);
        self.stats.tx += 1;
        self.tx.push(m);
    }
}

/// A worker's links to the control plane.
pub struct ControlLink {
    pub to_control: Option<RingProducer>,
    /// Worker 0 only: frames the control plane transmits.
    pub from_control: Option<RingConsumer>,
    pub heartbeat: Arc<AtomicU64>,
}

impl ControlLink {
    /// No control plane: the frames for the appliance itself are dropped as `control_ring_full`.
    pub fn none() -> ControlLink {
        ControlLink { to_control: None, from_control: None, heartbeat: Arc::new(AtomicU64::new(0)) }
    }
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        rxq: RxQueue,
        txq: TxQueue,
        fast: FastPath,
        inbound: Vec<RingConsumer>,
        outbound: Vec<Option<RingProducer>>,
        slot: Arc<CounterSlot>,
        stop: Arc<AtomicBool>,
        timers: Timers,
        control: ControlLink,
        pool: Mempool,
    ) -> Worker {
        Worker {
            index,
            rxq,
            tx: TxBuffer::new(txq),
            fast,
            inbound,
            outbound,
            slot,
            stop,
            burst: Burst::new(),
            held: [const { None }; BURST],
            pending: [Pending::default(); BURST],
            unroutable: 0,
            control: control.to_control,
            control_tx: control.from_control,
            heartbeat: control.heartbeat,
            pool,
            wire: WireStats::default(),
            flush_ticks: timers.flush,
            tick_ticks: timers.tick,
            ticks_per_us: timers.us,
            publish_ticks: timers.publish,
            last_flush: 0,
            last_tick: 0,
            last_publish: 0,
        }
    }

    /// Busy-polls until told to stop, then flushes and publishes its last counters. The
    /// interception layer is made here, on the worker's own thread, which it never leaves.
    pub fn run(mut self, make_interceptor: impl FnOnce() -> Interceptor) {
        let mut icpt = make_interceptor();
        self.fast.set_acceptor(icpt.acceptor().is_some());
        while !self.stop.load(Ordering::Relaxed) {
            self.poll_once(rdtsc(), &mut icpt);
        }
        self.flush();
        self.publish(&icpt);
    }

    /// One pass of the loop: a burst from the port, the rings from other workers, the
    /// interception layer's tasks and timers (only while it has flows), then the timers.
    /// Returns how many packets it handled.
    #[inline]
    pub fn poll_once(&mut self, now: u64, icpt: &mut Interceptor) -> usize {
        let n = self.rxq.rx_burst(&mut self.burst);
        self.fast.counters.rx_packets += n as u64;
        self.burst_passes(now, false, icpt);
        let mut handled = n;
        for r in 0..self.inbound.len() {
            let k = self.inbound[r].dequeue_burst(&mut self.burst);
            self.fast.counters.steered_in += k as u64;
            self.burst_passes(now, true, icpt);
            handled += k;
        }
        if icpt.active() > 0 || icpt.tasks() > 0 {
            let mut wire = WorkerWire { fast: &self.fast, pool: self.pool, tx: &mut self.tx, stats: &mut self.wire };
            icpt.poll(&mut wire, Instant::from_micros((now / self.ticks_per_us) as i64));
        }
        for p in self.outbound.iter_mut().flatten() {
            p.flush();
        }
        if let Some(c) = &mut self.control {
            c.flush();
        }
        if let Some(rx) = &mut self.control_tx {
            if rx.dequeue_burst(&mut self.burst) > 0 {
                while let Some(m) = self.burst.next() {
                    self.fast.counters.from_control += 1;
                    self.tx.push(m);
                }
            }
        }
        if now.wrapping_sub(self.last_flush) >= self.flush_ticks {
            self.tx.flush();
            self.last_flush = now;
        }
        if now.wrapping_sub(self.last_tick) >= self.tick_ticks {
            self.fast.tick(now);
            icpt.poll_plugins();
            // A reload may bring or take away the acceptor: new flows follow it.
            self.fast.set_acceptor(icpt.acceptor().is_some());
            if icpt.held.waiting() > 0 {
                let mut out = std::mem::take(&mut icpt.decisions);
                icpt.held.poll(now, &mut out);
                for d in out.drain(..) {
                    self.release(d, now, icpt);
                }
                icpt.decisions = out;
            }
            self.last_tick = now;
        }
        if now.wrapping_sub(self.last_publish) >= self.publish_ticks {
            self.publish(icpt);
            self.last_publish = now;
        }
        handled
    }

    /// Runs the burst in `self.burst` through the three passes.
    #[inline(always)]
    fn burst_passes(&mut self, now: u64, steered: bool, icpt: &mut Interceptor) {
        let n = self.burst.len();
        let mut k = 0;
        for _ in 0..n {
            self.burst.prefetch(3);
            // The loop runs exactly n times over a burst of n mbufs.
            let mut m = self.burst.next().expect("burst holds n mbufs");
            if !steered {
                self.fast.counters.rx_bytes += m.pkt_len() as u64;
            }
            if m.segments() != 1 {
                self.fast.counters.drop(DropCause::MultiSegment);
                continue;
            }
            match self.fast.headers(m.data_mut(), steered, &mut self.pending[k]) {
                Stage::Done(v) => self.apply(m, v),
                Stage::Flow => {
                    for a in self.fast.prefetch_addrs(&self.pending[k]) {
                        prefetch(a);
                    }
                    self.held[k] = Some(m);
                    k += 1;
                }
            }
        }
        for p in &self.pending[..k] {
            if let Some(a) = self.fast.prefetch_entry(p) {
                prefetch(a);
            }
        }
        for i in 0..k {
            if let Some(mut m) = self.held[i].take() {
                match self.fast.flow_stage(m.data_mut(), &self.pending[i], now) {
                    Verdict::Intercept(iv) => {
                        let p = self.pending[i];
                        self.intercept(m, &iv, &p, now, icpt)
                    }
                    Verdict::Hold(h) => {
                        let p = self.pending[i];
                        self.hold(m, &h, &p, now, icpt)
                    }
                    v => self.apply(m, v),
                }
            }
        }
    }

    #[inline(always)]
    fn apply(&mut self, mut m: Mbuf, v: Verdict) {
        match v {
            Verdict::Transmit => self.tx.push(m),
            Verdict::TransmitLen(len) => {
                if m.set_len(len) {
                    self.tx.push(m)
                }
            }
            Verdict::Steer(w) => match self.outbound.get_mut(w).and_then(|p| p.as_mut()) {
                Some(p) => p.push(m),
                // The fast path only steers to workers that exist; count it if that ever breaks.
                None => self.unroutable += 1,
            },
            Verdict::Control => match &mut self.control {
                Some(c) => c.push(m),
                None => self.fast.counters.drop(DropCause::ControlRingFull),
            },
            // Only the flow stage intercepts or holds, and its callers hand those on.
            Verdict::Intercept(_) | Verdict::Hold(_) | Verdict::Drop => drop(m),
        }
    }

    /// A packet of an intercepted flow: its inner packet goes to the flow's TCP pair (the
    /// frame is freed after); a flow the interceptor cannot take is passed or refused.
    #[inline(never)]
    fn intercept(&mut self, mut m: Mbuf, v: &Intercepted, p: &Pending, now: u64, icpt: &mut Interceptor) {
        let slot = v.slot as usize;
        let client_dir = self.fast.table.entry(slot).initiator;
        let meta = self.fast.dir_meta(slot, client_dir);
        let ids = GwlbIds {
            vpc_endpoint_id: meta.vpc_endpoint_id,
            attachment_id: meta.attachment_id,
            flow_cookie: meta.flow_cookie,
        };
        let (off, len) = (v.inner_off as usize, v.inner_len as usize);
        let now_us = Instant::from_micros((now / self.ticks_per_us) as i64);
        let mut wire = WorkerWire { fast: &self.fast, pool: self.pool, tx: &mut self.tx, stats: &mut self.wire };
        let taken = match m.data_mut().get_mut(off..off + len) {
            Some(inner) => icpt.input(&mut wire, v, inner, ids, now_us).is_ok(),
            None => true,
        };
        if !taken {
            let refuse = icpt.when_full() == WhenFull::Refuse;
            let verdict = self.fast.demote(m.data_mut(), p, slot, refuse);
            self.apply(m, verdict);
        }
    }

    /// A packet of a flow the acceptor has not decided on: the first one asks it; the others
    /// (and the first, if the answer must wait) are held until it answers.
    #[inline(never)]
    fn hold(&mut self, m: Mbuf, h: &Held, p: &Pending, now: u64, icpt: &mut Interceptor) {
        let slot = h.slot;
        if h.new {
            let flow = flow_info(&self.fast.held_flow(slot as usize), self.index);
            if let Some(accept) = icpt.held.ask(icpt.acceptor.as_ref(), slot, p.key, flow, now) {
                self.settle(slot, &p.key, accept, icpt.held.cfg.reset);
                self.rerun(m, p, now, icpt, true);
                return;
            }
        }
        let (off, len) = (h.payload_off as usize, h.payload_len as usize);
        if len > 0 {
            let decided = match m.data().get(off..off + len) {
                Some(payload) => icpt.held.data(slot, h.from_client, payload),
                None => None,
            };
            if let Some(d) = decided {
                self.release(d, now, icpt);
                self.rerun(m, p, now, icpt, false);
                return;
            }
        }
        match icpt.held.hold(slot, (m, *p)) {
            Ok(()) => {}
            // The flow's queue is full: counted by the acceptor, the packet goes.
            Err((_, true)) => {}
            Err(((m, p), false)) => {
                let accept = icpt.held.orphan();
                self.settle(slot, &p.key, accept, icpt.held.cfg.reset);
                self.rerun(m, &p, now, icpt, false);
            }
        }
    }

    /// The acceptor decided a flow: its action in the table, then its held packets, in order.
    fn release(&mut self, d: Decision<HeldPacket>, now: u64, icpt: &mut Interceptor) {
        self.settle(d.slot, &d.key, d.accept, icpt.held.cfg.reset);
        let mut packets = d.packets;
        for (j, (m, p)) in packets.drain(..).enumerate() {
            self.rerun(m, &p, now, icpt, j == 0);
        }
        icpt.held.recycle(packets);
    }

    fn settle(&mut self, slot: u32, key: &FlowKey, accept: bool, reset: bool) {
        self.fast.decide(slot as usize, key, accept, reset);
    }

    /// A held packet through the flow stage again, now that its flow is decided. `first`: the
    /// flow's first packet (an intercepted flow's pair starts from it).
    fn rerun(&mut self, mut m: Mbuf, p: &Pending, now: u64, icpt: &mut Interceptor, first: bool) {
        match self.fast.flow_stage(m.data_mut(), p, now) {
            Verdict::Intercept(mut iv) => {
                iv.new |= first;
                self.intercept(m, &iv, p, now, icpt)
            }
            // The flow went from the table meanwhile (evicted) and came back as a new one.
            Verdict::Hold(h) if h.new => self.hold(m, &h, p, now, icpt),
            Verdict::Hold(_) => icpt.held.stats.queue_full += 1,
            v => self.apply(m, v),
        }
    }

    /// Sends everything buffered, now.
    pub fn flush(&mut self) {
        for p in self.outbound.iter_mut().flatten() {
            p.flush();
        }
        self.tx.flush();
    }

    /// Copies the counters (the interception layer's too) to the control plane's slot.
    pub fn publish(&mut self, icpt: &Interceptor) {
        let c = &mut self.fast.counters;
        let t = &icpt.counters;
        c.tcp_pairs_active = icpt.active() as u64;
        c.tcp_pairs_created = t.created;
        c.tcp_pairs_closed = t.closed;
        c.tcp_pairs_timed_out = t.timed_out;
        c.tcp_upstream_refused = t.refused;
        c.tcp_upstream_unreachable = t.unreachable;
        c.tcp_no_pair = t.no_pair;
        c.tcp_tx_packets = self.wire.tx;
        c.tcp_tx_no_mbuf = self.wire.no_mbuf;
        c.tcp_tx_no_header = self.wire.no_header;
        let h = icpt.http_stats();
        c.http_requests = h.requests.get();
        c.http_responses = h.responses.get();
        c.http_local_responses = h.local_responses.get();
        c.http_blocked = h.blocked.get();
        c.http_bad_requests = h.bad_requests.get();
        c.http_upstream_errors = h.upstream_errors.get();
        c.ws_connections = h.ws_connections.get();
        c.ws_messages = h.ws_messages.get();
        c.ws_errors = h.ws_errors.get();
        c.tls_intercepted = h.tls_intercepted.get();
        c.tls_h2 = h.tls_h2.get();
        c.tls_excluded = h.tls_excluded.get();
        c.tls_no_ca = h.tls_no_ca.get();
        c.tls_bad_client_hello = h.tls_bad_client_hello.get();
        c.tls_client_gone = h.tls_client_gone.get();
        c.tls_client_failed = h.tls_client_failed.get();
        c.tls_upstream_rejected = h.tls_upstream_rejected.get();
        c.tls_upstream_failed = h.tls_upstream_failed.get();
        c.tls_mint_failed = h.tls_mint_failed.get();
        c.plugin_stopped = h.plugin_failures.get();
        (c.plugin_calls, c.plugin_failures) = icpt.plugin_counts();
        c.plugin_reloads = icpt.plugin_reloads;
        let a = &icpt.held.stats;
        c.acceptor_asked = a.asked;
        c.acceptor_accepted = a.accepted;
        c.acceptor_denied = a.denied;
        c.acceptor_timed_out = a.timed_out;
        c.acceptor_defaulted = a.defaulted;
        c.acceptor_queue_full = a.queue_full;
        c.tx_packets = self.tx.sent;
        c.drops[DropCause::TxRefused as usize] = self.tx.refused;
        c.drops[DropCause::RingFull as usize] =
            self.outbound.iter().flatten().map(|p| p.full).sum::<u64>() + self.unroutable;
        if let Some(p) = &self.control {
            c.drops[DropCause::ControlRingFull as usize] = p.full;
        }
        c.flows_active = self.fast.table.len() as u64;
        self.slot.publish(c);
        self.heartbeat.store(rdtsc(), Ordering::Relaxed);
    }
}

/// The acceptor's view of a held flow.
fn flow_info(h: &HeldFlow, worker: usize) -> FlowInfo {
    let addr = |(a, port): ([u8; 16], u16)| {
        let ip = if h.ipv6 { std::net::IpAddr::from(a) } else { std::net::IpAddr::from([a[0], a[1], a[2], a[3]]) };
        std::net::SocketAddr::new(ip, port)
    };
    FlowInfo {
        client: addr(h.client),
        server: addr(h.server),
        vpc_endpoint_id: h.vpc_endpoint_id,
        attachment_id: h.attachment_id,
        flow_cookie: h.flow_cookie,
        worker,
        protocol: h.protocol,
        tls: None,
    }
}
