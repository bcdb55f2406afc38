//! flowdog: a DPDK appliance for AWS Gateway Load Balancer.
//!
//! This crate is the binary's library half: the configuration ([`config`]), the worker loop
//! that drives the sans-IO fast path on DPDK ([`worker`]), the control plane that starts
//! everything and reports counters ([`run`]), and the traffic generator ([`gen`]).
#![forbid(unsafe_code)]

pub mod accept;
pub mod config;
pub mod control;
pub mod gen;
pub mod gwlb;
pub mod intercept;
pub mod pcap;
pub mod plugin;
pub mod run;
pub mod tls;
pub mod worker;
