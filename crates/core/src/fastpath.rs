//! Classify one received frame and rewrite it in place.
//!
//! The checks run in the order of the headers and each failure has its own [`DropCause`]:
//! outer Ethernet (to our MAC, or broadcast) → ARP for our IP (answered) | outer IPv4 to our IP
//! (checksum, TTL, no fragments) → ICMP echo (answered) | UDP to 6081 → Geneve version 0, not
//! OAM, protocol IPv4 or IPv6, well-formed options with all three AWS options → the inner
//! packet's 5-tuple → its owner worker → the flow table → the flow's action.
//!
//! The fast-path return (gwlb-facts.md §3): the outer MAC and IP addresses are swapped, both
//! UDP ports and every byte of the Geneve header are kept, the TTL is set, the IPv4 checksum is
//! updated incrementally (RFC 1624; the swap does not change the sum), and the UDP checksum is
//! sent as 0, which IPv4 allows.

use crate::counters::{Counters, DropCause};
use crate::flow::{fingerprint, Direction, FlowKey, FlowTable, FlowTableConfig, Found, GENEVE_STORE};
use crate::hash::{flow_hash, owner};
use crate::policy::{Action, Policy};
use core::net::Ipv4Addr;
use flowdog_wire::geneve::{self, AwsOptions};
use flowdog_wire::inner::{self, Fragment, Summary};
use flowdog_wire::tcp::flags as tcp_flags;
use flowdog_wire::{
    arp, checksum, ethernet, icmpv4, ip_protocol, ipv4, ipv6, tcp, EtherType, EthernetFrame, Ipv4Packet, UdpPacket,
};
use flowdog_wire::{Error as WireError, GenevePacket};

const ETH_LEN: usize = ethernet::HEADER_LEN;
const UDP_LEN: usize = 8;

/// What the worker does with the frame after [`FastPath::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the frame, rewritten in place, same length.
    Transmit,
    /// Transmit the frame, rewritten in place and cut to this length.
    TransmitLen(usize),
    /// Another worker owns the flow: hand the frame, untouched, to that worker.
    Steer(usize),
    /// For the appliance itself (TCP to its address: health checks): hand the frame to the
    /// control plane's interface.
    Control,
    /// A packet of an intercepted TCP flow: hand its inner packet to the flow's TCP pair.
    Intercept(Intercepted),
    /// A packet of a flow the acceptor has not decided on: hold the frame (untouched) until it
    /// does, then run it through [`FastPath::flow_stage`] again.
    Hold(Held),
    /// Drop (already counted by cause).
    Drop,
}

/// Where an intercepted packet sits and which flow it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intercepted {
    /// The flow's slot in the table (stable while the flow lives).
    pub slot: u32,
    /// True when the packet travels from the flow's initiator (the client) to the server.
    pub from_client: bool,
    /// True on the first packet of a new flow (or of a new connection reusing a closed flow's
    /// ports): any TCP pair still kept for that slot belongs to an older flow.
    pub new: bool,
    /// The inner IP packet: offset in the frame and length.
    pub inner_off: u16,
    pub inner_len: u16,
    /// The TCP segment's flags (already parsed here; the pair need not parse again).
    pub tcp_flags: u8,
}

/// A held packet's flow (see [`Verdict::Hold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub slot: u32,
    /// The first packet of a new flow: ask the acceptor.
    pub new: bool,
    pub from_client: bool,
    /// The inner packet's upper-layer payload: offset in the frame and length (the acceptor's
    /// downstream or upstream data).
    pub payload_off: u16,
    pub payload_len: u16,
}

/// A held flow's endpoints and GWLB options, for the acceptor (see [`FastPath::held_flow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldFlow {
    pub ipv6: bool,
    pub protocol: u8,
    /// The initiator's (client's) address and port, then the responder's.
    pub client: ([u8; 16], u16),
    pub server: ([u8; 16], u16),
    pub vpc_endpoint_id: u64,
    pub attachment_id: u64,
    pub flow_cookie: u32,
}

/// Longest outer header [`FastPath::outer`] makes.
pub const OUTER_MAX: usize = ETH_LEN + ipv4::HEADER_LEN + UDP_LEN + GENEVE_STORE;

/// Outer headers for the appliance's own packets in a flow (see [`FastPath::outer`]).
#[derive(Debug, Clone, Copy)]
pub struct Outer {
    buf: [u8; OUTER_MAX],
    len: usize,
}

impl Outer {
    /// Bytes of outer header before the inner packet.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the headers at the start of `frame`, which holds the inner packet after them:
    /// lengths and the IPv4 checksum for that inner packet; UDP checksum 0.
    pub fn write(&self, frame: &mut [u8]) {
        let f = &mut frame[..];
        f[..self.len].copy_from_slice(&self.buf[..self.len]);
        let ip_len = (f.len() - ETH_LEN) as u16;
        let ip = &mut f[ETH_LEN..ETH_LEN + ipv4::HEADER_LEN];
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        let sum = !checksum::ipv4_header(ip.first_chunk().expect("20 bytes"));
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let udp = ETH_LEN + ipv4::HEADER_LEN;
        f[udp + 4..udp + 6].copy_from_slice(&(ip_len - ipv4::HEADER_LEN as u16).to_be_bytes());
    }
}

/// What the header stage learned about a GWLB frame whose flow must be looked up: everything
/// the flow stage needs, so it does not parse again. The worker keeps one per packet of a burst
/// and [`FastPath::headers`] fills it in place: it is small and never copied whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub key: FlowKey,
    pub hash: u64,
    aws: AwsOptions,
    dir: Direction,
    tcp_flags: u8,
    fragment: Fragment,
    /// Where the Geneve header starts in the frame, its length, and the inner packet's
    /// upper-layer offset and length (from its IP header).
    geneve_off: u16,
    geneve_len: u16,
    l4_offset: u16,
    total_len: u16,
}

impl Pending {
    /// The inner packet's summary, rebuilt from the key (for the rare paths: a new flow's policy
    /// decision, a RST).
    fn summary(&self) -> Summary {
        let k = &self.key;
        let ((src, src_port), (dst, dst_port)) = match self.dir {
            Direction::LoToHi => ((k.lo, k.lo_port), (k.hi, k.hi_port)),
            Direction::HiToLo => ((k.hi, k.hi_port), (k.lo, k.lo_port)),
        };
        Summary {
            ip_version: if k.ipv6 { 6 } else { 4 },
            src,
            dst,
            protocol: k.protocol,
            src_port,
            dst_port,
            tcp_flags: self.tcp_flags,
            fragment: self.fragment,
            l4_offset: self.l4_offset as usize,
            total_len: self.total_len as usize,
        }
    }
}

/// The outcome of [`FastPath::headers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Decided without the flow table: answered (ARP, ICMP), steered or dropped (counted).
    Done(Verdict),
    /// A GWLB frame of a flow this worker owns, described in the [`Pending`] the call filled:
    /// [`FastPath::flow_stage`] finishes it.
    Flow,
}

/// The appliance's identity and the worker's place among its peers.
#[derive(Debug, Clone, Copy)]
pub struct FastPathConfig {
    /// The appliance's data-plane IPv4 address (GWLB sends Geneve to it).
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The TTL of the outer IPv4 header on the way back to GWLB.
    pub outer_ttl: u8,
    /// This worker's index, and how many workers share the flows.
    pub worker: usize,
    pub workers: usize,
    /// Verify the outer IPv4 header checksum (off when the NIC already checked it).
    pub verify_ipv4_checksum: bool,
    /// Hand TCP to the appliance's own address to the control plane ([`Verdict::Control`]);
    /// without a control interface it is dropped as `local_tcp`.
    pub control: bool,
}

/// One worker's sans-IO fast path: its flow table, policy and counters.
pub struct FastPath {
    cfg: FastPathConfig,
    policy: Policy,
    pub table: FlowTable,
    pub counters: Counters,
    /// New flows per policy rule (same order as the rules), then one for the default.
    pub rule_hits: Vec<u64>,
    /// New flows that policy does not drop wait for the flow acceptor ([`Action::Ask`]).
    acceptor: bool,
}

fn ip4_cause(e: WireError) -> DropCause {
    match e {
        WireError::Truncated => DropCause::Ipv4Truncated,
        _ => DropCause::Ipv4Malformed,
    }
}

fn inner_cause(e: WireError) -> DropCause {
    match e {
        WireError::Truncated => DropCause::InnerTruncated,
        WireError::Malformed => DropCause::InnerMalformed,
        WireError::Unsupported => DropCause::InnerUnsupported,
    }
}

impl FastPath {
    pub fn new(cfg: FastPathConfig, policy: Policy, table: FlowTableConfig) -> Self {
        let rule_hits = vec![0; policy.rules.len() + 1];
        FastPath {
            cfg,
            policy,
            table: FlowTable::new(table),
            counters: Counters::default(),
            rule_hits,
            acceptor: false,
        }
    }

    /// With an acceptor, every new flow that policy does not drop is held ([`Verdict::Hold`])
    /// until [`FastPath::decide`] is called for it.
    pub fn set_acceptor(&mut self, on: bool) {
        self.acceptor = on;
    }

