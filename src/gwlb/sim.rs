//! The simulator's logic, sans IO: its flow table, the choice of a target, the Geneve
//! encapsulation, and the checks on what a target sends back (gwlb-facts.md §2–§6).
//!
//! Time is whatever monotonic millisecond clock the caller passes in, so tests drive it.

use super::config::{Failover, GwlbConfig, HealthCheck, Stickiness};
use super::health::Tracker;
use flowdog_core::build::{Encap, OUTER_LEN};
use flowdog_core::flow::{Direction, FlowKey};
use flowdog_core::hash::flow_hash;
use flowdog_wire::geneve::AwsOptions;
use flowdog_wire::inner::summarize;
use flowdog_wire::tcp::flags as tcp_flags;
use flowdog_wire::{ip_protocol, GenevePacket};
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// Why the simulator dropped a packet. Every drop is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// An inner packet over the 8500-byte limit (dropped without an ICMP error, as GWLB does).
    InnerTooLong,
    /// An inner packet that is not a well-formed IPv4 or IPv6 packet.
    InnerMalformed,
    /// A packet that is not routed traffic (unspecified, multicast, broadcast or link-local
    /// addresses, such as MLD or DHCP): a route table never sends it to a GWLB endpoint.
    InnerNotRoutable,
    /// A TCP packet other than a SYN for a flow GWLB does not know (never seen, or idled out).
    TcpNoFlow,
    /// From a target: not a well-formed Geneve packet with the three AWS options and an IP packet.
    ReturnMalformed,
    /// From an address that is not a target.
    ReturnUnknownSource,
    /// From a target, for a flow the GWLB does not know (never seen, or idled out).
    ReturnUnknownFlow,
    /// From a target, with AWS options other than the ones GWLB sent for that flow: another
    /// cookie or attachment id, or an endpoint id of neither side.
    ReturnOptionsChanged,
    /// From a target other than the one the flow is on.
    ReturnWrongTarget,
    /// From a target, an inner packet over the limit.
    ReturnTooLong,
    /// The kernel refused to send or deliver the packet (counted by the I/O side).
    SendFailed,
}

impl DropCause {
    pub const ALL: [DropCause; 11] = [
        DropCause::InnerTooLong,
        DropCause::InnerMalformed,
        DropCause::InnerNotRoutable,
        DropCause::TcpNoFlow,
        DropCause::ReturnMalformed,
        DropCause::ReturnUnknownSource,
        DropCause::ReturnUnknownFlow,
        DropCause::ReturnOptionsChanged,
        DropCause::ReturnWrongTarget,
        DropCause::ReturnTooLong,
        DropCause::SendFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropCause::InnerTooLong => "inner_too_long",
            DropCause::InnerMalformed => "inner_malformed",
            DropCause::InnerNotRoutable => "inner_not_routable",
            DropCause::TcpNoFlow => "tcp_no_flow",
            DropCause::ReturnMalformed => "return_malformed",
            DropCause::ReturnUnknownSource => "return_unknown_source",
            DropCause::ReturnUnknownFlow => "return_unknown_flow",
            DropCause::ReturnOptionsChanged => "return_options_changed",
            DropCause::ReturnWrongTarget => "return_wrong_target",
            DropCause::ReturnTooLong => "return_too_long",
            DropCause::SendFailed => "send_failed",
        }
    }
}

/// Per target: what went each way, and its health.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetCounters {
    pub ip: String,
    pub healthy: bool,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Flows assigned to it (new, or moved to it by a rebalance).
    pub flows: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    /// Why the last failed check failed.
    pub last_check_error: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SimCounters {
    pub targets: Vec<TargetCounters>,
    /// Inner packets handed from one side to the other without a target (loopback mode).
    pub looped_packets: u64,
    pub flows_created: u64,
    pub flows_expired: u64,
    pub flows_rebalanced: u64,
    pub flows_active: u64,
    /// Drops by cause (see [`DropCause::name`]).
    pub drops: HashMap<&'static str, u64>,
    /// Damaged copies sent (fault injection), by kind.
    pub faults_injected: HashMap<&'static str, u64>,
}

