//! The flow acceptor on a worker: the first packet of every new flow asks a stream-context
//! plugin (`[[plugin]] kind = "acceptor"`) whether the flow may pass; the flow's packets are
//! held, a few per flow and a bounded number of flows, until it answers or the timeout applies
//! `[acceptor] default`. The answer becomes the flow's action in the flow table, so it is asked
//! once per flow.
//!
//! ```text
//!  flow stage: a new flow, action Ask ─▶ Verdict::Hold ─▶ Acceptor::ask: a stream context,
//!    on_new_connection ─▶ Continue: accepted now │ proxy_close_stream: denied now
//!                      └▶ Pause: waiting (the plugin calls its authorizer: proxy_http_call)
//!    held packets with a payload ─▶ on_downstream_data / on_upstream_data (may decide too)
//!  tick: Acceptor::poll ─▶ proxy_continue_stream: accepted │ proxy_close_stream: denied │
//!    the plugin failed: its on_failure (open: accepted) │ past the timeout: the default
//!  a decision ─▶ the worker sets the flow's action and runs the held packets through the flow
//!    stage again (fast path, interception, or drop / RST)
//! ```
//!
//! Generic over the held packet so that tests can drive it without DPDK.

use crate::intercept::hook::FlowInfo;
use crate::plugin::abi::{ACTION_CONTINUE, PEER_LOCAL};
use crate::plugin::{Chain, OnFailure};
use flowdog_core::FlowKey;
use serde::Deserialize;
use std::collections::HashMap;
use std::rc::Rc;

/// `[acceptor]`: how the datapath waits for the acceptor plugin.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcceptorSection {
    /// How long a new flow waits for the plugin's answer before `default` applies.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// The decision when the plugin does not answer in time, or cannot be asked (too many
    /// flows waiting): "accept" or "deny".
    #[serde(default = "default_decision")]
    pub default: String,
    /// What a denied TCP flow gets: "drop" (silence) or "reset" (a RST to the sender).
    #[serde(default = "default_deny")]
    pub deny: String,
    /// Flows waiting for an answer on one worker at most; more get `default` at once.
    #[serde(default = "default_max_pending")]
    pub max_pending_flows: usize,
    /// Packets held per waiting flow at most; more are dropped (counted).
    #[serde(default = "default_hold")]
    pub hold_packets: usize,
}

fn default_timeout() -> u64 {
    1000
}
fn default_decision() -> String {
    "accept".into()
}
fn default_deny() -> String {
    "drop".into()
}
fn default_max_pending() -> usize {
    4096
}
fn default_hold() -> usize {
    8
}

impl Default for AcceptorSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl AcceptorSection {
    pub fn check(&self) -> anyhow::Result<()> {
        if !(1..=60_000).contains(&self.timeout_ms) {
            anyhow::bail!("acceptor.timeout_ms: {} is outside 1..=60000", self.timeout_ms);
        }
        if self.default != "accept" && self.default != "deny" {
            anyhow::bail!("acceptor.default: {:?} is not \"accept\" or \"deny\"", self.default);
        }
        if self.deny != "drop" && self.deny != "reset" {
            anyhow::bail!("acceptor.deny: {:?} is not \"drop\" or \"reset\"", self.deny);
        }
        if !(1..=1 << 20).contains(&self.max_pending_flows) {
            anyhow::bail!("acceptor.max_pending_flows: {} is outside 1..=1048576", self.max_pending_flows);
        }
        if !(1..=64).contains(&self.hold_packets) {
            anyhow::bail!("acceptor.hold_packets: {} is outside 1..=64", self.hold_packets);
        }
        Ok(())
    }
}

/// The acceptor's settings on a worker, in the worker's clock (TSC ticks).
#[derive(Debug, Clone, Copy)]
pub struct AcceptorConfig {
    pub timeout_ticks: u64,
    pub default_accept: bool,
    pub reset: bool,
    pub max_pending: usize,
    pub hold: usize,
}

impl AcceptorConfig {
    pub fn new(s: &AcceptorSection, ticks_per_ms: u64) -> AcceptorConfig {
        AcceptorConfig {
            timeout_ticks: s.timeout_ms.saturating_mul(ticks_per_ms.max(1)),
            default_accept: s.default == "accept",
            reset: s.deny == "reset",
            max_pending: s.max_pending_flows,
            hold: s.hold_packets,
        }
    }
}

/// How decisions came about, for the counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct AcceptStats {
    pub asked: u64,
    pub accepted: u64,
    pub denied: u64,
    pub timed_out: u64,
    pub defaulted: u64,
    pub queue_full: u64,
}

