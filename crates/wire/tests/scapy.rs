//! Cross-checks against scapy, an independent implementation, in both directions:
//! frames scapy builds must parse to the fields scapy sees, and frames the crate's emitters
//! build must dissect in scapy to the fields they were built with.
//!
//! These tests need `python3` with scapy (`pip install scapy`); without it they fail.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Output};

use common::{Facts, FrameSpec, L4};
use flowdog_wire::tcp;

const INSTALL: &str = "this test needs python3 with scapy: install it with `pip install scapy` \
                       (or `apt-get install python3-scapy`)";

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

/// Runs a python script, failing loudly if python or scapy is missing.
fn python(args: &[&str]) -> Output {
    let probe = Command::new("python3")
        .args(["-c", "import scapy.all, scapy.contrib.geneve"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {INSTALL}"));
    assert!(probe.status.success(), "cannot import scapy: {}\n{INSTALL}", String::from_utf8_lossy(&probe.stderr));
    Command::new("python3").args(args).output().unwrap_or_else(|e| panic!("cannot run python3 ({e}); {INSTALL}"))
}

#[test]
fn frames_built_by_scapy_parse_to_what_scapy_sees() {
    let output = python(&[script("scapy_frames.py").to_str().unwrap()]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "scapy_frames.py failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let mut failures = Vec::new();
    let mut frames = 0;
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let expected = Facts::from_line(line);
        let name = expected.get("name").unwrap_or("?").to_string();
        let bytes = common::unhex(expected.get("hex").expect("a hex= field"));
        let seen = common::dissect(&bytes);
        for mismatch in seen.mismatches(&expected) {
            failures.push(format!("{name}: {mismatch}"));
        }
        frames += 1;
    }
    assert!(frames >= 20, "only {frames} frames from scapy_frames.py");
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

fn tcp_repr(flags: u8) -> tcp::Repr {
    tcp::Repr {
        src_port: 40000,
        dst_port: 443,
        flags,
        seq_number: 0x1234_5678,
        ack_number: 0,
        window_len: 62828,
        max_seg_size: None,
        window_scale: None,
        sack_permitted: false,
        timestamp: None,
        payload_len: 0,
    }
}

fn specs() -> Vec<(&'static str, FrameSpec)> {
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
    let base = FrameSpec {
        eth_src: [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01],
        eth_dst: [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x02],
        outer_src: Ipv4Addr::new(10, 0, 2, 20),
        outer_dst: Ipv4Addr::new(10, 0, 1, 10),
        outer_ttl: 2,
        udp_src_port: 54321,
        udp_checksum: true,
        vni: 0,
        vpc_endpoint_id: 0x0abc_def0_1234_5678,
        attachment_id: 0,
        flow_cookie: 0x7e57_c00c,
        extra_options: Vec::new(),
        inner_src: v4(192, 168, 1, 10),
        inner_dst: v4(198, 51, 100, 7),
        inner_ttl: 64,
        l4: L4::Tcp(tcp_repr(tcp::flags::SYN)),
        payload: Vec::new(),
    };
    let syn_with_options = tcp::Repr {
        max_seg_size: Some(8961),
        window_scale: Some(7),
        sack_permitted: true,
        timestamp: Some((42, 0)),
        ..tcp_repr(tcp::flags::SYN)
    };
    let ack = tcp::Repr {
        ack_number: 0xdead_beef,
        timestamp: Some((u32::MAX, 1)),
        ..tcp_repr(tcp::flags::ACK | tcp::flags::PSH)
    };
    let v6_base = FrameSpec { inner_src: v6("2001:db8:1::10"), inner_dst: v6("2001:db8:2::7"), ..base.clone() };
    vec![
        ("v4_tcp_syn_plain", base.clone()),
        ("v4_tcp_syn_options", FrameSpec { l4: L4::Tcp(syn_with_options), ..base.clone() }),
        ("v4_tcp_ack_data", FrameSpec { l4: L4::Tcp(ack), payload: b"HTTP/1.1 200 OK\r\n".repeat(20), ..base.clone() }),
        (
            "v4_tcp_rst_no_udp_checksum",
            FrameSpec {
                l4: L4::Tcp(tcp_repr(tcp::flags::RST | tcp::flags::ACK)),
                udp_checksum: false,
                outer_ttl: 255,
                ..base.clone()
            },
        ),
        ("v4_udp", FrameSpec { l4: L4::Udp { src_port: 5353, dst_port: 53 }, payload: vec![0x12; 45], ..base.clone() }),
        ("v4_udp_empty", FrameSpec { l4: L4::Udp { src_port: 1, dst_port: 65535 }, ..base.clone() }),
        (
            "v4_icmp_echo",
            FrameSpec {
                l4: L4::Echo { ident: 0x1c46, seq_no: 7 },
                payload: b"abcdefghijklmnopqrstuvwxyz".to_vec(),
                ..base.clone()
            },
        ),
        (
            "v4_unknown_options_vni",
            FrameSpec {
                vni: 0x00ab_cdef,
                extra_options: vec![
                    (0xffff, 0x05, true, vec![1, 2, 3, 4]),
                    (0x0108, 0x04, false, vec![0; 8]),
                    (0x0001, 0x7f, false, Vec::new()),
                ],
                ..base.clone()
            },
        ),
        (
            "v4_max_ids",
            FrameSpec {
                vpc_endpoint_id: u64::MAX,
                attachment_id: u64::MAX,
                flow_cookie: u32::MAX,
                udp_src_port: 65535,
                ..base.clone()
            },
        ),
        ("v6_tcp_syn", v6_base.clone()),
        (
            "v6_tcp_options_data",
            FrameSpec { l4: L4::Tcp(syn_with_options), payload: vec![0xab; 333], inner_ttl: 1, ..v6_base.clone() },
        ),
        (
            "v6_udp",
            FrameSpec { l4: L4::Udp { src_port: 123, dst_port: 123 }, payload: vec![0x23; 48], ..v6_base.clone() },
        ),
        (
            "v6_icmp_echo",
            FrameSpec { l4: L4::Echo { ident: 0xbeef, seq_no: 3 }, payload: b"hello".to_vec(), ..v6_base.clone() },
        ),
    ]
}

#[test]
fn frames_built_by_the_emitters_dissect_in_scapy() {
    let mut lines = String::new();
    for (name, spec) in specs() {
        let frame = spec.build();
        // The frame must make sense to this crate first, or scapy's verdict means little.
        let mismatches = common::dissect(&frame).mismatches(&spec.facts());
        assert!(mismatches.is_empty(), "{name}: {mismatches:?}");
        lines.push_str(&format!("name={name} hex={} {}\n", common::hex(&frame), spec.facts().to_line()));
    }
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("flowdog-wire-emitted-frames.txt");
    std::fs::write(&path, lines).unwrap();
    let output = python(&[script("scapy_check.py").to_str().unwrap(), path.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "scapy disagrees with the emitters:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