    /// The acceptor's answer for the held flow in `slot` (if it still holds the flow of
    /// `key`): accepted flows take the action policy gave them, denied ones are dropped (with
    /// RSTs for TCP when `reset`). False when the slot holds another flow or no longer waits.
    pub fn decide(&mut self, slot: usize, key: &FlowKey, accept: bool, reset: bool) -> bool {
        let e = self.table.entry(slot);
        let Action::Ask { intercept } = e.action else { return false };
        if e.key != *key {
            return false;
        }
        let a = match (accept, intercept) {
            (true, true) => Action::Intercept,
            (true, false) => Action::Allow,
            (false, _) => Action::Drop { reset },
        };
        self.table.set_action(slot, a);
        true
    }

    /// The endpoints and GWLB options of the flow in `slot` as its initiator sent them.
    pub fn held_flow(&self, slot: usize) -> HeldFlow {
        let e = self.table.entry(slot);
        let k = &e.key;
        let lo = (k.lo, k.lo_port);
        let hi = (k.hi, k.hi_port);
        let (client, server) = match e.initiator {
            Direction::LoToHi => (lo, hi),
            Direction::HiToLo => (hi, lo),
        };
        let m = &self.table.meta(slot).dir[e.initiator as usize];
        HeldFlow {
            ipv6: k.ipv6,
            protocol: k.protocol,
            client,
            server,
            vpc_endpoint_id: m.vpc_endpoint_id,
            attachment_id: m.attachment_id,
            flow_cookie: m.flow_cookie,
        }
    }

    /// Handles one frame received at time `now`. `steered` is true for frames another worker
    /// handed over (their owner was already computed).
    ///
    /// This is [`FastPath::headers`] followed, for GWLB frames of our flows, by
    /// [`FastPath::flow_stage`]. The worker calls the two stages itself over a whole burst, so
    /// that it can prefetch the flow-table lines of every packet between them.
    #[inline]
    pub fn handle(&mut self, frame: &mut [u8], now: u64, steered: bool) -> Verdict {
        let mut p = Pending::default();
        match self.headers(frame, steered, &mut p) {
            Stage::Done(v) => v,
            Stage::Flow => self.flow_stage(frame, &p, now),
        }
    }

    /// The header stage: every check that needs no flow state, ARP and ICMP answers, and the
    /// steering decision. Drops are counted here. For [`Stage::Flow`] it has filled `out`.
    #[inline]
    pub fn headers(&mut self, frame: &mut [u8], steered: bool, out: &mut Pending) -> Stage {
        match self.classify(frame, steered, out, true) {
            Ok(s) => s,
            Err(cause) => {
                self.counters.drop(cause);
                Stage::Done(Verdict::Drop)
            }
        }
    }

    /// The flow stage: flow-table lookup (or insert), TCP tracking, the stored Geneve header,
    /// and the flow's action on the frame.
    #[inline]
    pub fn flow_stage(&mut self, frame: &mut [u8], p: &Pending, now: u64) -> Verdict {
        match self.act(frame, p, now) {
            Ok(v) => v,
            Err(cause) => {
                self.counters.drop(cause);
                Verdict::Drop
            }
        }
    }

    /// Addresses worth prefetching right after the header stage of `p`: the tag lines of its
    /// two candidate buckets. [`FastPath::prefetch_entry`] follows once those are in cache.
    #[inline(always)]
    pub fn prefetch_addrs(&self, p: &Pending) -> [*const u8; 2] {
        self.table.tag_lines(p.hash)
    }

    /// The entry line the flow of `p` most likely sits in (call after the tag lines arrived).
    #[inline(always)]
    pub fn prefetch_entry(&self, p: &Pending) -> Option<*const u8> {
        self.table.candidate_entry(p.hash)
    }

    /// Housekeeping between bursts: expire idle flows in a few buckets.
    #[inline]
    pub fn tick(&mut self, now: u64) {
        let n = self.table.sweep(now, 4);
        self.counters.flows_expired += n as u64;
    }

    #[inline(always)]
    fn classify(
        &mut self,
        f: &mut [u8],
        steered: bool,
        out: &mut Pending,
        fast_lane: bool,
    ) -> Result<Stage, DropCause> {
        let eth = EthernetFrame::new_checked(&*f).map_err(|_| DropCause::EthTruncated)?;
        let dst_mac = eth.dst_addr();
        if dst_mac.0 != self.cfg.mac && !dst_mac.is_broadcast() && !dst_mac.is_multicast() {
            return Err(DropCause::EthNotForUs);
        }
        match eth.ethertype() {
            EtherType::IPV4 => {}
            EtherType::ARP => return self.arp(f).map(Stage::Done),
            EtherType::IPV6 => return Err(DropCause::OuterIpv6),
            _ => return Err(DropCause::EthUnsupported),
        }
        if fast_lane && self.canonical(f, out) {
            return Ok(self.own(out, steered));
        }
        let ip = Ipv4Packet::new_checked(&f[ETH_LEN..]).map_err(ip4_cause)?;
        if self.cfg.verify_ipv4_checksum && !ip.verify_checksum() {
            return Err(DropCause::Ipv4BadChecksum);
        }
        if ip.dst_addr() != self.cfg.ip {
            return Err(DropCause::Ipv4NotForUs);
        }
        if ip.ttl() == 0 {
            return Err(DropCause::TtlExpired);
        }
        if ip.is_fragment() {
            return Err(DropCause::Ipv4Fragment);
        }
        let ihl = ip.header_len();
        match ip.protocol() {
            ip_protocol::UDP => {}
            ip_protocol::ICMP => return self.icmp_echo(f, ihl).map(Stage::Done),
            ip_protocol::TCP if self.cfg.control => {
                self.counters.to_control += 1;
                return Ok(Stage::Done(Verdict::Control));
            }
            ip_protocol::TCP => return Err(DropCause::LocalTcp),
            _ => return Err(DropCause::LocalProtocol),
        }
        let udp = UdpPacket::new_checked(ip.payload()).map_err(|_| DropCause::UdpTruncated)?;
        if udp.dst_port() != geneve::UDP_PORT {
            return Err(DropCause::UdpNotGeneve);
        }
        let gen = GenevePacket::new_checked(udp.payload()).map_err(|_| DropCause::GeneveTruncated)?;
        if gen.version() != 0 {
            return Err(DropCause::GeneveBadVersion);
        }
        if gen.oam() {
            return Err(DropCause::GeneveOam);
        }
        let protocol = gen.protocol();
        if protocol != EtherType::IPV4.0 && protocol != EtherType::IPV6.0 {
            return Err(DropCause::GeneveBadProtocol);
        }
        let aws = AwsOptions::parse(gen.options()).map_err(|_| DropCause::GeneveBadOptions)?;
        let s = inner::summarize(protocol, gen.payload()).map_err(inner_cause)?;

        let (key, dir) = FlowKey::from_summary(&s);
        // The IP parsers checked both lengths against the inner packet, itself under 64 KiB.
        *out = Pending {
            key,
            hash: 0,
            aws,
            dir,
            tcp_flags: s.tcp_flags,
            fragment: s.fragment,
            geneve_off: (ETH_LEN + ihl + UDP_LEN) as u16,
            geneve_len: gen.header_len() as u16,
            l4_offset: s.l4_offset as u16,
            total_len: s.total_len as u16,
        };
        Ok(self.own(out, steered))
    }

    /// Hashes the flow of `p` and decides whether it is ours or goes to its owner.
    #[inline(always)]
    fn own(&mut self, p: &mut Pending, steered: bool) -> Stage {
        p.hash = flow_hash(&p.key);
        if !steered && self.cfg.workers > 1 {
            let o = owner(p.hash, self.cfg.workers);
            if o != self.cfg.worker {
                self.counters.steered_out += 1;
                return Stage::Done(Verdict::Steer(o));
            }
        }
        Stage::Flow
    }

