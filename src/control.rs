//! The appliance's control interface: TCP to its own address, on the control plane (never a
//! worker), through smoltcp.
//!
//! Workers hand every frame that is TCP to the appliance's IPv4 address to the control plane
//! over a ring. Here the Ethernet header is stripped (remembering which MAC each peer address
//! came from), the IP packet goes into a smoltcp interface of medium IP, and what smoltcp sends
//! gets an Ethernet header back (to the MAC its destination last came from) and leaves through
//! worker 0's transmit queue. No ARP is needed: GWLB's health checks come from a peer that has
//! just sent us a frame.
//!
//! On the health ports, a plain TCP connect is a TCP health check; an HTTP request for
//! `/healthz` (or `/`) is answered 200 while every worker is alive and the appliance is not
//! draining, else 503; other paths 404, anything that is not an HTTP request 400.

use flowdog_wire::{ethernet, ip_protocol, EtherType, EthernetFrame, Ipv4Packet};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

/// Listening sockets per health port: that many checks can be in progress at once (GWLB sends
/// several per interval from its nodes).
const SOCKETS_PER_PORT: usize = 8;
/// Longest request head read before answering 400.
const MAX_REQUEST: usize = 4096;
/// Peers remembered for the return MAC.
const MAX_PEERS: usize = 1024;

/// Why the health check fails, or that it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// SIGTERM received: finishing existing flows, no new ones wanted.
    Draining,
    /// A worker stopped publishing (stuck or dead).
    WorkerDown,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ControlCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames that were not IPv4 TCP to us (cannot happen: the workers filter) or malformed.
    pub rx_dropped: u64,
    /// Replies to a peer whose MAC we never saw.
    pub tx_no_peer: u64,
    pub http_requests: u64,
    pub http_ok: u64,
    pub http_unavailable: u64,
}

/// A smoltcp device of medium IP: packets in (`rx`) and out (`tx`) of two queues. The control
/// interface runs on one; the in-memory interception tests' peers too.
pub struct QueueDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
    pub mtu: usize,
}

impl QueueDevice {
    pub fn new(mtu: usize) -> QueueDevice {
        QueueDevice { rx: VecDeque::new(), tx: VecDeque::new(), mtu }
    }
}

pub struct RxTok(Vec<u8>);
pub struct TxTok<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0u8; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxTok, TxTok<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxTok(p), TxTok(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxTok<'_>> {
        Some(TxTok(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c
    }
}

struct Listener {
    handle: SocketHandle,
    port: u16,
    request: Vec<u8>,
    answered: bool,
}

pub struct ControlIf {
    ip: Ipv4Addr,
    mac: [u8; 6],
    queues: QueueDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    listeners: Vec<Listener>,
    peers: HashMap<Ipv4Addr, [u8; 6]>,
    pub counters: ControlCounters,
}

fn new_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 4096]), tcp::SocketBuffer::new(vec![0; 4096]));
    // A peer that connects and goes silent does not hold a listener for long.
    s.set_timeout(Some(Duration::from_secs(10)));
    s
}

