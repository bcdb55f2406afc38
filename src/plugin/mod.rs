//! The plugin host: proxy-wasm 0.2.1 (and 0.2.0) on wasmtime.
//!
//! ```text
//!  control plane, at start: Plugins::load ─ compile every .wasm once (wasmtime's cache on disk)
//!                                       └ check imports and exports, refuse what cannot run
//!  each worker: one Vm per plugin (its own Store, instantiated from the pooling allocator)
//!     proxy handle() ─▶ Exchange (one HTTP context per plugin) ─▶ on_request_headers/body/trailers
//!                    ◀─ Continue │ Pause (wait for proxy_continue_stream) │ local response
//!     proxy_http_call ─▶ bounded queue ─▶ flowdog-calls thread (tokio) ─▶ oneshot ─▶ the
//!                        worker's executor ─▶ on_http_call_response on the same Vm
//!  a ticker thread bumps wasmtime's epoch every millisecond: a callback past its deadline traps
//! ```
//!
//! A trap (a bug, the deadline, the memory limit) fails the exchange that caused it as the
//! plugin's `on_failure` says (open: the request goes on as if the plugin were absent; closed:
//! 500), the instance is made anew for the next request, and a plugin that fails `max_failures`
//! times within `failure_window_secs` is disabled on that worker with one log line.

pub mod abi;
pub mod calls;
pub mod host;
pub mod http;
pub mod reload;
pub mod shared;
pub mod vm;

/// One worker's instances of one generation of the chain, in order.
pub type Chain = Vec<std::rc::Rc<std::cell::RefCell<vm::Vm>>>;

/// A worker's instances split by kind: the HTTP chain, and the flow acceptor (as a chain of
/// one, so that flows waiting on it keep its generation alive the way connections keep theirs).
pub fn split(vms: Chain) -> (Chain, Option<std::rc::Rc<Chain>>) {
    let (acc, http): (Chain, Chain) = vms.into_iter().partition(|v| v.borrow().info.kind == PluginKind::Acceptor);
    (http, (!acc.is_empty()).then(|| std::rc::Rc::new(acc)))
}

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Engine, Linker, Module};

/// What happens to a request whose plugin failed (trapped, ran past its deadline, is disabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The request goes on as if the plugin were not there.
    #[default]
    Open,
    /// The client gets a 500 (or, mid-response, the response is cut).
    Closed,
}

/// `[plugins]`: settings for every plugin.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginsSection {
    /// How long one callback may run before it is interrupted (a trap).
    #[serde(default = "default_deadline")]
    pub callback_deadline_ms: u64,
    /// Linear memory per instance at most.
    #[serde(default = "default_memory")]
    pub memory_limit_mb: usize,
    /// Failures within `failure_window_secs` that disable a plugin on a worker.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    #[serde(default = "default_window")]
    pub failure_window_secs: u64,
    /// Compiled modules are kept here between runs (None: compile at every start).
    pub cache_dir: Option<PathBuf>,
    /// Outbound calls waiting for the call thread at most.
    #[serde(default = "default_call_queue")]
    pub call_queue: usize,
    /// The level `proxy_get_log_level` reports (plugins skip what is below it).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Upstreams plugins may call by name (`proxy_http_call`): name = "http://host:port" or
    /// "https://host:port".
    #[serde(default)]
    pub upstreams: HashMap<String, String>,
    /// What `https://` upstreams are verified against: the system's roots, and/or a PEM bundle.
    #[serde(default = "default_true")]
    pub upstream_system_roots: bool,
    pub upstream_ca_file: Option<PathBuf>,
    /// How often the control plane looks at the config file and the .wasm files for a change
    /// (0: never; the chain then changes only with a restart).
    #[serde(default = "default_watch")]
    pub watch_interval_ms: u64,
}

fn default_deadline() -> u64 {
    50
}
fn default_memory() -> usize {
    64
}
fn default_max_failures() -> u32 {
    5
}
fn default_window() -> u64 {
    60
}
fn default_call_queue() -> usize {
    1024
}
fn default_true() -> bool {
    true
}
fn default_watch() -> u64 {
    1000
}
fn default_log_level() -> String {
    "info".into()
}

