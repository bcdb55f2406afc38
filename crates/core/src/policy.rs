//! Policy: an ordered list of rules, first match wins, then a default action.
//!
//! A flow is judged once, on its first packet, and the verdict is stored in its flow-table entry.
//! Rules see that first packet as it travels: `src` is its sender.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;
use flowdog_wire::inner::Summary;
use flowdog_wire::ip_protocol;

/// What to do with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Return every packet to GWLB on the fast path.
    Allow,
    /// Drop every packet; for TCP, optionally answer each with a RST inside the flow's Geneve header.
    Drop { reset: bool },
    /// Terminate and inspect: the flow's TCP pair on this worker (TCP whole flows only).
    Intercept,
    /// Not decided yet: the flow acceptor was asked and its packets are held until it answers.
    /// `intercept` is what an accepted flow becomes (policy's Intercept, else Allow). Never a
    /// rule's action: the fast path sets it on new flows when an acceptor is configured.
    Ask { intercept: bool },
}

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: [u8; 16],
    prefix: u8,
    ipv6: bool,
}

impl Cidr {
    pub fn contains(&self, ipv6: bool, addr: &[u8; 16]) -> bool {
        if ipv6 != self.ipv6 {
            return false;
        }
        let full = (self.prefix / 8) as usize;
        if addr[..full] != self.addr[..full] {
            return false;
        }
        let rest = self.prefix % 8;
        rest == 0 || {
            let mask = 0xffu8 << (8 - rest);
            addr[full] & mask == self.addr[full] & mask
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = a.trim().parse().map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let (ipv6, max, mut addr) = match ip {
            IpAddr::V4(v4) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                (false, 32, b)
            }
            IpAddr::V6(v6) => (true, 128, v6.octets()),
        };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
            None => max,
        };
        // Host bits are cleared so that "10.1.2.3/8" means 10.0.0.0/8.
        for (i, b) in addr.iter_mut().enumerate() {
            let bit = i as u32 * 8;
            if bit >= prefix as u32 {
                *b = 0;
            } else if bit + 8 > prefix as u32 {
                *b &= 0xffu8 << (8 - (prefix as u32 - bit));
            }
        }
        Ok(Cidr { addr, prefix, ipv6 })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ipv6 {
            write!(f, "{}/{}", core::net::Ipv6Addr::from(self.addr), self.prefix)
        } else {
            let a = core::net::Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3]);
            write!(f, "{a}/{}", self.prefix)
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port or a range like 1000-2000");
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?),
            None => {
                let p = s.trim().parse().map_err(|_| bad())?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("{s:?}: the range is empty ({lo} > {hi})"));
        }
        Ok(PortRange { lo, hi })
    }
}

/// Parses a protocol name (`tcp`, `udp`, `icmp`, `icmpv6`) or number.
pub fn parse_protocol(s: &str) -> Result<u8, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(ip_protocol::TCP),
        "udp" => Ok(ip_protocol::UDP),
        "icmp" => Ok(ip_protocol::ICMP),
        "icmpv6" | "ipv6-icmp" => Ok(ip_protocol::ICMPV6),
        n => n.parse().map_err(|_| format!("{s:?} is not tcp, udp, icmp, icmpv6 or a protocol number")),
    }
}

/// Parses a VPC endpoint id as the console shows it (`vpce-0123456789abcdef0`: 17 hex digits,
/// the value GWLB carries in its type-1 option) or as a bare hex number.
pub fn parse_vpc_endpoint_id(s: &str) -> Result<u64, String> {
    let hex = s.strip_prefix("vpce-").or_else(|| s.strip_prefix("0x")).unwrap_or(s);
    if hex.is_empty() || hex.len() > 17 {
        return Err(format!("{s:?} is not a VPC endpoint id like vpce-0123456789abcdef0"));
    }
    u64::from_str_radix(hex, 16).map_err(|_| format!("{s:?} is not a VPC endpoint id like vpce-0123456789abcdef0"))
}

/// Formats a VPC endpoint id the way the AWS console shows it.
pub fn format_vpc_endpoint_id(id: u64) -> String {
    format!("vpce-{id:017x}")
}

/// One rule. Every field that is set must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub src: Option<Cidr>,
    pub dst: Option<Cidr>,
    pub protocol: Option<u8>,
    pub src_ports: Option<PortRange>,
    pub dst_ports: Option<PortRange>,
    pub vpc_endpoint_id: Option<u64>,
    pub action: Action,
}

