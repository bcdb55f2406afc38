//! Finds the system DPDK with pkg-config, generates bindings with bindgen, and compiles the shim
//! that turns DPDK's static-inline fast-path functions into real symbols.
//!
//! DPDK is linked dynamically: its EAL then loads the poll-mode drivers (net_af_packet, net_memif,
//! net_ring, net_pcap, net_null, ena, ...) from its plugin directory at run time. A static link
//! would need every PMD whole-archived, or `--vdev` fails to find its driver.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = pkg_config::Config::new().atleast_version("22.11").probe("libdpdk").unwrap_or_else(|e| {
        panic!(
            "flowdog-dpdk-sys: the system DPDK was not found by pkg-config `libdpdk` ({e}). \
                 On Debian 12: apt-get install dpdk dpdk-dev libdpdk-dev libclang-dev pkg-config"
        )
    });

    // pkg-config's cflags carry `-include rte_config.h` and `-march=...`; both matter for the headers.
    let cflags = pkg_config::get_variable("libdpdk", "cflags").ok();
    let mut clang_args: Vec<String> = Vec::new();
    for p in &lib.include_paths {
        clang_args.push(format!("-I{}", p.display()));
    }
    let extra = std::process::Command::new("pkg-config")
        .args(["--cflags-only-other", "libdpdk"])
        .output()
        .expect("flowdog-dpdk-sys: pkg-config --cflags-only-other libdpdk");
    let other = String::from_utf8_lossy(&extra.stdout).into_owned();
    let mut words = other.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(f) = words.next() {
                clang_args.push("-include".into());
                clang_args.push(f.into());
            }
        } else {
            clang_args.push(w.into());
        }
    }
    let _ = cflags;

    let mut build = cc::Build::new();
    build.file("shim.c").opt_level(3).warnings(false);
    for p in &lib.include_paths {
        build.include(p);
    }
    for a in clang_args.iter().filter(|a| !a.starts_with("-I")) {
        build.flag(a);
    }
    build.compile("flowdog_shim");

    let bindings = bindgen::Builder::default()
        .header("shim.h")
        .clang_args(&clang_args)
        .allowlist_function(
            "flowdog_.*|rte_eal_.*|rte_eth_dev_.*|rte_eth_rx_queue_setup|rte_eth_tx_queue_setup\
             |rte_eth_promiscuous_.*|rte_eth_macaddr_get|rte_eth_link_get_nowait|rte_eth_stats_.*\
             |rte_eth_xstats_.*|rte_eth_find_next.*|rte_pktmbuf_pool_create|rte_pktmbuf_free_bulk\
             |rte_mempool_.*|rte_ring_create|rte_ring_free|rte_ring_lookup|rte_lcore_.*|rte_get_.*_lcore\
             |rte_get_tsc_hz|rte_socket_id|rte_strerror|rte_dev_probe|rte_dev_remove|rte_vdev_.*",
        )
        .allowlist_var("RTE_ETH_.*|RTE_MBUF_.*|RTE_MAX_.*|RING_F_.*|SOCKET_ID_ANY|flowdog_.*")
        .derive_debug(false)
        .blocklist_function("rte_.*_burst") // the static-inline versions; use the flowdog_ shims
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .generate()
        .expect("flowdog-dpdk-sys: bindgen failed over the DPDK headers (is libclang-dev installed?)");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings.write_to_file(out.join("bindings.rs")).expect("flowdog-dpdk-sys: write bindings.rs");
}
