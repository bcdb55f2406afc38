//! The simulator's configuration file (TOML). Errors name the file and the field.

use anyhow::{anyhow, bail, Context, Result};
use flowdog_core::policy::parse_vpc_endpoint_id;
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::Path;

/// How flows are pinned to targets (gwlb-facts.md §4): the tuple the target hash covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stickiness {
    /// Protocol, addresses and ports (the default).
    FiveTuple,
    /// Protocol and addresses (`source_ip_dest_ip_proto`).
    ThreeTuple,
    /// Addresses only (`source_ip_dest_ip`).
    TwoTuple,
}

/// What happens to a flow whose target turns unhealthy (`target_failover.on_unhealthy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// Existing flows stay on their target (the AWS default).
    NoRebalance,
    /// Existing flows move to a healthy target mid-stream.
    Rebalance,
}

/// One side of the GWLB: where inner packets come from and go to.
#[derive(Debug, Clone)]
pub struct Side {
    pub name: String,
    /// The TUN device (already created, in the simulator's namespace) carrying this side's packets.
    pub tun: String,
    pub vpc_endpoint_id: u64,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckProtocol {
    Tcp,
    Http,
    Https,
}

/// The target group's health check (gwlb-facts.md §7).
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub protocol: CheckProtocol,
    pub port: u16,
    /// HTTP and HTTPS only.
    pub path: String,
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// HTTP status codes that pass, inclusive.
    pub matcher: (u16, u16),
}

#[derive(Debug, Clone)]
pub struct GwlbConfig {
    /// The GWLB's own address on the appliances' network (outer source of what it sends).
    pub ip: Ipv4Addr,
    /// The outer TTL it sends with.
    pub outer_ttl: u8,
    pub sides: [Side; 2],
    pub targets: Vec<Target>,
    pub stickiness: Stickiness,
    pub failover: Failover,
    /// Idle timeouts in seconds: TCP (60–6000 on AWS, 350 by default) and everything else (120).
    pub tcp_idle_timeout_s: u64,
    pub other_idle_timeout_s: u64,
    /// The largest inner packet GWLB carries (8500); larger ones are dropped without an ICMP error.
    pub max_inner_len: usize,
    /// With no appliance at all: hand every packet straight to the other side (the baseline of
    /// the benchmarks: what the simulator itself costs).
    pub loopback: bool,
    /// None: no checks, every target counts as healthy.
    pub health_check: Option<HealthCheck>,
    pub faults: Faults,
}

