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
    /// An inner IP fragment of an intercepted flow (the TCP pair takes whole segments only).
    InterceptFragment => "intercept_fragment",
}

macro_rules! counters {
    ($($(#[$m:meta])* $name:ident,)*) => {
        /// A worker's counters. Plain integers: only the owning worker writes them.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$m])* pub $name: u64,)*
            pub drops: [u64; DropCause::COUNT],
        }

        impl Counters {
            const SCALARS: &'static [&'static str] = &[$(stringify!($name),)*];

            fn to_array(&self) -> [u64; Self::LEN] {
                let mut a = [0u64; Self::LEN];
                let s = [$(self.$name,)*];
                a[..s.len()].copy_from_slice(&s);
                a[s.len()..].copy_from_slice(&self.drops);
                a
            }

            fn from_array(a: &[u64; Self::LEN]) -> Self {
                let mut drops = [0u64; DropCause::COUNT];
                drops.copy_from_slice(&a[Self::SCALARS.len()..]);
                let mut it = a.iter().copied();
                Counters { $($name: it.next().unwrap_or(0),)* drops }
            }
        }
    };
}

counters! {
    rx_packets,
    rx_bytes,
    tx_packets,
    /// Packets returned to GWLB untouched but for the outer addresses (the fast path).
    fast_path,
    /// Packets handed to the interception layer (the flow's TCP pair).
    intercept,
    /// Flows that policy marks for interception but that stay on the fast path: not TCP, or first
    /// seen without a SYN (GWLB rebalanced them to us mid-stream).
    intercept_passed,
    /// New intercepted flows over the limit of TCP pairs: passed on the fast path, or refused
    /// with a RST, as `[intercept] when_full` says.
    intercept_over_limit,
    /// TCP resets sent for denied flows.
    rst_sent,
    /// The flow acceptor: packets held while it decided, flows it was asked about, accepted,
    /// denied, those decided by the timeout's default, those decided by the default without
    /// asking (too many flows waiting, or the plugin failed), and held packets dropped (the
    /// flow's queue was full).
    acceptor_held,
    acceptor_asked,
    acceptor_accepted,
    acceptor_denied,
    acceptor_timed_out,
    acceptor_defaulted,
    acceptor_queue_full,
    arp_replies,
    icmp_replies,
    /// Packets handed to the owner worker over a ring.
    steered_out,
    /// Packets received from other workers over a ring.
    steered_in,
    flows_created,
    flows_expired,
    /// Flows pushed out of a full table to make room (table full).
    flows_evicted,
    /// TCP flows first seen without a SYN (GWLB rebalanced them to us mid-stream).
    flows_midstream,
    /// Flows whose GWLB flow cookie changed.
    cookie_changes,
    /// Flows whose Geneve header was too long to store whole.
    geneve_header_too_long,
    flows_active,
    /// Frames for the appliance itself handed to the control interface (health checks).
    to_control,
    /// Frames from the control interface transmitted by this worker.
    from_control,
    /// TCP pairs (intercepted connections) now open, ever opened, and how they ended.
    tcp_pairs_active,
    tcp_pairs_created,
    tcp_pairs_closed,
    /// Torn down after idling past the TCP idle timeout, or a peer that stopped answering.
    tcp_pairs_timed_out,
    /// The server refused the upstream connection (RST): the client got a RST.
    tcp_upstream_refused,
    /// The server never answered the upstream SYN: the client got silence.
    tcp_upstream_unreachable,
    /// Packets the legs sent into the flows' Geneve tunnels.
    tcp_tx_packets,
    /// Packets the legs could not send: no mbuf, or no Geneve header for that direction yet.
    tcp_tx_no_mbuf,
    tcp_tx_no_header,
    /// Packets of intercepted flows whose TCP pair is gone (closed, timed out): dropped.
    tcp_no_pair,
    http_requests,
    http_responses,
    /// Requests the hook answered itself, or blocked.
    http_local_responses,
    http_blocked,
    /// Malformed requests (answered 400 by the HTTP server) and upstream failures (502, or a
    /// response cut short).
    http_bad_requests,
    http_upstream_errors,
    /// WebSocket connections proxied, messages passed, and protocol errors (connection closed).
    ws_connections,
    ws_messages,
    ws_errors,
    /// TLS connections intercepted: handshakes completed with the client (and of those, HTTP/2
    /// by ALPN).
    tls_intercepted,
    tls_h2,
    /// TLS flows relayed untouched after the ClientHello: the SNI is excluded from decryption,
    /// or no CA is configured.
    tls_excluded,
    tls_no_ca,
    /// ClientHellos that were not TLS, truncated, malformed or too large; clients that hung up
    /// before the handshake finished or failed it (they do not trust the root, for example).
    tls_bad_client_hello,
    tls_client_gone,
    tls_client_failed,
    /// Upstream certificates that failed verification (the client got an alert or a 502, as
    /// configured), and upstream handshakes that failed otherwise (garbage, an alert, a reset).
    tls_upstream_rejected,
    tls_upstream_failed,
    /// Leaves the control plane could not mint, or whose request found its queue full.
    tls_mint_failed,
    /// Plugin callbacks run, plugin failures (traps, deadlines, refusals to start), and
    /// exchanges a plugin stopped with a 500 (on_failure = "closed") or closed.
    plugin_calls,
    plugin_failures,
    plugin_stopped,
    /// Reloaded chains a worker took (its new connections run them).
    plugin_reloads,
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

    const LEN: usize = Self::SCALARS.len() + DropCause::COUNT;
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