    /// The common case in a few wide compares: the frame GWLB sends (gwlb-facts.md §2), outer
    /// IPv4 without options, not a fragment, UDP to 6081, Geneve version 0 with exactly the three
    /// AWS options in order, and an unfragmented inner IPv4 (no options) or IPv6 (no extension
    /// headers) packet carrying TCP or UDP. Fills `out` (but its hash) and returns true only for
    /// frames the general checks below would accept with the very same result, so it changes
    /// speed, never a verdict or a counter; anything else (every drop included) returns false and
    /// takes the general path. A test checks the two agree.
    #[inline(always)]
    fn canonical(&self, f: &[u8], out: &mut Pending) -> bool {
        const IP: usize = ETH_LEN;
        const UDP: usize = IP + ipv4::HEADER_LEN;
        const GEN: usize = UDP + UDP_LEN;
        const INNER: usize = GEN + geneve::BASE_LEN + geneve::AWS_OPTIONS_LEN;
        let be16 = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let Some(h) = f.first_chunk::<INNER>() else { return false };
        let ip_total = be16(h, IP + 2) as usize;
        let udp_len = be16(h, UDP + 4) as usize;
        if h[IP] != 0x45
            || h[IP + 9] != ip_protocol::UDP
            || h[IP + 8] == 0
            || be16(h, IP + 6) & 0x3fff != 0
            || h[IP + 16..IP + 20] != self.cfg.ip.octets()
            || IP + ip_total > f.len()
            || be16(h, UDP + 2) != geneve::UDP_PORT
            || udp_len < INNER - UDP
            || UDP + udp_len > IP + ip_total
            || h[GEN] != ((geneve::AWS_OPTIONS_LEN / 4) as u8)
            || h[GEN + 1] & 0x80 != 0
        {
            return false;
        }
        let ip_header = h[IP..UDP].first_chunk().expect("20 bytes");
        if self.cfg.verify_ipv4_checksum && checksum::ipv4_header(ip_header) != 0xffff {
            return false;
        }
        let Ok(aws) = AwsOptions::parse(&h[GEN + geneve::BASE_LEN..INNER]) else { return false };
        // The inner packet: what UDP's length leaves after the Geneve header.
        let inner = &f[INNER..UDP + udp_len];
        let (src, dst, protocol, l4, total, ipv6) = match be16(h, GEN + 2) {
            0x0800 => {
                let Some(i) = inner.first_chunk::<{ ipv4::HEADER_LEN }>() else { return false };
                let total = be16(i, 2) as usize;
                if i[0] != 0x45 || be16(i, 6) & 0x3fff != 0 || total < ipv4::HEADER_LEN || total > inner.len() {
                    return false;
                }
                let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
                src[..4].copy_from_slice(&i[12..16]);
                dst[..4].copy_from_slice(&i[16..20]);
                (src, dst, i[9], ipv4::HEADER_LEN, total, false)
            }
            0x86DD => {
                let Some(i) = inner.first_chunk::<{ ipv6::HEADER_LEN }>() else { return false };
                let total = ipv6::HEADER_LEN + be16(i, 4) as usize;
                if i[0] >> 4 != 6 || total > inner.len() {
                    return false;
                }
                let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
                src.copy_from_slice(&i[8..24]);
                dst.copy_from_slice(&i[24..40]);
                (src, dst, i[6], ipv6::HEADER_LEN, total, true)
            }
            _ => return false,
        };
        let seg = &inner[l4..total];
        let (ports, tcp_flags) = match protocol {
            ip_protocol::TCP if seg.len() >= tcp::HEADER_LEN => ((be16(seg, 0), be16(seg, 2)), seg[13]),
            ip_protocol::UDP if seg.len() >= UDP_LEN => ((be16(seg, 0), be16(seg, 2)), 0),
            _ => return false,
        };
        let (key, dir) =
            FlowKey::new(u128::from_ne_bytes(src), ports.0, u128::from_ne_bytes(dst), ports.1, protocol, ipv6);
        *out = Pending {
            key,
            hash: 0,
            aws,
            dir,
            tcp_flags,
            fragment: Fragment::None,
            geneve_off: GEN as u16,
            geneve_len: (INNER - GEN) as u16,
            l4_offset: l4 as u16,
            total_len: total as u16,
        };
        true
    }

    #[inline(always)]
    fn act(&mut self, f: &mut [u8], p: &Pending, now: u64) -> Result<Verdict, DropCause> {
        let (aws, dir) = (&p.aws, p.dir);
        let (geneve_off, geneve_len) = (p.geneve_off as usize, p.geneve_len as usize);
        // The outer addressing, read again from the frame (its lines are in cache by now).
        let eth = EthernetFrame::new_unchecked(&*f);
        let gwlb_mac = eth.src_addr().0;
        let ip = Ipv4Packet::new_unchecked(&f[ETH_LEN..]);
        let gwlb_ip = ip.src_addr().octets();
        let udp_src_port = UdpPacket::new_unchecked(&f[geneve_off - UDP_LEN..]).src_port();
        let (i, new) = self.flow(p, now);
        let fp = fingerprint(aws.flow_cookie, udp_src_port, gwlb_ip);
        if self.table.fingerprint(i, dir) != fp {
            self.table.set_fingerprint(i, dir, fp);
            let m = &mut self.table.meta_mut(i).dir[dir as usize];
            if m.seen && m.flow_cookie != aws.flow_cookie {
                self.counters.cookie_changes += 1;
            }
            m.seen = true;
            m.gwlb_ip = gwlb_ip;
            m.gwlb_mac = gwlb_mac;
            m.udp_src_port = udp_src_port;
            m.vpc_endpoint_id = aws.vpc_endpoint_id;
            m.attachment_id = aws.attachment_id;
            m.flow_cookie = aws.flow_cookie;
            if geneve_len <= GENEVE_STORE {
                m.geneve[..geneve_len].copy_from_slice(&f[geneve_off..geneve_off + geneve_len]);
                m.geneve_len = geneve_len as u16;
            } else {
                m.geneve_len = 0;
                self.counters.geneve_header_too_long += 1;
            }
        }

        match self.table.entry(i).action {
            Action::Allow => {
                self.counters.fast_path += 1;
                self.return_to_gwlb(f);
                Ok(Verdict::Transmit)
            }
            Action::Intercept => {
                if p.fragment != Fragment::None {
                    return Err(DropCause::InterceptFragment);
                }
                self.counters.intercept += 1;
                Ok(Verdict::Intercept(Intercepted {
                    slot: i as u32,
                    from_client: dir == self.table.entry(i).initiator,
                    new,
                    inner_off: (geneve_off + geneve_len) as u16,
                    inner_len: p.total_len,
                    tcp_flags: p.tcp_flags,
                }))
            }
            Action::Drop { reset } => {
                if reset
                    && p.key.protocol == ip_protocol::TCP
                    && p.tcp_flags & tcp_flags::RST == 0
                    && p.fragment != Fragment::Later
                {
                    if let Some(len) = self.build_rst(f, geneve_off + geneve_len, &p.summary()) {
                        self.counters.rst_sent += 1;
                        return Ok(Verdict::TransmitLen(len));
                    }
                }
                Err(DropCause::PolicyDrop)
            }
            Action::Ask { .. } => {
                self.counters.acceptor_held += 1;
                let inner = geneve_off + geneve_len;
                let (off, len) = payload(&f[inner..], p);
                Ok(Verdict::Hold(Held {
                    slot: i as u32,
                    new,
                    from_client: dir == self.table.entry(i).initiator,
                    payload_off: (inner + off) as u16,
                    payload_len: len as u16,
                }))
            }
        }
    }

    /// Finds or starts the flow and tracks TCP; returns its slot, and whether the flow is new.
    #[inline(always)]
    fn flow(&mut self, p: &Pending, now: u64) -> (usize, bool) {
        let (key, hash, dir, vpce) = (&p.key, p.hash, p.dir, p.aws.vpc_endpoint_id);
        let policy = &self.policy;
        let hits = &mut self.rule_hits;
        let mut decide = || {
            let (a, r) = policy.decide(&p.summary(), vpce);
            let r = r.unwrap_or(policy.rules.len());
            hits[r] += 1;
            (a, r as u16)
        };
        let (i, found) = self.table.lookup_or_insert(key, hash, now, dir, &mut decide);
        let c = &mut self.counters;
        let mut new = found != Found::Existing;
        match found {
            Found::Existing => {}
            Found::New => c.flows_created += 1,
            Found::NewAfterExpiry => {
                c.flows_created += 1;
                c.flows_expired += 1;
            }
            Found::NewByEviction => {
                c.flows_created += 1;
                c.flows_evicted += 1;
            }
        }
        if key.protocol == ip_protocol::TCP {
            let syn_only = p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
            // A new SYN on a closed flow is a new connection reusing the ports.
            if !new && syn_only && self.table.entry(i).tcp_closed() {
                self.table.restart(i, now, dir, &mut decide);
                c.flows_created += 1;
                new = true;
            }
            if new && !syn_only {
                c.flows_midstream += 1;
            }
            self.table.track_tcp(i, dir, p.tcp_flags);
            // Interception needs the whole connection: one first seen mid-stream (GWLB
            // rebalanced it to us) stays on the fast path.
            if new && !syn_only && self.table.entry(i).action == Action::Intercept {
                self.table.set_action(i, Action::Allow);
                c.intercept_passed += 1;
            }
        } else if new && self.table.entry(i).action == Action::Intercept {
            // Only TCP is terminated; other protocols that a rule marks pass untouched.
            self.table.set_action(i, Action::Allow);
            c.intercept_passed += 1;
        }
        if new && self.acceptor {
            match self.table.entry(i).action {
                Action::Allow => self.table.set_action(i, Action::Ask { intercept: false }),
                Action::Intercept => self.table.set_action(i, Action::Ask { intercept: true }),
                Action::Drop { .. } | Action::Ask { .. } => {}
            }
        }
        (i, new)
    }

    /// An intercepted flow the interception layer cannot take (its TCP pairs are all in use):
    /// from now on the flow is passed on the fast path (`refuse` false) or refused with a RST
    /// (`refuse` true), starting with this packet. Returns what to do with the frame.
    pub fn demote(&mut self, f: &mut [u8], p: &Pending, slot: usize, refuse: bool) -> Verdict {
        self.counters.intercept_over_limit += 1;
        if refuse {
            self.table.set_action(slot, Action::Drop { reset: true });
            let inner_off = (p.geneve_off + p.geneve_len) as usize;
            if let Some(len) = self.build_rst(f, inner_off, &p.summary()) {
                self.counters.rst_sent += 1;
                return Verdict::TransmitLen(len);
            }
            self.counters.drop(DropCause::PolicyDrop);
            Verdict::Drop
        } else {
            self.table.set_action(slot, Action::Allow);
            self.counters.fast_path += 1;
            self.return_to_gwlb(f);
            Verdict::Transmit
        }
    }