/// Fault injection, for tests: besides every Nth packet sent to a target (0: never), a damaged
/// copy of it. The original still goes, so the flow itself loses nothing; the copy shows how
/// both sides count bad input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// A copy with Geneve version 1 (the appliance must drop it: geneve_bad_version).
    #[serde(default)]
    pub malformed_geneve_every: u64,
    /// A copy with another flow cookie (the appliance passes it; the GWLB drops the return:
    /// return_options_changed).
    #[serde(default)]
    pub changed_options_every: u64,
    /// A copy whose inner packet is padded past 8500 bytes (the GWLB drops the return:
    /// return_too_long; the appliance needs jumbo frames to even receive it).
    #[serde(default)]
    pub oversize_every: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSide {
    tun: String,
    vpc_endpoint_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    ip: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFlows {
    stickiness: Option<String>,
    failover: Option<String>,
    tcp_idle_timeout_s: Option<u64>,
    other_idle_timeout_s: Option<u64>,
    max_inner_len: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    protocol: Option<String>,
    port: Option<u16>,
    path: Option<String>,
    interval_s: Option<f64>,
    timeout_s: Option<f64>,
    healthy_threshold: Option<u32>,
    unhealthy_threshold: Option<u32>,
    matcher: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    ip: String,
    outer_ttl: Option<u8>,
    loopback: Option<bool>,
    consumer: RawSide,
    provider: RawSide,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    flows: RawFlows,
    health_check: Option<RawHealth>,
    #[serde(default)]
    faults: Faults,
}

impl GwlbConfig {
    pub fn load(path: &Path) -> Result<GwlbConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        GwlbConfig::parse(&text).with_context(|| format!("{}", path.display()))
    }

    pub fn parse(text: &str) -> Result<GwlbConfig> {
        let raw: Raw = toml::from_str(text)?;
        let ip: Ipv4Addr = raw.ip.parse().with_context(|| format!("ip: '{}' is not an IPv4 address", raw.ip))?;
        let side = |name: &str, r: &RawSide| -> Result<Side> {
            let id = parse_vpc_endpoint_id(&r.vpc_endpoint_id).map_err(|e| anyhow!("{name}.vpc_endpoint_id: {e}"))?;
            if r.tun.is_empty() || r.tun.len() > 15 {
                bail!("{name}.tun: '{}' is not an interface name (1 to 15 characters)", r.tun);
            }
            Ok(Side { name: name.to_string(), tun: r.tun.clone(), vpc_endpoint_id: id })
        };
        let sides = [side("consumer", &raw.consumer)?, side("provider", &raw.provider)?];
        let mut targets = Vec::new();
        for (i, t) in raw.targets.iter().enumerate() {
            let ip: Ipv4Addr =
                t.ip.parse().with_context(|| format!("targets[{i}].ip: '{}' is not an IPv4 address", t.ip))?;
            if targets.iter().any(|x: &Target| x.ip == ip) {
                bail!("targets[{i}].ip: {ip} is listed twice");
            }
            targets.push(Target { ip });
        }
        let loopback = raw.loopback.unwrap_or(false);
        if targets.is_empty() && !loopback {
            bail!("targets: at least one target is needed (or loopback = true)");
        }
        let f = &raw.flows;
        let stickiness = match f.stickiness.as_deref().unwrap_or("5-tuple") {
            "5-tuple" => Stickiness::FiveTuple,
            "3-tuple" => Stickiness::ThreeTuple,
            "2-tuple" => Stickiness::TwoTuple,
            s => bail!("flows.stickiness: '{s}' is not one of 5-tuple, 3-tuple, 2-tuple"),
        };
        let failover = match f.failover.as_deref().unwrap_or("no_rebalance") {
            "no_rebalance" => Failover::NoRebalance,
            "rebalance" => Failover::Rebalance,
            s => bail!("flows.failover: '{s}' is not one of no_rebalance, rebalance"),
        };
        let tcp_idle_timeout_s = f.tcp_idle_timeout_s.unwrap_or(350);
        if tcp_idle_timeout_s == 0 {
            bail!("flows.tcp_idle_timeout_s: must be at least 1 (AWS allows 60 to 6000; 350 by default)");
        }
        let other_idle_timeout_s = f.other_idle_timeout_s.unwrap_or(120);
        if other_idle_timeout_s == 0 {
            bail!("flows.other_idle_timeout_s: must be at least 1 (AWS: 120)");
        }
        let max_inner_len = f.max_inner_len.unwrap_or(8500);
        if !(1280..=65535).contains(&max_inner_len) {
            bail!("flows.max_inner_len: {max_inner_len} is outside 1280..=65535 (AWS: 8500)");
        }
        let health_check = raw.health_check.as_ref().map(health_check).transpose()?;
        Ok(GwlbConfig {
            health_check,
            faults: raw.faults,
            ip,
            outer_ttl: raw.outer_ttl.unwrap_or(64),
            sides,
            targets,
            stickiness,
            failover,
            tcp_idle_timeout_s,
            other_idle_timeout_s,
            max_inner_len,
            loopback,
        })
    }
}

