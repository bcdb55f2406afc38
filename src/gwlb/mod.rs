//! `flowdog gwlb`: a userspace Gateway Load Balancer for the lab (gwlb-facts.md).
//!
//! ```text
//!  consumer ns ─▶ gw ns ─(policy route)─▶ TUN "tunc" ─▶ reader ─▶ Sim::from_side ─▶ raw IPv4 socket ─▶ target:6081
//!  provider ns ─▶ gw ns ─(policy route)─▶ TUN "tuns" ─▶ reader ─┘
//!  target ─▶ UDP socket :6081 ─▶ Sim::from_target (flow known? options unchanged? right target?)
//!                                 └▶ inner packet written into the TUN ─▶ the kernel routes it to the other side
//! ```
//!
//! The simulator runs outside the appliance and is not its fast path: plain threads, blocking
//! sockets and one mutex around [`sim::Sim`] are what it needs.

pub mod config;
pub mod health;
pub mod sim;

use crate::pcap::{PcapWriter, LINKTYPE_RAW};
use anyhow::{Context, Result};
use config::GwlbConfig;
use flowdog_core::build::OUTER_LEN;
use sim::{DropCause, Ingress, Sim, SimCounters};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct GwlbOptions {
    pub config: PathBuf,
    /// Print the counters every this many seconds.
    pub stats: Option<u64>,
    /// Stop after this many seconds.
    pub duration: Option<u64>,
    /// Write the counters here as JSON, every second and on exit.
    pub counters_out: Option<PathBuf>,
    /// Capture what goes to and comes back from the targets (raw IPv4, Geneve inside).
    pub pcap: Option<PathBuf>,
}

type Capture = Option<Arc<Mutex<PcapWriter<BufWriter<std::fs::File>>>>>;

fn capture(c: &Capture, packet: &[u8]) {
    if let Some(c) = c {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let _ = c.lock().unwrap_or_else(|e| e.into_inner()).write(ts, packet);
    }
}

/// A returned packet as it was on the wire, for the capture: the socket hands over the UDP
/// payload, so the outer IPv4 and UDP headers are rebuilt (TTL and IP id are not the original).
fn rebuilt(from: SocketAddrV4, to: std::net::Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    use flowdog_wire::{ip_protocol, ipv4, udp, Ipv4Packet, UdpPacket};
    let mut b = vec![0u8; 28 + payload.len()];
    let ip = ipv4::Repr {
        src_addr: *from.ip(),
        dst_addr: to,
        protocol: ip_protocol::UDP,
        payload_len: 8 + payload.len(),
        ttl: 64,
    };
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]));
    let u = udp::Repr { src_port: from.port(), dst_port: flowdog_wire::geneve::UDP_PORT, payload_len: payload.len() };
    u.emit(&mut UdpPacket::new_unchecked(&mut b[20..]));
    b[28..].copy_from_slice(payload);
    b
}

/// Largest packet on any path: an inner packet of up to 64 KiB plus the outer headers.
const BUF: usize = 65536 + OUTER_LEN;

type TunWriter = Arc<Mutex<tun::Writer>>;

fn lock(sim: &Mutex<Sim>) -> std::sync::MutexGuard<'_, Sim> {
    // A thread that panicked holding the lock left consistent data (every update is one call).
    sim.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes an inner packet into a side's TUN; the kernel routes it on.
fn deliver(writer: &TunWriter, packet: &[u8], sim: &Mutex<Sim>) {
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    if w.write(packet).is_err() {
        lock(sim).count_drop(DropCause::SendFailed);
    }
}

