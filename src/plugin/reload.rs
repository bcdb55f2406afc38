//! Hot reload: the control plane watches the config file and the chain's .wasm files, builds
//! the next generation of the chain when either changed, and hands it to every worker.
//!
//! ```text
//!  flowdog-plugin-watch (control CPU), every [plugins] watch_interval_ms:
//!    stamps (size, mtime) of the config file and the .wasm files of its [[plugin]] entries
//!    changed, and the same at the next look (a file still being written is not read) ─▶
//!    Config::load ─▶ [plugins] or [[plugin]] or a file differs from the running generation ─▶
//!    Plugins::reload (compile, check, start once) ─▶ Arc<Plugins> into each worker's Handoff
//!  each worker, on its tick: Handoff::take ─▶ instantiate on its own thread ─▶ new connections
//!    get the new chain; connections already open keep the one they started with
//! ```
//!
//! A config that does not parse or check, or a plugin that does not compile or refuses its
//! configuration, is refused with the file, the field and the reason in one log line, and the
//! running generation stays.

use super::{FileStamp, PluginEntry, Plugins, PluginsSection};
use crate::config::Config;
use crossbeam_queue::ArrayQueue;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where the control plane leaves a new generation for one worker: lock-free, bounded, and
/// only the newest counts (a worker that has not looked yet skips the ones in between).
#[derive(Clone)]
pub struct Handoff(Arc<ArrayQueue<Arc<Plugins>>>);

impl Default for Handoff {
    fn default() -> Self {
        Handoff(Arc::new(ArrayQueue::new(1)))
    }
}

impl Handoff {
    /// Leaves `p` for the worker, replacing one it has not taken yet.
    pub fn give(&self, p: Arc<Plugins>) {
        let _ = self.0.force_push(p);
    }

    /// The newest generation left for this worker, if any (one atomic load when there is none).
    pub fn take(&self) -> Option<Arc<Plugins>> {
        self.0.pop()
    }
}

/// What the watcher knows of the chain that runs.
struct Running {
    plugins: Option<Arc<Plugins>>,
    settings: PluginsSection,
    entries: Vec<PluginEntry>,
}

/// The stamps the watcher compares between looks: the config file's, then each plugin file's.
fn stamps(config: &Path, entries: &[PluginEntry]) -> Vec<FileStamp> {
    std::iter::once(FileStamp::of(config)).chain(entries.iter().map(|e| FileStamp::of(&e.file))).collect()
}

/// The watcher's state between looks.
pub struct Watcher {
    config: PathBuf,
    workers: usize,
    handoffs: Vec<Handoff>,
    events: super::EventTx,
    running: Running,
    /// Entries whose files are watched: those of the last config that parsed.
    watched: Vec<PluginEntry>,
    seen: Vec<FileStamp>,
    /// A change seen at the last look, acted on once the next look sees the same.
    pending: Option<Vec<FileStamp>>,
}

impl Watcher {
    pub fn new(
        config: PathBuf,
        workers: usize,
        handoffs: Vec<Handoff>,
        events: super::EventTx,
        plugins: Option<Arc<Plugins>>,
        cfg: &Config,
    ) -> Watcher {
        let seen = stamps(&config, &cfg.plugin);
        Watcher {
            config,
            workers,
            handoffs,
            events,
            running: Running { plugins, settings: cfg.plugins.clone(), entries: cfg.plugin.clone() },
            watched: cfg.plugin.clone(),
            seen,
            pending: None,
        }
    }

    /// How long to wait before the next look.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.running.settings.watch_interval_ms.max(10))
    }

    /// One look: returns the new generation's number when one was handed to the workers.
    pub fn look(&mut self) -> Option<u64> {
        let now = stamps(&self.config, &self.watched);
        if now == self.seen {
            self.pending = None;
            return None;
        }
        if self.pending.as_ref() != Some(&now) {
            self.pending = Some(now);
            return None;
        }
        self.pending = None;
        self.seen = now;
        let cfg = match Config::load(&self.config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("flowdog: plugins: reload refused: {}; {} stays", one_line(&e), self.describe());
                return None;
            }
        };
        if cfg.plugin != self.watched {
            self.watched = cfg.plugin.clone();
            self.seen = stamps(&self.config, &self.watched);
        }
        let unchanged_files = self.running.plugins.as_ref().is_some_and(|p| {
            p.files().iter().zip(&cfg.plugin).all(|((f, s), e)| *f == e.file && FileStamp::of(f) == *s)
        }) || (self.running.plugins.is_none() && cfg.plugin.is_empty());
        if cfg.plugins == self.running.settings && cfg.plugin == self.running.entries && unchanged_files {
            return None; // the config changed elsewhere: this watcher only reloads the plugins
        }
        let origin = self.config.display();
        let next = match &self.running.plugins {
            Some(p) => p.reload(&cfg.plugins, &cfg.plugin),
            None => Plugins::load(&cfg.plugins, &cfg.plugin, self.workers, self.events.clone()).map(|(p, _calls)| p),
        };
        let next = match next {
            Ok(p) => Arc::new(p),
            Err(e) => {
                eprintln!(
                    "flowdog: plugins: reload refused: {origin}: [[plugin]]: {}; {} stays",
                    one_line(&e),
                    self.describe()
                );
                return None;
            }
        };
        let generation = next.generation;
        eprintln!("flowdog: plugins: generation {generation}: {}", next.names());
        for h in &self.handoffs {
            h.give(next.clone());
        }
        self.running = Running { plugins: Some(next), settings: cfg.plugins, entries: cfg.plugin };
        Some(generation)
    }

    fn describe(&self) -> String {
        match &self.running.plugins {
            Some(p) => format!("generation {} ({})", p.generation, p.names()),
            None => "the empty chain".into(),
        }
    }
}

/// An error as one log line (TOML's errors span several, with a caret under the field).
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").lines().map(str::trim).filter(|l| !l.is_empty() && *l != "|").collect::<Vec<_>>().join(" | ")
}

/// Runs `w` on its own thread until `stop`; nothing when watching is off.
pub fn start(mut w: Watcher, stop: Arc<AtomicBool>) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    if w.running.settings.watch_interval_ms == 0 {
        return Ok(None);
    }
    let h = std::thread::Builder::new().name("flowdog-plugin-watch".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let until = std::time::Instant::now() + w.interval();
            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            w.look();
        }
    })?;
    Ok(Some(h))
}