fn health_check(r: &RawHealth) -> Result<HealthCheck> {
    use std::time::Duration;
    let protocol = match r.protocol.as_deref().unwrap_or("tcp") {
        "tcp" => CheckProtocol::Tcp,
        "http" => CheckProtocol::Http,
        "https" => CheckProtocol::Https,
        p => bail!("health_check.protocol: '{p}' is not one of tcp, http, https"),
    };
    // AWS allows 5-300 s and 2-120 s; the lab's tests check faster, so anything from 0.1 s.
    let interval = r.interval_s.unwrap_or(10.0);
    if !(0.1..=300.0).contains(&interval) {
        bail!("health_check.interval_s: {interval} is outside 0.1..=300 (AWS: 5-300, default 10)");
    }
    let timeout = r.timeout_s.unwrap_or(5.0_f64.min(interval));
    if !(0.05..=120.0).contains(&timeout) || timeout > interval {
        bail!("health_check.timeout_s: {timeout} must be in 0.05..=120 and at most interval_s ({interval})");
    }
    let threshold = |name: &str, v: Option<u32>, default: u32| -> Result<u32> {
        let v = v.unwrap_or(default);
        if !(1..=10).contains(&v) {
            bail!("health_check.{name}: {v} is outside 1..=10 (AWS: 2-10)");
        }
        Ok(v)
    };
    let matcher = match r.matcher.as_deref().unwrap_or("200-399").split_once('-') {
        None => {
            let m = r.matcher.as_deref().unwrap_or_default();
            let c: u16 = m.parse().map_err(|_| anyhow!("health_check.matcher: '{m}' is not a code or a range"))?;
            (c, c)
        }
        Some((a, b)) => {
            let p = |x: &str| x.trim().parse::<u16>();
            match (p(a), p(b)) {
                (Ok(a), Ok(b)) if a <= b => (a, b),
                _ => bail!("health_check.matcher: '{a}-{b}' is not a range like 200-399"),
            }
        }
    };
    Ok(HealthCheck {
        protocol,
        port: r.port.unwrap_or(80),
        path: r.path.clone().unwrap_or_else(|| "/".into()),
        interval: Duration::from_secs_f64(interval),
        timeout: Duration::from_secs_f64(timeout),
        healthy_threshold: threshold("healthy_threshold", r.healthy_threshold, 5)?,
        unhealthy_threshold: threshold("unhealthy_threshold", r.unhealthy_threshold, 2)?,
        matcher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
ip = "198.18.0.1"
consumer = { tun = "tunc", vpc_endpoint_id = "vpce-0123456789abcdef0" }
provider = { tun = "tuns", vpc_endpoint_id = "vpce-0fedcba987654321f" }
[[targets]]
ip = "198.18.0.2"
[flows]
stickiness = "3-tuple"
"#;

    #[test]
    fn parses_and_defaults() {
        let c = GwlbConfig::parse(OK).unwrap();
        assert_eq!(c.ip, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(c.stickiness, Stickiness::ThreeTuple);
        assert_eq!(c.failover, Failover::NoRebalance);
        assert_eq!((c.tcp_idle_timeout_s, c.other_idle_timeout_s, c.max_inner_len), (350, 120, 8500));
        assert_eq!(c.sides[0].vpc_endpoint_id, 0x1234_5678_9abc_def0);
        assert_eq!(c.targets.len(), 1);
    }

    #[test]
    fn errors_name_the_field() {
        let e = GwlbConfig::parse(&OK.replace("3-tuple", "4-tuple")).unwrap_err();
        assert!(format!("{e:#}").contains("flows.stickiness"), "{e:#}");
        let e = GwlbConfig::parse(&OK.replace("198.18.0.2", "nope")).unwrap_err();
        assert!(format!("{e:#}").contains("targets[0].ip"), "{e:#}");
        let e = GwlbConfig::parse(&OK.replace("vpce-0123456789abcdef0", "vpce-xyz")).unwrap_err();
        assert!(format!("{e:#}").contains("consumer.vpc_endpoint_id"), "{e:#}");
        let e = GwlbConfig::parse(&OK.replace("[[targets]]\nip = \"198.18.0.2\"", "")).unwrap_err();
        assert!(format!("{e:#}").contains("targets"), "{e:#}");
    }

    #[test]
    fn health_check_section() {
        let c =
            GwlbConfig::parse(&format!("{OK}\n[health_check]\nprotocol = \"http\"\npath = \"/healthz\"\n")).unwrap();
        let h = c.health_check.unwrap();
        assert_eq!((h.protocol, h.port, h.path.as_str(), h.matcher), (CheckProtocol::Http, 80, "/healthz", (200, 399)));
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (5, 2));
        let e = GwlbConfig::parse(&format!("{OK}\n[health_check]\ninterval_s = 2\ntimeout_s = 3\n")).unwrap_err();
        assert!(format!("{e:#}").contains("health_check.timeout_s"), "{e:#}");
        let e = GwlbConfig::parse(&format!("{OK}\n[health_check]\nmatcher = \"300-200\"\n")).unwrap_err();
        assert!(format!("{e:#}").contains("health_check.matcher"), "{e:#}");
    }

    #[test]
    fn the_example_config_parses() {
        let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/gwlb.example.toml"));
        let c = GwlbConfig::load(p).unwrap();
        assert_eq!((c.sides[0].tun.as_str(), c.targets.len(), c.loopback), ("tunc", 1, false));
        assert_eq!(c.health_check.unwrap().path, "/healthz");
    }
}
