//! The worker: one per pinned lcore, run to completion, no locks, no syscalls, no allocation.
//!
//! ```text
//!   rx_burst(32) ──▶ for each mbuf: FastPath::handle ──▶ Transmit ──▶ TxBuffer (flush at 32 or timer)
//!        ▲                                        ├──▶ Steer(w) ─▶ ring to worker w (flush per loop)
//!   rings from other workers ──▶ handle(steered)  └──▶ Drop (counted by cause)
//!   every ~10 µs: sweep a few flow-table buckets; every ~10 ms: publish counters
//! ```

use flowdog_core::counters::{CounterSlot, DropCause};
use flowdog_core::{FastPath, Verdict};
use flowdog_dpdk::eal::rdtsc;
use flowdog_dpdk::{Burst, Mbuf, RingConsumer, RingProducer, RxQueue, TxBuffer, TxQueue};
use std::sync::atomic::{AtomicBool, Ordering};
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
    flush_ticks: u64,
    tick_ticks: u64,
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
}

impl Timers {
    pub fn from_hz(tsc_hz: u64, flush_us: u64) -> Timers {
        Timers { flush: tsc_hz / 1_000_000 * flush_us, tick: tsc_hz / 100_000, publish: tsc_hz / 100 }
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
            flush_ticks: timers.flush,
            tick_ticks: timers.tick,
            publish_ticks: timers.publish,
            last_flush: 0,
            last_tick: 0,
            last_publish: 0,
        }
    }

    /// Busy-polls until told to stop, then flushes and publishes its last counters.
    pub fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            self.poll_once(rdtsc());
        }
        self.flush();
        self.publish();
    }

    /// One pass of the loop: a burst from the port, the rings from other workers, then the
    /// timers. Returns how many packets it handled.
    #[inline]
    pub fn poll_once(&mut self, now: u64) -> usize {
        let n = self.rxq.rx_burst(&mut self.burst);
        for _ in 0..n {
            self.burst.prefetch(3);
            // The loop runs exactly n times over a burst of n mbufs.
            let m = self.burst.next().expect("burst holds n mbufs");
            self.fast.counters.rx_packets += 1;
            self.fast.counters.rx_bytes += m.pkt_len() as u64;
            self.handle(m, now, false);
        }
        let mut handled = n;
        for r in 0..self.inbound.len() {
            let k = self.inbound[r].dequeue_burst(&mut self.burst);
            for _ in 0..k {
                let m = self.burst.next().expect("burst holds k mbufs");
                self.fast.counters.steered_in += 1;
                self.handle(m, now, true);
            }
            handled += k;
        }
        for p in self.outbound.iter_mut().flatten() {
            p.flush();
        }
        if now.wrapping_sub(self.last_flush) >= self.flush_ticks {
            self.tx.flush();
            self.last_flush = now;
        }
        if now.wrapping_sub(self.last_tick) >= self.tick_ticks {
            self.fast.tick(now);
            self.last_tick = now;
        }
        if now.wrapping_sub(self.last_publish) >= self.publish_ticks {
            self.publish();
            self.last_publish = now;
        }
        handled
    }

    #[inline(always)]
    fn handle(&mut self, mut m: Mbuf, now: u64, steered: bool) {
        if m.segments() != 1 {
            self.fast.counters.drop(DropCause::MultiSegment);
            return;
        }
        match self.fast.handle(m.data_mut(), now, steered) {
            Verdict::Transmit => self.tx.push(m),
            Verdict::TransmitLen(len) => {
                if m.set_len(len) {
                    self.tx.push(m)
                }
            }
            Verdict::Steer(w) => match self.outbound.get_mut(w).and_then(|p| p.as_mut()) {
                Some(p) => p.push(m),
                // The fast path only steers to workers that exist; be safe anyway.
                None => self.fast.counters.drop(DropCause::RingFull),
            },
            Verdict::Drop => {}
        }
    }

    /// Sends everything buffered, now.
    pub fn flush(&mut self) {
        for p in self.outbound.iter_mut().flatten() {
            p.flush();
        }
        self.tx.flush();
    }

    /// Copies the counters to the control plane's slot.
    pub fn publish(&mut self) {
        let c = &mut self.fast.counters;
        c.tx_packets = self.tx.sent;
        c.drops[DropCause::TxRefused as usize] = self.tx.refused;
        c.drops[DropCause::RingFull as usize] = self.outbound.iter().flatten().map(|p| p.full).sum();
        c.flows_active = self.fast.table.len() as u64;
        self.slot.publish(c);
    }
}
