//! `flowdog.toml`: the appliance's configuration, parsed with serde and checked field by field.
//! Every error names the file, the field and what is wrong with it.

use crate::intercept::tcp::LegConfig;
use crate::intercept::{InterceptConfig, WhenFull};
use anyhow::{anyhow, bail, Context, Result};
use flowdog_core::policy::{self, Action, Cidr, PortRange, Rule};
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Production hosts probe real NICs; anywhere else the EAL must get `--no-pci`.
    #[serde(default)]
    pub production: bool,
    #[serde(default)]
    pub eal: EalConfig,
    pub port: PortSection,
    pub appliance: ApplianceConfig,
    #[serde(default)]
    pub workers: WorkersConfig,
    #[serde(default)]
    pub flows: FlowsConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub intercept: InterceptSection,
    /// TLS interception; without it (no `root_cert`), intercepted TLS flows are relayed untouched.
    #[serde(default)]
    pub tls: TlsSection,
    /// Settings for every plugin.
    #[serde(default)]
    pub plugins: crate::plugin::PluginsSection,
    /// The plugin chain, in order.
    #[serde(default)]
    pub plugin: Vec<crate::plugin::PluginEntry>,
    /// How new flows wait for the flow acceptor (a `[[plugin]]` of kind "acceptor").
    #[serde(default)]
    pub acceptor: crate::accept::AcceptorSection,
}

/// TLS interception: the root CA, the minter, upstream verification, exclusions, the key log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The root CA's certificate (`flowdog ca init`); unset: no TLS interception.
    pub root_cert: Option<PathBuf>,
    /// The root's key file (development), or ...
    pub root_key: Option<PathBuf>,
    /// ... its KMS key (ARN, id or alias): the key never leaves KMS.
    pub root_kms_key_id: Option<String>,
    /// KMS's endpoint, for a VPC endpoint or an emulator; and its region.
    pub kms_endpoint_url: Option<String>,
    pub kms_region: Option<String>,
    /// Lifetime of the ephemeral intermediate CA (renewed when a third is left).
    #[serde(default = "default_intermediate_hours")]
    pub intermediate_lifetime_hours: u64,
    /// Leaf certificates cached at most, leaf keys kept ready, requests waiting at most.
    #[serde(default = "default_leaf_cache")]
    pub leaf_cache_size: usize,
    #[serde(default = "default_key_pool")]
    pub key_pool_size: usize,
    #[serde(default = "default_mint_queue")]
    pub mint_queue: usize,
    /// Upstream certificates are verified against the system's roots (the Debian or Amazon
    /// Linux bundle) and/or the PEM bundle in `upstream_ca_file`.
    #[serde(default = "default_true")]
    pub upstream_system_roots: bool,
    pub upstream_ca_file: Option<PathBuf>,
    /// An upstream certificate that fails verification: "alert" (a fatal TLS alert to the
    /// client) or "502" (a page saying why).
    #[serde(default = "default_on_untrusted")]
    pub on_untrusted_upstream: String,
    /// SNI patterns never decrypted ("name" or "*.name"): relayed untouched after the ClientHello.
    #[serde(default)]
    pub exclude_sni: Vec<String>,
    /// Session secrets of both legs, in NSS key log format (off by default; mode 0600).
    pub keylog_file: Option<PathBuf>,
    /// The largest ClientHello accepted.
    #[serde(default = "default_max_hello")]
    pub max_client_hello_bytes: usize,
}

fn default_intermediate_hours() -> u64 {
    24
}
fn default_leaf_cache() -> usize {
    10_000
}
fn default_key_pool() -> usize {
    16
}
fn default_mint_queue() -> usize {
    1024
}
fn default_on_untrusted() -> String {
    "alert".into()
}
fn default_max_hello() -> usize {
    16 * 1024
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            root_cert: None,
            root_key: None,
            root_kms_key_id: None,
            kms_endpoint_url: None,
            kms_region: None,
            intermediate_lifetime_hours: default_intermediate_hours(),
            leaf_cache_size: default_leaf_cache(),
            key_pool_size: default_key_pool(),
            mint_queue: default_mint_queue(),
            upstream_system_roots: true,
            upstream_ca_file: None,
            on_untrusted_upstream: default_on_untrusted(),
            exclude_sni: Vec::new(),
            keylog_file: None,
            max_client_hello_bytes: default_max_hello(),
        }
    }
}

