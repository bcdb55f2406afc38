//! Ethernet ports: configuration with RSS, rx/tx queues, fixed bursts, buffered transmit, stats.

use crate::mbuf::Burst;
use crate::{Error, Mbuf, Mempool, Result};
use flowdog_dpdk_sys as sys;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

// RTE_ETH_RSS_* are function-like macros in rte_ethdev.h, so bindgen cannot export them.
const RSS_IPV4: u64 = 1 << 2;
const RSS_FRAG_IPV4: u64 = 1 << 3;
const RSS_NONFRAG_IPV4_TCP: u64 = 1 << 4;
const RSS_NONFRAG_IPV4_UDP: u64 = 1 << 5;
const RSS_NONFRAG_IPV4_OTHER: u64 = 1 << 7;
const RSS_IPV6: u64 = 1 << 8;
const RSS_NONFRAG_IPV6_TCP: u64 = 1 << 10;
const RSS_NONFRAG_IPV6_UDP: u64 = 1 << 11;
const RSS_WANTED: u64 = RSS_IPV4
    | RSS_FRAG_IPV4
    | RSS_NONFRAG_IPV4_TCP
    | RSS_NONFRAG_IPV4_UDP
    | RSS_NONFRAG_IPV4_OTHER
    | RSS_IPV6
    | RSS_NONFRAG_IPV6_TCP
    | RSS_NONFRAG_IPV6_UDP;

/// How to set a port up.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Spread received packets over the rx queues by the NIC's hash (outer headers only on ENA).
    pub rss: bool,
    /// A 40-byte (or the device's size) Toeplitz key; None keeps the PMD's (random on ENA).
    pub rss_key: Option<Vec<u8>>,
    /// Set the port MTU; None leaves it as the device has it.
    pub mtu: Option<u16>,
    pub promiscuous: bool,
}

/// Port-level counters from `rte_eth_stats_get`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// An ethdev port (physical, or a virtual device given to the EAL with `--vdev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    id: u16,
}

