//! The per-worker flow table.
//!
//! Capacity is fixed when the table is made; nothing allocates afterwards. Entries live in
//! buckets of [`WAYS`] slots; a key may sit in either of two buckets chosen from its hash (the
//! "two choices" keep the load even, so the table fills to its capacity before it must evict).
//! A lookup reads one 16-byte tag array per bucket and compares full keys only on a tag match.
//! When both buckets are full, an expired entry is reused, else the least recently seen one is
//! evicted and counted.
//!
//! Idle timeouts follow GWLB's: TCP 350 s by default (60–6000 s), everything else 120 s. A TCP
//! flow that saw a RST, or a FIN each way, expires after the short `closed` timeout instead.
//! Expiry is lazy (a lookup that finds an expired entry starts the flow afresh) plus an
//! incremental sweep of a few buckets per loop, so idle flows free their slots.

use crate::policy::Action;
use flowdog_wire::inner::Summary;
use flowdog_wire::ip_protocol;
use flowdog_wire::tcp::flags as tcp_flags;

/// Slots per bucket.
pub const WAYS: usize = 8;
/// The Geneve header bytes stored per direction (AWS's is 40; unknown options may add some).
pub const GENEVE_STORE: usize = 64;

/// A flow's identity, the same for both directions: the two endpoints in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// The lower endpoint's address (IPv4 in the first 4 bytes).
    pub lo: [u8; 16],
    pub hi: [u8; 16],
    pub lo_port: u16,
    pub hi_port: u16,
    pub protocol: u8,
    pub ipv6: bool,
}

/// Which way a packet travels relative to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// From the `lo` endpoint to the `hi` endpoint.
    #[default]
    LoToHi = 0,
    HiToLo = 1,
}

impl Direction {
    /// The other way.
    #[inline(always)]
    pub fn reverse(self) -> Direction {
        match self {
            Direction::LoToHi => Direction::HiToLo,
            Direction::HiToLo => Direction::LoToHi,
        }
    }
}

impl FlowKey {
    /// The key of the flow `s` belongs to, and the direction of `s` within it.
    #[inline(always)]
    pub fn from_summary(s: &Summary) -> (FlowKey, Direction) {
        let (src, dst) = (u128::from_ne_bytes(s.src), u128::from_ne_bytes(s.dst));
        FlowKey::new(src, s.src_port, dst, s.dst_port, s.protocol, s.ip_version == 6)
    }

    /// The key of a packet from `src` to `dst` (addresses as `u128::from_ne_bytes` of the
    /// 16-byte form, IPv4 in the first 4 bytes), and its direction.
    #[inline(always)]
    pub fn new(src: u128, src_port: u16, dst: u128, dst_port: u16, protocol: u8, ipv6: bool) -> (FlowKey, Direction) {
        // Any total order of the endpoints works; comparing as integers is a few instructions,
        // where comparing the byte arrays lexicographically was a fifth of the fast path's time.
        let (lo, hi, lo_port, hi_port, dir) = if (src, src_port) <= (dst, dst_port) {
            (src, dst, src_port, dst_port, Direction::LoToHi)
        } else {
            (dst, src, dst_port, src_port, Direction::HiToLo)
        };
        (FlowKey { lo: lo.to_ne_bytes(), hi: hi.to_ne_bytes(), lo_port, hi_port, protocol, ipv6 }, dir)
    }
}

/// Timeouts and size, in the caller's clock (TSC ticks on a worker).
#[derive(Debug, Clone, Copy)]
pub struct FlowTableConfig {
    /// Flows the table holds at most (rounded up to a power-of-two number of buckets).
    pub capacity: usize,
    pub tcp_idle: u64,
    pub other_idle: u64,
    /// For TCP flows that saw a RST or both FINs.
    pub closed: u64,
}

const ST_FIN_LO: u8 = 1;
const ST_FIN_HI: u8 = 2;
const ST_RST: u8 = 4;

/// One flow: exactly one cache line, everything a packet of an established flow reads.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub struct Entry {
    pub key: FlowKey,
    pub last_seen: u64,
    pub action: Action,
    /// The policy rule that decided the action (u16::MAX: the default).
    pub rule: u16,
    /// The direction of the flow's first packet (the initiator sent it).
    pub initiator: Direction,
    tcp_state: u8,
    /// Per direction, a fingerprint of the outer addressing last stored in [`DirMeta`] (0: none
    /// yet), so a packet whose GWLB header did not change never touches the metadata's lines.
    fingerprint: [u32; 2],
}

