//! `flowdog run`: start the EAL, the port and the workers, then act as the control plane
//! (periodic stats, signals, shutdown, the final report).

use crate::config::{parse_hex, parse_mac, Config};
use crate::worker::{Timers, Worker};
use anyhow::{anyhow, bail, Context, Result};
use flowdog_core::counters::{CounterSlot, Counters};
use flowdog_core::{FastPath, FastPathConfig, FlowTableConfig};
use flowdog_dpdk::eal::{set_thread_affinity, tsc_hz};
use flowdog_dpdk::{Eal, Mempool, Port, PortConfig, Ring, RingConsumer, RingProducer};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `flowdog run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Print a stats line every this many seconds.
    pub stats: Option<f64>,
    /// Stop after this many seconds (tests, demos).
    pub duration: Option<f64>,
    /// Write the final counters as JSON here.
    pub counters_out: Option<PathBuf>,
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn run(opts: &RunOptions) -> Result<()> {
    let cfg = Config::load(&opts.config)?;
    let origin = opts.config.display().to_string();
    let policy = cfg.policy()?;
    let args = cfg.eal_args();
    eprintln!("flowdog: EAL arguments: {}", args.join(" "));
    let eal = Eal::init(&args).context("starting DPDK's EAL")?;
    let _ = set_thread_affinity(&[cfg.workers.control_cpu]);
    let lcores = eal.worker_lcores();
    let n = cfg.workers.cpus.len();
    if lcores.len() != n {
        bail!("{origin}: workers.cpus: {n} workers asked, the EAL enabled {} worker lcores", lcores.len());
    }
    let port = Port::by_name(&cfg.port.name).map_err(|e| {
        let have: Vec<String> = Port::all().iter().map(|p| p.name()).collect();
        anyhow!("{origin}: port.name: {e}; the EAL has these ports: {have:?} (vdevs come from eal.vdevs)")
    })?;
    // Each worker's pool and inbound rings live on its lcore's NUMA socket (c5n.18xlarge has two).
    let socket = |i: usize| eal.lcore_socket(lcores[i]) as i32;
    let mut pools = Vec::with_capacity(n);
    for i in 0..n {
        pools.push(
            Mempool::new(&format!("fd_rx{i}"), cfg.port.mbufs_per_worker, 256, cfg.port.mbuf_data_room, socket(i))
                .with_context(|| format!("{origin}: port.mbufs_per_worker / port.mbuf_data_room"))?,
        );
    }
    let rss_key = cfg.port.rss_key.as_deref().map(parse_hex).transpose().map_err(|e| anyhow!("port.rss_key: {e}"))?;
    port.configure_and_start(
        &PortConfig {
            rx_queues: n as u16,
            tx_queues: n as u16,
            rx_desc: cfg.port.rx_desc,
            tx_desc: cfg.port.tx_desc,
            rss: true,
            rss_key,
            mtu: cfg.port.mtu,
            promiscuous: cfg.port.promiscuous,
        },
        &pools,
    )
    .with_context(|| format!("{origin}: [port] {}", cfg.port.name))?;
    let mac = match &cfg.appliance.mac {
        Some(m) => parse_mac(m).map_err(|e| anyhow!("appliance.mac: {e}"))?,
        None => port.mac_addr()?,
    };

    // One SPSC ring per ordered pair of workers for steering.
    let mut inbound: Vec<Vec<RingConsumer>> = (0..n).map(|_| Vec::new()).collect();
    let mut outbound: Vec<Vec<Option<RingProducer>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for (from, out) in outbound.iter_mut().enumerate() {
        for (to, slot) in out.iter_mut().enumerate() {
            if from != to {
                let (p, c) = Ring::create(&format!("fd_steer_{from}_{to}"), 4096, socket(to))?;
                *slot = Some(p);
                inbound[to].push(c);
            }
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let hz = tsc_hz();
    let table = FlowTableConfig {
        capacity: cfg.flows.capacity,
        tcp_idle: cfg.flows.tcp_idle_timeout_secs * hz,
        other_idle: cfg.flows.other_idle_timeout_secs * hz,
        closed: cfg.flows.closed_timeout_secs * hz,
    };
    let timers = Timers::from_hz(hz, cfg.workers.tx_flush_us);
    let slots: Vec<Arc<CounterSlot>> = (0..n).map(|_| Arc::new(CounterSlot::default())).collect();
    for (i, (ins, outs)) in inbound.into_iter().zip(outbound).enumerate() {
        let fast = FastPath::new(
            FastPathConfig {
                ip: cfg.appliance.ip,
                mac,
                outer_ttl: cfg.appliance.outer_ttl,
                worker: i,
                workers: n,
                verify_ipv4_checksum: cfg.appliance.verify_ipv4_checksum,
            },
            policy.clone(),
            table,
        );
        let w = Worker::new(
            i,
            port.rx_queue(i as u16),
            port.tx_queue(i as u16),
            fast,
            ins,
            outs,
            slots[i].clone(),
            stop.clone(),
            timers,
        );
        eal.launch(lcores[i], move || w.run())?;
    }
    println!(
        "flowdog: ready: {n} worker(s) on CPUs {:?}, port {} ({}), appliance {} / {}, {} flows per worker",
        cfg.workers.cpus,
        port.id(),
        port.name(),
        cfg.appliance.ip,
        fmt_mac(&mac),
        cfg.flows.capacity
    );
    std::io::stdout().flush().ok();

    let start = Instant::now();
    let mut last_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if opts.duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d) {
            break;
        }
        if let Some(every) = opts.stats {
            if last_stats.elapsed().as_secs_f64() >= every {
                last_stats = Instant::now();
                print_stats_line(start.elapsed().as_secs_f64(), &sum(&slots));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let failed = eal.wait_all();
    let per_worker: Vec<Counters> = slots.iter().map(|s| s.read()).collect();
    let total = sum(&slots);
    let pstats = port.stats().ok();
    let xstats = port.xstats().unwrap_or_default();
    println!("flowdog: stopped after {:.1}s; final counters:", start.elapsed().as_secs_f64());
    for (name, v) in total.named() {
        if v != 0 || !name.starts_with("drop_") {
            println!("  {name:<28} {v}");
        }
    }
    if let Some(p) = pstats {
        println!(
            "  port: ipackets {} opackets {} imissed {} ierrors {} oerrors {} rx_nombuf {}",
            p.ipackets, p.opackets, p.imissed, p.ierrors, p.oerrors, p.rx_nombuf
        );
    }
    // ENA's ENI limiters (bw/pps/conntrack/linklocal `*_allowance_exceeded`) tell a PPS-allowance
    // limit from a CPU limit; show any the PMD reports.
    for (name, v) in xstats.iter().filter(|(n, _)| n.contains("allowance")) {
        println!("  xstat {name:<26} {v}");
    }
    if let Some(path) = &opts.counters_out {
        let obj = |c: &Counters| serde_json::Value::Object(c.named().into_iter().map(|(k, v)| (k, v.into())).collect());
        let doc = serde_json::json!({
            "total": obj(&total),
            "workers": per_worker.iter().map(obj).collect::<Vec<_>>(),
            "xstats": serde_json::Value::Object(xstats.into_iter().map(|(k, v)| (k, v.into())).collect()),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?).with_context(|| format!("{}", path.display()))?;
    }
    port.stop_and_close();
    drop(eal);
    // DPDK 22.11 leaves its runtime directory (config, fbarray files) behind after cleanup.
    if let Some(prefix) = args.iter().find_map(|a| a.strip_prefix("--file-prefix=")) {
        if !prefix.is_empty() && !prefix.contains('/') {
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
        }
    }
    if !failed.is_empty() {
        bail!("worker lcores {failed:?} failed (panicked)");
    }
    Ok(())
}

fn sum(slots: &[Arc<CounterSlot>]) -> Counters {
    let mut t = Counters::default();
    for s in slots {
        t.add(&s.read());
    }
    t
}

fn print_stats_line(t: f64, c: &Counters) {
    println!(
        "stats t={t:.1}s rx={} tx={} fast_path={} intercept={} rst={} arp={} icmp={} steered={} flows={} created={} \
         expired={} evicted={} drops={}",
        c.rx_packets,
        c.tx_packets,
        c.fast_path,
        c.intercept,
        c.rst_sent,
        c.arp_replies,
        c.icmp_replies,
        c.steered_out,
        c.flows_active,
        c.flows_created,
        c.flows_expired,
        c.flows_evicted,
        c.total_drops()
    );
    std::io::stdout().flush().ok();
}