impl Default for PluginsSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// A plugin's configuration: a string as is, or a table (sent to the plugin as JSON).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Configuration {
    Text(String),
    Table(toml::Table),
}

impl Configuration {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Configuration::Text(s) => s.as_bytes().to_vec(),
            Configuration::Table(t) => serde_json::to_vec(t).unwrap_or_default(),
        }
    }
}

/// What a plugin is asked: HTTP contexts for each intercepted request (the chain), or stream
/// contexts for each new flow (the flow acceptor: at most one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    #[default]
    Http,
    Acceptor,
}

/// `[[plugin]]`: one plugin of the chain, in order.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    pub name: String,
    pub file: PathBuf,
    #[serde(default)]
    pub root_id: String,
    /// Plugins with the same vm_id share queues by name.
    #[serde(default)]
    pub vm_id: String,
    pub configuration: Option<Configuration>,
    pub vm_configuration: Option<Configuration>,
    #[serde(default)]
    pub on_failure: OnFailure,
    #[serde(default)]
    pub kind: PluginKind,
}

/// A compiled plugin with its settings, shared by the workers.
pub struct PluginInfo {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub file: PathBuf,
    pub configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub on_failure: OnFailure,
    pub kind: PluginKind,
    pub log_level: u32,
    /// Names a `proxy_http_call` may use.
    pub upstreams: Vec<String>,
    pub module: Module,
    /// The file as it was compiled (a reload compiles a file again only when this changed).
    pub stamp: FileStamp,
}

/// What tells one version of a file from the next: its size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStamp {
    pub len: u64,
    pub modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    /// The file's stamp now (the default stamp when it cannot be read).
    pub fn of(file: &Path) -> FileStamp {
        match std::fs::metadata(file) {
            Ok(m) => FileStamp { len: m.len(), modified: m.modified().ok() },
            Err(_) => FileStamp::default(),
        }
    }
}

/// Something the control plane logs for a worker's plugin (workers never write logs).
#[derive(Debug)]
pub enum Event {
    Log {
        plugin: String,
        worker: usize,
        level: i32,
        message: String,
    },
    Failed {
        plugin: String,
        worker: usize,
        what: String,
    },
    Disabled {
        plugin: String,
        worker: usize,
        failures: u32,
        window_secs: u64,
    },
    /// A worker now runs this generation of the chain for its new connections.
    Swapped {
        worker: usize,
        generation: u64,
    },
}

/// A bounded, non-blocking way to the log thread; what does not fit is counted.
#[derive(Clone)]
pub struct EventTx {
    tx: SyncSender<Event>,
    pub dropped: Arc<AtomicU64>,
}