const _: () = assert!(core::mem::size_of::<Entry>() == 64);

/// The fingerprint of a direction's outer addressing: the flow cookie, the outer UDP source port
/// and the GWLB's address. Never 0 (0 marks a direction not seen yet).
#[inline(always)]
pub fn fingerprint(cookie: u32, udp_src_port: u16, gwlb_ip: [u8; 4]) -> u32 {
    let x = ((cookie as u64) << 32 | u32::from_ne_bytes(gwlb_ip) as u64) ^ ((udp_src_port as u64) << 17);
    let m = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((m >> 32) as u32) | 1
}

impl Entry {
    const EMPTY: Entry = Entry {
        key: FlowKey { lo: [0; 16], hi: [0; 16], lo_port: 0, hi_port: 0, protocol: 0, ipv6: false },
        last_seen: 0,
        action: Action::Allow,
        rule: u16::MAX,
        initiator: Direction::LoToHi,
        tcp_state: 0,
        fingerprint: [0; 2],
    };

    /// True once the TCP flow saw a RST or a FIN each way.
    pub fn tcp_closed(&self) -> bool {
        self.tcp_state & ST_RST != 0 || self.tcp_state & (ST_FIN_LO | ST_FIN_HI) == ST_FIN_LO | ST_FIN_HI
    }
}

/// What the appliance needs to send its own packets into a flow later (RSTs now; the TCP
/// pair of the interception layer next): the last Geneve header and outer addressing seen in
/// each direction. Kept apart from [`Entry`] so lookups touch one cache line.
#[derive(Debug, Clone, Copy)]
pub struct DirMeta {
    pub seen: bool,
    pub gwlb_ip: [u8; 4],
    pub gwlb_mac: [u8; 6],
    pub udp_src_port: u16,
    pub vpc_endpoint_id: u64,
    pub attachment_id: u64,
    pub flow_cookie: u32,
    /// Length of `geneve`, or 0 when the header was longer than [`GENEVE_STORE`].
    pub geneve_len: u16,
    pub geneve: [u8; GENEVE_STORE],
}

impl DirMeta {
    const EMPTY: DirMeta = DirMeta {
        seen: false,
        gwlb_ip: [0; 4],
        gwlb_mac: [0; 6],
        udp_src_port: 0,
        vpc_endpoint_id: 0,
        attachment_id: 0,
        flow_cookie: 0,
        geneve_len: 0,
        geneve: [0; GENEVE_STORE],
    };
}

/// Per-flow metadata for both directions, indexed by [`Direction`].
#[derive(Debug, Clone, Copy)]
pub struct FlowMeta {
    pub dir: [DirMeta; 2],
}

/// What a lookup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A live flow.
    Existing,
    /// A new flow in a free slot.
    New,
    /// A new flow that replaced an expired one (the same key, or a stale entry).
    NewAfterExpiry,
    /// A new flow that evicted a live one: the table is full.
    NewByEviction,
}

/// The flow table of one worker.
pub struct FlowTable {
    cfg: FlowTableConfig,
    mask: usize,
    tags: Vec<[u16; WAYS]>,
    entries: Vec<Entry>,
    meta: Vec<FlowMeta>,
    len: usize,
    sweep_cursor: usize,
}

