//! `flowdog run`: start the EAL, the port and the workers, then act as the control plane
//! (periodic stats, signals, shutdown, the final report).

use crate::config::{parse_hex, parse_mac, Config};
use crate::control::{ControlIf, Health};
use crate::intercept::hook::Builtin;
use crate::intercept::tls::TlsCtx;
use crate::intercept::Interceptor;
use crate::worker::{ControlLink, Timers, Worker};
use anyhow::{anyhow, bail, Context, Result};
use flowdog_core::counters::{CounterSlot, Counters};
use flowdog_core::{FastPath, FastPathConfig, FlowTableConfig};
use flowdog_dpdk::eal::{rdtsc, set_thread_affinity, tsc_hz};
use flowdog_dpdk::{Burst, Eal, Mbuf, Mempool, Port, PortConfig, Ring, RingConsumer, RingProducer};
use signal_hook::iterator::Signals;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    // TLS first: a root that cannot sign (a wrong key file, KMS unreachable) stops the start
    // before DPDK takes anything.
    // (Its threads inherit the control CPU from here, off the workers' cores.)
    let _ = set_thread_affinity(&[cfg.workers.control_cpu]);
    let tls = crate::tls::start(&cfg.tls).with_context(|| format!("{origin}: [tls]"))?;
    if let Some(t) = &tls {
        eprintln!(
            "flowdog: tls: interception on: root \"{}\", intermediate until Unix time {}",
            t.root_subject,
            t.mint_stats.intermediate_not_after.load(Ordering::Relaxed)
        );
    }
    // The plugins too: each is compiled and started once here, so a module that cannot run or
    // refuses its configuration stops the start with the plugin's name and why.
    let n_workers = cfg.workers.cpus.len();
    let (plugin_events, plugin_log) = crate::plugin::log_thread(4096).context("starting the plugin log thread")?;
    let (plugins, plugin_calls) = if cfg.plugin.is_empty() {
        (None, None)
    } else {
        let (p, calls) = crate::plugin::Plugins::load(&cfg.plugins, &cfg.plugin, n_workers, plugin_events.clone())
            .with_context(|| format!("{origin}: [[plugin]]"))?;
        eprintln!("flowdog: plugins: {}", p.names());
        (Some(Arc::new(p)), calls)
    };
    let plugin_events_dropped = plugin_events.dropped.clone();
    // Reloaded chains reach each worker through its handoff (crate::plugin::reload).
    let handoffs: Vec<crate::plugin::reload::Handoff> = (0..n_workers).map(|_| Default::default()).collect();
    let watcher = crate::plugin::reload::Watcher::new(
        opts.config.clone(),
        n_workers,
        handoffs.clone(),
        plugin_events.clone(),
        plugins.clone(),
        &cfg,
    );
    drop(plugin_events);
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

    // The control interface's rings: one from every worker, one back to worker 0 (which
    // transmits for it), and a heartbeat per worker.
    let control_socket = eal.lcore_socket(eal.main_lcore()) as i32;
    let (mut control_tx, control_tx_rx) = Ring::create("fd_ctl_tx", 1024, socket(0))?;
    let mut control_tx_rx = Some(control_tx_rx);
    let mut from_workers = Vec::with_capacity(n);
    let mut links = Vec::with_capacity(n);
    let heartbeats: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for (i, beat) in heartbeats.iter().enumerate() {
        let (p, c) = Ring::create(&format!("fd_ctl_{i}"), 1024, control_socket)?;
        from_workers.push(c);
        links.push(ControlLink {
            to_control: Some(p),
            from_control: if i == 0 { control_tx_rx.take() } else { None },
            heartbeat: beat.clone(),
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .context("installing signal handlers")?;
    let hz = tsc_hz();
    let table = FlowTableConfig {
        capacity: cfg.flows.capacity,
        tcp_idle: cfg.flows.tcp_idle_timeout_secs * hz,
        other_idle: cfg.flows.other_idle_timeout_secs * hz,
        closed: cfg.flows.closed_timeout_secs * hz,
    };
    let timers = Timers::from_hz(hz, cfg.workers.tx_flush_us);
    let slots: Vec<Arc<CounterSlot>> = (0..n).map(|_| Arc::new(CounterSlot::default())).collect();
    for (i, ((ins, outs), link)) in inbound.into_iter().zip(outbound).zip(links).enumerate() {
        let fast = FastPath::new(
            FastPathConfig {
                ip: cfg.appliance.ip,
                mac,
                outer_ttl: cfg.appliance.outer_ttl,
                worker: i,
                workers: n,
                verify_ipv4_checksum: cfg.appliance.verify_ipv4_checksum,
                control: true,
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
            link,
            pools[i],
        );
        let icfg = cfg.intercept.settings(cfg.port.mbuf_data_room, cfg.flows.tcp_idle_timeout_secs);
        let builtin = Builtin { mark_responses: cfg.intercept.mark_responses };
        let worker_plugins = plugins.clone();
        let reloads = handoffs[i].clone();
        let acceptor = cfg.acceptor.clone();
        let ticks_per_ms = timers.us * 1000;
        let seed = rdtsc() ^ ((i as u64) << 56);
        let tls_ctx = match &tls {
            Some(t) => Some(TlsCtx::new(t.shared.clone()).context("the workers' TLS session state")?),
            None => None,
        };
        eal.launch(lcores[i], move || {
            w.run(|| {
                // The instances are made on the worker's own thread, where they stay.
                let vms = match worker_plugins.as_ref().map(|p| p.instantiate(i, false)) {
                    Some(Ok(v)) => v,
                    Some(Err(e)) => {
                        eprintln!("flowdog: worker {i}: the plugins: {e:#}");
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                let generation = worker_plugins.map_or(0, |p| p.generation);
                Interceptor::new(icfg, i, Rc::new(builtin), tls_ctx, seed)
                    .with_plugins(vms, generation)
                    .with_reloads(reloads)
                    .with_acceptor(&acceptor, ticks_per_ms)
            })
        })?;
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
    let watch = crate::plugin::reload::start(watcher, stop.clone()).context("starting the plugin watcher")?;

    let start = Instant::now();
    let now_ms = || start.elapsed().as_millis() as u64;
    let mut last_stats = Instant::now();
    // The first counters file is written at once, then every second.
    let mut last_counters = Instant::now().checked_sub(Duration::from_secs(2)).unwrap_or_else(Instant::now);
    let mut control = ControlIf::new(cfg.appliance.ip, mac, &cfg.control.health_ports, now_ms());
    let mut burst = Burst::<32>::new();
    let mut alive = Liveness::new(heartbeats);
    let mut drain_until: Option<Instant> = None;
    let mut control_nombuf = 0u64;
    'control: loop {
        for _ in signals.pending() {
            if drain_until.is_some() || cfg.control.drain_seconds <= 0.0 {
                break 'control;
            }
            drain_until = Some(Instant::now() + Duration::from_secs_f64(cfg.control.drain_seconds));
            println!(
                "flowdog: draining for {} s: health checks answer 503, existing flows are served; \
                 a second signal stops at once",
                cfg.control.drain_seconds
            );
            std::io::stdout().flush().ok();
        }
        if drain_until.is_some_and(|d| Instant::now() >= d)
            || opts.duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        // The control interface: frames from the workers in, smoltcp, frames out via worker 0.
        for ring in &mut from_workers {
            ring.dequeue_burst(&mut burst);
            while let Some(m) = burst.next() {
                control.ingest(m.data());
            }
        }
        let health = if drain_until.is_some() {
            Health::Draining
        } else if !alive.all_alive() {
            Health::WorkerDown
        } else {
            Health::Healthy
        };
        for frame in control.poll(now_ms(), health) {
            match Mbuf::from_bytes(&pools[0], &frame) {
                Ok(m) => control_tx.push(m),
                Err(_) => control_nombuf += 1,
            }
        }
        control_tx.flush();
        if let Some(path) = &opts.counters_out {
            if last_counters.elapsed() >= Duration::from_secs(1) {
                last_counters = Instant::now();
                let named = control_named(&control, control_tx.full, control_nombuf, tls.as_ref());
                write_counters(path, &slots, port.xstats().unwrap_or_default(), &named)?;
            }
        }
        if let Some(every) = opts.stats {
            if last_stats.elapsed().as_secs_f64() >= every {
                last_stats = Instant::now();
                print_stats_line(start.elapsed().as_secs_f64(), &sum(&slots));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let failed = eal.wait_all();
    let total = sum(&slots);
    let pstats = port.stats().ok();
    let xstats = port.xstats().unwrap_or_default();
    println!("flowdog: stopped after {:.1}s; final counters:", start.elapsed().as_secs_f64());
    let control_named = control_named(&control, control_tx.full, control_nombuf, tls.as_ref());
    for (name, v) in total.named() {
        if v != 0 || !name.starts_with("drop_") {
            println!("  {name:<28} {v}");
        }
    }
    for &(name, v) in &control_named {
        if v != 0 {
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
        write_counters(path, &slots, xstats, &control_named)?;
    }
    // The workers are gone, and with them the plugin instances; the watcher sees `stop` and
    // ends: the call and log threads see their last sender go and end.
    if let Some(h) = watch {
        let _ = h.join();
    }
    drop(handoffs);
    drop(plugins);
    if let Some(h) = plugin_calls {
        let _ = h.join();
    }
    let _ = plugin_log.join();
    let dropped = plugin_events_dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        println!("  {:<28} {dropped}", "plugin_log_dropped");
    }
    // The minter and the event writer see their last sender go and end.
    if let Some(t) = tls {
        drop(t.shared);
        for h in t.threads {
            let _ = h.join();
        }
    }
    // Every DPDK object goes before the EAL does (rings and mbufs freed after rte_eal_cleanup crash).
    drop(control_tx);
    drop(from_workers);
    drop(burst);
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

/// The control plane's counters with their names: the control interface's, the two of its
/// transmit path, and the TLS minter's.
fn control_named(
    control: &ControlIf,
    ring_full: u64,
    nombuf: u64,
    tls: Option<&crate::tls::TlsRuntime>,
) -> Vec<(&'static str, u64)> {
    let cc = control.counters;
    let mut v = vec![
        ("control_rx_frames", cc.rx_frames),
        ("control_tx_frames", cc.tx_frames),
        ("control_rx_dropped", cc.rx_dropped),
        ("control_tx_no_peer", cc.tx_no_peer),
        ("control_tx_ring_full", ring_full),
        ("control_tx_nombuf", nombuf),
        ("control_http_requests", cc.http_requests),
        ("control_http_ok", cc.http_ok),
        ("control_http_unavailable", cc.http_unavailable),
    ];
    if let Some(t) = tls {
        v.extend(t.mint_stats.named());
        v.push(("tls_events_dropped", t.events_dropped.load(Ordering::Relaxed)));
    }
    v
}

/// Writes the counters as JSON (total, per worker, xstats, control interface), replacing the
/// file in one rename so a reader never sees half of it.
fn write_counters(
    path: &std::path::Path,
    slots: &[Arc<CounterSlot>],
    xstats: Vec<(String, u64)>,
    control: &[(&str, u64)],
) -> Result<()> {
    let obj = |c: &Counters| serde_json::Value::Object(c.named().into_iter().map(|(k, v)| (k, v.into())).collect());
    let per_worker: Vec<Counters> = slots.iter().map(|s| s.read()).collect();
    let doc = serde_json::json!({
        "total": obj(&sum(slots)),
        "workers": per_worker.iter().map(obj).collect::<Vec<_>>(),
        "xstats": serde_json::Value::Object(xstats.into_iter().map(|(k, v)| (k, v.into())).collect()),
        "control": serde_json::Value::Object(control.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect()),
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?).with_context(|| format!("{}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}", path.display()))?;
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

/// Which workers still publish: a worker writes its heartbeat (the TSC) every ~10 ms; one that
/// has not for half a second (after the first two, which start-up may take) is stuck or dead,
/// and the health check says so.
struct Liveness {
    beats: Vec<Arc<AtomicU64>>,
    last: Vec<(u64, Instant)>,
    started: Instant,
}

impl Liveness {
    fn new(beats: Vec<Arc<AtomicU64>>) -> Liveness {
        let now = Instant::now();
        let last = beats.iter().map(|_| (0, now)).collect();
        Liveness { beats, last, started: now }
    }

    fn all_alive(&mut self) -> bool {
        let now = Instant::now();
        let mut ok = true;
        for (b, (value, seen)) in self.beats.iter().zip(self.last.iter_mut()) {
            let v = b.load(Ordering::Relaxed);
            if v != *value {
                (*value, *seen) = (v, now);
            }
            ok &= now.duration_since(*seen) <= Duration::from_millis(500);
        }
        ok || now.duration_since(self.started) < Duration::from_secs(2)
    }
}