pub fn run(opts: &GwlbOptions) -> Result<()> {
    let cfg = GwlbConfig::load(&opts.config)?;
    let seed = {
        let mut b = [0u8; 8];
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).context("/dev/urandom")?;
        u64::from_ne_bytes(b)
    };
    let mut readers = Vec::new();
    let mut writers: Vec<TunWriter> = Vec::new();
    for side in &cfg.sides {
        let mut tc = tun::Configuration::default();
        tc.tun_name(&side.tun);
        let dev = tun::create(&tc).with_context(|| {
            format!(
                "{}.tun: cannot open TUN device '{}' (does it exist here? scripts/lab.sh up makes it)",
                side.name, side.tun
            )
        })?;
        let (r, w) = dev.split();
        readers.push(r);
        writers.push(Arc::new(Mutex::new(w)));
    }
    // IPPROTO_RAW: we write the outer IPv4 header ourselves; the kernel routes and resolves.
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
        .context("raw IPv4 socket (needs root)")?;
    let udp = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).context("UDP socket")?;
    // Bursts from the targets (iperf3 at full speed) outrun one reader thread for a moment: a
    // large buffer (capped by net.core.rmem_max) absorbs them instead of the kernel dropping.
    let _ = udp.set_recv_buffer_size(8 << 20);
    let _ = raw.set_send_buffer_size(8 << 20);
    udp.bind(&SockAddr::from(SocketAddrV4::new(cfg.ip, flowdog_wire::geneve::UDP_PORT)))
        .with_context(|| format!("ip: cannot bind UDP {}:6081 (is the address on an interface here?)", cfg.ip))?;
    let udp: UdpSocket = udp.into();
    udp.set_read_timeout(Some(Duration::from_millis(200)))?;
    let targets: Vec<String> = cfg.targets.iter().map(|t| t.ip.to_string()).collect();
    eprintln!(
        "flowdog gwlb: {} on {}, consumer {} / provider {}, targets [{}]{}",
        cfg.ip,
        flowdog_wire::geneve::UDP_PORT,
        cfg.sides[0].tun,
        cfg.sides[1].tun,
        targets.join(", "),
        if cfg.loopback { " (loopback: no appliance)" } else { "" }
    );

    let health_check = cfg.health_check.clone();
    let target_ips: Vec<_> = cfg.targets.iter().map(|t| t.ip).collect();
    let gwlb_ip = cfg.ip;
    let sim = Arc::new(Mutex::new(Sim::new(cfg, seed)));
    // One checker thread per target, so a check that times out delays no other.
    if let Some(hc) = health_check {
        for (t, ip) in target_ips.into_iter().enumerate() {
            let (sim, hc) = (sim.clone(), hc.clone());
            std::thread::Builder::new().name(format!("gwlb-check{t}")).spawn(move || loop {
                let started = Instant::now();
                let result = health::check(&hc, ip);
                let why = result.clone().err().unwrap_or_default();
                if let Some(h) = lock(&sim).check_result(t, result, &hc) {
                    let state = if h { "healthy".to_string() } else { format!("UNHEALTHY ({why})") };
                    println!("gwlb: target {ip} is now {state}");
                    let _ = std::io::stdout().flush();
                }
                std::thread::sleep(hc.interval.saturating_sub(started.elapsed()));
            })?;
        }
    }
    let raw = Arc::new(raw);
    let cap: Capture = match &opts.pcap {
        None => None,
        Some(p) => {
            let f = std::fs::File::create(p).with_context(|| format!("--pcap {}: cannot create", p.display()))?;
            Some(Arc::new(Mutex::new(PcapWriter::new(BufWriter::new(f), LINKTYPE_RAW)?)))
        }
    };
    let start = Instant::now();
    let now_ms = move || start.elapsed().as_millis() as u64;

    for (side, mut reader) in readers.into_iter().enumerate() {
        let (sim, raw, writers, cap) = (sim.clone(), raw.clone(), writers.clone(), cap.clone());
        std::thread::Builder::new().name(format!("gwlb-side{side}")).spawn(move || {
            let mut buf = vec![0u8; BUF];
            loop {
                let n = match reader.read(&mut buf[OUTER_LEN..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        eprintln!("flowdog gwlb: side {side}: TUN read failed: {e}");
                        return;
                    }
                };
                let packet = &mut buf[..OUTER_LEN + n];
                let verdict = lock(&sim).from_side(side, packet, now_ms());
                match verdict {
                    Ok(Ingress::Send { dst, len, .. }) => {
                        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
                        if raw.send_to(&packet[..len], &to).is_err() {
                            lock(&sim).count_drop(DropCause::SendFailed);
                        }
                        capture(&cap, &packet[..len]);
                        if let Some(copy) = lock(&sim).fault_copy(&packet[..len]) {
                            let _ = raw.send_to(&copy, &to);
                            capture(&cap, &copy);
                        }
                    }
                    Ok(Ingress::Loop { to_side }) => deliver(&writers[to_side], &packet[OUTER_LEN..], &sim),
                    Err(_) => {} // counted by the simulator
                }
            }
        })?;
    }

    {
        let (sim, writers, cap) = (sim.clone(), writers.clone(), cap.clone());
        std::thread::Builder::new().name("gwlb-return".into()).spawn(move || {
            let mut buf = vec![0u8; BUF];
            let mut logged = 0;
            loop {
                let (n, from) = match udp.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        continue
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        eprintln!("flowdog gwlb: UDP receive failed: {e}");
                        return;
                    }
                };
                let IpAddr::V4(src) = from.ip() else { continue };
                if cap.is_some() {
                    capture(&cap, &rebuilt(SocketAddrV4::new(src, from.port()), gwlb_ip, &buf[..n]));
                }
                let verdict = lock(&sim).from_target(src, &buf[..n], now_ms());
                match verdict {
                    Ok(d) => deliver(&writers[d.to_side], &buf[d.offset..d.offset + d.len], &sim),
                    // The first few, in detail: a strict GWLB's drops are what a user debugs.
                    Err(cause) if logged < 20 => {
                        logged += 1;
                        let detail = std::mem::take(&mut lock(&sim).last_drop_detail);
                        eprintln!("flowdog gwlb: dropped a packet from target {src}: {} {detail}", cause.name());
                    }
                    Err(_) => {}
                }
            }
        })?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    if let Some(path) = &opts.counters_out {
        write_counters(path, &lock(&sim).counters())?;
    }
    let mut last_stats = Instant::now();
    let mut last_expire = Instant::now();
    while !stop.load(Ordering::Relaxed) && opts.duration.is_none_or(|d| start.elapsed().as_secs() < d) {
        std::thread::sleep(Duration::from_millis(100));
        if last_expire.elapsed() >= Duration::from_secs(1) {
            lock(&sim).expire(now_ms());
            last_expire = Instant::now();
            if let Some(path) = &opts.counters_out {
                write_counters(path, &lock(&sim).counters())?;
            }
        }
        if let Some(s) = opts.stats {
            if last_stats.elapsed() >= Duration::from_secs(s) {
                print_counters(&lock(&sim).counters());
                last_stats = Instant::now();
            }
        }
    }
    let c = lock(&sim).counters();
    print_counters(&c);
    if let Some(c) = &cap {
        c.lock().unwrap_or_else(|e| e.into_inner()).flush().context("--pcap: write failed")?;
    }
    if let Some(path) = &opts.counters_out {
        write_counters(path, &c)?;
    }
    Ok(())
}

/// Replaces the JSON file whole (a reader never sees half of it).
fn write_counters(path: &std::path::Path, c: &SimCounters) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(c)?).with_context(|| format!("{}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}", path.display()))
}

/// A few readable lines: per target, flows, drops by cause.
pub fn print_counters(c: &SimCounters) {
    for t in &c.targets {
        println!(
            "gwlb target {:<15} {:<9} sent {:>9} pkts {:>12} B  back {:>9} pkts {:>12} B  flows {}  checks {}/{}",
            t.ip,
            if t.healthy { "healthy" } else { "UNHEALTHY" },
            t.tx_packets,
            t.tx_bytes,
            t.rx_packets,
            t.rx_bytes,
            t.flows,
            t.checks_passed,
            t.checks_passed + t.checks_failed
        );
    }
    let mut drops: Vec<_> = c.drops.iter().filter(|(_, n)| **n > 0).collect();
    drops.sort();
    let drops: Vec<String> = drops.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "gwlb flows active {} created {} expired {} rebalanced {}; looped {}; drops: {}",
        c.flows_active,
        c.flows_created,
        c.flows_expired,
        c.flows_rebalanced,
        c.looped_packets,
        if drops.is_empty() { "none".to_string() } else { drops.join(", ") }
    );
}
