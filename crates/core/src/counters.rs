//! Per-worker counters.
//!
//! Each worker owns a plain [`Counters`] and increments it without atomics. Every few
//! milliseconds (TSC-timed) it copies the whole struct into its own [`CounterSlot`], a set of
//! relaxed atomics that only it writes, and the control plane sums the slots. No cache line is
//! written by two cores.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! drop_causes {
    ($($(#[$m:meta])* $name:ident => $text:literal,)*) => {
        /// Why a packet was dropped. One counter each, so an operator can tell which check failed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum DropCause { $($(#[$m])* $name,)* }

        impl DropCause {
            pub const ALL: &'static [DropCause] = &[$(DropCause::$name,)*];
            pub const COUNT: usize = Self::ALL.len();
            /// The counter's name, as printed and exported.
            pub fn name(self) -> &'static str {
                match self { $(DropCause::$name => $text,)* }
            }
        }
    };
}

drop_causes! {
    /// Shorter than an Ethernet header.
    EthTruncated => "eth_truncated",
    /// Unicast to another MAC address.
    EthNotForUs => "eth_not_for_us",
    /// An EtherType other than IPv4, IPv6 or ARP (VLAN tags included).
    EthUnsupported => "eth_unsupported",
    ArpMalformed => "arp_malformed",
    /// ARP replies, and requests for other addresses.
    ArpNotForUs => "arp_not_for_us",
    /// Outer IPv6: GWLB always encapsulates in IPv4.
    OuterIpv6 => "outer_ipv6",
    Ipv4Truncated => "ipv4_truncated",
    Ipv4Malformed => "ipv4_malformed",
    Ipv4BadChecksum => "ipv4_bad_checksum",
    /// Addressed to another IP.
    Ipv4NotForUs => "ipv4_not_for_us",
    /// Outer TTL of 0.
    TtlExpired => "ttl_expired",
    /// Outer IPv4 fragments: GWLB does not fragment.
    Ipv4Fragment => "ipv4_fragment",
    IcmpMalformed => "icmp_malformed",
    /// ICMP to us other than echo request.
    IcmpUnsupported => "icmp_unsupported",
    /// TCP to the appliance's own address when it runs without a control interface.
    LocalTcp => "local_tcp",
    /// Another IP protocol to the appliance's own address.
    LocalProtocol => "local_protocol",
    UdpTruncated => "udp_truncated",
    /// UDP to a port other than 6081.
    UdpNotGeneve => "udp_not_geneve",
    GeneveTruncated => "geneve_truncated",
    GeneveBadVersion => "geneve_bad_version",
    /// The O (control) bit: no payload to forward.
    GeneveOam => "geneve_oam",
    /// A protocol type other than IPv4 (0x0800) or IPv6 (0x86DD).
    GeneveBadProtocol => "geneve_bad_protocol",
    /// Options that run past the header, or the AWS options missing or malformed.
    GeneveBadOptions => "geneve_bad_options",
    InnerTruncated => "inner_truncated",
    InnerMalformed => "inner_malformed",
    InnerUnsupported => "inner_unsupported",
    /// Denied by policy.
    PolicyDrop => "policy_drop",
    /// More than one mbuf segment (ports run without scatter; cannot happen with a big enough data room).
    MultiSegment => "multi_segment",
    /// The ring to the owner worker was full.
    RingFull => "ring_full",
    /// The PMD refused the packet on transmit.
    TxRefused => "tx_refused",
    /// The ring to the control plane's interface was full (health checks flooding in).
    ControlRingFull => "control_ring_full",
}

/// A worker's counters. Plain integers: only the owning worker writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    /// Packets returned to GWLB untouched but for the outer addresses (the fast path).
    pub fast_path: u64,
    /// Packets of flows that policy marks for interception (passed on the fast path until the
    /// interception layer exists).
    pub intercept: u64,
    /// TCP resets sent for denied flows.
    pub rst_sent: u64,
    pub arp_replies: u64,
    pub icmp_replies: u64,
    /// Packets handed to the owner worker over a ring.
    pub steered_out: u64,
    /// Packets received from other workers over a ring.
    pub steered_in: u64,
    pub flows_created: u64,
    pub flows_expired: u64,
    /// Flows pushed out of a full table to make room (table full).
    pub flows_evicted: u64,
    /// TCP flows first seen without a SYN (GWLB rebalanced them to us mid-stream).
    pub flows_midstream: u64,
    /// Flows whose GWLB flow cookie changed.
    pub cookie_changes: u64,
    /// Flows whose Geneve header was too long to store whole.
    pub geneve_header_too_long: u64,
    pub flows_active: u64,
    /// Frames for the appliance itself handed to the control interface (health checks).
    pub to_control: u64,
    /// Frames from the control interface transmitted by this worker.
    pub from_control: u64,
    pub drops: [u64; DropCause::COUNT],
}