    /// The outer headers (Ethernet, IPv4, UDP, Geneve) that carry a packet of the flow in `slot`
    /// in direction `dir` back to GWLB: the Geneve header as GWLB last sent it that way, the
    /// outer addresses swapped as on the fast path. None until GWLB sent a packet that way.
    pub fn outer(&self, slot: usize, dir: Direction) -> Option<Outer> {
        let m = &self.table.meta(slot).dir[dir as usize];
        if !m.seen || m.geneve_len == 0 {
            return None;
        }
        let g = m.geneve_len as usize;
        let mut o = Outer { buf: [0; OUTER_MAX], len: ETH_LEN + ipv4::HEADER_LEN + UDP_LEN + g };
        let b = &mut o.buf;
        b[0..6].copy_from_slice(&m.gwlb_mac);
        b[6..12].copy_from_slice(&self.cfg.mac);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut b[ETH_LEN..ETH_LEN + ipv4::HEADER_LEN];
        ip[0] = 0x45;
        ip[8] = self.cfg.outer_ttl;
        ip[9] = ip_protocol::UDP;
        ip[12..16].copy_from_slice(&self.cfg.ip.octets());
        ip[16..20].copy_from_slice(&m.gwlb_ip);
        let udp = ETH_LEN + ipv4::HEADER_LEN;
        b[udp..udp + 2].copy_from_slice(&m.udp_src_port.to_be_bytes());
        b[udp + 2..udp + 4].copy_from_slice(&geneve::UDP_PORT.to_be_bytes());
        b[udp + UDP_LEN..udp + UDP_LEN + g].copy_from_slice(&m.geneve[..g]);
        Some(o)
    }

    /// The flow's GWLB metadata for one direction (endpoint id, attachment id, cookie).
    pub fn dir_meta(&self, slot: usize, dir: Direction) -> &crate::flow::DirMeta {
        &self.table.meta(slot).dir[dir as usize]
    }

    /// Turns a received GWLB frame around: swap the outer MACs and IPs, keep the ports and the
    /// Geneve header, set the TTL, checksum fixed incrementally, UDP checksum 0.
    #[inline(always)]
    fn return_to_gwlb(&self, f: &mut [u8]) {
        let mut eth = EthernetFrame::new_unchecked(&mut *f);
        let src = eth.src_addr();
        eth.set_dst_addr(src);
        eth.set_src_addr(ethernet::Address(self.cfg.mac));
        let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH_LEN..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        let old = u16::from_be_bytes([ip.ttl(), ip.protocol()]);
        let new = u16::from_be_bytes([self.cfg.outer_ttl, ip.protocol()]);
        ip.set_ttl(self.cfg.outer_ttl);
        ip.set_checksum(checksum::update16(ip.checksum(), old, new));
        let ihl = ip.header_len();
        let mut udp = UdpPacket::new_unchecked(&mut f[ETH_LEN + ihl..]);
        udp.set_checksum(0);
    }

    /// Answers an ARP request for our address, in place.
    fn arp(&mut self, f: &mut [u8]) -> Result<Verdict, DropCause> {
        let pkt = arp::Packet::new_checked(&f[ETH_LEN..]).map_err(|_| DropCause::ArpMalformed)?;
        let repr = arp::Repr::parse(&pkt).map_err(|_| DropCause::ArpMalformed)?;
        let arp::Repr::EthernetIpv4 {
            operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, ..
        } = repr;
        if operation != arp::Operation::Request || target_protocol_addr != self.cfg.ip {
            return Err(DropCause::ArpNotForUs);
        }
        let reply = arp::Repr::EthernetIpv4 {
            operation: arp::Operation::Reply,
            source_hardware_addr: ethernet::Address(self.cfg.mac),
            source_protocol_addr: self.cfg.ip,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        reply.emit(&mut arp::Packet::new_unchecked(&mut f[ETH_LEN..ETH_LEN + reply.buffer_len()]));
        let mut eth = EthernetFrame::new_unchecked(&mut *f);
        eth.set_dst_addr(source_hardware_addr);
        eth.set_src_addr(ethernet::Address(self.cfg.mac));
        self.counters.arp_replies += 1;
        Ok(Verdict::Transmit)
    }

    /// Answers an ICMP echo request to our address, in place.
    fn icmp_echo(&mut self, f: &mut [u8], ihl: usize) -> Result<Verdict, DropCause> {
        let total = Ipv4Packet::new_unchecked(&f[ETH_LEN..]).total_len() as usize;
        let l4 = ETH_LEN + ihl..ETH_LEN + total;
        let icmp = icmpv4::Packet::new_checked(&f[l4.clone()]).map_err(|_| DropCause::IcmpMalformed)?;
        if !icmp.verify_checksum() {
            return Err(DropCause::IcmpMalformed);
        }
        if icmp.msg_type() != icmpv4::ECHO_REQUEST || icmp.code() != 0 {
            return Err(DropCause::IcmpUnsupported);
        }
        let mut icmp = icmpv4::Packet::new_unchecked(&mut f[l4]);
        icmp.set_msg_type(icmpv4::ECHO_REPLY);
        // A full recompute, not RFC 1624: an all-zero reply is the one case where the incremental
        // update yields 0x0000 instead of 0xffff, and pings are rare enough not to matter.
        icmp.fill_checksum();
        let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH_LEN..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_ttl(64);
        ip.fill_checksum();
        let mut eth = EthernetFrame::new_unchecked(&mut *f);
        let src = eth.src_addr();
        eth.set_dst_addr(src);
        eth.set_src_addr(ethernet::Address(self.cfg.mac));
        self.counters.icmp_replies += 1;
        // Frames may carry Ethernet padding past the IP packet; send exactly the reply.
        Ok(Verdict::TransmitLen(ETH_LEN + total))
    }

    /// Rewrites a denied TCP packet into the RST its sender should see (RFC 9293 §3.10.7.1),
    /// inside the same Geneve header, returned to GWLB. Returns the new frame length.
    fn build_rst(&self, f: &mut [u8], inner_off: usize, s: &Summary) -> Option<usize> {
        let seg = tcp::Packet::new_checked(f.get(inner_off + s.l4_offset..inner_off + s.total_len)?).ok()?;
        let (seq, ack, flags) = (seg.seq_number(), seg.ack_number(), seg.flags());
        let seg_len =
            seg.payload().len() as u32 + (flags & tcp_flags::SYN != 0) as u32 + (flags & tcp_flags::FIN != 0) as u32;
        let (rst_seq, rst_ack, rst_flags) = if flags & tcp_flags::ACK != 0 {
            (ack, 0, tcp_flags::RST)
        } else {
            (0, seq.wrapping_add(seg_len), tcp_flags::RST | tcp_flags::ACK)
        };
        let rst = tcp::Repr {
            src_port: s.dst_port,
            dst_port: s.src_port,
            flags: rst_flags,
            seq_number: rst_seq,
            ack_number: rst_ack,
            window_len: 0,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            timestamp: None,
            payload_len: 0,
        };
        let tcp_len = rst.buffer_len();
        let inner_len = if s.ip_version == 4 {
            let (src, dst) = (v4(&s.dst), v4(&s.src));
            let ip =
                ipv4::Repr { src_addr: src, dst_addr: dst, protocol: ip_protocol::TCP, payload_len: tcp_len, ttl: 64 };
            let ip_len = ipv4::HEADER_LEN;
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[inner_off..inner_off + ip.buffer_len()]));
            let mut t = tcp::Packet::new_unchecked(&mut f[inner_off + ip_len..inner_off + ip_len + tcp_len]);
            rst.emit(&mut t);
            t.fill_checksum_v4(src, dst);
            ip_len + tcp_len
        } else {
            let (src, dst) = (core::net::Ipv6Addr::from(s.dst), core::net::Ipv6Addr::from(s.src));
            let ip = ipv6::Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: ip_protocol::TCP,
                payload_len: tcp_len,
                hop_limit: 64,
            };
            let ip_len = ipv6::HEADER_LEN;
            ip.emit(&mut ipv6::Packet::new_unchecked(&mut f[inner_off..inner_off + ip.buffer_len()]));
            let mut t = tcp::Packet::new_unchecked(&mut f[inner_off + ip_len..inner_off + ip_len + tcp_len]);
            rst.emit(&mut t);
            t.fill_checksum_v6(&src, &dst);
            ip_len + tcp_len
        };
        let frame_len = inner_off + inner_len;
        let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH_LEN..frame_len]);
        ip.set_total_len((frame_len - ETH_LEN) as u16);
        let ihl = ip.header_len();
        ip.fill_checksum();
        let mut udp = UdpPacket::new_unchecked(&mut f[ETH_LEN + ihl..frame_len]);
        udp.set_len((frame_len - ETH_LEN - ihl) as u16);
        self.return_to_gwlb(&mut f[..frame_len]);
        Some(frame_len)
    }
}

fn v4(a: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(a[0], a[1], a[2], a[3])
}