impl Port {
    /// Finds a port by its device name (a vdev name such as `net_af_packet0`, or a PCI address).
    pub fn by_name(name: &str) -> Result<Port> {
        let cname = CString::new(name).map_err(|_| Error::new("rte_eth_dev_get_port_by_name", name, libc::EINVAL))?;
        let mut id = 0u16;
        // SAFETY: cname is a valid C string; id is a valid out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(Error::new("rte_eth_dev_get_port_by_name", format!("device {name:?}"), rc));
        }
        Ok(Port { id })
    }

    /// Every port the EAL probed, in id order.
    pub fn all() -> Vec<Port> {
        let mut out = Vec::new();
        for id in 0..sys::RTE_MAX_ETHPORTS as u16 {
            // SAFETY: any port id is accepted; returns 1 for attached ports.
            if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 1 {
                out.push(Port { id });
            }
        }
        out
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    /// The device name of the port.
    pub fn name(&self) -> String {
        let mut buf = [0 as libc::c_char; 64];
        // SAFETY: buf is large enough (RTE_ETH_NAME_MAX_LEN is 64) and writable.
        let rc = unsafe { sys::rte_eth_dev_get_name_by_port(self.id, buf.as_mut_ptr()) };
        if rc != 0 {
            return format!("port{}", self.id);
        }
        // SAFETY: on success buf holds a NUL-terminated string.
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    }

    fn info(&self) -> Result<sys::rte_eth_dev_info> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: info is a valid out-pointer.
        let rc = unsafe { sys::rte_eth_dev_info_get(self.id, &mut info) };
        if rc != 0 {
            return Err(Error::new("rte_eth_dev_info_get", format!("port {}", self.id), rc));
        }
        Ok(info)
    }

    /// Configures queues and RSS, sets the MTU, and starts the port. `pools[q]` feeds rx queue q.
    pub fn configure_and_start(&self, conf: &PortConfig, pools: &[Mempool]) -> Result<()> {
        let what = |s: &str| format!("port {} ({}): {s}", self.id, self.name());
        if pools.len() != conf.rx_queues as usize {
            return Err(Error::new("configure_and_start", what("one mempool per rx queue"), libc::EINVAL));
        }
        let info = self.info()?;
        if conf.rx_queues > info.max_rx_queues || conf.tx_queues > info.max_tx_queues {
            return Err(Error::new(
                "rte_eth_dev_configure",
                what(&format!(
                    "{} rx / {} tx queues asked, the device has at most {} / {}",
                    conf.rx_queues, conf.tx_queues, info.max_rx_queues, info.max_tx_queues
                )),
                libc::EINVAL,
            ));
        }
        let mut eth_conf = sys::rte_eth_conf::default();
        let mut key = conf.rss_key.clone();
        let rss_hf = RSS_WANTED & info.flow_type_rss_offloads;
        if conf.rss && conf.rx_queues > 1 && rss_hf != 0 {
            eth_conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            eth_conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            if let Some(k) = key.as_mut() {
                if info.hash_key_size != 0 && k.len() != info.hash_key_size as usize {
                    return Err(Error::new(
                        "rte_eth_dev_configure",
                        what(&format!("rss_key has {} bytes, the device wants {}", k.len(), info.hash_key_size)),
                        libc::EINVAL,
                    ));
                }
                eth_conf.rx_adv_conf.rss_conf.rss_key = k.as_mut_ptr();
                eth_conf.rx_adv_conf.rss_conf.rss_key_len = k.len() as u8;
            }
        }
        // SAFETY: eth_conf is a valid configuration; the rss key (if any) outlives the call.
        let rc = unsafe { sys::rte_eth_dev_configure(self.id, conf.rx_queues, conf.tx_queues, &eth_conf) };
        if rc != 0 {
            return Err(Error::new("rte_eth_dev_configure", what("configure"), rc));
        }
        if let Some(mtu) = conf.mtu {
            // SAFETY: plain call on a configured port.
            let rc = unsafe { sys::rte_eth_dev_set_mtu(self.id, mtu) };
            if rc != 0 {
                return Err(Error::new("rte_eth_dev_set_mtu", what(&format!("mtu {mtu}")), rc));
            }
        }
        // SAFETY: plain call on a configured port; returns the socket or -1 (SOCKET_ID_ANY).
        let socket = unsafe { sys::rte_eth_dev_socket_id(self.id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for (q, pool) in pools.iter().enumerate() {
            // SAFETY: the port is configured; a NULL rxconf takes the device defaults; the pool
            // outlives the port.
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(self.id, q as u16, conf.rx_desc, socket, std::ptr::null(), pool.as_ptr())
            };
            if rc != 0 {
                return Err(Error::new("rte_eth_rx_queue_setup", what(&format!("rx queue {q}")), rc));
            }
        }
        for q in 0..conf.tx_queues {
            // SAFETY: as above, with the tx defaults.
            let rc = unsafe { sys::rte_eth_tx_queue_setup(self.id, q, conf.tx_desc, socket, std::ptr::null()) };
            if rc != 0 {
                return Err(Error::new("rte_eth_tx_queue_setup", what(&format!("tx queue {q}")), rc));
            }
        }
        if conf.promiscuous {
            // SAFETY: plain call on a configured port. Failure is tolerated: some vdevs lack it.
            unsafe { sys::rte_eth_promiscuous_enable(self.id) };
        }
        // SAFETY: all queues are set up.
        let rc = unsafe { sys::rte_eth_dev_start(self.id) };
        if rc != 0 {
            return Err(Error::new("rte_eth_dev_start", what("start"), rc));
        }
        Ok(())
    }

    /// Stops and closes the port; its queues must no longer be polled.
    pub fn stop_and_close(&self) {
        // SAFETY: plain calls on a valid port id; errors only mean it was already stopped.
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
        }
    }

    /// The port's MAC address.
    pub fn mac_addr(&self) -> Result<[u8; 6]> {
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: a is a valid out-pointer.
        let rc = unsafe { sys::rte_eth_macaddr_get(self.id, &mut a) };
        if rc != 0 {
            return Err(Error::new("rte_eth_macaddr_get", format!("port {}", self.id), rc));
        }
        Ok(a.addr_bytes)
    }

    pub fn stats(&self) -> Result<PortStats> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: s is a valid out-pointer.
        let rc = unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        if rc != 0 {
            return Err(Error::new("rte_eth_stats_get", format!("port {}", self.id), rc));
        }
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Every extended statistic of the port, by name (on ENA this includes the
    /// `*_allowance_exceeded` limiter counters). Control plane only: it allocates.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        // SAFETY: a NULL array with size 0 asks for the count.
        let n = unsafe { sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(Error::new("rte_eth_xstats_get_names", format!("port {}", self.id), n));
        }
        let mut names = vec![sys::rte_eth_xstat_name::default(); n as usize];
        let mut vals = vec![sys::rte_eth_xstat::default(); n as usize];
        // SAFETY: both arrays have n entries.
        let got_n = unsafe { sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as u32) };
        // SAFETY: as above.
        let got_v = unsafe { sys::rte_eth_xstats_get(self.id, vals.as_mut_ptr(), n as u32) };
        if got_n < 0 || got_v < 0 {
            return Err(Error::new("rte_eth_xstats_get", format!("port {}", self.id), got_n.min(got_v)));
        }
        let k = (got_n.min(got_v)) as usize;
        Ok(vals[..k]
            .iter()
            .map(|v| {
                let name = names.get(v.id as usize).map(|nm| {
                    // SAFETY: DPDK writes NUL-terminated names into the fixed-size array.
                    unsafe { CStr::from_ptr(nm.name.as_ptr()) }.to_string_lossy().into_owned()
                });
                (name.unwrap_or_else(|| format!("xstat{}", v.id)), v.value)
            })
            .collect())
    }

    /// The receive side of queue `q`. Each queue must be polled by one lcore only.
    pub fn rx_queue(&self, q: u16) -> RxQueue {
        RxQueue { port: self.id, queue: q }
    }

    /// The transmit side of queue `q`. Each queue must be used by one lcore only.
    pub fn tx_queue(&self, q: u16) -> TxQueue {
        TxQueue { port: self.id, queue: q }
    }
}

