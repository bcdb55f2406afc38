//! EAL start-up, lcores, the TSC, and CPU affinity for the threads that are not workers.

use crate::{Error, Result};
use flowdog_dpdk_sys as sys;
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};

/// An lcore id as DPDK numbers them (not a CPU number: `--lcores` maps one to the other).
pub type LcoreId = u32;

static STARTED: AtomicBool = AtomicBool::new(false);

/// The running EAL. Only one may exist per process; dropping it calls `rte_eal_cleanup`.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Starts the EAL with `args` (without the program name). The calling thread becomes the
    /// main lcore and is pinned by DPDK to its CPU set; threads it spawns afterwards inherit
    /// that pinning, so give control-plane threads their own affinity with [`set_thread_affinity`].
    pub fn init(args: &[String]) -> Result<Eal> {
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(Error::new("rte_eal_init", "the process (EAL already started)", libc::EALREADY));
        }
        let mut argv_owned: Vec<CString> = Vec::with_capacity(args.len() + 1);
        argv_owned.push(CString::new("flowdog").expect("no NUL in a literal"));
        for a in args {
            argv_owned.push(
                CString::new(a.as_str())
                    .map_err(|_| Error::new("rte_eal_init", format!("argument {a:?} (contains NUL)"), libc::EINVAL))?,
            );
        }
        // The EAL may keep pointers into argv (device arguments), so the strings live for the
        // rest of the process.
        let argv_owned: &'static mut Vec<CString> = Box::leak(Box::new(argv_owned));
        let argv: &'static mut Vec<*mut libc::c_char> =
            Box::leak(Box::new(argv_owned.iter().map(|s| s.as_ptr() as *mut libc::c_char).collect()));
        // SAFETY: argv holds argc valid NUL-terminated strings that live for the whole process.
        let rc = unsafe { sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            STARTED.store(false, Ordering::SeqCst);
            return Err(Error::from_rte_errno("rte_eal_init", args.join(" ")));
        }
        check_mbuf_layout()?;
        Ok(Eal { _private: () })
    }

    /// The lcore the EAL runs the caller on.
    pub fn main_lcore(&self) -> LcoreId {
        // SAFETY: EAL is initialised (self exists).
        unsafe { sys::rte_get_main_lcore() }
    }

    /// The enabled lcores other than the main one, in order.
    pub fn worker_lcores(&self) -> Vec<LcoreId> {
        let mut out = Vec::new();
        // SAFETY: EAL is initialised; rte_get_next_lcore only reads the lcore configuration.
        let mut id = unsafe { sys::rte_get_next_lcore(u32::MAX, 1, 0) };
        while id < sys::RTE_MAX_LCORE {
            out.push(id);
            // SAFETY: as above.
            id = unsafe { sys::rte_get_next_lcore(id, 1, 0) };
        }
        out
    }

    /// The NUMA socket of an lcore.
    pub fn lcore_socket(&self, lcore: LcoreId) -> u32 {
        // SAFETY: EAL is initialised; any id is accepted.
        unsafe { sys::rte_lcore_to_socket_id(lcore) }
    }

    /// Runs `f` on worker lcore `lcore`, which busy-polls on its own pinned CPU.
    pub fn launch<F>(&self, lcore: LcoreId, f: F) -> Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        type Job = Box<dyn FnOnce() + Send>;
        extern "C" fn trampoline(arg: *mut c_void) -> c_int {
            // SAFETY: arg came from Box::into_raw of a Box<Job> below, and is consumed once.
            let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
            // A panic must not unwind into C.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                Ok(()) => 0,
                Err(_) => -1,
            }
        }
        let job: Box<Job> = Box::new(Box::new(f));
        let arg = Box::into_raw(job) as *mut c_void;
        // SAFETY: trampoline matches lcore_function_t; arg is a valid Box<Job> pointer.
        let rc = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if rc != 0 {
            // SAFETY: the launch failed, so the trampoline never ran and we still own arg.
            drop(unsafe { Box::from_raw(arg as *mut Job) });
            return Err(Error::new("rte_eal_remote_launch", format!("lcore {lcore}"), rc));
        }
        Ok(())
    }

    /// Waits until every worker lcore has returned. Returns the lcores whose job failed (panicked).
    pub fn wait_all(&self) -> Vec<LcoreId> {
        let mut failed = Vec::new();
        for l in self.worker_lcores() {
            // SAFETY: EAL is initialised; waiting on an idle lcore returns at once.
            if unsafe { sys::rte_eal_wait_lcore(l) } != 0 {
                failed.push(l);
            }
        }
        failed
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: the EAL was initialised by this value and no lcore job runs any more (callers
        // wait for workers before dropping the Eal).
        unsafe { sys::rte_eal_cleanup() };
    }
}

/// The TSC frequency in Hz, as the EAL measured it.
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL set at init; returns 0 before init.
    unsafe { sys::rte_get_tsc_hz() }
}

/// The time-stamp counter. Costs no syscall; used for timers on the fast path.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Pins the calling thread to `cpus`. Control-plane threads call this so that they do not
/// inherit the main lcore's pinning and steal a worker's core.
pub fn set_thread_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is its empty state.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET only writes inside `set` (bounded by CPU_SETSIZE internally).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The offsets the fast path uses to read mbuf fields without a call (see `mbuf.rs`) must
/// match the headers this binary was built against.
fn check_mbuf_layout() -> Result<()> {
    use crate::mbuf::layout;
    // SAFETY: these are plain `const uint32_t` globals defined in the shim.
    let got = unsafe {
        [
            sys::flowdog_mbuf_off_buf_addr,
            sys::flowdog_mbuf_off_data_off,
            sys::flowdog_mbuf_off_pkt_len,
            sys::flowdog_mbuf_off_data_len,
            sys::flowdog_mbuf_off_nb_segs,
        ]
    };
    let want = [layout::BUF_ADDR, layout::DATA_OFF, layout::PKT_LEN, layout::DATA_LEN, layout::NB_SEGS];
    if got.iter().zip(want.iter()).any(|(g, w)| *g as usize != *w) {
        return Err(Error::new(
            "check_mbuf_layout",
            format!("struct rte_mbuf (offsets {got:?}, built for {want:?})"),
            libc::EPROTO,
        ));
    }
    Ok(())
}

/// Asks the CPU to bring the cache line at `p` into L1. Never faults, whatever `p` is, and
/// never blocks: the worker uses it to overlap the flow-table misses of a whole burst.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    // SAFETY: PREFETCHT0 is a hint; it does not dereference `p` architecturally and cannot fault.
    // SSE is part of the x86_64 baseline.
    unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8) }
}