/// The upper-layer payload of an inner packet: its offset from the packet's start and length
/// (TCP past its data offset, UDP past its header, ICMP past its 8 bytes; none for a later
/// fragment or a header that does not fit).
fn payload(inner: &[u8], p: &Pending) -> (usize, usize) {
    let (l4, end) = (p.l4_offset as usize, (p.total_len as usize).min(inner.len()));
    if p.fragment == Fragment::Later || l4 >= end {
        return (end, 0);
    }
    let hdr = match p.key.protocol {
        // A data offset under 5 words is malformed: never count header bytes as payload.
        ip_protocol::TCP => inner.get(l4 + 12).map_or(end, |b| (((b >> 4) as usize) * 4).max(tcp::HEADER_LEN)),
        ip_protocol::UDP | ip_protocol::ICMP | ip_protocol::ICMPV6 => 8,
        _ => 0,
    };
    let start = (l4 + hdr).min(end);
    (start, end - start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{GwlbFrame, Inner};
    use crate::policy::Rule;
    use core::net::IpAddr;
    use flowdog_wire::{Icmpv4Packet, TcpPacket};
    use proptest::prelude::*;

    const APP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const GW: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    fn fp(workers: usize, worker: usize, policy: Policy) -> FastPath {
        FastPath::new(
            FastPathConfig {
                ip: APP,
                mac: [2, 0, 0, 0, 0, 2],
                outer_ttl: 64,
                worker,
                workers,
                verify_ipv4_checksum: true,
                control: false,
            },
            policy,
            FlowTableConfig { capacity: 256, tcp_idle: 350, other_idle: 120, closed: 10 },
        )
    }

    /// A GWLB frame from GW to APP with this inner packet and flow cookie.
    fn gwlb(inner: Inner, cookie: u32) -> GwlbFrame {
        GwlbFrame {
            gwlb_mac: [2, 0, 0, 0, 0, 1],
            appliance_mac: [2, 0, 0, 0, 0, 2],
            gwlb_ip: GW,
            appliance_ip: APP,
            outer_src_port: 33000,
            outer_ttl: 7,
            vpc_endpoint_id: 9,
            attachment_id: 0,
            flow_cookie: cookie,
            inner,
        }
    }

    /// The inner endpoints of the tests, IPv4 or IPv6.
    fn endpoints(v6: bool) -> (IpAddr, IpAddr) {
        if v6 {
            ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
        } else {
            ("198.18.10.1".parse().unwrap(), "198.19.0.1".parse().unwrap())
        }
    }

    fn frame(sport: u16, dport: u16, flags: u8, cookie: u32) -> ([u8; 512], usize) {
        let (src, dst) = endpoints(false);
        let inner = Inner {
            src,
            dst,
            protocol: ip_protocol::TCP,
            src_port: sport,
            dst_port: dport,
            tcp_flags: flags,
            seq: 1000,
            ack: 5000,
            size: 60,
        };
        let f = gwlb(inner, cookie);
        let mut b = [0u8; 512];
        let n = f.emit(&mut b);
        (b, n)
    }

    #[test]
    fn returns_turned_around_with_valid_checksum() {
        let mut p = fp(1, 0, Policy::default());
        let (mut b, n) = frame(40000, 80, tcp_flags::SYN, 1);
        let orig = b;
        assert_eq!(p.handle(&mut b[..n], 0, false), Verdict::Transmit);
        let ip = Ipv4Packet::new_checked(&b[14..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl()), (APP, GW, 64));
        assert_eq!(&b[0..6], &orig[6..12]);
        assert_eq!(&b[36..38], &orig[36..38], "the UDP ports are kept");
        assert_eq!(&b[40..42], &[0, 0], "UDP checksum 0");
        assert_eq!(&b[42..n], &orig[42..n], "Geneve header and inner packet byte for byte");
        assert_eq!(p.counters.flows_created, 1);
        assert_eq!(p.counters.flows_midstream, 0);
        // The reverse direction hits the same flow; a new cookie is noticed.
        let (mut b, n) = frame(40000, 80, tcp_flags::ACK, 2);
        assert_eq!(p.handle(&mut b[..n], 1, false), Verdict::Transmit);
        assert_eq!(p.counters.flows_created, 1);
        assert_eq!(p.counters.cookie_changes, 1);
    }

    #[test]
    fn drops_count_by_cause() {
        let mut p = fp(1, 0, Policy::default());
        let (b0, n) = frame(1, 2, tcp_flags::ACK, 1);
        type Damage = fn(&mut [u8]);
        let cases: [(&str, Damage, DropCause); 6] = [
            ("fragment", |b| b[20] |= 0x20, DropCause::Ipv4Fragment),
            ("ttl 0", |b| b[22] = 0, DropCause::TtlExpired),
            ("not for us", |b| b[33] = 99, DropCause::Ipv4NotForUs),
            ("geneve version", |b| b[42] |= 0x40, DropCause::GeneveBadVersion),
            ("not geneve", |b| b[37] = 0x18, DropCause::UdpNotGeneve),
            ("bad protocol type", |b| b[45] = 0x01, DropCause::GeneveBadProtocol),
        ];
        for (what, damage, cause) in cases {
            let mut b = b0;
            damage(&mut b);
            // Keep the IPv4 checksum right so the intended check is the one that fails.
            Ipv4Packet::new_unchecked(&mut b[14..n]).fill_checksum();
            assert_eq!(p.handle(&mut b[..n], 0, false), Verdict::Drop, "{what}");
            assert_eq!(p.counters.dropped(cause), 1, "{what}");
        }
        let mut b = b0;
        b[24] ^= 1;
        assert_eq!(p.handle(&mut b[..n], 0, false), Verdict::Drop);
        assert_eq!(p.counters.dropped(DropCause::Ipv4BadChecksum), 1);
        assert_eq!(p.counters.total_drops(), 7);
        assert_eq!(p.counters.flows_created, 0);
    }

    #[test]
    fn steers_to_the_owner_and_owner_keeps_both_directions() {
        let mut owners = [0usize; 2];
        for sport in 1000..1100 {
            let mut a = fp(2, 0, Policy::default());
            let mut b = fp(2, 1, Policy::default());
            let (mut f, n) = frame(sport, 80, tcp_flags::SYN, 1);
            let mut g = f;
            let (va, vb) = (a.handle(&mut g[..n], 0, false), b.handle(&mut f[..n], 0, false));
            let owner = match (va, vb) {
                (Verdict::Transmit, Verdict::Steer(0)) => 0,
                (Verdict::Steer(1), Verdict::Transmit) => 1,
                v => panic!("{v:?}"),
            };
            owners[owner] += 1;
        }
        assert!(owners[0] > 20 && owners[1] > 20, "{owners:?}");
    }

    #[test]
    fn reset_policy_answers_with_rst_inside_geneve() {
        let policy = Policy {
            rules: vec![Rule {
                name: "deny".into(),
                src: None,
                dst: None,
                protocol: Some(6),
                src_ports: None,
                dst_ports: Some("22".parse().unwrap()),
                vpc_endpoint_id: Some(9),
                action: Action::Drop { reset: true },
            }],
            default: Action::Allow,
        };
        let mut p = fp(1, 0, policy);
        let (mut b, n) = frame(40000, 22, tcp_flags::PSH | tcp_flags::ACK, 1);
        let Verdict::TransmitLen(len) = p.handle(&mut b[..n], 0, false) else { panic!("no RST") };
        assert_eq!(len, 14 + 20 + 8 + 40 + 40);
        let ip = Ipv4Packet::new_checked(&b[14..len]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst_addr(), GW);
        let inner = Ipv4Packet::new_checked(&b[82..len]).unwrap();
        assert!(inner.verify_checksum());
        assert_eq!(inner.src_addr(), Ipv4Addr::new(198, 19, 0, 1));
        let t = TcpPacket::new_checked(inner.payload()).unwrap();
        assert!(t.verify_checksum_v4(inner.src_addr(), inner.dst_addr()));
        assert_eq!((t.src_port(), t.dst_port(), t.flags(), t.seq_number()), (22, 40000, tcp_flags::RST, 5000));
        assert_eq!(p.counters.rst_sent, 1);
        assert_eq!(p.rule_hits, vec![1, 0]);
        // A RST is never answered with a RST.
        let (mut b, n) = frame(40000, 22, tcp_flags::RST, 1);
        assert_eq!(p.handle(&mut b[..n], 1, false), Verdict::Drop);
        assert_eq!(p.counters.dropped(DropCause::PolicyDrop), 1);
    }

    #[test]
    fn intercept_hands_whole_tcp_flows_to_the_pairs() {
        let mut p = fp(1, 0, Policy { rules: vec![], default: Action::Intercept });
        let (src, dst) = endpoints(false);
        let tcp = |from_client: bool, sport: u16, flags: u8| {
            let (s, d, sp, dp) = if from_client { (src, dst, sport, 80) } else { (dst, src, 80, sport) };
            let inner = Inner {
                src: s,
                dst: d,
                protocol: ip_protocol::TCP,
                src_port: sp,
                dst_port: dp,
                tcp_flags: flags,
                seq: 1,
                ack: 1,
                size: 60,
            };
            let mut b = [0u8; 512];
            let n = gwlb(inner, 77).emit(&mut b);
            (b, n)
        };
        // The client's SYN and the server's answer: the same slot, each direction named.
        let (mut b, n) = tcp(true, 40000, tcp_flags::SYN);
        let Verdict::Intercept(v) = p.handle(&mut b[..n], 0, false) else { panic!("not intercepted") };
        assert!(v.from_client && v.new);
        assert_eq!((v.inner_off, v.inner_len), (82, 60));
        let (mut b, n) = tcp(false, 40000, tcp_flags::SYN | tcp_flags::ACK);
        let Verdict::Intercept(w) = p.handle(&mut b[..n], 1, false) else { panic!("not intercepted") };
        assert!(!w.from_client && !w.new);
        assert_eq!(w.slot, v.slot);
        assert_eq!(p.counters.intercept, 2);
        // The outer headers for the appliance's own packets towards the client: the Geneve header
        // GWLB sent that way, addressed back to GWLB, lengths and checksum for the inner packet.
        let to_client = p.table.entry(v.slot as usize).initiator.reverse();
        let o = p.outer(v.slot as usize, to_client).expect("GWLB sent that way");
        assert_eq!(o.len(), 82);
        let mut f = [0u8; 122];
        o.write(&mut f);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr(), ip.total_len()), (APP, GW, 108));
        assert_eq!(&f[36..38], &geneve::UDP_PORT.to_be_bytes());
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 88, "UDP length");
        assert_eq!(&f[42..82], &b[42..82], "the Geneve header as GWLB sent it");
        // Mid-stream (no SYN) and UDP flows stay on the fast path.
        let (mut b, n) = tcp(true, 40001, tcp_flags::ACK);
        assert_eq!(p.handle(&mut b[..n], 2, false), Verdict::Transmit);
        let (mut b, n) = tcp(true, 40001, tcp_flags::ACK);
        assert_eq!(p.handle(&mut b[..n], 3, false), Verdict::Transmit);
        assert_eq!(p.counters.intercept_passed, 1);
        let udp = Inner {
            src,
            dst,
            protocol: ip_protocol::UDP,
            src_port: 5000,
            dst_port: 53,
            tcp_flags: 0,
            seq: 0,
            ack: 0,
            size: 60,
        };
        let mut b = [0u8; 512];
        let n = gwlb(udp, 78).emit(&mut b);
        assert_eq!(p.handle(&mut b[..n], 4, false), Verdict::Transmit);
        assert_eq!(p.counters.intercept_passed, 2);
        // Over the limit: the interceptor gives the flow back, refused with a RST.
        let (mut b, n) = tcp(true, 40002, tcp_flags::SYN);
        let mut pend = Pending::default();
        assert_eq!(p.headers(&mut b[..n], false, &mut pend), Stage::Flow);
        let Verdict::Intercept(v) = p.flow_stage(&mut b[..n], &pend, 5) else { panic!("not intercepted") };
        let Verdict::TransmitLen(len) = p.demote(&mut b[..n], &pend, v.slot as usize, true) else { panic!("no RST") };
        let t = TcpPacket::new_checked(&b[82 + 20..len]).unwrap();
        assert_eq!(t.flags(), tcp_flags::RST | tcp_flags::ACK);
        assert_eq!(p.counters.intercept_over_limit, 1);
        let (mut b, n) = tcp(true, 40002, tcp_flags::SYN);
        assert!(matches!(p.handle(&mut b[..n], 6, false), Verdict::TransmitLen(_)), "refused from now on");
    }

    #[test]
    fn answers_arp_and_ping() {
        let mut p = fp(1, 0, Policy::default());
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        let req = arp::Repr::EthernetIpv4 {
            operation: arp::Operation::Request,
            source_hardware_addr: ethernet::Address([2, 0, 0, 0, 0, 1]),
            source_protocol_addr: GW,
            target_hardware_addr: ethernet::Address([0; 6]),
            target_protocol_addr: APP,
        };
        req.emit(&mut arp::Packet::new_unchecked(&mut f[14..42]));
        assert_eq!(p.handle(&mut f, 0, false), Verdict::Transmit);
        let r = arp::Repr::parse(&arp::Packet::new_checked(&f[14..42]).unwrap()).unwrap();
        let arp::Repr::EthernetIpv4 { operation, source_hardware_addr, target_protocol_addr, .. } = r;
        assert_eq!(operation, arp::Operation::Reply);
        assert_eq!(source_hardware_addr.0, [2, 0, 0, 0, 0, 2]);
        assert_eq!(target_protocol_addr, GW);

        let mut f = [0u8; 14 + 20 + 8 + 4 + 10];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        ipv4::Repr { src_addr: GW, dst_addr: APP, protocol: ip_protocol::ICMP, payload_len: 12, ttl: 9 }
            .emit(&mut Ipv4Packet::new_unchecked(&mut f[14..46]));
        let mut icmp = Icmpv4Packet::new_unchecked(&mut f[34..46]);
        icmp.set_msg_type(icmpv4::ECHO_REQUEST);
        icmp.fill_checksum();
        // 10 bytes of Ethernet padding after the IP packet are not echoed.
        assert_eq!(p.handle(&mut f, 0, false), Verdict::TransmitLen(46));
        let ip = Ipv4Packet::new_checked(&f[14..46]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst_addr(), GW);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), icmpv4::ECHO_REPLY);
        assert!(icmp.verify_checksum());
        assert_eq!((p.counters.arp_replies, p.counters.icmp_replies), (1, 1));
    }

    #[test]
    fn midstream_and_port_reuse() {
        let mut p = fp(1, 0, Policy::default());
        let (mut b, n) = frame(5, 6, tcp_flags::ACK, 1);
        p.handle(&mut b[..n], 0, false);
        assert_eq!(p.counters.flows_midstream, 1);
        let (mut b, n) = frame(5, 6, tcp_flags::RST, 1);
        p.handle(&mut b[..n], 1, false);
        let (mut b, n) = frame(5, 6, tcp_flags::SYN, 1);
        p.handle(&mut b[..n], 2, false);
        assert_eq!(p.counters.flows_created, 2, "a SYN after a RST starts a new flow");
    }

    /// Frames built like GWLB's, then bytes changed and cut, for the fast-lane agreement test.
    fn mangled_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            (any::<bool>(), 0u8..3, any::<u16>(), any::<u16>(), any::<u8>(), 0usize..120, any::<u32>()),
            prop::collection::vec((0usize..160, 0u8..3, any::<u8>()), 0..3),
            prop::option::of(0usize..260),
            any::<bool>(),
        )
            .prop_map(|((v6, p, sport, dport, flags, size, cookie), edits, cut, fix_checksum)| {
                let (src, dst) = endpoints(v6);
                let protocol = match (p, v6) {
                    (0, _) => ip_protocol::TCP,
                    (1, _) => ip_protocol::UDP,
                    (_, false) => ip_protocol::ICMP,
                    (_, true) => ip_protocol::ICMPV6,
                };
                let inner = Inner {
                    src,
                    dst,
                    protocol,
                    src_port: sport,
                    dst_port: dport,
                    tcp_flags: flags,
                    seq: 1,
                    ack: 2,
                    size,
                };
                let f = gwlb(inner, cookie);
                let mut b = vec![0u8; f.len()];
                f.emit(&mut b);
                // Each edit zeroes a byte, flips one of its bits, or sets it at random.
                for (i, how, v) in edits {
                    let i = i % b.len();
                    b[i] = match how {
                        0 => 0,
                        1 => b[i] ^ (1 << (v % 8)),
                        _ => v,
                    };
                }
                // Else most edits of the outer IPv4 header would only test its checksum.
                if fix_checksum {
                    let room = b.len() - ETH_LEN;
                    let mut ip = Ipv4Packet::new_unchecked(&mut b[ETH_LEN..]);
                    if ip.header_len() >= ipv4::HEADER_LEN && ip.header_len() <= room {
                        ip.fill_checksum();
                    }
                }
                if let Some(c) = cut {
                    b.truncate(c);
                }
                b
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// The fast lane for GWLB's usual frames decides exactly what the general checks decide.
        #[test]
        fn fast_lane_agrees_with_the_general_path(frame in mangled_frame()) {
            let (mut fast, mut general) = (fp(1, 0, Policy::default()), fp(1, 0, Policy::default()));
            let (mut f1, mut f2) = (frame.clone(), frame);
            let (mut p1, mut p2) = (Pending::default(), Pending::default());
            let r1 = fast.classify(&mut f1, false, &mut p1, true);
            let r2 = general.classify(&mut f2, false, &mut p2, false);
            prop_assert_eq!(r1, r2);
            if r1 == Ok(Stage::Flow) {
                prop_assert_eq!(p1, p2);
            }
            prop_assert_eq!(f1, f2);
            prop_assert_eq!(fast.counters, general.counters);
        }
    }

    #[test]
    fn fast_lane_takes_gwlb_frames() {
        let p = fp(1, 0, Policy::default());
        for v6 in [false, true] {
            for protocol in [ip_protocol::TCP, ip_protocol::UDP] {
                let (src, dst) = endpoints(v6);
                let inner = Inner {
                    src,
                    dst,
                    protocol,
                    src_port: 40000,
                    dst_port: 443,
                    tcp_flags: 0,
                    seq: 1,
                    ack: 2,
                    size: 64,
                };
                let f = gwlb(inner, 7);
                let mut buf = vec![0u8; f.len()];
                f.emit(&mut buf);
                let mut out = Pending::default();
                assert!(p.canonical(&buf, &mut out), "v6 {v6} protocol {protocol}");
                assert_eq!((out.key.lo_port.min(out.key.hi_port), out.key.protocol, out.key.ipv6), (443, protocol, v6));
            }
        }
    }

    /// An inner packet between the test endpoints, from the client (`src`) or back from the server.
    fn inner(
        v6: bool,
        from_client: bool,
        protocol: u8,
        client_port: u16,
        server_port: u16,
        flags: u8,
        size: usize,
    ) -> Inner {
        let (c, s) = endpoints(v6);
        let (src, dst, src_port, dst_port) =
            if from_client { (c, s, client_port, server_port) } else { (s, c, server_port, client_port) };
        Inner { src, dst, protocol, src_port, dst_port, tcp_flags: flags, seq: 1000, ack: 5000, size }
    }

    /// A GWLB frame (options of [`gwlb`]) carrying `inner`.
    fn pkt(inner: Inner, cookie: u32) -> ([u8; 512], usize) {
        let mut b = [0u8; 512];
        let n = gwlb(inner, cookie).emit(&mut b);
        (b, n)
    }

    /// The flow key of a frame, as the header stage finds it.
    fn key_of(p: &mut FastPath, frame: &[u8]) -> FlowKey {
        let mut f = frame.to_vec();
        let mut pend = Pending::default();
        assert_eq!(p.headers(&mut f, false, &mut pend), Stage::Flow);
        pend.key
    }

    fn held(v: Verdict) -> Held {
        let Verdict::Hold(h) = v else { panic!("not held: {v:?}") };
        h
    }

    fn acceptor(policy: Policy) -> FastPath {
        let mut p = fp(1, 0, policy);
        p.set_acceptor(true);
        p
    }

    #[test]
    fn acceptor_holds_udp_flow_then_accepted_goes_fast_path() {
        let mut p = acceptor(Policy::default());
        // 60-byte inner IPv4/UDP at 82: UDP header at 102, 32 bytes of payload at 110.
        let (mut b, n) = pkt(inner(false, true, ip_protocol::UDP, 5000, 53, 0, 60), 7);
        let (orig, first_len) = (b, n);
        let h = held(p.handle(&mut b[..n], 0, false));
        assert!(h.new && h.from_client, "{h:?}");
        assert_eq!((h.payload_off, h.payload_len), (110, 32));
        assert_eq!(
            &b[h.payload_off as usize..(h.payload_off + h.payload_len) as usize],
            b"flowdog-flowdog-flowdog-flowdog-"
        );
        assert_eq!(&b[..n], &orig[..n], "a held frame is untouched");
        let slot = h.slot as usize;
        assert_eq!(p.table.entry(slot).action, Action::Ask { intercept: false });
        // The flow's second packet, then the server's reply: same slot, not new.
        let (mut b, n) = pkt(inner(false, true, ip_protocol::UDP, 5000, 53, 0, 60), 7);
        let h2 = held(p.handle(&mut b[..n], 1, false));
        assert_eq!(h2, Held { slot: h.slot, new: false, from_client: true, payload_off: 110, payload_len: 32 });
        let (mut b, n) = pkt(inner(false, false, ip_protocol::UDP, 5000, 53, 0, 48), 8);
        let h3 = held(p.handle(&mut b[..n], 2, false));
        assert_eq!(h3, Held { slot: h.slot, new: false, from_client: false, payload_off: 110, payload_len: 20 });
        assert_eq!(&b[110..130], b"flowdog-flowdog-flow");
        assert_eq!((p.counters.acceptor_held, p.counters.fast_path, p.counters.flows_created), (3, 0, 1));

        // Accepted: from now on the fast path, frames rewritten as usual.
        let key = key_of(&mut p, &orig[..first_len]);
        assert!(p.decide(slot, &key, true, false));
        assert_eq!(p.table.entry(slot).action, Action::Allow);
        let (mut b, n) = pkt(inner(false, true, ip_protocol::UDP, 5000, 53, 0, 60), 7);
        let before = b;
        assert_eq!(p.handle(&mut b[..n], 3, false), Verdict::Transmit);
        let ip = Ipv4Packet::new_checked(&b[14..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl()), (APP, GW, 64));
        assert_eq!(&b[0..6], &before[6..12]);
        assert_eq!(&b[40..42], &[0, 0], "UDP checksum 0");
        assert_eq!(&b[42..n], &before[42..n], "Geneve header and inner packet kept");
        let (mut b, n) = pkt(inner(false, false, ip_protocol::UDP, 5000, 53, 0, 60), 8);
        assert_eq!(p.handle(&mut b[..n], 4, false), Verdict::Transmit);
        assert_eq!((p.counters.acceptor_held, p.counters.fast_path), (3, 2));
        // The flow no longer waits: a second answer is refused and changes nothing.
        assert!(!p.decide(slot, &key, false, true));
        assert_eq!(p.table.entry(slot).action, Action::Allow);
    }

    #[test]
    fn acceptor_denial_resets_tcp_and_drops_udp() {
        let mut p = acceptor(Policy::default());
        // A SYN without payload (40-byte inner packet): the payload is empty, at its end.
        let (mut b, n) = pkt(inner(false, true, ip_protocol::TCP, 40000, 80, tcp_flags::SYN, 40), 7);
        let orig = b;
        let h = held(p.handle(&mut b[..n], 0, false));
        assert!(h.new && h.from_client);
        assert_eq!((h.payload_off, h.payload_len), (122, 0));
        let key = key_of(&mut p, &orig[..n]);
        assert!(p.decide(h.slot as usize, &key, false, true));
        assert_eq!(p.table.entry(h.slot as usize).action, Action::Drop { reset: true });
        // The retransmitted SYN is answered with a RST|ACK for it, inside the Geneve header.
        let (mut b, n) = pkt(inner(false, true, ip_protocol::TCP, 40000, 80, tcp_flags::SYN, 40), 7);
        assert_eq!(p.handle(&mut b[..n], 1, false), Verdict::TransmitLen(82 + 40));
        let outer = Ipv4Packet::new_checked(&b[14..122]).unwrap();
        assert!(outer.verify_checksum());
        assert_eq!((outer.src_addr(), outer.dst_addr()), (APP, GW));
        let ip = Ipv4Packet::new_checked(&b[82..122]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 18, 10, 1)));
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(t.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
        assert_eq!(
            (t.src_port(), t.dst_port(), t.flags(), t.ack_number()),
            (80, 40000, tcp_flags::RST | tcp_flags::ACK, 1001)
        );
        assert_eq!((p.counters.rst_sent, p.counters.acceptor_held), (1, 1));

        // UDP denied without reset: dropped as policy.
        let (mut b, n) = pkt(inner(false, true, ip_protocol::UDP, 5000, 53, 0, 60), 9);
        let orig = b;
        let h = held(p.handle(&mut b[..n], 2, false));
        let key = key_of(&mut p, &orig[..n]);
        assert!(p.decide(h.slot as usize, &key, false, false));
        let (mut b, n) = pkt(inner(false, false, ip_protocol::UDP, 5000, 53, 0, 60), 9);
        assert_eq!(p.handle(&mut b[..n], 3, false), Verdict::Drop);
        let (mut b, n) = pkt(inner(false, true, ip_protocol::UDP, 5000, 53, 0, 60), 9);
        assert_eq!(p.handle(&mut b[..n], 4, false), Verdict::Drop);
        assert_eq!(p.counters.dropped(DropCause::PolicyDrop), 2);
        assert_eq!((p.counters.rst_sent, p.counters.acceptor_held, p.counters.fast_path), (1, 2, 0));
    }

    #[test]
    fn acceptor_accepts_intercepted_tcp_flows_into_interception() {
        let mut p = acceptor(Policy { rules: vec![], default: Action::Intercept });
        let (mut b, n) = pkt(inner(false, true, ip_protocol::TCP, 40000, 80, tcp_flags::SYN, 40), 7);
        let orig = b;
        let h = held(p.handle(&mut b[..n], 0, false));
        assert!(h.new && h.from_client);
        let slot = h.slot as usize;
        assert_eq!(p.table.entry(slot).action, Action::Ask { intercept: true });
        assert_eq!(p.counters.intercept, 0);
        let key = key_of(&mut p, &orig[..n]);
        assert!(p.decide(slot, &key, true, false));
        assert_eq!(p.table.entry(slot).action, Action::Intercept);
        // The held SYN, run through the flow stage again, now goes to the TCP pair.
        let (mut b, n) = pkt(inner(false, true, ip_protocol::TCP, 40000, 80, tcp_flags::SYN, 40), 7);
        let mut pend = Pending::default();
        assert_eq!(p.headers(&mut b[..n], false, &mut pend), Stage::Flow);
        let Verdict::Intercept(v) = p.flow_stage(&mut b[..n], &pend, 1) else { panic!("not intercepted") };
        assert_eq!(
            (v.slot, v.from_client, v.inner_off, v.inner_len, v.tcp_flags),
            (h.slot, true, 82, 40, tcp_flags::SYN)
        );
        let (mut b, n) = pkt(inner(false, false, ip_protocol::TCP, 40000, 80, tcp_flags::SYN | tcp_flags::ACK, 40), 8);
        let Verdict::Intercept(w) = p.handle(&mut b[..n], 2, false) else { panic!("not intercepted") };
        assert_eq!((w.slot, w.from_client, w.new), (h.slot, false, false));
        assert_eq!((p.counters.intercept, p.counters.acceptor_held, p.counters.flows_created), (2, 1, 1));
        // Mid-stream TCP under an Intercept policy is only ever allowed: held as Ask { intercept: false }.
        let (mut b, n) = pkt(inner(false, true, ip_protocol::TCP, 40001, 80, tcp_flags::ACK, 40), 7);
        let h = held(p.handle(&mut b[..n], 3, false));
        assert_eq!(p.table.entry(h.slot as usize).action, Action::Ask { intercept: false });
    }

    #[test]
    fn acceptor_skips_policy_drops_and_is_off_by_default() {
        let deny_ssh = |reset: bool| Policy {
            rules: vec![Rule {
                name: "deny".into(),
                src: None,
                dst: None,
                protocol: None,
                src_ports: None,
                dst_ports: Some("22".parse().unwrap()),
                vpc_endpoint_id: None,
                action: Action::Drop { reset },
            }],
            default: Action::Allow,
        };
        let mut p = acceptor(deny_ssh(false));
        let (mut b, n) = pkt(inner(false, true, ip_protocol::UDP, 5000, 22, 0, 60), 7);
        assert_eq!(p.handle(&mut b[..n], 0, false), Verdict::Drop);
        let (mut b, n) = pkt(inner(false, true, ip_protocol::TCP, 40000, 22, tcp_flags::SYN, 40), 7);
        assert_eq!(p.handle(&mut b[..n], 1, false), Verdict::Drop);
        assert_eq!((p.counters.dropped(DropCause::PolicyDrop), p.counters.acceptor_held), (2, 0));
        let mut p = acceptor(deny_ssh(true));
        let (mut b, n) = pkt(inner(false, true, ip_protocol::TCP, 40000, 22, tcp_flags::SYN, 40), 7);
        assert_eq!(p.handle(&mut b[..n], 0, false), Verdict::TransmitLen(122));
        assert_eq!((p.counters.rst_sent, p.counters.acceptor_held), (1, 0));
        // Without the acceptor nothing is held.
        let mut p = fp(1, 0, deny_ssh(false));
        for (i, protocol) in [ip_protocol::UDP, ip_protocol::TCP].into_iter().enumerate() {
            let (mut b, n) = pkt(inner(false, true, protocol, 5000, 80, tcp_flags::SYN, 60), 7);
            assert_eq!(p.handle(&mut b[..n], i as u64, false), Verdict::Transmit);
        }
        // Switched off again: new flows are no longer held.
        let mut p = acceptor(Policy::default());
        let (mut b, n) = pkt(inner(false, true, ip_protocol::UDP, 5000, 80, 0, 60), 7);
        assert!(matches!(p.handle(&mut b[..n], 0, false), Verdict::Hold(_)));
        p.set_acceptor(false);
        let (mut b, n) = pkt(inner(false, true, ip_protocol::UDP, 5001, 80, 0, 60), 7);
        assert_eq!(p.handle(&mut b[..n], 1, false), Verdict::Transmit);
        assert_eq!((p.counters.acceptor_held, p.counters.fast_path), (1, 1));
    }

    #[test]
    fn decide_checks_the_key_and_the_state() {
        let mut p = acceptor(Policy::default());
        let (mut a, n) = pkt(inner(false, true, ip_protocol::UDP, 5000, 53, 0, 60), 7);
        let a0 = a;
        let ha = held(p.handle(&mut a[..n], 0, false));
        let (mut b, m) = pkt(inner(false, true, ip_protocol::UDP, 5001, 53, 0, 60), 7);
        let b0 = b;
        let hb = held(p.handle(&mut b[..m], 1, false));
        assert_ne!(ha.slot, hb.slot);
        let (ka, kb) = (key_of(&mut p, &a0[..n]), key_of(&mut p, &b0[..m]));
        assert_ne!(ka, kb);
        // Another flow's key, or a key that is no flow's, does not decide the slot.
        assert!(!p.decide(ha.slot as usize, &kb, true, false));
        let mut other = ka;
        other.protocol = ip_protocol::TCP;
        assert!(!p.decide(ha.slot as usize, &other, true, false));
        assert_eq!(p.table.entry(ha.slot as usize).action, Action::Ask { intercept: false });
        let (mut a, n) = pkt(inner(false, true, ip_protocol::UDP, 5000, 53, 0, 60), 7);
        assert!(!held(p.handle(&mut a[..n], 2, false)).new, "still held");
        // The right key decides; a decided slot is not decided again.
        assert!(p.decide(hb.slot as usize, &kb, true, false));
        assert!(!p.decide(hb.slot as usize, &kb, true, false));
        assert_eq!(p.table.entry(ha.slot as usize).action, Action::Ask { intercept: false });
        assert_eq!(p.table.entry(hb.slot as usize).action, Action::Allow);
    }

    #[test]
    fn held_flow_names_the_initiator_and_its_gwlb_options() {
        for v6 in [false, true] {
            // Once with the client on the lower address, once on the higher.
            for client_first in [true, false] {
                let mut p = acceptor(Policy::default());
                let i = inner(v6, client_first, ip_protocol::TCP, 40000, 443, tcp_flags::SYN, 80);
                let mut f = gwlb(i, 0xdead_beef);
                f.vpc_endpoint_id = 0x1122_3344_5566_7788;
                f.attachment_id = 0x0102_0304_0506_0708;
                let mut b = [0u8; 512];
                let n = f.emit(&mut b);
                let h = held(p.handle(&mut b[..n], 0, false));
                // The responder answers under other options: the initiator's are kept.
                let mut r = gwlb(
                    inner(v6, !client_first, ip_protocol::TCP, 40000, 443, tcp_flags::SYN | tcp_flags::ACK, 80),
                    0x1234_5678,
                );
                r.vpc_endpoint_id = 5;
                r.attachment_id = 6;
                let mut b = [0u8; 512];
                let n = r.emit(&mut b);
                assert!(!held(p.handle(&mut b[..n], 1, false)).from_client);
                let addr = |a: IpAddr| -> [u8; 16] {
                    match a {
                        IpAddr::V4(a) => {
                            let mut x = [0u8; 16];
                            x[..4].copy_from_slice(&a.octets());
                            x
                        }
                        IpAddr::V6(a) => a.octets(),
                    }
                };
                let (c, s) = if client_first { endpoints(v6) } else { (endpoints(v6).1, endpoints(v6).0) };
                let (cp, sp) = if client_first { (40000, 443) } else { (443, 40000) };
                assert_eq!(
                    p.held_flow(h.slot as usize),
                    HeldFlow {
                        ipv6: v6,
                        protocol: ip_protocol::TCP,
                        client: (addr(c), cp),
                        server: (addr(s), sp),
                        vpc_endpoint_id: 0x1122_3344_5566_7788,
                        attachment_id: 0x0102_0304_0506_0708,
                        flow_cookie: 0xdead_beef,
                    },
                    "v6 {v6} client_first {client_first}"
                );
            }
        }
    }

    #[test]
    fn held_payload_skips_the_tcp_header_with_its_options() {
        let mut p = acceptor(Policy::default());
        // A 60-byte inner IPv4/TCP packet at 82 (TCP at 102), its header grown to 32 bytes by
        // options: MSS, NOP + window scale, NOP NOP + SACK permitted; 8 bytes of payload at 134.
        let (mut b, n) = pkt(inner(false, true, ip_protocol::TCP, 40000, 80, tcp_flags::PSH | tcp_flags::ACK, 60), 7);
        b[102 + 12] = 8 << 4;
        b[122..134].copy_from_slice(&[2, 4, 0x05, 0xb4, 1, 3, 3, 7, 1, 1, 4, 2]);
        b[134..142].copy_from_slice(b"GET / HT");
        TcpPacket::new_unchecked(&mut b[102..142])
            .fill_checksum_v4(Ipv4Addr::new(198, 18, 10, 1), Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(TcpPacket::new_checked(&b[102..142]).unwrap().header_len(), 32);
        let h = held(p.handle(&mut b[..n], 0, false));
        assert_eq!((h.payload_off, h.payload_len), (134, 8));
        assert_eq!(&b[134..142], b"GET / HT");
        // A plain 20-byte header over IPv6: inner at 82, TCP at 122, 20 bytes of payload at 142.
        let (mut b, n) = pkt(inner(true, true, ip_protocol::TCP, 40000, 80, tcp_flags::PSH | tcp_flags::ACK, 80), 7);
        let h = held(p.handle(&mut b[..n], 1, false));
        assert_eq!((h.payload_off, h.payload_len), (142, 20));
        assert_eq!(&b[142..162], b"flowdog-flowdog-flow");
        // A data offset past the segment leaves no payload.
        let (mut b, n) = pkt(inner(false, true, ip_protocol::TCP, 40001, 80, tcp_flags::ACK, 60), 7);
        b[102 + 12] = 15 << 4;
        let h = held(p.handle(&mut b[..n], 2, false));
        assert_eq!((h.payload_off, h.payload_len), (142, 0));
        // A data offset under 5 words is read as the 20-byte minimum, never as header bytes.
        let (mut b, n) = pkt(inner(false, true, ip_protocol::TCP, 40002, 80, tcp_flags::ACK, 60), 7);
        b[102 + 12] = 2 << 4;
        let h = held(p.handle(&mut b[..n], 3, false));
        assert_eq!((h.payload_off, h.payload_len), (122, 20));
    }
}