impl EventTx {
    pub fn send(&self, e: Event) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(e) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A log line for an event, as the control plane prints it.
pub fn event_line(e: &Event) -> String {
    match e {
        Event::Log { plugin, worker, level, message } => {
            format!("flowdog: plugin {plugin} (worker {worker}) {}: {message}", abi::level_name(*level))
        }
        Event::Failed { plugin, worker, what } => format!("flowdog: plugin {plugin} (worker {worker}) failed: {what}"),
        Event::Disabled { plugin, worker, failures, window_secs } => format!(
            "flowdog: plugin {plugin} disabled on worker {worker}: {failures} failures within {window_secs} s; \
             its requests now fail as its on_failure says until the plugin is reloaded"
        ),
        Event::Swapped { worker, generation } => {
            format!("flowdog: plugins: worker {worker} runs generation {generation} for new connections")
        }
    }
}

/// Starts the thread that prints plugin events to standard error; it ends when every sender
/// is gone.
pub fn log_thread(queue: usize) -> std::io::Result<(EventTx, std::thread::JoinHandle<()>)> {
    let (tx, rx): (SyncSender<Event>, Receiver<Event>) = sync_channel(queue);
    let h = std::thread::Builder::new().name("flowdog-plugin-log".into()).spawn(move || {
        use std::io::Write;
        for e in rx {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{}", event_line(&e));
        }
    })?;
    Ok((EventTx { tx, dropped: Arc::new(AtomicU64::new(0)) }, h))
}

/// An event sender whose events are collected for a test to read.
pub fn test_events() -> (EventTx, Receiver<Event>) {
    let (tx, rx) = sync_channel(4096);
    (EventTx { tx, dropped: Arc::new(AtomicU64::new(0)) }, rx)
}

/// Everything the workers need to run one generation of the plugin chain: the engine, the
/// compiled plugins in chain order, what instances share, the settings. A reload makes a new
/// `Plugins` (the engine, shared data and the call thread carried over where they can be) and
/// hands it to every worker; connections that started on the old one finish on it.
pub struct Plugins {
    pub engine: Engine,
    pub chain: Vec<Arc<PluginInfo>>,
    pub shared: Arc<shared::Shared>,
    pub settings: PluginsSection,
    pub events: EventTx,
    /// The outbound-call thread's door (None without upstreams).
    pub calls: Option<calls::CallClient>,
    /// 1 for the chain loaded at start, then one more at every reload.
    pub generation: u64,
    /// Plugins per worker the engine's pool has room for (two generations of each).
    pool_plugins: usize,
    workers: usize,
}

/// Instances the engine's pooling allocator keeps room for: three generations of every plugin
/// on every worker (a reload overlaps them while old connections finish), plus the ones
/// `plugin check`, a reload's trial start and tests make.
fn pool_slots(workers: usize, plugins: usize) -> u32 {
    (workers.max(1) * plugins.max(1) * 3 + 4).min(10_000) as u32
}

/// The engine: Cranelift, epoch interruption, the pooling allocator, the compile cache. A
/// thread bumps its epoch every millisecond for as long as the engine lives.
pub fn engine(settings: &PluginsSection, workers: usize, plugins: usize) -> anyhow::Result<Engine> {
    let mut c = wasmtime::Config::new();
    c.epoch_interruption(true);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    c.max_wasm_stack(512 << 10);
    let slots = pool_slots(workers, plugins);
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memory_size(settings.memory_limit_mb << 20);
    c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    if let Some(dir) = &settings.cache_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("[plugins] cache_dir {}", dir.display()))?;
        let mut cc = wasmtime::CacheConfig::new();
        cc.with_directory(dir);
        c.cache(Some(wasmtime::Cache::new(cc).map_err(|e| anyhow!("[plugins] cache_dir {}: {e}", dir.display()))?));
    }
    let e = Engine::new(&c).map_err(|e| anyhow!("the wasm engine: {e}"))?;
    ticker(&e).context("starting the wasm epoch thread")?;
    Ok(e)
}

/// Bumps the engine's epoch every millisecond until the engine is gone.
fn ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new().name("flowdog-wasm-epoch".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_millis(1));
        match weak.upgrade() {
            Some(e) => e.increment_epoch(),
            None => break,
        }
    })?;
    Ok(())
}

/// The linker every instance is made with: the proxy-wasm functions and WASI.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<host::State>> {
    let mut l = Linker::new(engine);
    host::add_proxy(&mut l).map_err(|e| anyhow!("{e}"))?;
    host::add_wasi(&mut l).map_err(|e| anyhow!("{e}"))?;
    Ok(l)
}

fn log_level(name: &str) -> anyhow::Result<u32> {
    Ok(match name {
        "trace" => 0,
        "debug" => 1,
        "info" => 2,
        "warn" => 3,
        "error" => 4,
        "critical" => 5,
        _ => bail!("[plugins] log_level {name:?}: not one of trace, debug, info, warn, error, critical"),
    })
}

/// What `check` finds wrong with a module: every missing import and export, named.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub abi: Option<&'static str>,
    pub missing_imports: Vec<String>,
    pub missing_exports: Vec<String>,
    pub bad_types: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.abi.is_some()
            && self.missing_imports.is_empty()
            && self.missing_exports.is_empty()
            && self.bad_types.is_empty()
    }
}