impl TlsSection {
    fn check(&self) -> Result<()> {
        let set = self.root_cert.is_some();
        if !set {
            if self.root_key.is_some() || self.root_kms_key_id.is_some() {
                bail!("tls.root_cert: missing (root_key or root_kms_key_id needs the root's certificate)");
            }
            return Ok(());
        }
        match (&self.root_key, &self.root_kms_key_id) {
            (Some(_), Some(_)) => bail!("tls.root_key and tls.root_kms_key_id: set one, not both"),
            (None, None) => bail!("tls.root_key or tls.root_kms_key_id: the root's key is needed"),
            _ => {}
        }
        if !(1..=24 * 365).contains(&self.intermediate_lifetime_hours) {
            bail!("tls.intermediate_lifetime_hours: {} is outside 1..=8760", self.intermediate_lifetime_hours);
        }
        if self.leaf_cache_size == 0 || self.mint_queue == 0 {
            bail!("tls.leaf_cache_size and tls.mint_queue must be positive");
        }
        if self.key_pool_size > 4096 {
            bail!("tls.key_pool_size: {} is over 4096", self.key_pool_size);
        }
        if self.on_untrusted_upstream != "alert" && self.on_untrusted_upstream != "502" {
            bail!("tls.on_untrusted_upstream: {:?} is not \"alert\" or \"502\"", self.on_untrusted_upstream);
        }
        if !self.upstream_system_roots && self.upstream_ca_file.is_none() {
            bail!("tls.upstream_ca_file: needed when upstream_system_roots = false (nothing would verify)");
        }
        for (i, p) in self.exclude_sni.iter().enumerate() {
            crate::intercept::tls::SniPattern::parse(p).map_err(|e| anyhow!("tls.exclude_sni[{i}]: {e}"))?;
        }
        if !(512..=256 * 1024).contains(&self.max_client_hello_bytes) {
            bail!("tls.max_client_hello_bytes: {} is outside 512..=262144", self.max_client_hello_bytes);
        }
        Ok(())
    }

    /// Where the root comes from, when TLS interception is on.
    pub fn root_source(&self) -> Option<crate::tls::root::RootSource> {
        Some(crate::tls::root::RootSource {
            cert: self.root_cert.clone()?,
            key: self.root_key.clone(),
            kms_key_id: self.root_kms_key_id.clone(),
            kms_endpoint_url: self.kms_endpoint_url.clone(),
            kms_region: self.kms_region.clone(),
        })
    }

    pub fn mint_config(&self) -> crate::tls::mint::MintConfig {
        crate::tls::mint::MintConfig {
            intermediate_lifetime: time::Duration::hours(self.intermediate_lifetime_hours as i64),
            cache_size: self.leaf_cache_size,
            key_pool: self.key_pool_size,
            queue: self.mint_queue,
        }
    }
}

/// Interception: the TCP pairs of the flows that policy marks `intercept`, and the HTTP proxy
/// between them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptSection {
    /// TCP pairs (intercepted connections) per worker at most.
    #[serde(default = "default_max_flows")]
    pub max_flows_per_worker: usize,
    /// A new intercepted flow when all pairs are in use: "pass" (fast path, uninspected) or
    /// "refuse" (RST).
    #[serde(default = "default_when_full")]
    pub when_full: String,
    /// Receive and send buffer of each leg's TCP socket: a pair holds four. They bound the
    /// memory of an intercepted flow and its window.
    #[serde(default = "default_leg_buffer")]
    pub leg_buffer_bytes: usize,
    /// The inner MTU of the legs' packets (GWLB's: 8 500); the mbuf data room may lower it.
    #[serde(default = "default_inner_mtu")]
    pub inner_mtu: usize,
    /// How long the server may take to accept the upstream connection (SYN retransmissions
    /// included). The client's SYN-ACK waits for it.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Data unacknowledged this long on a leg: the peer is gone, the pair is torn down.
    #[serde(default = "default_peer_timeout")]
    pub peer_timeout_secs: u64,
    /// Largest body collected whole when a rewrite asks for one.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Every intercepted response gets `x-flowdog: 1` (so a client sees the appliance was there).
    #[serde(default = "yes")]
    pub mark_responses: bool,
}

fn yes() -> bool {
    true
}

fn default_max_flows() -> usize {
    1024
}
fn default_when_full() -> String {
    "pass".into()
}
fn default_leg_buffer() -> usize {
    64 * 1024
}
fn default_inner_mtu() -> usize {
    8500
}
fn default_connect_timeout() -> u64 {
    75
}
fn default_peer_timeout() -> u64 {
    60
}
fn default_max_body() -> usize {
    1 << 20
}