/// A flow waiting for the plugin.
struct Waiting<P> {
    key: FlowKey,
    chain: Rc<Chain>,
    ctx: u32,
    inc: u64,
    deadline: u64,
    packets: Vec<P>,
}

/// A decision on a held flow: the worker sets the flow's action and runs `packets` again.
pub struct Decision<P> {
    pub slot: u32,
    pub key: FlowKey,
    pub accept: bool,
    pub packets: Vec<P>,
}

/// What the plugin's context says so far.
enum Said {
    Accept,
    Deny,
    Failed,
    Nothing,
}

pub struct Acceptor<P> {
    pub cfg: AcceptorConfig,
    waiting: HashMap<u32, Waiting<P>>,
    /// Packet queues of decided flows, kept for the next ones.
    spare: Vec<Vec<P>>,
    /// The decisions of one poll, between its two passes.
    done: Vec<(u32, bool)>,
    pub stats: AcceptStats,
}

impl<P> Acceptor<P> {
    pub fn new(cfg: AcceptorConfig) -> Acceptor<P> {
        let n = cfg.max_pending.min(1 << 16);
        Acceptor {
            cfg,
            waiting: HashMap::with_capacity(n),
            spare: (0..n.min(1024)).map(|_| Vec::with_capacity(cfg.hold)).collect(),
            done: Vec::with_capacity(64),
            stats: AcceptStats::default(),
        }
    }

    /// Flows waiting for an answer.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The decision for a flow nobody can ask (no acceptor, too many waiting).
    fn default_now(&mut self) -> bool {
        self.stats.defaulted += 1;
        self.count(self.cfg.default_accept)
    }

    fn count(&mut self, accept: bool) -> bool {
        tally(&mut self.stats, accept);
        accept
    }

    /// The first packet of a new flow in `slot`: asks the plugin. Some(decision) when it is
    /// made at once (the plugin continued or closed the stream in `on_new_connection`, it
    /// failed, or nobody can be asked); None when the flow now waits (hold its packets).
    pub fn ask(
        &mut self,
        chain: Option<&Rc<Chain>>,
        slot: u32,
        key: FlowKey,
        flow: FlowInfo,
        now: u64,
    ) -> Option<bool> {
        if let Some(old) = self.waiting.remove(&slot) {
            // The slot's earlier flow was evicted while it waited: its packets go with it.
            finish(&old, Some(PEER_LOCAL));
            self.recycle(old.packets);
        }
        let Some(chain) = chain.filter(|c| !c.is_empty()) else { return Some(self.default_now()) };
        if self.waiting.len() >= self.cfg.max_pending {
            return Some(self.default_now());
        }
        self.stats.asked += 1;
        let vm_rc = &chain[0];
        let mut vm = vm_rc.borrow_mut();
        let on_failure = vm.info.on_failure;
        let Some((ctx, inc, _notify)) = vm.new_stream(Rc::new(flow)) else {
            drop(vm);
            return Some(self.failed(on_failure));
        };
        let action = vm.on_new_connection(ctx);
        let said = match action {
            Err(_) => Said::Failed,
            Ok(a) => said(&mut vm, ctx, inc).unwrap_or(if a == ACTION_CONTINUE { Said::Accept } else { Said::Nothing }),
        };
        drop(vm);
        let w = Waiting {
            key,
            chain: chain.clone(),
            ctx,
            inc,
            deadline: now.wrapping_add(self.cfg.timeout_ticks),
            packets: self.spare.pop().unwrap_or_else(|| Vec::with_capacity(self.cfg.hold)),
        };
        match self.conclude(&w, said, on_failure) {
            Some(d) => {
                self.recycle(w.packets);
                Some(d)
            }
            None => {
                self.waiting.insert(slot, w);
                None
            }
        }
    }

    /// A held packet's payload, shown to the plugin while the flow waits (downstream data from
    /// the client, upstream from the server). Some(decision) if that decided the flow: its
    /// held packets are in the returned decision.
    pub fn data(&mut self, slot: u32, from_client: bool, payload: &[u8]) -> Option<Decision<P>> {
        let w = self.waiting.get(&slot)?;
        let mut vm = w.chain[0].borrow_mut();
        let on_failure = vm.info.on_failure;
        let said = match vm.on_stream_data(w.ctx, w.inc, from_client, payload, false) {
            Err(_) => Said::Failed,
            Ok(_) => said(&mut vm, w.ctx, w.inc).unwrap_or(Said::Nothing),
        };
        drop(vm);
        let w = self.waiting.get(&slot)?;
        let accept = conclude_with(&mut self.stats, w, said, on_failure)?;
        let w = self.waiting.remove(&slot)?;
        Some(Decision { slot, key: w.key, accept, packets: w.packets })
    }