/// Checks a compiled module against the host: the ABI version it exports, imports the host
/// lacks, exports the host needs.
pub fn check(engine: &Engine, linker: &Linker<host::State>, module: &Module) -> CheckReport {
    let mut r = CheckReport::default();
    let exports: HashMap<&str, wasmtime::ExternType> = module.exports().map(|e| (e.name(), e.ty())).collect();
    r.abi = if exports.contains_key("proxy_abi_version_0_2_1") {
        Some("0.2.1")
    } else if exports.contains_key("proxy_abi_version_0_2_0") {
        Some("0.2.0")
    } else {
        r.missing_exports.push(if exports.contains_key("proxy_abi_version_0_1_0") {
            "proxy_abi_version_0_2_1 (the module is built for ABI 0.1.0, which flowdog does not host)".into()
        } else {
            "proxy_abi_version_0_2_1 or proxy_abi_version_0_2_0 (not a proxy-wasm module?)".into()
        });
        None
    };
    if !exports.contains_key("memory") {
        r.missing_exports.push("memory".into());
    }
    if !exports.contains_key("proxy_on_memory_allocate") && !exports.contains_key("malloc") {
        r.missing_exports.push("proxy_on_memory_allocate (or malloc)".into());
    }
    if !exports.contains_key("proxy_on_context_create") {
        r.missing_exports.push("proxy_on_context_create".into());
    }
    let defined = linker_names(engine, linker);
    for imp in module.imports() {
        if !defined.contains(&(imp.module().to_owned(), imp.name().to_owned())) {
            r.missing_imports.push(format!("{}::{}", imp.module(), imp.name()));
        }
    }
    if r.missing_imports.is_empty() {
        if let Err(e) = linker.instantiate_pre(module) {
            r.bad_types.push(format!("{e:#}"));
        }
    }
    for (name, want) in vm::EXPORT_TYPES {
        if let Some(wasmtime::ExternType::Func(f)) = exports.get(name) {
            let got = (f.params().count(), f.results().count());
            if got != *want {
                r.bad_types.push(format!(
                    "{name} takes {} and returns {} values; the ABI says {} and {}",
                    got.0, got.1, want.0, want.1
                ));
            }
        }
    }
    r
}

/// The (module, name) pairs a linker defines.
fn linker_names(engine: &Engine, linker: &Linker<host::State>) -> std::collections::HashSet<(String, String)> {
    // A throwaway store only to list the definitions; nothing is instantiated.
    let mut store = wasmtime::Store::new(engine, host_state_for_check(engine));
    linker.iter(&mut store).map(|(m, n, _)| (m.to_owned(), n.to_owned())).collect()
}

fn host_state_for_check(engine: &Engine) -> host::State {
    let (events, _) = test_events();
    let info = Arc::new(PluginInfo {
        name: String::new(),
        root_id: String::new(),
        vm_id: String::new(),
        file: PathBuf::new(),
        configuration: Vec::new(),
        vm_configuration: Vec::new(),
        on_failure: OnFailure::Open,
        kind: PluginKind::Http,
        log_level: 2,
        upstreams: Vec::new(),
        module: Module::from_binary(engine, b"\0asm\x01\0\0\0").expect("the empty module"),
        stamp: FileStamp::default(),
    });
    host::State::new(info, 0, Arc::new(shared::Shared::default()), events, 1 << 20)
}

/// Compiles a module (from the cache when it is there).
pub fn compile(engine: &Engine, file: &Path) -> anyhow::Result<Module> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    Module::from_binary(engine, &bytes)
        .map_err(|e| anyhow!("{}: not a wasm module the host can compile: {e:#}", file.display()))
}

/// `flowdog plugin check FILE`: prints what the host makes of a module; false when it cannot run.
pub fn check_file(file: &Path) -> anyhow::Result<bool> {
    let settings = PluginsSection::default();
    let engine = engine(&settings, 1, 1)?;
    let module = compile(&engine, file)?;
    let linker = linker(&engine)?;
    let r = check(&engine, &linker, &module);
    println!("{}: proxy-wasm ABI {}", file.display(), r.abi.unwrap_or("unknown"));
    for i in &r.missing_imports {
        println!("  missing import: {i} (the host does not offer it)");
    }
    for e in &r.missing_exports {
        println!("  missing export: {e}");
    }
    for t in &r.bad_types {
        println!("  bad signature: {t}");
    }
    let n_imports = module.imports().count();
    if r.ok() {
        println!("  ok: {n_imports} imports, all offered by flowdog");
    }
    Ok(r.ok())
}

