//! Single-producer / single-consumer rings of mbufs between two lcores.
//!
//! The flow table is per worker and never shared; when RSS delivers a packet to a worker that
//! does not own its flow, the mbuf travels to the owner through one of these rings.

use crate::mbuf::Burst;
use crate::port::Pending;
use crate::{Error, Mbuf, Result};
use flowdog_dpdk_sys as sys;
use std::ffi::{c_void, CString};
use std::ptr::NonNull;
use std::sync::Arc;

struct Inner(NonNull<sys::rte_ring>);

// SAFETY: an SP/SC rte_ring is safe with one producer thread and one consumer thread; the
// halves below enforce that by being non-Clone and taking &mut self.
unsafe impl Send for Inner {}
// SAFETY: as above.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // Both halves are gone: free what is left in the ring, then the ring.
        let mut b: Burst<32> = Burst::new();
        loop {
            // SAFETY: nobody else uses the ring any more; the array has room for 32 pointers.
            let n = unsafe {
                sys::flowdog_ring_dequeue_burst(self.0.as_ptr(), b.ptrs.as_mut_ptr() as *mut *mut c_void, 32)
            } as usize;
            if n == 0 {
                break;
            }
            b.reset(n);
            while b.next().is_some() {}
        }
        // SAFETY: the ring is empty and unused.
        unsafe { sys::rte_ring_free(self.0.as_ptr()) };
    }
}

/// A ring of mbufs; split into its two ends by [`Ring::create`].
pub struct Ring;

impl Ring {
    /// Creates a ring with room for `size - 1` mbufs (`size` a power of two).
    pub fn create(name: &str, size: u32, socket: i32) -> Result<(RingProducer, RingConsumer)> {
        let cname = CString::new(name).map_err(|_| Error::new("rte_ring_create", name, libc::EINVAL))?;
        let flags = sys::RING_F_SP_ENQ | sys::RING_F_SC_DEQ;
        // SAFETY: cname is a valid C string; the EAL is initialised.
        let p = unsafe { sys::rte_ring_create(cname.as_ptr(), size, socket, flags) };
        let p = NonNull::new(p)
            .ok_or_else(|| Error::from_rte_errno("rte_ring_create", format!("ring {name:?} of {size}")))?;
        let inner = Arc::new(Inner(p));
        Ok((RingProducer { ring: inner.clone(), pending: Pending::new(), full: 0 }, RingConsumer { ring: inner }))
    }
}

/// The producing end: buffers mbufs and enqueues them in bursts.
pub struct RingProducer {
    ring: Arc<Inner>,
    pending: Pending<32>,
    /// Mbufs dropped because the ring was full.
    pub full: u64,
}

impl RingProducer {
    /// Queues one mbuf; enqueues the buffer when it is full.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) {
        self.pending.push(m);
        if self.pending.is_full() {
            self.flush();
        }
    }

    /// Enqueues what is buffered; what does not fit is freed and counted in `full`.
    #[inline(always)]
    pub fn flush(&mut self) {
        let r = self.ring.0.as_ptr();
        // SAFETY: the slice holds owned mbufs; the ring takes ownership of the first k;
        // &mut self makes this the only producer.
        let refused = self.pending.drain(|p| unsafe {
            sys::flowdog_ring_enqueue_burst(r, p.as_mut_ptr() as *const *mut c_void, p.len() as u32)
        } as usize);
        self.full += refused as u64;
    }
}

/// The consuming end.
pub struct RingConsumer {
    ring: Arc<Inner>,
}

impl RingConsumer {
    /// Dequeues up to N mbufs into `burst`, which must be empty.
    #[inline(always)]
    pub fn dequeue_burst<const N: usize>(&mut self, burst: &mut Burst<N>) -> usize {
        debug_assert!(burst.is_empty());
        // SAFETY: room for N pointers; &mut self makes this the only consumer.
        let n = unsafe {
            sys::flowdog_ring_dequeue_burst(self.ring.0.as_ptr(), burst.ptrs.as_mut_ptr() as *mut *mut c_void, N as u32)
        } as usize;
        burst.reset(n);
        n
    }

    /// Mbufs waiting.
    pub fn count(&self) -> u32 {
        // SAFETY: reading the ring's counters is safe from any thread.
        unsafe { sys::flowdog_ring_count(self.ring.0.as_ptr()) }
    }
}