impl Default for InterceptSection {
    fn default() -> Self {
        InterceptSection {
            max_flows_per_worker: default_max_flows(),
            when_full: default_when_full(),
            leg_buffer_bytes: default_leg_buffer(),
            inner_mtu: default_inner_mtu(),
            connect_timeout_secs: default_connect_timeout(),
            peer_timeout_secs: default_peer_timeout(),
            max_body_bytes: default_max_body(),
            mark_responses: true,
        }
    }
}

/// The longest inner packet an intercepted flow's mbuf holds: the data room less DPDK's
/// 128-byte headroom and the longest outer headers.
fn intercept_room(mbuf_data_room: u16) -> usize {
    (mbuf_data_room as usize).saturating_sub(128 + flowdog_core::fastpath::OUTER_MAX)
}

impl InterceptSection {
    /// The interceptor's settings; `mbuf_data_room` caps the legs' MTU (a packet and its
    /// outer headers fit one mbuf) and `tcp_idle_secs` is the flow table's TCP idle timeout.
    pub fn settings(&self, mbuf_data_room: u16, tcp_idle_secs: u64) -> InterceptConfig {
        use smoltcp::time::Duration;
        let room = intercept_room(mbuf_data_room);
        InterceptConfig {
            max_flows: self.max_flows_per_worker,
            when_full: if self.when_full == "refuse" { WhenFull::Refuse } else { WhenFull::Pass },
            leg: LegConfig {
                rx_buffer: self.leg_buffer_bytes,
                tx_buffer: self.leg_buffer_bytes,
                mtu: self.inner_mtu.min(room),
            },
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            peer_timeout: Duration::from_secs(self.peer_timeout_secs),
            idle_timeout: Duration::from_secs(tcp_idle_secs),
            max_body: self.max_body_bytes,
        }
    }
}

/// The control interface: the appliance's own TCP endpoint (health checks), run by the control
/// plane on smoltcp, and the shutdown behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// TCP ports answered on the appliance's address: a TCP health check connects, an HTTP one
    /// gets `GET /healthz` (or `/`) 200 while every worker runs and the appliance is not
    /// draining, 503 otherwise. GWLB's default health check is TCP (or HTTP) on port 80.
    #[serde(default = "default_health_ports")]
    pub health_ports: Vec<u16>,
    /// On SIGTERM (or SIGINT): answer 503 and keep serving existing flows this long, then stop.
    /// A second signal stops at once. 0: stop at the first signal.
    #[serde(default = "default_drain")]
    pub drain_seconds: f64,
}