    /// Holds a packet of a waiting flow; gives it back when the flow does not wait (decide it
    /// now) or its queue is full (drop it: counted).
    pub fn hold(&mut self, slot: u32, p: P) -> Result<(), (P, bool)> {
        let Some(w) = self.waiting.get_mut(&slot) else { return Err((p, false)) };
        if w.packets.len() >= self.cfg.hold {
            self.stats.queue_full += 1;
            return Err((p, true));
        }
        w.packets.push(p);
        Ok(())
    }

    /// A packet of a flow still marked undecided that nobody waits for (its context went with
    /// a restart of the acceptor): the default applies.
    pub fn orphan(&mut self) -> bool {
        self.default_now()
    }

    /// Looks at every waiting flow (on the worker's tick): the plugin's answers, its failures,
    /// the timeouts. Decisions are appended to `out`.
    pub fn poll(&mut self, now: u64, out: &mut Vec<Decision<P>>) {
        if self.waiting.is_empty() {
            return;
        }
        let mut done = std::mem::take(&mut self.done);
        for (&slot, w) in &self.waiting {
            let (said, on_failure) = match w.chain[0].try_borrow_mut() {
                Ok(mut vm) => {
                    let f = vm.info.on_failure;
                    (said(&mut vm, w.ctx, w.inc).unwrap_or(Said::Nothing), f)
                }
                Err(_) => (Said::Nothing, OnFailure::Open),
            };
            let d = match said {
                Said::Nothing if now.wrapping_sub(w.deadline) < u64::MAX / 2 => {
                    let accept = self.cfg.default_accept;
                    self.stats.timed_out += 1;
                    tally(&mut self.stats, accept);
                    finish(w, (!accept).then_some(PEER_LOCAL));
                    Some(accept)
                }
                Said::Nothing => None,
                s => conclude_with(&mut self.stats, w, s, on_failure),
            };
            if let Some(accept) = d {
                done.push((slot, accept));
            }
        }
        for &(slot, accept) in &done {
            if let Some(w) = self.waiting.remove(&slot) {
                out.push(Decision { slot, key: w.key, accept, packets: w.packets });
            }
        }
        done.clear();
        self.done = done;
    }

    /// Gives an emptied packet queue back for later flows.
    pub fn recycle(&mut self, mut v: Vec<P>) {
        v.clear();
        if self.spare.len() < 1024 {
            self.spare.push(v);
        }
    }

    fn failed(&mut self, on_failure: OnFailure) -> bool {
        self.stats.defaulted += 1;
        self.count(on_failure == OnFailure::Open)
    }

    /// A decision from what the plugin said (and the context ends), or None: it waits on.
    fn conclude(&mut self, w: &Waiting<P>, s: Said, on_failure: OnFailure) -> Option<bool> {
        conclude_with(&mut self.stats, w, s, on_failure)
    }
}

fn conclude_with<P>(stats: &mut AcceptStats, w: &Waiting<P>, s: Said, on_failure: OnFailure) -> Option<bool> {
    let accept = match s {
        Said::Nothing => return None,
        Said::Accept => true,
        Said::Deny => false,
        Said::Failed => {
            stats.defaulted += 1;
            on_failure == OnFailure::Open
        }
    };
    tally(stats, accept);
    finish(w, (!accept).then_some(PEER_LOCAL));
    Some(accept)
}

fn tally(stats: &mut AcceptStats, accept: bool) {
    if accept {
        stats.accepted += 1;
    } else {
        stats.denied += 1;
    }
}

/// What the stream context said: closed (deny) before continued (accept); Failed when the
/// instance is gone (a trap).
fn said(vm: &mut crate::plugin::vm::Vm, ctx: u32, inc: u64) -> Option<Said> {
    if !vm.alive(inc) {
        return Some(Said::Failed);
    }
    let c = vm.ctx(ctx, inc)?;
    if c.closed {
        Some(Said::Deny)
    } else if c.resumed[0] || c.resumed[1] {
        Some(Said::Accept)
    } else {
        None
    }
}

/// The context's end: close callbacks for a denied flow, then on_log, on_done, on_delete.
fn finish<P>(w: &Waiting<P>, closed: Option<i32>) {
    if let Ok(mut vm) = w.chain[0].try_borrow_mut() {
        vm.finish_stream(w.ctx, w.inc, closed);
    }
}
