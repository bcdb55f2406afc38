//! Owned mbufs and fixed-size bursts of them.

use crate::{Error, Mempool, Result};
use flowdog_dpdk_sys as sys;
use std::ptr::NonNull;

/// Byte offsets of the `struct rte_mbuf` fields read on the fast path, for DPDK 22.11 on x86_64.
/// `Eal::init` checks them against the shim's `offsetof` values, so a mismatch stops the start.
pub(crate) mod layout {
    pub const BUF_ADDR: usize = 0;
    pub const DATA_OFF: usize = 16;
    pub const NB_SEGS: usize = 20;
    pub const PKT_LEN: usize = 36;
    pub const DATA_LEN: usize = 40;
}

/// One packet buffer, owned. Dropping it returns it to its pool; transmitting it hands it to
/// the PMD. Only the first segment's data is exposed: ports are configured without scatter, so
/// every received packet fits in one segment.
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one Mbuf value; moving it to another thread moves the
// ownership (DPDK allows freeing an mbuf on any lcore).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes one mbuf from `pool`, with length 0.
    pub fn alloc(pool: &Mempool) -> Result<Mbuf> {
        // SAFETY: the pool pointer is valid for the life of the process.
        let p = unsafe { sys::flowdog_pktmbuf_alloc(pool.as_ptr()) };
        NonNull::new(p).map(Mbuf).ok_or_else(|| Error::new("rte_pktmbuf_alloc", "mempool (empty)", libc::ENOBUFS))
    }

    /// Takes ownership of a raw mbuf pointer.
    ///
    /// # Safety
    /// `p` must be a valid mbuf that nothing else owns or will free.
    #[inline(always)]
    pub unsafe fn from_raw(p: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf(p)
    }

    /// Gives up ownership without freeing.
    #[inline(always)]
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let p = self.0;
        std::mem::forget(self);
        p
    }

    #[inline(always)]
    fn field<T: Copy>(&self, off: usize) -> T {
        // SAFETY: self.0 is a valid rte_mbuf and `off` is the offset of a field of type T
        // (checked against the headers at EAL init).
        unsafe { (self.0.as_ptr() as *const u8).add(off).cast::<T>().read() }
    }

    /// Length of the data in the first segment.
    #[inline(always)]
    pub fn data_len(&self) -> usize {
        self.field::<u16>(layout::DATA_LEN) as usize
    }

    /// Length of the whole packet (all segments).
    #[inline(always)]
    pub fn pkt_len(&self) -> usize {
        self.field::<u32>(layout::PKT_LEN) as usize
    }

    /// Number of segments.
    #[inline(always)]
    pub fn segments(&self) -> u16 {
        self.field::<u16>(layout::NB_SEGS)
    }

    #[inline(always)]
    fn data_ptr(&self) -> *mut u8 {
        let buf: *mut u8 = self.field(layout::BUF_ADDR);
        let off: u16 = self.field(layout::DATA_OFF);
        // SAFETY: buf_addr + data_off is the start of the data inside the mbuf's buffer.
        unsafe { buf.add(off as usize) }
    }

    /// The packet data (first segment).
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        // SAFETY: data_ptr points at data_len initialised bytes owned by this mbuf, which
        // stays alive and unaliased for the borrow.
        unsafe { std::slice::from_raw_parts(self.data_ptr(), self.data_len()) }
    }

    /// The packet data (first segment), writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(), and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(), self.data_len()) }
    }

    /// Grows the packet by `n` bytes at the end; returns false if there is no tailroom.
    pub fn append(&mut self, n: usize) -> bool {
        let Ok(n) = u16::try_from(n) else { return false };
        // SAFETY: self.0 is a valid mbuf we own; append fails cleanly (NULL) without room.
        !unsafe { sys::flowdog_pktmbuf_append(self.0.as_ptr(), n) }.is_null()
    }

    /// Shrinks the packet by `n` bytes at the end; returns false if it is shorter than `n`.
    pub fn trim(&mut self, n: usize) -> bool {
        let Ok(n) = u16::try_from(n) else { return false };
        // SAFETY: self.0 is a valid mbuf we own; trim checks the length itself.
        unsafe { sys::flowdog_pktmbuf_trim(self.0.as_ptr(), n) == 0 }
    }

    /// Sets the data length to `len`, growing or shrinking at the end.
    pub fn set_len(&mut self, len: usize) -> bool {
        let cur = self.data_len();
        if len >= cur {
            self.append(len - cur)
        } else {
            self.trim(cur - len)
        }
    }

    /// Copies `bytes` into a new mbuf from `pool`.
    pub fn from_bytes(pool: &Mempool, bytes: &[u8]) -> Result<Mbuf> {
        let mut m = Mbuf::alloc(pool)?;
        if !m.append(bytes.len()) {
            return Err(Error::new("rte_pktmbuf_append", format!("mbuf ({} bytes)", bytes.len()), libc::ENOSPC));
        }
        m.data_mut().copy_from_slice(bytes);
        Ok(m)
    }
}

impl Drop for Mbuf {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; nobody else frees it.
        unsafe { sys::flowdog_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// A burst of up to `N` received mbufs in a fixed array: no allocation per burst.
pub struct Burst<const N: usize> {
    pub(crate) ptrs: [*mut sys::rte_mbuf; N],
    pub(crate) len: usize,
    pub(crate) next: usize,
}

// SAFETY: the burst owns the mbufs its pointers name (see Mbuf's Send).
unsafe impl<const N: usize> Send for Burst<N> {}

impl<const N: usize> Default for Burst<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Burst<N> {
    pub const fn new() -> Self {
        Burst { ptrs: [std::ptr::null_mut(); N], len: 0, next: 0 }
    }

    /// Mbufs not yet taken.
    pub fn len(&self) -> usize {
        self.len - self.next
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the next mbuf of the burst.
    #[inline(always)]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.len {
            return None;
        }
        let p = self.ptrs[self.next];
        self.next += 1;
        // SAFETY: entries [next, len) were filled by rx_burst / ring dequeue with valid mbufs
        // that this burst owns; each is handed out once.
        NonNull::new(p).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    /// Peeks at the data of the mbuf `ahead` positions after the next one, to prefetch it.
    #[inline(always)]
    pub fn prefetch(&self, ahead: usize) {
        let i = self.next + ahead;
        if i < self.len {
            let p = self.ptrs[i];
            // SAFETY: p is a valid mbuf owned by this burst; reading its header fields is fine
            // and _mm_prefetch never faults.
            unsafe {
                let m = std::mem::ManuallyDrop::new(Mbuf(NonNull::new_unchecked(p)));
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(m.data_ptr() as *const i8);
            }
        }
    }

    pub(crate) fn reset(&mut self, len: usize) {
        debug_assert!(self.is_empty());
        self.len = len;
        self.next = 0;
    }
}

impl<const N: usize> Drop for Burst<N> {
    fn drop(&mut self) {
        while self.next().is_some() {}
    }
}
