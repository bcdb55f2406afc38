//! The sans-IO core of flowdog's datapath. No DPDK, no clocks, no IO: the worker passes the
//! packet bytes and `now` (TSC ticks) in and acts on the [`fastpath::Verdict`] it gets back.
//!
//! - [`hash`]: the symmetric inner-flow hash that picks a flow's owner worker and its buckets.
//! - [`flow`]: the per-worker flow table, fixed capacity, GWLB idle timeouts, TCP close tracking.
//! - [`policy`]: first-match rules (CIDRs, protocol, ports, VPC endpoint) → allow / drop / intercept.
//! - [`fastpath`]: classify one received frame (ARP, ICMP echo, Geneve from GWLB) and rewrite it
//!   in place for the return to GWLB.
//! - [`counters`]: per-worker counters by cause, published without contended atomics.
#![forbid(unsafe_code)]

pub mod build;
pub mod counters;
pub mod fastpath;
pub mod flow;
pub mod hash;
pub mod policy;

pub use counters::{Counters, DropCause};
pub use fastpath::{FastPath, FastPathConfig, Held, HeldFlow, Intercepted, Outer, Pending, Stage, Verdict};
pub use flow::{Direction, FlowKey, FlowTable, FlowTableConfig};
pub use policy::{Action, Policy, Rule};
