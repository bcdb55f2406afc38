//! Safe DPDK for flowdog: the only crate where the appliance calls into C.
//!
//! Layers, bottom to top:
//! - [`eal`]: EAL start-up and teardown, lcores, the TSC, thread affinity for control-plane threads.
//! - [`mempool`] and [`mbuf`]: packet buffers; [`Mbuf`] owns one `rte_mbuf` and frees it on drop.
//! - [`port`]: ethdev ports with N rx/tx queues and RSS, fixed-size bursts, a buffered transmit
//!   queue that frees and counts what the PMD refuses, basic stats and xstats.
//! - [`ring`]: single-producer / single-consumer `rte_ring`s that move mbufs between workers.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment. Nothing here allocates per packet.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod eal;
pub mod mbuf;
pub mod mempool;
pub mod port;
pub mod ring;

pub use eal::{Eal, LcoreId};
pub use mbuf::{Burst, Mbuf};
pub use mempool::Mempool;
pub use port::{Port, PortConfig, RxQueue, TxBuffer, TxQueue};
pub use ring::{Ring, RingConsumer, RingProducer};

use std::ffi::CStr;
use std::fmt;

/// An error from a DPDK call: which call failed, on what, and DPDK's own reason.
#[derive(Debug, Clone)]
pub struct Error {
    /// The DPDK function that failed.
    pub call: &'static str,
    /// What it was called on (a port, a pool name, an argument list).
    pub what: String,
    /// The errno DPDK reported (positive), or 0.
    pub errno: i32,
}

impl Error {
    pub(crate) fn new(call: &'static str, what: impl Into<String>, errno: i32) -> Self {
        Error { call, what: what.into(), errno: errno.abs() }
    }

    /// An error whose cause is in `rte_errno`.
    pub(crate) fn from_rte_errno(call: &'static str, what: impl Into<String>) -> Self {
        // SAFETY: reads the calling thread's rte_errno; no preconditions.
        let errno = unsafe { flowdog_dpdk_sys::flowdog_errno() };
        Self::new(call, what, errno)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
        let reason = unsafe { CStr::from_ptr(flowdog_dpdk_sys::rte_strerror(self.errno)) };
        write!(f, "{} failed on {}: {} (errno {})", self.call, self.what, reason.to_string_lossy(), self.errno)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// The DPDK version string the binary runs against, such as "DPDK 22.11.11".
pub fn version() -> String {
    // SAFETY: rte_version returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(flowdog_dpdk_sys::flowdog_version()) }.to_string_lossy().into_owned()
}