impl ControlIf {
    pub fn new(ip: Ipv4Addr, mac: [u8; 6], ports: &[u16], now_ms: u64) -> ControlIf {
        let mut queues = QueueDevice::new(1500);
        let mut iface = Interface::new(IfaceConfig::new(HardwareAddress::Ip), &mut queues, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            // Room for one address; the /32 keeps smoltcp from claiming a subnet.
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), 32));
        });
        // Medium IP has no next hop to resolve: any route works; replies go back to the sender.
        let _ = iface.routes_mut().add_default_ipv4_route(ip);
        let mut sockets = SocketSet::new(vec![]);
        let mut listeners = Vec::new();
        for &port in ports {
            for _ in 0..SOCKETS_PER_PORT {
                let mut s = new_socket();
                let _ = s.listen(port);
                listeners.push(Listener { handle: sockets.add(s), port, request: Vec::new(), answered: false });
            }
        }
        let mut c = ControlIf {
            ip,
            mac,
            queues,
            iface,
            sockets,
            listeners,
            peers: HashMap::new(),
            counters: Default::default(),
        };
        c.poll(now_ms, Health::Healthy);
        c
    }

    /// A frame from a worker: Ethernet, IPv4, TCP to us.
    pub fn ingest(&mut self, frame: &[u8]) {
        self.counters.rx_frames += 1;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.rx_dropped += 1;
            return;
        };
        let ip = match Ipv4Packet::new_checked(eth.payload()) {
            Ok(ip)
                if eth.ethertype() == EtherType::IPV4
                    && ip.protocol() == ip_protocol::TCP
                    && ip.dst_addr() == self.ip =>
            {
                ip
            }
            _ => {
                self.counters.rx_dropped += 1;
                return;
            }
        };
        let src = ip.src_addr();
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&src) {
            self.peers.clear();
        }
        self.peers.insert(src, eth.src_addr().0);
        // Ethernet padding past the IP packet is not smoltcp's.
        let len = usize::from(ip.total_len());
        self.queues.rx.push_back(eth.payload()[..len].to_vec());
    }

    /// Runs the stack and the HTTP answers; returns the frames to transmit.
    pub fn poll(&mut self, now_ms: u64, health: Health) -> Vec<Vec<u8>> {
        let now = Instant::from_millis(now_ms as i64);
        self.iface.poll(now, &mut self.queues, &mut self.sockets);
        let mut answered_any = false;
        for l in &mut self.listeners {
            let s = self.sockets.get_mut::<tcp::Socket>(l.handle);
            if !s.is_open() {
                l.request.clear();
                l.answered = false;
                let _ = s.listen(l.port);
                continue;
            }
            if l.answered {
                continue;
            }
            let mut buf = [0u8; 1024];
            while s.can_recv() {
                match s.recv_slice(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => l.request.extend_from_slice(&buf[..n]),
                }
            }
            let head_done = l.request.windows(4).any(|w| w == b"\r\n\r\n");
            if head_done || l.request.len() > MAX_REQUEST {
                let (response, counted) = answer(&l.request, health, head_done);
                self.counters.http_requests += 1;
                match counted {
                    200 => self.counters.http_ok += 1,
                    503 => self.counters.http_unavailable += 1,
                    _ => {}
                }
                let _ = s.send_slice(response.as_bytes());
                s.close();
                l.answered = true;
                answered_any = true;
            } else if !s.may_recv() && s.may_send() {
                // The peer closed without a request: a TCP health check. Close our side.
                s.close();
            }
        }
        if answered_any {
            self.iface.poll(now, &mut self.queues, &mut self.sockets);
        }
        let mut out = Vec::new();
        while let Some(p) = self.queues.tx.pop_front() {
            let Ok(ip) = Ipv4Packet::new_checked(&p[..]) else { continue };
            let Some(dst_mac) = self.peers.get(&ip.dst_addr()).copied() else {
                self.counters.tx_no_peer += 1;
                continue;
            };
            let mut f = vec![0u8; ethernet::HEADER_LEN + p.len()];
            let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
            eth.set_dst_addr(ethernet::Address(dst_mac));
            eth.set_src_addr(ethernet::Address(self.mac));
            eth.set_ethertype(EtherType::IPV4);
            f[ethernet::HEADER_LEN..].copy_from_slice(&p);
            self.counters.tx_frames += 1;
            out.push(f);
        }
        out
    }
}

/// The HTTP response to a request head, and its status. A HEAD request gets the status line
/// and headers only (with `Content-Length: 0`, the simplest correct answer for a health check).
fn answer(request: &[u8], health: Health, complete: bool) -> (String, u16) {
    let line = request.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    let (status, reason, body) = match (complete, method, path, version) {
        (true, Some(m @ ("GET" | "HEAD")), Some(p), Some(v)) if v.starts_with("HTTP/1.") => {
            let (status, reason, body) = match p.split('?').next().unwrap_or(p) {
                "/healthz" | "/" => match health {
                    Health::Healthy => (200, "OK", "ok\n"),
                    Health::Draining => (503, "Service Unavailable", "draining\n"),
                    Health::WorkerDown => (503, "Service Unavailable", "a worker is down\n"),
                },
                _ => (404, "Not Found", "not found\n"),
            };
            (status, reason, if m == "HEAD" { "" } else { body })
        }
        _ => (400, "Bad Request", "bad request\n"),
    };
    (
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        status,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_path_and_health() {
        let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let (r, s) = answer(req, Health::Healthy, true);
        assert_eq!(s, 200);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"), "{r}");
        assert_eq!(answer(req, Health::Draining, true).1, 503);
        assert_eq!(answer(req, Health::WorkerDown, true).1, 503);
        assert_eq!(answer(b"GET / HTTP/1.0\r\n\r\n", Health::Healthy, true).1, 200);
        assert_eq!(answer(b"GET /x HTTP/1.1\r\n\r\n", Health::Healthy, true).1, 404);
        assert_eq!(answer(b"\x16\x03\x01 tls hello\r\n\r\n", Health::Healthy, true).1, 400);
        assert_eq!(answer(b"GET /healthz HTTP/1.1\r\nHost", Health::Healthy, false).1, 400);
        let (head, s) = answer(b"HEAD /healthz HTTP/1.1\r\n\r\n", Health::Healthy, true);
        assert_eq!(s, 200);
        assert!(head.ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"), "{head}");
    }
}