impl Rule {
    #[inline]
    fn matches(&self, s: &Summary, vpce: u64) -> bool {
        let v6 = s.ip_version == 6;
        self.src.is_none_or(|c| c.contains(v6, &s.src))
            && self.dst.is_none_or(|c| c.contains(v6, &s.dst))
            && self.protocol.is_none_or(|p| p == s.protocol)
            && self.src_ports.is_none_or(|r| has_ports(s) && (r.lo..=r.hi).contains(&s.src_port))
            && self.dst_ports.is_none_or(|r| has_ports(s) && (r.lo..=r.hi).contains(&s.dst_port))
            && self.vpc_endpoint_id.is_none_or(|v| v == vpce)
    }
}

fn has_ports(s: &Summary) -> bool {
    s.protocol == ip_protocol::TCP || s.protocol == ip_protocol::UDP
}

/// The rule list and the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default: Action,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { rules: Vec::new(), default: Action::Allow }
    }
}

impl Policy {
    /// The action for a new flow, and the index of the rule that matched (None: the default).
    #[inline]
    pub fn decide(&self, s: &Summary, vpc_endpoint_id: u64) -> (Action, Option<usize>) {
        for (i, r) in self.rules.iter().enumerate() {
            if r.matches(s, vpc_endpoint_id) {
                return (r.action, Some(i));
            }
        }
        (self.default, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowdog_wire::inner::Fragment;

    fn summary(src: [u8; 4], dst: [u8; 4], proto: u8, sp: u16, dp: u16) -> Summary {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s[..4].copy_from_slice(&src);
        d[..4].copy_from_slice(&dst);
        Summary {
            ip_version: 4,
            src: s,
            dst: d,
            protocol: proto,
            src_port: sp,
            dst_port: dp,
            tcp_flags: 0,
            fragment: Fragment::None,
            l4_offset: 20,
            total_len: 40,
        }
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[10, 200, 0, 1]);
        assert!(c.contains(false, &a));
        assert!(!c.contains(true, &a));
        let c: Cidr = "198.18.0.0/15".parse().unwrap();
        a[..4].copy_from_slice(&[198, 19, 255, 255]);
        assert!(c.contains(false, &a));
        a[..4].copy_from_slice(&[198, 20, 0, 0]);
        assert!(!c.contains(false, &a));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        let v6: core::net::Ipv6Addr = "2001:db8:1::5".parse().unwrap();
        assert!(c.contains(true, &v6.octets()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(false, &a));
    }

    #[test]
    fn ports_protocols_endpoints() {
        assert_eq!("80".parse::<PortRange>().unwrap(), PortRange { lo: 80, hi: 80 });
        assert_eq!("1000-2000".parse::<PortRange>().unwrap(), PortRange { lo: 1000, hi: 2000 });
        assert!("2000-1000".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
        assert_eq!(parse_protocol("TCP").unwrap(), 6);
        assert_eq!(parse_protocol("47").unwrap(), 47);
        assert!(parse_protocol("tcpp").is_err());
        let id = parse_vpc_endpoint_id("vpce-0123456789abcdef0").unwrap();
        assert_eq!(id, 0x0123456789abcdef0);
        assert_eq!(format_vpc_endpoint_id(id), "vpce-0123456789abcdef0");
        assert!(parse_vpc_endpoint_id("vpce-xyz").is_err());
    }

    #[test]
    fn first_match_wins_then_default() {
        let p = Policy {
            rules: vec![
                Rule {
                    name: "ssh".into(),
                    src: None,
                    dst: Some("198.18.1.0/24".parse().unwrap()),
                    protocol: Some(6),
                    src_ports: None,
                    dst_ports: Some("22".parse().unwrap()),
                    vpc_endpoint_id: None,
                    action: Action::Drop { reset: true },
                },
                Rule {
                    name: "web".into(),
                    src: None,
                    dst: None,
                    protocol: Some(6),
                    src_ports: None,
                    dst_ports: Some("80-443".parse().unwrap()),
                    vpc_endpoint_id: Some(7),
                    action: Action::Intercept,
                },
            ],
            default: Action::Allow,
        };
        let s = summary([198, 18, 0, 1], [198, 18, 1, 9], 6, 40000, 22);
        assert_eq!(p.decide(&s, 7), (Action::Drop { reset: true }, Some(0)));
        let s = summary([198, 18, 0, 1], [198, 18, 2, 9], 6, 40000, 443);
        assert_eq!(p.decide(&s, 7), (Action::Intercept, Some(1)));
        assert_eq!(p.decide(&s, 8), (Action::Allow, None));
        let s = summary([198, 18, 0, 1], [198, 18, 1, 9], 17, 40000, 22);
        assert_eq!(p.decide(&s, 7), (Action::Allow, None));
    }
}
