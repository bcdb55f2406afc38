//! The whole fast path over arbitrary frames: parse, flow table, policy (with RST generation),
//! in-place rewrite. It must never panic, and what it asks to transmit must fit the frame.
#![no_main]

use flowdog_core::policy::{Action, Policy, Rule};
use flowdog_core::{FastPath, FastPathConfig, FlowTableConfig, Verdict};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    static FP: RefCell<FastPath> = RefCell::new(FastPath::new(
        FastPathConfig {
            ip: std::net::Ipv4Addr::new(198, 18, 0, 2),
            mac: [2, 0, 0, 0, 0, 2],
            outer_ttl: 64,
            worker: 0,
            workers: 2,
            verify_ipv4_checksum: false,
            control: true,
        },
        Policy {
            rules: vec![Rule {
                name: "reset-odd".into(),
                src: None,
                dst: None,
                protocol: Some(6),
                src_ports: Some("1-32767".parse().unwrap()),
                dst_ports: None,
                vpc_endpoint_id: None,
                action: Action::Drop { reset: true },
            }],
            default: Action::Allow,
        },
        FlowTableConfig { capacity: 64, tcp_idle: 100, other_idle: 50, closed: 5 },
    ));
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The first byte picks the clock and whether the frame came over a steering ring.
    let (ctl, frame) = data.split_at(1);
    let mut buf = frame.to_vec();
    FP.with(|fp| {
        let mut fp = fp.borrow_mut();
        let v = fp.handle(&mut buf, ctl[0] as u64 >> 1, ctl[0] & 1 == 1);
        if let Verdict::TransmitLen(n) = v {
            assert!(n <= frame.len());
        }
        fp.tick(ctl[0] as u64);
    });
});