impl Counters {
    #[inline(always)]
    pub fn drop(&mut self, cause: DropCause) {
        self.drops[cause as usize] += 1;
    }

    pub fn dropped(&self, cause: DropCause) -> u64 {
        self.drops[cause as usize]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds another worker's counters into this one.
    pub fn add(&mut self, o: &Counters) {
        let mut a = self.to_array();
        for (x, y) in a.iter_mut().zip(o.to_array()) {
            *x += y;
        }
        *self = Self::from_array(&a);
    }

    /// Every counter with its name, drops as `drop_<cause>`. Control plane only.
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = Self::SCALARS.iter().map(|n| n.to_string()).zip(self.to_array()).collect();
        v.truncate(Self::SCALARS.len());
        for c in DropCause::ALL {
            v.push((format!("drop_{}", c.name()), self.dropped(*c)));
        }
        v
    }

    const SCALARS: &'static [&'static str] = &[
        "rx_packets",
        "rx_bytes",
        "tx_packets",
        "fast_path",
        "intercept",
        "rst_sent",
        "arp_replies",
        "icmp_replies",
        "steered_out",
        "steered_in",
        "flows_created",
        "flows_expired",
        "flows_evicted",
        "flows_midstream",
        "cookie_changes",
        "geneve_header_too_long",
        "flows_active",
        "to_control",
        "from_control",
    ];
    const LEN: usize = Self::SCALARS.len() + DropCause::COUNT;

    fn to_array(&self) -> [u64; Self::LEN] {
        let mut a = [0u64; Self::LEN];
        let s = [
            self.rx_packets,
            self.rx_bytes,
            self.tx_packets,
            self.fast_path,
            self.intercept,
            self.rst_sent,
            self.arp_replies,
            self.icmp_replies,
            self.steered_out,
            self.steered_in,
            self.flows_created,
            self.flows_expired,
            self.flows_evicted,
            self.flows_midstream,
            self.cookie_changes,
            self.geneve_header_too_long,
            self.flows_active,
            self.to_control,
            self.from_control,
        ];
        a[..s.len()].copy_from_slice(&s);
        a[s.len()..].copy_from_slice(&self.drops);
        a
    }

    fn from_array(a: &[u64; Self::LEN]) -> Self {
        let mut drops = [0u64; DropCause::COUNT];
        drops.copy_from_slice(&a[Self::SCALARS.len()..]);
        Counters {
            rx_packets: a[0],
            rx_bytes: a[1],
            tx_packets: a[2],
            fast_path: a[3],
            intercept: a[4],
            rst_sent: a[5],
            arp_replies: a[6],
            icmp_replies: a[7],
            steered_out: a[8],
            steered_in: a[9],
            flows_created: a[10],
            flows_expired: a[11],
            flows_evicted: a[12],
            flows_midstream: a[13],
            cookie_changes: a[14],
            geneve_header_too_long: a[15],
            flows_active: a[16],
            to_control: a[17],
            from_control: a[18],
            drops,
        }
    }
}

/// Where one worker publishes its counters for the control plane. Written by that worker only.
#[repr(align(128))]
pub struct CounterSlot {
    values: [AtomicU64; Counters::LEN],
}

impl Default for CounterSlot {
    fn default() -> Self {
        CounterSlot { values: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl CounterSlot {
    /// Called by the owning worker: relaxed stores, no read-modify-write.
    pub fn publish(&self, c: &Counters) {
        for (slot, v) in self.values.iter().zip(c.to_array()) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// Called by the control plane.
    pub fn read(&self) -> Counters {
        let mut a = [0u64; Counters::LEN];
        for (x, slot) in a.iter_mut().zip(self.values.iter()) {
            *x = slot.load(Ordering::Relaxed);
        }
        Counters::from_array(&a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_read_add_round_trip() {
        let mut c = Counters { rx_packets: 5, flows_active: 2, ..Default::default() };
        c.drop(DropCause::TxRefused);
        c.drop(DropCause::EthTruncated);
        let slot = CounterSlot::default();
        slot.publish(&c);
        let r = slot.read();
        assert_eq!(r, c);
        let mut sum = r.clone();
        sum.add(&c);
        assert_eq!(sum.rx_packets, 10);
        assert_eq!(sum.dropped(DropCause::TxRefused), 2);
        assert!(sum.named().iter().any(|(n, v)| n == "drop_eth_truncated" && *v == 2));
        assert_eq!(c.named().len(), Counters::LEN);
    }
}