/// One flow as GWLB keeps it: its target, its cookie, and on which side its `lo` endpoint is.
#[derive(Debug, Clone, Copy)]
struct SimFlow {
    target: usize,
    cookie: u32,
    /// The side (0 consumer, 1 provider) the key's `lo` endpoint sent from.
    lo_side: usize,
    outer_port: u16,
    tcp: bool,
    last_seen_ms: u64,
}

/// What to do with an inner packet that came in on a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// Send the first `len` bytes of the buffer (outer IPv4 onwards) to the target.
    Send { target: usize, dst: Ipv4Addr, len: usize },
    /// Loopback mode: deliver the inner packet to this side as it is.
    Loop { to_side: usize },
}

/// Where the inner packet of a returned Geneve packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub to_side: usize,
    /// The inner packet's place in the UDP payload.
    pub offset: usize,
    pub len: usize,
}

pub struct Sim {
    cfg: GwlbConfig,
    flows: HashMap<FlowKey, SimFlow>,
    healthy: Vec<bool>,
    trackers: Vec<Tracker>,
    rng: u64,
    counters: SimCounters,
    drops: [u64; DropCause::ALL.len()],
    /// What the last dropped return was, for the log (flow, expected and received options).
    pub last_drop_detail: String,
    sent: u64,
    injected: [u64; 3],
}

const FAULTS: [&str; 3] = ["malformed_geneve", "changed_options", "oversize"];

/// Whether a flow is still within its idle timeout at `now_ms`.
fn live(cfg: &GwlbConfig, f: &SimFlow, now_ms: u64) -> bool {
    let timeout_s = if f.tcp { cfg.tcp_idle_timeout_s } else { cfg.other_idle_timeout_s };
    now_ms.saturating_sub(f.last_seen_ms) <= 1000 * timeout_s
}

/// Whether an address can be the source or destination of routed traffic.
fn routable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_link_local()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_unicast_link_local()),
    }
}