impl FlowTable {
    /// Makes a table of at least `cfg.capacity` flows. All memory is taken here.
    pub fn new(cfg: FlowTableConfig) -> Self {
        let buckets = cfg.capacity.div_ceil(WAYS).next_power_of_two().max(2);
        FlowTable {
            cfg,
            mask: buckets - 1,
            tags: vec![[0; WAYS]; buckets],
            entries: vec![Entry::EMPTY; buckets * WAYS],
            meta: vec![FlowMeta { dir: [DirMeta::EMPTY; 2] }; buckets * WAYS],
            len: 0,
            sweep_cursor: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Live (or not yet swept) flows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether an entry idled past its timeout: TCP's (or the short one once closed), or the
    /// one for everything else.
    #[inline(always)]
    fn expired(&self, e: &Entry, now: u64) -> bool {
        let timeout = if e.key.protocol != ip_protocol::TCP {
            self.cfg.other_idle
        } else if e.tcp_closed() {
            self.cfg.closed
        } else {
            self.cfg.tcp_idle
        };
        now.saturating_sub(e.last_seen) > timeout
    }

    /// The fingerprint stored for a direction (see [`fingerprint`]).
    #[inline(always)]
    pub fn fingerprint(&self, i: usize, dir: Direction) -> u32 {
        self.entries[i].fingerprint[dir as usize]
    }

    pub fn set_fingerprint(&mut self, i: usize, dir: Direction, fp: u32) {
        self.entries[i].fingerprint[dir as usize] = fp;
    }

    #[inline(always)]
    fn buckets(&self, hash: u64) -> (usize, usize, u16) {
        let b1 = hash as usize & self.mask;
        let b2 = ((hash >> 24) as usize ^ b1.wrapping_mul(0x5bd1_e995)) & self.mask;
        let b2 = if b2 == b1 { (b1 + 1) & self.mask } else { b2 };
        let tag = ((hash >> 48) as u16) | 1;
        (b1, b2, tag)
    }

    #[inline(always)]
    fn find_in(&self, b: usize, tag: u16, key: &FlowKey) -> Option<usize> {
        let entries = &self.entries[b * WAYS..b * WAYS + WAYS];
        for (w, (t, e)) in self.tags[b].iter().zip(entries).enumerate() {
            if *t == tag && e.key == *key {
                return Some(b * WAYS + w);
            }
        }
        None
    }

    /// Finds the flow of `key`, or makes room for it and starts it with `action`/`rule`.
    /// `initiator` is recorded for new flows. Returns the slot index and what happened.
    #[inline]
    pub fn lookup_or_insert(
        &mut self,
        key: &FlowKey,
        hash: u64,
        now: u64,
        initiator: Direction,
        decide: impl FnOnce() -> (Action, u16),
    ) -> (usize, Found) {
        let (b1, b2, tag) = self.buckets(hash);
        if let Some(i) = self.find_in(b1, tag, key).or_else(|| self.find_in(b2, tag, key)) {
            if !self.expired(&self.entries[i], now) {
                self.entries[i].last_seen = now;
                return (i, Found::Existing);
            }
            self.start(i, key, now, initiator, decide);
            return (i, Found::NewAfterExpiry);
        }
        // A free slot in the emptier bucket, else an expired entry, else the oldest.
        let free1 = self.tags[b1].iter().position(|t| *t == 0);
        let free2 = self.tags[b2].iter().position(|t| *t == 0);
        let load = |b: usize| self.tags[b].iter().filter(|t| **t != 0).count();
        let slot = match (free1, free2) {
            (Some(w1), Some(w2)) => Some(if load(b1) <= load(b2) { b1 * WAYS + w1 } else { b2 * WAYS + w2 }),
            (Some(w), None) => Some(b1 * WAYS + w),
            (None, Some(w)) => Some(b2 * WAYS + w),
            (None, None) => None,
        };
        let (i, found) = match slot {
            Some(i) => {
                self.len += 1;
                (i, Found::New)
            }
            None => {
                let mut oldest = b1 * WAYS;
                for i in (b1 * WAYS..b1 * WAYS + WAYS).chain(b2 * WAYS..b2 * WAYS + WAYS) {
                    if self.entries[i].last_seen < self.entries[oldest].last_seen {
                        oldest = i;
                    }
                }
                let f =
                    if self.expired(&self.entries[oldest], now) { Found::NewAfterExpiry } else { Found::NewByEviction };
                (oldest, f)
            }
        };
        self.tags[i / WAYS][i % WAYS] = tag;
        self.start(i, key, now, initiator, decide);
        (i, found)
    }

    fn start(
        &mut self,
        i: usize,
        key: &FlowKey,
        now: u64,
        initiator: Direction,
        decide: impl FnOnce() -> (Action, u16),
    ) {
        let (action, rule) = decide();
        self.entries[i] =
            Entry { key: *key, last_seen: now, action, rule, initiator, tcp_state: 0, fingerprint: [0; 2] };
        self.meta[i].dir[0].seen = false;
        self.meta[i].dir[1].seen = false;
    }

    /// Updates TCP close tracking with a packet's flags: a RST, or a FIN each way, switches the
    /// flow to the short `closed` timeout.
    #[inline(always)]
    pub fn track_tcp(&mut self, i: usize, dir: Direction, flags: u8) {
        let e = &mut self.entries[i];
        if flags & tcp_flags::RST != 0 {
            e.tcp_state |= ST_RST;
        }
        if flags & tcp_flags::FIN != 0 {
            e.tcp_state |= if dir == Direction::LoToHi { ST_FIN_LO } else { ST_FIN_HI };
        }
    }

    /// Forgets a flow now (a closed TCP flow about to be reused by a new SYN).
    pub fn restart(&mut self, i: usize, now: u64, initiator: Direction, decide: impl FnOnce() -> (Action, u16)) {
        let key = self.entries[i].key;
        self.start(i, &key, now, initiator, decide);
    }

    /// Changes a live flow's action (an intercepted flow that must stay on the fast path).
    pub fn set_action(&mut self, i: usize, action: Action) {
        self.entries[i].action = action;
    }

    pub fn entry(&self, i: usize) -> &Entry {
        &self.entries[i]
    }

    pub fn meta(&self, i: usize) -> &FlowMeta {
        &self.meta[i]
    }

    pub fn meta_mut(&mut self, i: usize) -> &mut FlowMeta {
        &mut self.meta[i]
    }

    /// The tag lines of the two buckets a flow with `hash` may sit in, for prefetching.
    #[inline(always)]
    pub fn tag_lines(&self, hash: u64) -> [*const u8; 2] {
        let (b1, b2, _) = self.buckets(hash);
        [self.tags[b1].as_ptr() as *const u8, self.tags[b2].as_ptr() as *const u8]
    }

    /// The entry whose tag matches `hash` (first in the first bucket), for prefetching. A tag
    /// match is not a key match; a wrong guess only wastes one prefetch.
    #[inline(always)]
    pub fn candidate_entry(&self, hash: u64) -> Option<*const u8> {
        let (b1, b2, tag) = self.buckets(hash);
        let way = |b: usize| self.tags[b].iter().position(|t| *t == tag).map(|w| b * WAYS + w);
        way(b1).or_else(|| way(b2)).map(|i| &self.entries[i] as *const Entry as *const u8)
    }

    /// Looks a flow up without creating or touching it.
    pub fn get(&self, key: &FlowKey, hash: u64) -> Option<&Entry> {
        let (b1, b2, tag) = self.buckets(hash);
        self.find_in(b1, tag, key).or_else(|| self.find_in(b2, tag, key)).map(|i| &self.entries[i])
    }

    /// Expires idle flows in the next `buckets` buckets. Returns how many expired.
    pub fn sweep(&mut self, now: u64, buckets: usize) -> usize {
        let mut n = 0;
        for _ in 0..buckets.min(self.mask + 1) {
            let b = self.sweep_cursor;
            self.sweep_cursor = (b + 1) & self.mask;
            for w in 0..WAYS {
                if self.tags[b][w] != 0 && self.expired(&self.entries[b * WAYS + w], now) {
                    self.tags[b][w] = 0;
                    self.len -= 1;
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::flow_hash;

    fn cfg(cap: usize) -> FlowTableConfig {
        FlowTableConfig { capacity: cap, tcp_idle: 350, other_idle: 120, closed: 10 }
    }

    fn key(i: u32, proto: u8) -> FlowKey {
        let mut lo = [0u8; 16];
        lo[..4].copy_from_slice(&i.to_be_bytes());
        FlowKey { lo, hi: [0xc6; 16], lo_port: 1000, hi_port: 80, protocol: proto, ipv6: false }
    }

    fn allow() -> (Action, u16) {
        (Action::Allow, u16::MAX)
    }

    #[test]
    fn both_directions_share_one_key() {
        let mut s = Summary {
            ip_version: 4,
            src: [0; 16],
            dst: [0; 16],
            protocol: 6,
            src_port: 40000,
            dst_port: 80,
            tcp_flags: 0,
            fragment: flowdog_wire::inner::Fragment::None,
            l4_offset: 20,
            total_len: 40,
        };
        s.src[..4].copy_from_slice(&[198, 18, 0, 10]);
        s.dst[..4].copy_from_slice(&[198, 18, 1, 20]);
        let (k1, d1) = FlowKey::from_summary(&s);
        core::mem::swap(&mut s.src, &mut s.dst);
        core::mem::swap(&mut s.src_port, &mut s.dst_port);
        let (k2, d2) = FlowKey::from_summary(&s);
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        assert_eq!(flow_hash(&k1), flow_hash(&k2));
    }

    #[test]
    fn insert_find_expire() {
        let mut t = FlowTable::new(cfg(64));
        let k = key(1, 6);
        let h = flow_hash(&k);
        assert_eq!(t.lookup_or_insert(&k, h, 0, Direction::LoToHi, allow).1, Found::New);
        assert_eq!(t.lookup_or_insert(&k, h, 100, Direction::HiToLo, || unreachable!()).1, Found::Existing);
        let (i, _) = t.lookup_or_insert(&k, h, 100, Direction::HiToLo, allow);
        assert_eq!(t.entry(i).initiator, Direction::LoToHi, "the first packet's direction is kept");
        // 350 idle ticks are allowed, 351 are not.
        assert_eq!(t.lookup_or_insert(&k, h, 450, Direction::LoToHi, allow).1, Found::Existing);
        assert_eq!(t.lookup_or_insert(&k, h, 801, Direction::HiToLo, allow).1, Found::NewAfterExpiry);
        let u = key(2, 17);
        let hu = flow_hash(&u);
        t.lookup_or_insert(&u, hu, 1000, Direction::LoToHi, allow);
        assert_eq!(t.len(), 2);
        assert_eq!(t.sweep(1121, 1 << 20), 1, "the UDP flow idles out after 120");
        assert_eq!(t.len(), 1);
        assert!(t.get(&u, hu).is_none() || t.get(&u, hu).is_some_and(|e| t.expired(e, 1121)));
    }

    #[test]
    fn closed_tcp_expires_early() {
        let mut t = FlowTable::new(cfg(64));
        let k = key(1, 6);
        let h = flow_hash(&k);
        let (i, _) = t.lookup_or_insert(&k, h, 0, Direction::LoToHi, allow);
        t.track_tcp(i, Direction::LoToHi, tcp_flags::FIN | tcp_flags::ACK);
        assert!(!t.entry(i).tcp_closed());
        t.track_tcp(i, Direction::HiToLo, tcp_flags::FIN | tcp_flags::ACK);
        assert!(t.entry(i).tcp_closed());
        assert_eq!(t.sweep(11, 1 << 20), 1);
        let (i, _) = t.lookup_or_insert(&k, h, 20, Direction::LoToHi, allow);
        t.track_tcp(i, Direction::HiToLo, tcp_flags::RST);
        assert_eq!(t.lookup_or_insert(&k, h, 25, Direction::LoToHi, allow).1, Found::Existing);
        assert_eq!(t.lookup_or_insert(&k, h, 36, Direction::LoToHi, allow).1, Found::NewAfterExpiry);
    }

    #[test]
    fn fills_to_capacity_then_evicts_the_oldest() {
        let mut t = FlowTable::new(FlowTableConfig { other_idle: u64::MAX / 2, ..cfg(1024) });
        let cap = t.capacity();
        let mut evicted = 0;
        let mut inserted = 0;
        for i in 0..cap as u32 {
            let k = key(i, 17);
            match t.lookup_or_insert(&k, flow_hash(&k), i as u64, Direction::LoToHi, allow).1 {
                Found::New => inserted += 1,
                Found::NewByEviction => evicted += 1,
                f => panic!("{f:?}"),
            }
        }
        assert!(inserted as f64 >= cap as f64 * 0.9, "two choices fill the table: {inserted}/{cap}");
        assert_eq!(inserted + evicted, cap);
        assert_eq!(t.len(), inserted);
        // The newest flows are all present.
        for i in (cap as u32 - 64)..cap as u32 {
            let k = key(i, 17);
            assert!(t.get(&k, flow_hash(&k)).is_some(), "flow {i}");
        }
    }
}
