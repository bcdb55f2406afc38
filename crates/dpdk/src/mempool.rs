//! Packet buffer pools.

use crate::{Error, Result};
use flowdog_dpdk_sys as sys;
use std::ffi::CString;
use std::ptr::NonNull;

/// A pool of mbufs. Pools live until the EAL is cleaned up: an mbuf returns to its pool when
/// freed, so freeing a pool while any of its mbufs is alive would be use-after-free. This handle
/// therefore never frees the pool and is freely copyable.
#[derive(Clone, Copy)]
pub struct Mempool(NonNull<sys::rte_mempool>);

// SAFETY: rte_mempool is designed for concurrent use from many lcores (per-lcore caches plus
// a lock-free ring); the handle is just a pointer to it.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs of `data_room` bytes (headroom included) each, with a
    /// per-lcore cache of `cache` mbufs, on NUMA socket `socket`.
    pub fn new(name: &str, n: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool> {
        let cname = CString::new(name)
            .map_err(|_| Error::new("rte_pktmbuf_pool_create", format!("pool {name:?}"), libc::EINVAL))?;
        // SAFETY: cname is a valid C string for the duration of the call; the EAL is initialised
        // (callers hold an Eal; without one the call fails with an errno instead).
        let p = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        NonNull::new(p).map(Mempool).ok_or_else(|| {
            Error::from_rte_errno(
                "rte_pktmbuf_pool_create",
                format!("pool {name:?} ({n} mbufs of {data_room} bytes on socket {socket})"),
            )
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.0.as_ptr()
    }

    /// Mbufs currently free in the pool (includes the per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid for the life of the process.
        unsafe { sys::rte_mempool_avail_count(self.0.as_ptr()) }
    }

    /// Mbufs currently taken from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: as above.
        unsafe { sys::rte_mempool_in_use_count(self.0.as_ptr()) }
    }
}