impl Plugins {
    /// Compiles and checks every plugin of the chain (on the control plane, before the workers
    /// start). An error names the plugin, its file and what is wrong.
    /// Outbound calls start a thread (returned) when upstreams are configured.
    pub fn load(
        settings: &PluginsSection,
        entries: &[PluginEntry],
        workers: usize,
        events: EventTx,
    ) -> anyhow::Result<(Plugins, Option<std::thread::JoinHandle<()>>)> {
        Plugins::build(settings, entries, workers, events, None)
    }

    /// The next generation for a changed configuration or changed files: compiled and checked
    /// here (the control plane), started once to see that every plugin takes its
    /// configuration. What can be kept is: the engine (unless the memory limit, the cache or a
    /// longer chain needs a new pool), the modules of unchanged files, shared data and queues,
    /// and the call thread (unless the upstreams changed). The running generation is untouched
    /// when this fails.
    pub fn reload(&self, settings: &PluginsSection, entries: &[PluginEntry]) -> anyhow::Result<Plugins> {
        Ok(Plugins::build(settings, entries, self.workers, self.events.clone(), Some(self))?.0)
    }

    fn build(
        settings: &PluginsSection,
        entries: &[PluginEntry],
        workers: usize,
        events: EventTx,
        prev: Option<&Plugins>,
    ) -> anyhow::Result<(Plugins, Option<std::thread::JoinHandle<()>>)> {
        let keep_engine = prev.filter(|p| {
            p.settings.memory_limit_mb == settings.memory_limit_mb
                && p.settings.cache_dir == settings.cache_dir
                && entries.len() <= p.pool_plugins
        });
        let (engine, pool_plugins) = match keep_engine {
            Some(p) => (p.engine.clone(), p.pool_plugins),
            None => (engine(settings, workers, entries.len())?, entries.len()),
        };
        let linker = linker(&engine)?;
        let level = log_level(&settings.log_level)?;
        for (name, url) in &settings.upstreams {
            calls::Upstream::parse(url).map_err(|e| anyhow!("[plugins.upstreams] {name}: {e}"))?;
        }
        let mut upstreams: Vec<String> = settings.upstreams.keys().cloned().collect();
        upstreams.sort();
        if entries.iter().filter(|e| e.kind == PluginKind::Acceptor).count() > 1 {
            bail!("[[plugin]] kind = \"acceptor\": one plugin at most decides on new flows");
        }
        let mut chain = Vec::with_capacity(entries.len());
        for e in entries {
            if chain.iter().any(|p: &Arc<PluginInfo>| p.name == e.name) {
                bail!("[[plugin]] name {:?} appears twice", e.name);
            }
            let stamp = FileStamp::of(&e.file);
            // The same file, unchanged, on the same engine: its compiled module serves again.
            let old = keep_engine.and_then(|p| {
                p.chain.iter().find(|i| i.file == e.file && i.stamp == stamp && stamp.modified.is_some())
            });
            let module = match old {
                Some(i) => i.module.clone(),
                None => compile(&engine, &e.file).with_context(|| format!("[[plugin]] {}", e.name))?,
            };
            let r = check(&engine, &linker, &module);
            if !r.ok() {
                let mut why: Vec<String> = r.missing_imports.iter().map(|i| format!("missing import {i}")).collect();
                why.extend(r.missing_exports.iter().map(|x| format!("missing export {x}")));
                why.extend(r.bad_types.iter().cloned());
                bail!("[[plugin]] {}: {} cannot run: {}", e.name, e.file.display(), why.join("; "));
            }
            chain.push(Arc::new(PluginInfo {
                name: e.name.clone(),
                root_id: e.root_id.clone(),
                vm_id: e.vm_id.clone(),
                file: e.file.clone(),
                configuration: e.configuration.as_ref().map(|c| c.bytes()).unwrap_or_default(),
                vm_configuration: e.vm_configuration.as_ref().map(|c| c.bytes()).unwrap_or_default(),
                on_failure: e.on_failure,
                kind: e.kind,
                log_level: level,
                upstreams: upstreams.clone(),
                module,
                stamp,
            }));
        }
        let same_calls = prev.filter(|p| {
            p.settings.upstreams == settings.upstreams
                && p.settings.call_queue == settings.call_queue
                && p.settings.upstream_system_roots == settings.upstream_system_roots
                && p.settings.upstream_ca_file == settings.upstream_ca_file
        });
        let (calls, thread) = match same_calls {
            Some(p) => (p.calls.clone(), None),
            None if settings.upstreams.is_empty() => (None, None),
            None => {
                let ups = settings
                    .upstreams
                    .iter()
                    .map(|(n, u)| Ok((n.clone(), calls::Upstream::parse(u).map_err(|e| anyhow!(e))?)))
                    .collect::<anyhow::Result<HashMap<_, _>>>()?;
                let tls = if ups.values().any(|u| u.tls) {
                    let roots = crate::tls::trust_store(
                        settings.upstream_system_roots,
                        settings.upstream_ca_file.as_deref(),
                        "plugins",
                    )?;
                    Some(calls::tls_client(roots)?)
                } else {
                    None
                };
                let (c, h) =
                    calls::start(ups, settings.call_queue, tls).context("starting the outbound-call thread")?;
                (Some(c), Some(h))
            }
        };
        let p = Plugins {
            engine,
            chain,
            shared: prev.map(|p| p.shared.clone()).unwrap_or_default(),
            settings: settings.clone(),
            events,
            calls,
            generation: prev.map_or(1, |p| p.generation + 1),
            pool_plugins,
            workers,
        };
        // Every plugin is started once here, so that one refusing its configuration stops the
        // appliance before the workers run (or keeps the running generation at a reload).
        p.instantiate(0, true).context("starting the plugins")?;
        Ok((p, thread))
    }

