//! The worker allocates nothing per packet: a million packets through two workers on DPDK's
//! `net_ring` ports, with steering between them, under a counting global allocator.
//!
//! The test thread plays GWLB: it injects frames on the ring port, runs both workers' loops in
//! turn, takes the returned frames off the ports, checks they were turned around, turns them
//! back and injects them again, so the same mbufs circulate. Allocations are counted per thread,
//! so the EAL's own service threads cannot disturb the count.

use flowdog::intercept::hook::Builtin;
use flowdog::intercept::Interceptor;
use flowdog::worker::{ControlLink, Timers, Worker};
use flowdog_core::build::{GwlbFrame, Inner};
use flowdog_core::counters::CounterSlot;
use flowdog_core::{FastPath, FastPathConfig, FlowTableConfig, Policy};
use flowdog_dpdk::{Burst, Eal, Mbuf, Mempool, Port, PortConfig, Ring, TxBuffer};
use flowdog_wire::{EthernetFrame, Ipv4Packet};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

const APPLIANCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const GWLB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const APP_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const GWLB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// Turns a returned frame back into one GWLB sends (the harness is the GWLB).
fn reflect(f: &mut [u8]) -> bool {
    let mut eth = EthernetFrame::new_unchecked(&mut *f);
    eth.set_dst_addr(flowdog_wire::EthernetAddress(APP_MAC));
    eth.set_src_addr(flowdog_wire::EthernetAddress(GWLB_MAC));
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    if ip.src_addr() != APPLIANCE || ip.dst_addr() != GWLB {
        return false;
    }
    ip.set_src_addr(GWLB);
    ip.set_dst_addr(APPLIANCE);
    ip.fill_checksum();
    true
}