/// One receive queue, owned by the lcore that polls it (Send, not Clone, not Sync).
pub struct RxQueue {
    port: u16,
    queue: u16,
}

impl RxQueue {
    /// Receives up to N packets into `burst`, which must be empty. Returns how many came.
    #[inline(always)]
    pub fn rx_burst<const N: usize>(&mut self, burst: &mut Burst<N>) -> usize {
        debug_assert!(burst.is_empty());
        // SAFETY: the array has room for N pointers; &mut self makes this lcore the only
        // poller of the queue.
        let n = unsafe { sys::flowdog_rx_burst(self.port, self.queue, burst.ptrs.as_mut_ptr(), N as u16) } as usize;
        burst.reset(n);
        n
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }
}

/// One transmit queue, owned by one lcore.
pub struct TxQueue {
    port: u16,
    queue: u16,
}

impl TxQueue {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }
}

/// A fixed array of owned mbuf pointers waiting to leave (to a tx queue or a ring).
pub(crate) struct Pending<const N: usize> {
    ptrs: [*mut sys::rte_mbuf; N],
    len: usize,
}

// SAFETY: the pending array owns the mbufs its pointers name (see Mbuf's Send).
unsafe impl<const N: usize> Send for Pending<N> {}

impl<const N: usize> Pending<N> {
    pub(crate) const fn new() -> Self {
        Pending { ptrs: [std::ptr::null_mut(); N], len: 0 }
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, m: Mbuf) {
        debug_assert!(self.len < N);
        self.ptrs[self.len] = m.into_raw().as_ptr();
        self.len += 1;
    }

    #[inline(always)]
    pub(crate) fn is_full(&self) -> bool {
        self.len == N
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Hands the pending mbufs to `send`, which takes ownership of the first k it reports;
    /// frees the rest. Returns how many were refused (freed).
    #[inline(always)]
    pub(crate) fn drain(&mut self, send: impl FnOnce(&mut [*mut sys::rte_mbuf]) -> usize) -> usize {
        if self.len == 0 {
            return 0;
        }
        let sent = send(&mut self.ptrs[..self.len]).min(self.len);
        let refused = self.len - sent;
        for p in &self.ptrs[sent..self.len] {
            // SAFETY: the refused pointers are still ours; each is freed once.
            drop(unsafe { Mbuf::from_raw(NonNull::new_unchecked(*p)) });
        }
        self.len = 0;
        refused
    }
}

impl<const N: usize> Drop for Pending<N> {
    fn drop(&mut self) {
        self.drain(|_| 0);
    }
}

/// Transmit buffering as in l3fwd: packets collect here and go out in one `tx_burst` when N are
/// waiting or when the worker's TSC timer says so. What the PMD refuses is freed and counted.
pub struct TxBuffer<const N: usize> {
    txq: TxQueue,
    pending: Pending<N>,
    /// Packets handed to the PMD.
    pub sent: u64,
    /// Packets the PMD refused (queue full), freed.
    pub refused: u64,
}

impl<const N: usize> TxBuffer<N> {
    pub fn new(txq: TxQueue) -> Self {
        TxBuffer { txq, pending: Pending::new(), sent: 0, refused: 0 }
    }

    /// Queues one packet; sends the whole buffer when it is full.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) {
        self.pending.push(m);
        if self.pending.is_full() {
            self.flush();
        }
    }

    /// Sends what is waiting.
    #[inline(always)]
    pub fn flush(&mut self) {
        let n = self.pending.len();
        let (port, queue) = (self.txq.port, self.txq.queue);
        // SAFETY: the slice holds owned, valid mbufs; tx_burst takes ownership of the first k.
        let refused = self
            .pending
            .drain(|p| unsafe { sys::flowdog_tx_burst(port, queue, p.as_mut_ptr(), p.len() as u16) } as usize);
        self.sent += (n - refused) as u64;
        self.refused += refused as u64;
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.len() == 0
    }
}

impl<const N: usize> Drop for TxBuffer<N> {
    fn drop(&mut self) {
        self.flush();
    }
}