fn mix(x: u64) -> u64 {
    // splitmix64's finaliser.
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Sim {
    /// A simulator with every target healthy; `seed` drives the flow cookies and the random
    /// choices.
    pub fn new(cfg: GwlbConfig, seed: u64) -> Sim {
        let targets = cfg
            .targets
            .iter()
            .map(|t| TargetCounters { ip: t.ip.to_string(), healthy: true, ..Default::default() })
            .collect();
        let healthy = vec![true; cfg.targets.len()];
        let trackers = vec![Tracker::new(true); cfg.targets.len()];
        Sim {
            cfg,
            flows: HashMap::new(),
            healthy,
            trackers,
            rng: seed,
            counters: SimCounters { targets, ..Default::default() },
            drops: [0; DropCause::ALL.len()],
            last_drop_detail: String::new(),
            sent: 0,
            injected: [0; 3],
        }
    }

    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.rng)
    }

    pub fn count_drop(&mut self, cause: DropCause) {
        self.drops[cause as usize] += 1;
    }

    pub fn drops(&self, cause: DropCause) -> u64 {
        self.drops[cause as usize]
    }

    pub fn set_healthy(&mut self, target: usize, healthy: bool) {
        self.healthy[target] = healthy;
        self.counters.targets[target].healthy = healthy;
    }

    /// Records a health check's result; returns the new state when it changed.
    pub fn check_result(&mut self, target: usize, result: Result<(), String>, hc: &HealthCheck) -> Option<bool> {
        let t = &mut self.counters.targets[target];
        match &result {
            Ok(()) => t.checks_passed += 1,
            Err(e) => {
                t.checks_failed += 1;
                t.last_check_error.clone_from(e);
            }
        }
        let tracker = &mut self.trackers[target];
        if tracker.record(result.is_ok(), hc) {
            let h = tracker.healthy;
            self.set_healthy(target, h);
            return Some(h);
        }
        None
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> SimCounters {
        let mut c = self.counters.clone();
        c.flows_active = self.flows.len() as u64;
        c.drops = DropCause::ALL.iter().map(|d| (d.name(), self.drops[*d as usize])).collect();
        c.faults_injected = FAULTS.iter().zip(self.injected).map(|(n, v)| (*n, v)).collect();
        c
    }

    /// The target for a new flow (or a rebalanced one): among the healthy targets, the one with
    /// the highest score for the flow's sticky tuple (rendezvous hashing: both directions agree,
    /// and a target going away only moves its own flows); with none healthy, a random one.
    fn pick(&mut self, key: &FlowKey) -> usize {
        let mut k = *key;
        match self.cfg.stickiness {
            Stickiness::FiveTuple => {}
            Stickiness::ThreeTuple => (k.lo_port, k.hi_port) = (0, 0),
            Stickiness::TwoTuple => (k.lo_port, k.hi_port, k.protocol) = (0, 0, 0),
        }
        let h = flow_hash(&k);
        let best = (0..self.cfg.targets.len())
            .filter(|&t| self.healthy[t])
            .max_by_key(|&t| mix(h ^ u64::from(u32::from(self.cfg.targets[t].ip)).wrapping_mul(0x9e37_79b9)));
        match best {
            Some(t) => t,
            None => (self.random() % self.cfg.targets.len() as u64) as usize,
        }
    }

    /// An inner packet from `side`: `buf[OUTER_LEN..]` holds it; on [`Ingress::Send`] the
    /// outer headers have been written in front of it.
    pub fn from_side(&mut self, side: usize, buf: &mut [u8], now_ms: u64) -> Result<Ingress, DropCause> {
        let r = self.ingress(side, buf, now_ms);
        if let Err(c) = r {
            self.count_drop(c);
        }
        r
    }

    fn ingress(&mut self, side: usize, buf: &mut [u8], now_ms: u64) -> Result<Ingress, DropCause> {
        let inner = &buf[OUTER_LEN..];
        if inner.len() > self.cfg.max_inner_len {
            return Err(DropCause::InnerTooLong);
        }
        let protocol = match inner.first().map(|b| b >> 4) {
            Some(4) => 0x0800,
            Some(6) => 0x86dd,
            _ => return Err(DropCause::InnerMalformed),
        };
        let s = summarize(protocol, inner).map_err(|_| DropCause::InnerMalformed)?;
        if !routable(s.src_addr()) || !routable(s.dst_addr()) {
            return Err(DropCause::InnerNotRoutable);
        }
        let (key, dir) = FlowKey::from_summary(&s);
        let tcp = s.protocol == ip_protocol::TCP;
        if self.cfg.loopback {
            self.counters.looped_packets += 1;
            return Ok(Ingress::Loop { to_side: 1 - side });
        }
        if self.flows.get(&key).is_some_and(|f| !live(&self.cfg, f, now_ms)) {
            self.flows.remove(&key);
            self.counters.flows_expired += 1;
        }
        let flow = match self.flows.get(&key).copied() {
            Some(mut f) => {
                if self.cfg.failover == Failover::Rebalance
                    && !self.healthy[f.target]
                    && self.healthy.iter().any(|h| *h)
                {
                    f.target = self.pick(&key);
                    self.counters.flows_rebalanced += 1;
                    self.counters.targets[f.target].flows += 1;
                }
                f
            }
            None => {
                if tcp && s.tcp_flags & tcp_flags::SYN == 0 {
                    return Err(DropCause::TcpNoFlow);
                }
                let target = self.pick(&key);
                let cookie = (self.random() as u32).max(1);
                let lo_side = if dir == Direction::LoToHi { side } else { 1 - side };
                // A per-flow source port, as GWLB sends (from a hash of the inner flow).
                let outer_port = 0xc000 | (flow_hash(&key) >> 20) as u16 & 0x3fff;
                self.counters.flows_created += 1;
                self.counters.targets[target].flows += 1;
                SimFlow { target, cookie, lo_side, outer_port, tcp, last_seen_ms: now_ms }
            }
        };
        self.flows.insert(key, SimFlow { last_seen_ms: now_ms, ..flow });
        let inner_len = buf.len() - OUTER_LEN;
        let dst = self.cfg.targets[flow.target].ip;
        Encap {
            src_ip: self.cfg.ip,
            dst_ip: dst,
            src_port: flow.outer_port,
            ttl: self.cfg.outer_ttl,
            vpc_endpoint_id: self.cfg.sides[side].vpc_endpoint_id,
            attachment_id: 0,
            flow_cookie: flow.cookie,
        }
        .emit(&mut buf[..OUTER_LEN], protocol, inner_len);
        let t = &mut self.counters.targets[flow.target];
        t.tx_packets += 1;
        t.tx_bytes += buf.len() as u64;
        Ok(Ingress::Send { target: flow.target, dst, len: buf.len() })
    }

    /// Fault injection: after a packet went to a target (`packet`, outer IPv4 onwards), maybe a
    /// damaged copy of it to send as well.
    pub fn fault_copy(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        let f = self.cfg.faults;
        self.sent += 1;
        let due = |every: u64| every != 0 && self.sent % every == 0;
        let kind = [f.malformed_geneve_every, f.changed_options_every, f.oversize_every].into_iter().position(due)?;
        // Geneve starts after the 20-byte outer IPv4 and 8-byte UDP headers.
        const GENEVE: usize = 28;
        let mut copy = packet.to_vec();
        match kind {
            0 => copy[GENEVE] |= 0x40,
            // The flow cookie's last byte: the third option's data ends the 40-byte header.
            1 => copy[GENEVE + 39] ^= 0x5a,
            _ => {
                copy.resize(OUTER_LEN + 8600, 0);
                let total = copy.len() as u16;
                copy[24..26].copy_from_slice(&(total - 20).to_be_bytes());
                copy[2..4].copy_from_slice(&total.to_be_bytes());
            }
        }
        self.injected[kind] += 1;
        Some(copy)
    }

    /// A UDP payload (Geneve onwards) that `src` sent to the GWLB's port 6081.
    pub fn from_target(&mut self, src: Ipv4Addr, payload: &[u8], now_ms: u64) -> Result<Delivery, DropCause> {
        let r = self.returned(src, payload, now_ms);
        if let Err(c) = r {
            self.count_drop(c);
        }
        r
    }

    fn returned(&mut self, src: Ipv4Addr, payload: &[u8], now_ms: u64) -> Result<Delivery, DropCause> {
        let target = self.cfg.targets.iter().position(|t| t.ip == src).ok_or(DropCause::ReturnUnknownSource)?;
        let g = GenevePacket::new_checked(payload).map_err(|_| DropCause::ReturnMalformed)?;
        if g.version() != 0 || g.oam() {
            return Err(DropCause::ReturnMalformed);
        }
        let protocol = g.protocol();
        let aws = AwsOptions::parse(g.options()).map_err(|_| DropCause::ReturnMalformed)?;
        let inner = g.payload();
        if inner.len() > self.cfg.max_inner_len {
            return Err(DropCause::ReturnTooLong);
        }
        let s = summarize(protocol, inner).map_err(|_| DropCause::ReturnMalformed)?;
        let (key, dir) = FlowKey::from_summary(&s);
        let f = match self.flows.get_mut(&key) {
            Some(f) if live(&self.cfg, f, now_ms) => f,
            _ => return Err(DropCause::ReturnUnknownFlow),
        };
        let from_side = if dir == Direction::LoToHi { f.lo_side } else { 1 - f.lo_side };
        let expected = (self.cfg.sides[from_side].vpc_endpoint_id, 0, f.cookie);
        // A packet the appliance makes inside the flow may carry the Geneve header of the other
        // direction (flowdog's RST to a refused SYN reuses the SYN's): that side's endpoint id.
        let other_side = self.cfg.sides[1 - from_side].vpc_endpoint_id;
        let vpce_ok = aws.vpc_endpoint_id == expected.0 || aws.vpc_endpoint_id == other_side;
        if !vpce_ok || (aws.attachment_id, aws.flow_cookie) != (expected.1, expected.2) {
            self.last_drop_detail = format!(
                "flow {} {}:{} -> {}:{}: expected vpce {:#x} attachment 0 cookie {:#010x}, got vpce {:#x} attachment {} cookie {:#010x}",
                s.protocol,
                s.src_addr(),
                s.src_port,
                s.dst_addr(),
                s.dst_port,
                expected.0,
                expected.2,
                aws.vpc_endpoint_id,
                aws.attachment_id,
                aws.flow_cookie
            );
            return Err(DropCause::ReturnOptionsChanged);
        }
        if f.target != target {
            return Err(DropCause::ReturnWrongTarget);
        }
        f.last_seen_ms = now_ms;
        let t = &mut self.counters.targets[target];
        t.rx_packets += 1;
        t.rx_bytes += payload.len() as u64 + 28;
        Ok(Delivery { to_side: 1 - from_side, offset: g.header_len(), len: inner.len() })
    }

    /// Forgets the flows idle past their timeout; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.flows.len();
        let cfg = &self.cfg;
        self.flows.retain(|_, f| live(cfg, f, now_ms));
        let n = before - self.flows.len();
        self.counters.flows_expired += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowdog_core::build::Inner;

    fn cfg(targets: usize, extra: &str) -> GwlbConfig {
        let mut t = String::from(
            r#"
ip = "198.18.0.1"
consumer = { tun = "tunc", vpc_endpoint_id = "vpce-0000000000000000a" }
provider = { tun = "tuns", vpc_endpoint_id = "vpce-0000000000000000b" }
"#,
        );
        for i in 0..targets {
            t += &format!("[[targets]]\nip = \"198.18.0.{}\"\n", i + 2);
        }
        t += extra;
        GwlbConfig::parse(&t).unwrap()
    }

    /// A buffer with room for the outer headers, then an inner TCP or UDP packet.
    fn packet(src: &str, dst: &str, protocol: u8, sport: u16, dport: u16, flags: u8, size: usize) -> Vec<u8> {
        let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let inner =
            Inner { src, dst, protocol, src_port: sport, dst_port: dport, tcp_flags: flags, seq: 1, ack: 2, size };
        let mut b = vec![0u8; OUTER_LEN + inner.len()];
        inner.emit(&mut b[OUTER_LEN..]);
        b
    }

    fn syn(sport: u16) -> Vec<u8> {
        packet("198.18.1.10", "198.18.2.10", ip_protocol::TCP, sport, 80, tcp_flags::SYN, 60)
    }

    fn synack(dport: u16) -> Vec<u8> {
        packet("198.18.2.10", "198.18.1.10", ip_protocol::TCP, 80, dport, tcp_flags::SYN | tcp_flags::ACK, 60)
    }

    /// Turns a sent packet around the way the appliance's fast path does (the UDP payload only).
    fn payload(b: &[u8]) -> Vec<u8> {
        b[28..].to_vec()
    }

    #[test]
    fn encapsulates_as_gwlb_and_accepts_the_unchanged_return() {
        let mut sim = Sim::new(cfg(1, ""), 1);
        let mut b = syn(40000);
        let Ingress::Send { target, dst, len } = sim.from_side(0, &mut b, 0).unwrap() else { panic!() };
        assert_eq!((target, dst, len), (0, Ipv4Addr::new(198, 18, 0, 2), b.len()));
        let ip = flowdog_wire::Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(ip.verify_checksum());
        let udp = flowdog_wire::UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.dst_port(), 6081);
        assert!(udp.src_port() >= 0xc000);
        let g = GenevePacket::new_checked(udp.payload()).unwrap();
        assert_eq!((g.version(), g.protocol(), g.vni()), (0, 0x0800, 0));
        let aws = AwsOptions::parse(g.options()).unwrap();
        assert_eq!((aws.vpc_endpoint_id, aws.attachment_id), (0xa, 0));
        let d = sim.from_target(dst, &payload(&b), 1).unwrap();
        assert_eq!((d.to_side, d.offset, d.len), (1, 40, b.len() - OUTER_LEN));

        // The reply from the provider side: same flow, same cookie, the provider's endpoint id.
        let mut r = synack(40000);
        sim.from_side(1, &mut r, 2).unwrap();
        let g = GenevePacket::new_checked(&r[28..]).unwrap();
        let back = AwsOptions::parse(g.options()).unwrap();
        assert_eq!((back.vpc_endpoint_id, back.flow_cookie), (0xb, aws.flow_cookie));
        assert_eq!(sim.from_target(dst, &payload(&r), 3).unwrap().to_side, 0);
        let c = sim.counters();
        assert_eq!((c.flows_created, c.targets[0].tx_packets, c.targets[0].rx_packets), (1, 2, 2));
    }

    #[test]
    fn returns_are_checked_strictly() {
        let mut sim = Sim::new(cfg(2, ""), 1);
        let mut b = syn(40001);
        let Ingress::Send { dst, .. } = sim.from_side(0, &mut b, 0).unwrap() else { panic!() };
        let other = if dst == Ipv4Addr::new(198, 18, 0, 2) {
            Ipv4Addr::new(198, 18, 0, 3)
        } else {
            Ipv4Addr::new(198, 18, 0, 2)
        };
        let p = payload(&b);
        // A changed cookie (the last option's data).
        let mut changed = p.clone();
        changed[39] ^= 1;
        assert_eq!(sim.from_target(dst, &changed, 1), Err(DropCause::ReturnOptionsChanged));
        let mut foreign = p.clone();
        foreign[19] ^= 0x40; // the endpoint id's last byte
        assert_eq!(sim.from_target(dst, &foreign, 1), Err(DropCause::ReturnOptionsChanged));
        assert_eq!(sim.from_target(other, &p, 1), Err(DropCause::ReturnWrongTarget));
        assert_eq!(sim.from_target(Ipv4Addr::new(198, 18, 0, 99), &p, 1), Err(DropCause::ReturnUnknownSource));
        assert_eq!(sim.from_target(dst, &p[..20], 1), Err(DropCause::ReturnMalformed));
        // A flow another GWLB saw, not this one.
        let mut elsewhere = Sim::new(cfg(2, ""), 2);
        let mut u = syn(40002);
        let Ingress::Send { dst: d2, .. } = elsewhere.from_side(0, &mut u, 0).unwrap() else { panic!() };
        assert_eq!(sim.from_target(d2, &payload(&u), 1), Err(DropCause::ReturnUnknownFlow));
        assert_eq!(sim.drops(DropCause::ReturnOptionsChanged), 2);
        assert!(sim.from_target(dst, &p, 1).is_ok());
    }

    #[test]
    fn fault_copies_are_damaged_as_asked_and_their_returns_dropped() {
        let faults = "[faults]\nmalformed_geneve_every = 2\nchanged_options_every = 3\noversize_every = 5\n";
        let mut sim = Sim::new(cfg(1, faults), 1);
        let mut kinds = Vec::new();
        for i in 0..6u16 {
            let mut b = syn(41000 + i);
            let Ingress::Send { dst, len, .. } = sim.from_side(0, &mut b, 0).unwrap() else { panic!() };
            let Some(copy) = sim.fault_copy(&b[..len]) else { continue };
            kinds.push(match sim.from_target(dst, &copy[28..], 1) {
                Err(DropCause::ReturnMalformed) => "malformed",
                Err(DropCause::ReturnOptionsChanged) => "changed",
                Err(DropCause::ReturnTooLong) => "oversize",
                r => panic!("{r:?}"),
            });
        }
        // Packets 2, 4, 6 malformed; 3 changed; 5 oversize.
        assert_eq!(kinds, ["malformed", "changed", "malformed", "oversize", "malformed"]);
        let c = sim.counters();
        assert_eq!((c.faults_injected["malformed_geneve"], c.faults_injected["oversize"]), (3, 1));
    }

    #[test]
    fn tcp_needs_a_syn_and_flows_idle_out() {
        let mut sim = Sim::new(cfg(1, "[flows]\ntcp_idle_timeout_s = 60\n"), 1);
        let mut ack = packet("198.18.1.10", "198.18.2.10", ip_protocol::TCP, 40000, 80, tcp_flags::ACK, 60);
        assert_eq!(sim.from_side(0, &mut ack, 0), Err(DropCause::TcpNoFlow));
        sim.from_side(0, &mut syn(40000), 0).unwrap();
        sim.from_side(0, &mut ack, 59_000).unwrap();
        assert_eq!(sim.from_side(0, &mut ack, 119_001), Err(DropCause::TcpNoFlow));
        let mut udp = packet("198.18.1.10", "198.18.2.10", ip_protocol::UDP, 5000, 53, 0, 60);
        sim.from_side(0, &mut udp, 0).unwrap();
        assert_eq!(sim.expire(120_001), 1);
        assert_eq!(sim.counters().flows_expired, 2);
    }

    #[test]
    fn oversize_and_garbage_are_dropped() {
        let mut sim = Sim::new(cfg(1, ""), 1);
        let mut big = packet("198.18.1.10", "198.18.2.10", ip_protocol::UDP, 5000, 53, 0, 8501);
        assert_eq!(sim.from_side(0, &mut big, 0), Err(DropCause::InnerTooLong));
        let mut ok = packet("198.18.1.10", "198.18.2.10", ip_protocol::UDP, 5000, 53, 0, 8500);
        assert!(sim.from_side(0, &mut ok, 0).is_ok());
        let mut junk = vec![0u8; OUTER_LEN + 30];
        assert_eq!(sim.from_side(0, &mut junk, 0), Err(DropCause::InnerMalformed));
        let mut mld = packet("::", "ff02::16", ip_protocol::UDP, 0, 0, 0, 60);
        assert_eq!(sim.from_side(0, &mut mld, 0), Err(DropCause::InnerNotRoutable));
        let mut dhcp = packet("0.0.0.0", "255.255.255.255", ip_protocol::UDP, 68, 67, 0, 300);
        assert_eq!(sim.from_side(1, &mut dhcp, 0), Err(DropCause::InnerNotRoutable));
    }

    #[test]
    fn spreads_flows_keeps_both_directions_together_and_fails_over() {
        let mut sim = Sim::new(cfg(2, ""), 7);
        let mut per = [0; 2];
        for p in 0..200u16 {
            let Ingress::Send { target, .. } = sim.from_side(0, &mut syn(20000 + p), 0).unwrap() else { panic!() };
            let Ingress::Send { target: back, .. } = sim.from_side(1, &mut synack(20000 + p), 0).unwrap() else {
                panic!()
            };
            assert_eq!(target, back);
            per[target] += 1;
        }
        assert!(per[0] > 60 && per[1] > 60, "{per:?}");
        // Target 0 fails: new flows go to 1; existing ones stay (no_rebalance).
        sim.set_healthy(0, false);
        for p in 0..50u16 {
            let Ingress::Send { target, .. } = sim.from_side(0, &mut syn(30000 + p), 1).unwrap() else { panic!() };
            assert_eq!(target, 1);
        }
        let stay = (0..200u16)
            .filter(|p| matches!(sim.from_side(0, &mut syn(20000 + p), 2), Ok(Ingress::Send { target: 0, .. })))
            .count();
        assert_eq!(stay, per[0]);
        // All unhealthy: new flows still go somewhere.
        sim.set_healthy(1, false);
        assert!(sim.from_side(0, &mut syn(40000), 3).is_ok());
    }

    #[test]
    fn rebalance_moves_flows_off_an_unhealthy_target() {
        let mut sim = Sim::new(cfg(2, "[flows]\nfailover = \"rebalance\"\n"), 7);
        let on0: Vec<u16> = (0..100u16)
            .filter(|p| matches!(sim.from_side(0, &mut syn(20000 + p), 0), Ok(Ingress::Send { target: 0, .. })))
            .collect();
        assert!(!on0.is_empty());
        sim.set_healthy(0, false);
        for p in &on0 {
            let mut data = packet("198.18.1.10", "198.18.2.10", ip_protocol::TCP, 20000 + p, 80, tcp_flags::ACK, 60);
            assert!(matches!(sim.from_side(0, &mut data, 1), Ok(Ingress::Send { target: 1, .. })));
        }
        assert_eq!(sim.counters().flows_rebalanced, on0.len() as u64);
    }

    #[test]
    fn stickiness_3_tuple_pins_all_ports_of_a_pair() {
        let mut sim = Sim::new(cfg(3, "[flows]\nstickiness = \"3-tuple\"\n"), 7);
        let targets: std::collections::HashSet<usize> = (0..50u16)
            .map(|p| match sim.from_side(0, &mut syn(20000 + p), 0) {
                Ok(Ingress::Send { target, .. }) => target,
                r => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(targets.len(), 1);
    }
}