#[test]
fn a_million_packets_through_two_workers_allocate_nothing() {
    let prefix = format!("--file-prefix=fd-noalloc-{}", std::process::id());
    let args: Vec<String> = [
        "--no-pci",
        "--no-huge",
        "-m",
        "256",
        "--no-telemetry",
        "--lcores=0@0",
        "--vdev=net_ring0",
        "--vdev=net_ring1",
        "--log-level=lib.eal:warning",
        prefix.as_str(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).expect("EAL");
    let ports = [Port::by_name("net_ring0").unwrap(), Port::by_name("net_ring1").unwrap()];
    let conf = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: 512,
        tx_desc: 512,
        rss: false,
        rss_key: None,
        mtu: None,
        promiscuous: false,
    };
    let pool = Mempool::new("na_pool", 2047, 0, 2176, 0).unwrap();
    for p in &ports {
        p.configure_and_start(&conf, &[pool]).unwrap();
    }
    let (p01, c01) = Ring::create("na_0_1", 1024, 0).unwrap();
    let (p10, c10) = Ring::create("na_1_0", 1024, 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let table = FlowTableConfig { capacity: 4096, tcp_idle: u64::MAX / 4, other_idle: u64::MAX / 4, closed: 1000 };
    let timers = Timers { flush: 1 << 40, tick: 1, publish: 1 << 40, us: 1000 };
    let mk = |i: usize| {
        FastPath::new(
            FastPathConfig {
                ip: APPLIANCE,
                mac: APP_MAC,
                outer_ttl: 64,
                worker: i,
                workers: 2,
                verify_ipv4_checksum: true,
                control: false,
            },
            Policy::default(),
            table,
        )
    };
    let slot0 = Arc::new(CounterSlot::default());
    let slot1 = Arc::new(CounterSlot::default());
    let mut w0 = Worker::new(
        0,
        ports[0].rx_queue(0),
        ports[0].tx_queue(0),
        mk(0),
        vec![c10],
        vec![None, Some(p01)],
        slot0.clone(),
        stop.clone(),
        timers,
        ControlLink::none(),
        pool,
    );
    let mut w1 = Worker::new(
        1,
        ports[1].rx_queue(0),
        ports[1].tx_queue(0),
        mk(1),
        vec![c01],
        vec![Some(p10), None],
        slot1.clone(),
        stop.clone(),
        timers,
        ControlLink::none(),
        pool,
    );

    let icfg = flowdog::config::InterceptSection::default().settings(2176, 350);
    let mut i0 = Interceptor::new(icfg.clone(), 0, Rc::new(Builtin::default()), None, 1);
    let mut i1 = Interceptor::new(icfg, 1, Rc::new(Builtin::default()), None, 2);

    // 32 flows (one burst: the ring port loops its transmit queue back to its receive queue,
    // so no more may be in flight than a worker takes in one poll), TCP and UDP, IPv4 and IPv6.
    let mut inject = TxBuffer::<32>::new(ports[0].tx_queue(0));
    let mut buf = [0u8; 512];
    for i in 0..32u16 {
        let v6 = i % 4 == 3;
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            (format!("2001:db8::{}", i + 1).parse().unwrap(), "2001:db8::ffff".parse().unwrap())
        } else {
            (Ipv4Addr::new(198, 18, 10, i as u8).into(), Ipv4Addr::new(198, 19, 0, 1).into())
        };
        let f = GwlbFrame {
            gwlb_mac: GWLB_MAC,
            appliance_mac: APP_MAC,
            gwlb_ip: GWLB,
            appliance_ip: APPLIANCE,
            outer_src_port: 20000 + i,
            outer_ttl: 64,
            vpc_endpoint_id: 7,
            attachment_id: 0,
            flow_cookie: i as u32,
            inner: Inner {
                src,
                dst,
                protocol: if i % 2 == 0 { 6 } else { 17 },
                src_port: 30000 + i,
                dst_port: 443,
                tcp_flags: 0x10,
                seq: 1,
                ack: 1,
                size: 100,
            },
        };
        let n = f.emit(&mut buf);
        inject.push(Mbuf::from_bytes(&pool, &buf[..n]).unwrap());
    }
    inject.flush();

    let mut collect = [ports[0].rx_queue(0), ports[1].rx_queue(0)];
    let mut back: Burst<32> = Burst::new();
    let mut now = 1u64;
    let mut returned = 0u64;
    let mut bad = 0u64;
    let target = 1_000_000u64;
    let mut before = None;
    while returned < target {
        if returned >= 32 && before.is_none() {
            // Everything after the first lap must not allocate.
            before = Some(allocs());
        }
        now += 1000;
        w0.poll_once(now, &mut i0);
        w0.flush();
        w1.poll_once(now, &mut i1);
        w1.flush();
        for rxq in collect.iter_mut() {
            rxq.rx_burst(&mut back);
            while let Some(mut m) = back.next() {
                returned += 1;
                if reflect(m.data_mut()) {
                    inject.push(m);
                } else {
                    bad += 1;
                }
            }
        }
        inject.flush();
        assert!(
            now < 1 << 32,
            "packets stopped circulating after {returned}: {:?} {:?}",
            {
                w0.publish(&i0);
                slot0.read()
            },
            {
                w1.publish(&i1);
                slot1.read()
            }
        );
    }
    let during = allocs() - before.expect("the first lap completed");
    w0.publish(&i0);
    w1.publish(&i1);
    let (c0, c1) = (slot0.read(), slot1.read());
    assert_eq!(bad, 0, "every returned frame was turned around");
    assert_eq!(during, 0, "the worker loop allocated {during} times over {returned} packets");
    assert!(c0.steered_out > 0 && c1.steered_in > 0, "steering ran: {c0:?} {c1:?}");
    assert_eq!(c0.steered_out, c1.steered_in);
    assert_eq!(c0.fast_path + c1.fast_path, returned);
    assert_eq!(c0.total_drops() + c1.total_drops(), 0, "{c0:?} {c1:?}");
    assert_eq!(c0.flows_created + c1.flows_created, 32, "each flow lives on exactly one worker");
    drop(inject);
    drop((w0, w1));
    for p in &ports {
        p.stop_and_close();
    }
    drop(eal);
    // DPDK leaves its runtime directory behind; the test cleans up after itself.
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/fd-noalloc-{}", std::process::id()));
}