fn default_health_ports() -> Vec<u16> {
    vec![80]
}
fn default_drain() -> f64 {
    10.0
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig { health_ports: default_health_ports(), drain_seconds: default_drain() }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EalConfig {
    /// Extra EAL arguments, passed as they are (`--no-pci`, `--huge-dir`, `-m`, `--log-level`, ...).
    #[serde(default)]
    pub args: Vec<String>,
    /// Virtual devices, each given to the EAL as `--vdev=...` (`net_af_packet0,iface=veth0`).
    #[serde(default)]
    pub vdevs: Vec<String>,
    /// A unique `--file-prefix` for DPDK's runtime files; default `flowdog-<pid>`.
    pub file_prefix: Option<String>,
    /// Hugepages: "auto" (use them if some are free, else `--no-huge`), "on" or "off".
    #[serde(default)]
    pub hugepages: HugepagesMode,
    /// Memory in MiB for `-m` when running without hugepages.
    #[serde(default = "default_no_huge_mem")]
    pub no_huge_memory_mb: u32,
}

fn default_no_huge_mem() -> u32 {
    512
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HugepagesMode {
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// The data port's device name: a vdev name (`net_af_packet0`) or a PCI address.
    pub name: String,
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
    pub mtu: Option<u16>,
    /// Toeplitz key for RSS, hex (40 bytes on ENA). ENA picks a random one per start otherwise.
    pub rss_key: Option<String>,
    #[serde(default)]
    pub promiscuous: bool,
    /// Mbufs per worker pool.
    #[serde(default = "default_mbufs")]
    pub mbufs_per_worker: u32,
    /// Bytes per mbuf including the 128-byte headroom; must hold the largest frame
    /// (GWLB's 8500-byte inner packets plus 82 bytes of encapsulation need 8 710).
    #[serde(default = "default_data_room")]
    pub mbuf_data_room: u16,
}

fn default_desc() -> u16 {
    1024
}
fn default_mbufs() -> u32 {
    8191
}
fn default_data_room() -> u16 {
    2176
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// The data-plane IPv4 address GWLB sends to.
    pub ip: Ipv4Addr,
    /// The MAC address to answer ARP with; default: the port's.
    pub mac: Option<String>,
    #[serde(default = "default_ttl")]
    pub outer_ttl: u8,
    #[serde(default = "default_true")]
    pub verify_ipv4_checksum: bool,
}

fn default_ttl() -> u8 {
    64
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// CPUs for the workers, one busy-polling worker each.
    #[serde(default = "default_worker_cpus")]
    pub cpus: Vec<usize>,
    /// CPU of the main lcore (the control plane: stats, shutdown).
    #[serde(default)]
    pub control_cpu: usize,
    /// Transmit buffers are flushed at least this often.
    #[serde(default = "default_flush_us")]
    pub tx_flush_us: u64,
}

fn default_worker_cpus() -> Vec<usize> {
    vec![1]
}
fn default_flush_us() -> u64 {
    100
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig { cpus: default_worker_cpus(), control_cpu: 0, tx_flush_us: default_flush_us() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsConfig {
    /// Flows per worker; the table is allocated whole at start.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// GWLB's TCP idle timeout (60–6000 s; GWLB's default is 350).
    #[serde(default = "default_tcp_idle")]
    pub tcp_idle_timeout_secs: u64,
    /// GWLB's idle timeout for everything else (fixed at 120 s by GWLB).
    #[serde(default = "default_other_idle")]
    pub other_idle_timeout_secs: u64,
    /// How long a TCP flow lives after a RST or a FIN each way.
    #[serde(default = "default_closed")]
    pub closed_timeout_secs: u64,
}

fn default_capacity() -> usize {
    131_072
}
fn default_tcp_idle() -> u64 {
    350
}
fn default_other_idle() -> u64 {
    120
}
fn default_closed() -> u64 {
    10
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            capacity: default_capacity(),
            tcp_idle_timeout_secs: default_tcp_idle(),
            other_idle_timeout_secs: default_other_idle(),
            closed_timeout_secs: default_closed(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// "allow" (default), "drop", "reset" (drop, and RST for TCP) or "intercept".
    pub default: Option<String>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: Option<String>,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub protocol: Option<String>,
    pub src_ports: Option<String>,
    pub dst_ports: Option<String>,
    pub vpc_endpoint_id: Option<String>,
    /// "allow", "drop", "reset" or "intercept".
    pub action: String,
}

fn parse_action(s: &str) -> Result<Action, String> {
    match s {
        "allow" => Ok(Action::Allow),
        "drop" => Ok(Action::Drop { reset: false }),
        "reset" => Ok(Action::Drop { reset: true }),
        "intercept" => Ok(Action::Intercept),
        _ => Err(format!("{s:?} is not one of allow, drop, reset, intercept")),
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| anyhow!("{origin}: {e}"))?;
        cfg.check().map_err(|e| anyhow!("{origin}: {e}"))?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        let f = &self.flows;
        if !(60..=6000).contains(&f.tcp_idle_timeout_secs) {
            bail!("flows.tcp_idle_timeout_secs: {} is outside GWLB's 60..=6000", f.tcp_idle_timeout_secs);
        }
        if f.other_idle_timeout_secs == 0 {
            bail!("flows.other_idle_timeout_secs: must be positive (GWLB uses 120)");
        }
        if f.capacity == 0 || f.capacity > 1 << 26 {
            bail!("flows.capacity: {} is outside 1..=67108864", f.capacity);
        }
        if self.workers.cpus.is_empty() {
            bail!("workers.cpus: at least one worker CPU is needed");
        }
        let mut cpus = self.workers.cpus.clone();
        cpus.sort();
        cpus.dedup();
        if self.workers.cpus.contains(&self.workers.control_cpu) {
            bail!(
                "workers.control_cpu: CPU {} is also a worker CPU; a busy-polling worker needs its own core",
                self.workers.control_cpu
            );
        }
        if self.port.mbuf_data_room < 256 + 128 {
            bail!("port.mbuf_data_room: {} is too small", self.port.mbuf_data_room);
        }
        if let Some(k) = &self.port.rss_key {
            parse_hex(k).map_err(|e| anyhow!("port.rss_key: {e}"))?;
        }
        if let Some(m) = &self.appliance.mac {
            parse_mac(m).map_err(|e| anyhow!("appliance.mac: {e}"))?;
        }
        let c = &self.control;
        if c.health_ports.contains(&0) || c.health_ports.len() > 8 {
            bail!("control.health_ports: {:?}: ports 1..=65535, at most 8 of them", c.health_ports);
        }
        if !(0.0..=3600.0).contains(&c.drain_seconds) {
            bail!("control.drain_seconds: {} is outside 0..=3600", c.drain_seconds);
        }
        let i = &self.intercept;
        if i.when_full != "pass" && i.when_full != "refuse" {
            bail!("intercept.when_full: {:?} is not \"pass\" or \"refuse\"", i.when_full);
        }
        if i.max_flows_per_worker == 0 || i.max_flows_per_worker > 1 << 20 {
            bail!("intercept.max_flows_per_worker: {} is outside 1..=1048576", i.max_flows_per_worker);
        }
        if !(4096..=16 << 20).contains(&i.leg_buffer_bytes) {
            bail!("intercept.leg_buffer_bytes: {} is outside 4096..=16777216", i.leg_buffer_bytes);
        }
        if !(576..=8500).contains(&i.inner_mtu) {
            bail!("intercept.inner_mtu: {} is outside 576..=8500 (GWLB carries at most 8500)", i.inner_mtu);
        }
        let room = intercept_room(self.port.mbuf_data_room);
        if room < 576 {
            bail!(
                "port.mbuf_data_room: {} leaves {room} bytes for intercepted packets; 576 at least",
                self.port.mbuf_data_room
            );
        }
        if i.connect_timeout_secs == 0 || i.peer_timeout_secs == 0 {
            bail!("intercept.connect_timeout_secs and intercept.peer_timeout_secs must be positive");
        }
        self.tls.check()?;
        self.acceptor.check()?;
        self.policy()?;
        if !self.production && !self.eal.args.iter().any(|a| a == "--no-pci") {
            bail!(
                "eal.args: \"--no-pci\" is missing. Outside production flowdog never probes PCI devices \
                 (the host's own NIC must not be taken); add \"--no-pci\", or set production = true on an \
                 appliance host"
            );
        }
        for a in &self.eal.args {
            if a.starts_with("--lcores") || a == "-l" || a.starts_with("--main-lcore") || a == "-c" {
                bail!("eal.args: {a:?} is set by flowdog from workers.cpus and workers.control_cpu; remove it");
            }
        }
        Ok(())
    }

    /// The policy the config describes.
    pub fn policy(&self) -> Result<policy::Policy> {
        let default = match &self.policy.default {
            Some(d) => parse_action(d).map_err(|e| anyhow!("policy.default: {e}"))?,
            None => Action::Allow,
        };
        let mut rules = Vec::new();
        for (i, r) in self.policy.rules.iter().enumerate() {
            let at = |field: &str, e: String| anyhow!("policy.rules[{i}].{field}: {e}");
            let opt = |field: &str, v: &Option<String>| -> Result<Option<Cidr>> {
                v.as_deref().map(|s| s.parse::<Cidr>().map_err(|e| at(field, e))).transpose()
            };
            let ports = |field: &str, v: &Option<String>| -> Result<Option<PortRange>> {
                v.as_deref().map(|s| s.parse::<PortRange>().map_err(|e| at(field, e))).transpose()
            };
            let protocol =
                r.protocol.as_deref().map(|p| policy::parse_protocol(p).map_err(|e| at("protocol", e))).transpose()?;
            let src_ports = ports("src_ports", &r.src_ports)?;
            let dst_ports = ports("dst_ports", &r.dst_ports)?;
            if (src_ports.is_some() || dst_ports.is_some()) && !matches!(protocol, Some(6) | Some(17)) {
                return Err(at("protocol", "port ranges need protocol = \"tcp\" or \"udp\"".into()));
            }
            rules.push(Rule {
                name: r.name.clone().unwrap_or_else(|| format!("rule{i}")),
                src: opt("src", &r.src)?,
                dst: opt("dst", &r.dst)?,
                protocol,
                src_ports,
                dst_ports,
                vpc_endpoint_id: r
                    .vpc_endpoint_id
                    .as_deref()
                    .map(|v| policy::parse_vpc_endpoint_id(v).map_err(|e| at("vpc_endpoint_id", e)))
                    .transpose()?,
                action: parse_action(&r.action).map_err(|e| at("action", e))?,
            });
        }
        if rules.len() >= u16::MAX as usize {
            bail!("policy.rules: at most 65534 rules");
        }
        Ok(policy::Policy { rules, default })
    }

    /// The EAL command line: the configured arguments and vdevs, the lcore map from the CPUs,
    /// a unique file prefix, and `--no-huge` when no hugepages are free.
    pub fn eal_args(&self) -> Vec<String> {
        let mut a = self.eal.args.clone();
        let mut map = format!("0@{}", self.workers.control_cpu);
        for (i, c) in self.workers.cpus.iter().enumerate() {
            map.push_str(&format!(",{}@{}", i + 1, c));
        }
        a.push(format!("--lcores={map}"));
        a.push("--main-lcore=0".into());
        for v in &self.eal.vdevs {
            a.push(format!("--vdev={v}"));
        }
        if !a.iter().any(|x| x.starts_with("--file-prefix")) {
            let p = self.eal.file_prefix.clone().unwrap_or_else(|| format!("flowdog-{}", std::process::id()));
            a.push(format!("--file-prefix={p}"));
        }
        let huge = match self.eal.hugepages {
            HugepagesMode::On => true,
            HugepagesMode::Off => false,
            HugepagesMode::Auto => free_hugepages() > 0,
        };
        if !huge && !a.iter().any(|x| x == "--no-huge") {
            a.push("--no-huge".into());
            if !a.iter().any(|x| x == "-m" || x.starts_with("--socket-mem")) {
                a.push("-m".into());
                a.push(self.eal.no_huge_memory_mb.to_string());
            }
        }
        a
    }
}

/// Free hugepages of any size, from /proc/meminfo (default size) and sysfs (all sizes).
pub fn free_hugepages() -> u64 {
    let mut total = 0;
    if let Ok(dirs) = std::fs::read_dir("/sys/kernel/mm/hugepages") {
        for d in dirs.flatten() {
            if let Ok(s) = std::fs::read_to_string(d.path().join("free_hugepages")) {
                total += s.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || format!("{s:?} is not a MAC address like 02:00:00:00:00:01");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    if s.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("{:?} is not hex", &s[i..i + 2])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[eal]
args = ["--no-pci"]
vdevs = ["net_null0"]
[port]
name = "net_null0"
[appliance]
ip = "198.18.0.2"
"#;

    #[test]
    fn minimal_config_and_eal_args() {
        let c = Config::parse(MIN, "t.toml").unwrap();
        let a = c.eal_args();
        assert!(a.contains(&"--no-pci".to_string()));
        assert!(a.contains(&"--vdev=net_null0".to_string()));
        assert!(a.contains(&"--lcores=0@0,1@1".to_string()));
        assert!(a.iter().any(|x| x.starts_with("--file-prefix=flowdog-")));
        assert_eq!(c.flows.tcp_idle_timeout_secs, 350);
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/flowdog.example.toml");
        let c = Config::load(Path::new(path)).unwrap();
        let p = c.policy().unwrap();
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[1].vpc_endpoint_id, Some(0x0123456789abcdef0));
        assert_eq!(c.plugin.len(), 1);
        assert_eq!(c.plugins.callback_deadline_ms, 50);
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = Config::parse(&MIN.replace("[\"--no-pci\"]", "[]"), "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("t.toml: eal.args:") && e.contains("--no-pci"), "{e}");
        let e =
            Config::parse(&format!("{MIN}\n[flows]\ntcp_idle_timeout_secs = 30\n"), "t.toml").unwrap_err().to_string();
        assert!(e.contains("flows.tcp_idle_timeout_secs") && e.contains("60..=6000"), "{e}");
        let bad_rule = format!("{MIN}\n[[policy.rules]]\ndst = \"10.0.0/8\"\naction = \"drop\"\n");
        let e = Config::parse(&bad_rule, "t.toml").unwrap_err().to_string();
        assert!(e.contains("policy.rules[0].dst") && e.contains("10.0.0/8"), "{e}");
        let e = Config::parse(&format!("{MIN}\nbogus = 1\n"), "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("bogus"), "{e}");
        let e = Config::parse(&MIN.replace("198.18.0.2", "198.18.0"), "t.toml").unwrap_err().to_string();
        assert!(e.contains("appliance") || e.contains("ip"), "{e}");
        let prod = MIN.replace("[\"--no-pci\"]", "[]");
        assert!(Config::parse(&format!("production = true\n{prod}"), "t.toml").is_ok());
    }
}