    /// The chain's names, in order ("a -> b -> c", or "(none)").
    pub fn names(&self) -> String {
        if self.chain.is_empty() {
            return "(none)".into();
        }
        self.chain.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(" -> ")
    }

    /// The files of the chain, to watch for a change, with their stamps as compiled.
    pub fn files(&self) -> Vec<(PathBuf, FileStamp)> {
        self.chain.iter().map(|i| (i.file.clone(), i.stamp)).collect()
    }

    /// The chain's instances for worker `worker`, each started (root context, on_vm_start,
    /// on_configure). Called on the worker's own thread. `strict`: a plugin that does not
    /// start is an error; otherwise it is logged and counted, and tried again at its next request.
    pub fn instantiate(
        &self,
        worker: usize,
        strict: bool,
    ) -> anyhow::Result<Vec<std::rc::Rc<std::cell::RefCell<vm::Vm>>>> {
        let linker = linker(&self.engine)?;
        let env = vm::VmEnv {
            worker,
            shared: self.shared.clone(),
            events: self.events.clone(),
            calls: self.calls.clone(),
            deadline_ticks: self.deadline_ticks(),
            memory_limit: self.settings.memory_limit_mb << 20,
            max_failures: self.settings.max_failures.max(1),
            failure_window: Duration::from_secs(self.settings.failure_window_secs),
        };
        let mut vms = Vec::with_capacity(self.chain.len());
        for p in &self.chain {
            let pre = linker.instantiate_pre(&p.module).map_err(|e| anyhow!("[[plugin]] {}: {e:#}", p.name))?;
            let vm = vm::Vm::new(p.clone(), pre, env.clone());
            if let Err(e) = vm.borrow_mut().start() {
                if strict {
                    return Err(e);
                }
                self.events.send(Event::Failed { plugin: p.name.clone(), worker, what: format!("{e:#}") });
            }
            vms.push(vm);
        }
        Ok(vms)
    }

    /// Epoch ticks (milliseconds) a callback may run.
    pub fn deadline_ticks(&self) -> u64 {
        self.settings.callback_deadline_ms.max(1)
    }
}
