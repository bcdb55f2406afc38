//! The interception layer end to end, in memory and deterministic: no DPDK, no sockets, no
//! threads, a fake clock.
//!
//! ```text
//!  client (smoltcp, 198.18.1.10) ─┐                                    ┌─ server (smoltcp, 198.18.2.10)
//!                                 ▼                                    ▼
//!           "GWLB": wrap in Ethernet/IPv4/UDP 6081/Geneve (client's or provider's endpoint id)
//!                                 ▼
//!           FastPath::handle ─▶ Verdict::Intercept ─▶ Interceptor::input (the two legs, the proxy)
//!                            └▶ Verdict::Transmit  ─┐
//!           Interceptor::poll ─▶ TestWire (FastPath::outer + inner packet) ─┤
//!                                 ▼                                          ▼
//!           "GWLB": check the outer headers, strip them, deliver by inner destination
//! ```
//!
//! One round of [`Net::step`] is one millisecond of the fake clock: both peers poll, GWLB carries
//! what they sent to the appliance, the appliance runs its tasks and timers, GWLB carries what
//! the appliance sent back to the peers (they read it at the next round).

use flowdog::config::InterceptSection;
use flowdog::control::QueueDevice;
use flowdog::intercept::hook::Builtin;
use flowdog::intercept::{GwlbIds, Interceptor, Wire};
use flowdog_core::build::{Encap, ENCAP_LEN};
use flowdog_core::policy::PortRange;
use flowdog_core::{Action, Direction, FastPath, FastPathConfig, FlowTableConfig, Policy, Rule, Verdict};
use flowdog_wire::geneve::{self, AwsOptions};
use flowdog_wire::{EthernetFrame, GenevePacket, Ipv4Packet, UdpPacket};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use std::cell::Cell;
use std::net::Ipv4Addr;
use std::rc::Rc;

// The appliance and the GWLB in front of it (outer addressing).
const APP_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const APP_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const GW_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
// The two ends of the inner connection, and the GWLB endpoint ids each side's traffic carries.
const CLIENT: Ipv4Address = Ipv4Address::new(198, 18, 1, 10);
const SERVER: Ipv4Address = Ipv4Address::new(198, 18, 2, 10);
const CLIENT_PORT: u16 = 40000;
const CLIENT_VPCE: u64 = 0x0123_4567_89ab_cdef;
const PROVIDER_VPCE: u64 = 0x0fed_cba9_8765_4321;
/// The flow table's clock: ticks are microseconds here.
const TICKS_PER_SEC: u64 = 1_000_000;

/// GWLB's per-flow values: the cookie and the outer UDP source port.
fn cookie(client_port: u16) -> u32 {
    0xc00c_0000 | client_port as u32
}
fn gwlb_udp_port(client_port: u16) -> u16 {
    20000 + client_port % 10000
}

thread_local! {
    /// Milliseconds of the fake clock, for the peers' TCP timestamps (smoltcp asks a plain fn).
    static PEER_MS: Cell<u32> = const { Cell::new(0) };
}

fn peer_tsval() -> u32 {
    PEER_MS.with(|c| c.get())
}

/// What kind of end host a peer is.
#[derive(Debug, Clone, Copy)]
struct Host {
    /// Its IP MTU: nothing the appliance sends it may be longer.
    mtu: usize,
    /// TCP timestamps (Linux's default). smoltcp 0.12 fills a segment up to the MSS without
    /// counting its own options, so a smoltcp peer with timestamps drops its own full-size
    /// segments (12 bytes over its MTU) unless the appliance's MSS is the smaller: such peers
    /// only send small messages here, or have an MTU above the legs'.
    timestamps: bool,
}

/// An Ethernet host as Linux sets it up.
const LINUX: Host = Host { mtu: 1500, timestamps: true };
/// An Ethernet host that can send full segments through smoltcp (see [`Host::timestamps`]).
const PLAIN: Host = Host { mtu: 1500, timestamps: false };
/// An EC2 instance: jumbo frames, timestamps.
const JUMBO: Host = Host { mtu: 9001, timestamps: true };

/// One end host: an interface with one address and one TCP socket (more with
/// [`Peer::add_socket`]).
struct Peer {
    name: &'static str,
    host: Host,
    iface: Interface,
    dev: QueueDevice,
    sockets: SocketSet<'static>,
    /// The first socket (the one whose state changes are logged).
    tcp: SocketHandle,
    /// The socket's state after the last poll (for the log of state changes).
    last: State,
    /// Packets the appliance sent it, and the longest.
    rx_packets: usize,
    rx_largest: usize,
}

impl Peer {
    fn new(name: &'static str, host: Host, addr: Ipv4Address, seed: u64, now: Instant) -> Peer {
        let mut dev = QueueDevice::new(host.mtu);
        let mut cfg = IfaceConfig::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, now);
        iface.update_ip_addrs(|a| a.push(IpCidr::new(addr.into(), 24)).expect("one address"));
        // Everything off-subnet goes "to the router", which is GWLB's route table here.
        let gw = Ipv4Address::from_bits(addr.to_bits() & !0xff | 1);
        iface.routes_mut().add_default_ipv4_route(gw).expect("one route");
        let mut sockets = SocketSet::new(Vec::new());
        let tcp = sockets.add(tcp_socket(host));
        Peer { name, host, iface, dev, sockets, tcp, last: State::Closed, rx_packets: 0, rx_largest: 0 }
    }

    /// Another TCP socket on the same interface.
    fn add_socket(&mut self) -> SocketHandle {
        self.sockets.add(tcp_socket(self.host))
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut(self.tcp)
    }

    fn socket_at(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut(h)
    }

    fn state(&self) -> State {
        self.sockets.get::<tcp::Socket>(self.tcp).state()
    }

    fn connect(&mut self, to: Ipv4Address, port: u16, local_port: u16) {
        self.connect_at(self.tcp, to, port, local_port);
    }

    fn connect_at(&mut self, h: SocketHandle, to: Ipv4Address, port: u16, local_port: u16) {
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        s.connect(self.iface.context(), (IpAddress::Ipv4(to), port), local_port).expect("connect");
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }
}

/// A peer's TCP socket: 64 KiB buffers, timestamps as the host has them.
fn tcp_socket(host: Host) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 65536]));
    if host.timestamps {
        s.set_tsval_generator(Some(peer_tsval));
    }
    s
}

/// The appliance's way out, as the worker's `WorkerWire`, into a Vec instead of an mbuf: the
/// flow's outer headers for the direction (the Geneve header GWLB last sent that way), then the
/// inner packet the leg writes.
struct TestWire<'a> {
    fast: &'a FastPath,
    out: &'a mut Vec<Vec<u8>>,
    no_header: &'a mut u64,
}

impl Wire for TestWire<'_> {
    fn emit(&mut self, slot: u32, to_client: bool, len: usize, fill: &mut dyn FnMut(&mut [u8])) {
        let client_dir = self.fast.table.entry(slot as usize).initiator;
        let dir = match (to_client, client_dir) {
            (false, d) => d,
            (true, Direction::LoToHi) => Direction::HiToLo,
            (true, Direction::HiToLo) => Direction::LoToHi,
        };
        let Some(outer) = self.fast.outer(slot as usize, dir) else {
            *self.no_header += 1;
            return;
        };
        let mut f = vec![0; outer.len() + len];
        fill(&mut f[outer.len()..]);
        outer.write(&mut f);
        self.out.push(f);
    }
}

/// A state change of a peer's socket: the round it was seen in, the peer, the new state.
type Event = (u64, &'static str, State);

/// The whole network: the two peers, the appliance (fast path and interceptor) and the frames
/// in flight towards GWLB.
struct Net {
    client: Peer,
    server: Peer,
    fast: FastPath,
    icpt: Interceptor,
    /// The plugin chain's engine (header_case, the real wasm plugin), alive as long as the net.
    _plugins: flowdog::plugin::Plugins,
    /// Frames the appliance sent (to GWLB), delivered at the end of the round.
    to_gwlb: Vec<Vec<u8>>,
    /// Packets of the appliance that had no outer header for their direction (lost).
    no_header: u64,
    round: u64,
    events: Vec<Event>,
}

impl Net {
    fn new(client: Host, server: Host) -> Net {
        let now = Instant::from_secs(1);
        let http = Rule {
            name: "http".into(),
            src: None,
            dst: None,
            protocol: Some(6),
            src_ports: None,
            dst_ports: Some(PortRange { lo: 80, hi: 80 }),
            vpc_endpoint_id: None,
            action: Action::Intercept,
        };
        let fast = FastPath::new(
            FastPathConfig {
                ip: APP_IP,
                mac: APP_MAC,
                outer_ttl: 64,
                worker: 0,
                workers: 1,
                verify_ipv4_checksum: true,
                control: false,
            },
            Policy { rules: vec![http], default: Action::Allow },
            FlowTableConfig {
                capacity: 1024,
                tcp_idle: 350 * TICKS_PER_SEC,
                other_idle: 120 * TICKS_PER_SEC,
                closed: 10 * TICKS_PER_SEC,
            },
        );
        // The configuration's defaults (64 KiB leg buffers, the MTU a 2 176-byte mbuf allows).
        // The rewrite is the header_case plugin (scripts/build-plugins.sh builds it) for one host.
        let wasm = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("wasm-plugins/target/wasm32-wasip1/release/header_case.wasm");
        assert!(wasm.exists(), "{} is missing: run scripts/build-plugins.sh", wasm.display());
        let entry: flowdog::plugin::PluginEntry = toml::from_str(&format!(
            "name = \"header_case\"\nfile = \"{}\"\nconfiguration = '{{\"hosts\": [\"www.example\"]}}'",
            wasm.display()
        ))
        .unwrap();
        let settings: flowdog::plugin::PluginsSection = toml::from_str("callback_deadline_ms = 2000").unwrap();
        let (events, _) = flowdog::plugin::test_events();
        let (plugins, _) = flowdog::plugin::Plugins::load(&settings, &[entry], 1, events).expect("header_case loads");
        let vms = plugins.instantiate(0, true).expect("header_case starts");
        let section = InterceptSection::default();
        let hook = Builtin { mark_responses: true };
        let icpt = Interceptor::new(section.settings(2176, 350), 0, Rc::new(hook), None, 42).with_plugins(vms, 1);
        Net {
            client: Peer::new("client", client, CLIENT, 1, now),
            server: Peer::new("server", server, SERVER, 2, now),
            fast,
            icpt,
            _plugins: plugins,
            to_gwlb: Vec::new(),
            no_header: 0,
            round: 0,
            events: Vec::new(),
        }
    }

    /// The fake clock: one millisecond per round, from 1 s.
    fn now(&self) -> Instant {
        Instant::from_millis(1000 + self.round as i64)
    }

    fn ticks(&self) -> u64 {
        self.now().total_micros() as u64
    }

    /// One round: the peers, GWLB to the appliance, the appliance's own work, GWLB to the peers.
    fn step(&mut self) {
        let now = self.now();
        PEER_MS.with(|c| c.set(now.total_millis() as u32));
        for p in [&mut self.server, &mut self.client] {
            p.poll(now);
            let s = p.state();
            if s != p.last {
                self.events.push((self.round, p.name, s));
                p.last = s;
            }
        }
        for p in std::mem::take(&mut self.client.dev.tx) {
            self.gwlb_in(p, true);
        }
        for p in std::mem::take(&mut self.server.dev.tx) {
            self.gwlb_in(p, false);
        }
        // The worker polls its interceptor every loop, many times a millisecond: run it until
        // its tasks are idle.
        for _ in 0..16 {
            let mut wire = TestWire { fast: &self.fast, out: &mut self.to_gwlb, no_header: &mut self.no_header };
            self.icpt.poll(&mut wire, now);
            if !self.icpt.busy() {
                break;
            }
        }
        self.fast.tick(self.ticks());
        for f in std::mem::take(&mut self.to_gwlb) {
            self.gwlb_out(f);
        }
        self.round += 1;
    }

    /// GWLB receives an inner packet a peer sent and hands it to the appliance, encapsulated
    /// with that side's endpoint id and the flow's cookie.
    fn gwlb_in(&mut self, inner: Vec<u8>, from_client: bool) {
        let (src_port, dst_port) = tcp_ports(&inner);
        let client_port = if from_client { src_port } else { dst_port };
        let mut frame = vec![0; ENCAP_LEN + inner.len()];
        frame[..6].copy_from_slice(&APP_MAC);
        frame[6..12].copy_from_slice(&GW_MAC);
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        Encap {
            src_ip: GW_IP,
            dst_ip: APP_IP,
            src_port: gwlb_udp_port(client_port),
            ttl: 64,
            vpc_endpoint_id: if from_client { CLIENT_VPCE } else { PROVIDER_VPCE },
            attachment_id: 0,
            flow_cookie: cookie(client_port),
        }
        .emit(&mut frame[14..ENCAP_LEN], 0x0800, inner.len());
        frame[ENCAP_LEN..].copy_from_slice(&inner);
        let (now, ticks) = (self.now(), self.ticks());
        match self.fast.handle(&mut frame, ticks, false) {
            Verdict::Intercept(v) => {
                // As `Worker::intercept`: the GWLB options of the client's direction.
                let client_dir = self.fast.table.entry(v.slot as usize).initiator;
                let m = self.fast.dir_meta(v.slot as usize, client_dir);
                let ids = GwlbIds {
                    vpc_endpoint_id: m.vpc_endpoint_id,
                    attachment_id: m.attachment_id,
                    flow_cookie: m.flow_cookie,
                };
                let inner = v.inner_off as usize..v.inner_off as usize + v.inner_len as usize;
                let mut wire = TestWire { fast: &self.fast, out: &mut self.to_gwlb, no_header: &mut self.no_header };
                self.icpt.input(&mut wire, &v, &mut frame[inner], ids, now).expect("a TCP pair is free");
            }
            Verdict::Transmit => self.to_gwlb.push(frame),
            Verdict::TransmitLen(n) => {
                frame.truncate(n);
                self.to_gwlb.push(frame);
            }
            v => panic!("a GWLB frame got {v:?}"),
        }
    }

    /// GWLB receives a frame from the appliance: it must be turned around (outer addresses
    /// swapped) and carry the Geneve options GWLB sent in that direction; the inner packet goes
    /// to the peer it is addressed to.
    fn gwlb_out(&mut self, frame: Vec<u8>) {
        let eth = EthernetFrame::new_checked(&frame[..]).expect("Ethernet");
        assert_eq!((eth.dst_addr().0, eth.src_addr().0), (GW_MAC, APP_MAC), "outer MACs");
        let ip = Ipv4Packet::new_checked(eth.payload()).expect("outer IPv4");
        assert!(ip.verify_checksum(), "outer IPv4 checksum");
        assert_eq!((ip.src_addr(), ip.dst_addr()), (APP_IP, GW_IP), "outer IPs swapped");
        assert_eq!(ip.total_len() as usize, frame.len() - 14, "outer IPv4 length");
        let udp = UdpPacket::new_checked(ip.payload()).expect("UDP");
        assert_eq!(udp.dst_port(), geneve::UDP_PORT);
        let g = GenevePacket::new_checked(udp.payload()).expect("Geneve");
        let o = AwsOptions::parse(g.options()).expect("the AWS options");
        let inner = g.payload();
        let ipi = Ipv4Packet::new_checked(inner).expect("inner IPv4");
        assert_eq!(ipi.total_len() as usize, inner.len(), "inner length");
        let to_client = ipi.dst_addr().octets() == CLIENT.octets();
        let (src_port, dst_port) = tcp_ports(inner);
        let client_port = if to_client { dst_port } else { src_port };
        let vpce = if to_client { PROVIDER_VPCE } else { CLIENT_VPCE };
        assert_eq!(
            (o.vpc_endpoint_id, o.attachment_id, o.flow_cookie, udp.src_port()),
            (vpce, 0, cookie(client_port), gwlb_udp_port(client_port)),
            "the Geneve options and UDP port GWLB sent that way (to_client {to_client})"
        );
        let peer = if to_client { &mut self.client } else { &mut self.server };
        let mtu = peer.dev.mtu;
        assert!(inner.len() <= mtu, "a {}-byte packet for the {}'s {mtu}-byte MTU", inner.len(), peer.name);
        peer.rx_packets += 1;
        peer.rx_largest = peer.rx_largest.max(inner.len());
        peer.dev.rx.push_back(inner.to_vec());
    }

    /// Runs rounds until `done` (called before each, with the peers' applications in it) says
    /// so; panics after `max` rounds. Returns the rounds it took.
    fn run_until(&mut self, max: u64, mut done: impl FnMut(&mut Net) -> bool) -> u64 {
        let start = self.round;
        while self.round - start < max {
            if done(self) {
                return self.round - start;
            }
            self.step();
        }
        panic!(
            "not done after {max} rounds: client {}, server {}, pairs {}, tasks {}, {:?}",
            self.client.state(),
            self.server.state(),
            self.icpt.active(),
            self.icpt.tasks(),
            self.icpt.counters
        );
    }

    /// The round a peer's socket first reached a state.
    fn reached(&self, peer: &str, state: State) -> u64 {
        let e = self.events.iter().find(|e| e.1 == peer && e.2 == state);
        e.unwrap_or_else(|| panic!("{peer} never {state}: {:?}", self.events)).0
    }

    /// What every test ends with: no frame lost for want of a header, nothing dropped.
    fn check_clean(&self) {
        assert_eq!(self.no_header, 0, "appliance packets without an outer header");
        assert_eq!(self.fast.counters.total_drops(), 0, "fast-path drops");
        assert_eq!(self.icpt.counters.no_pair, 0, "packets for no pair");
    }
}

/// The TCP ports of an IPv4 packet without options.
fn tcp_ports(ip: &[u8]) -> (u16, u16) {
    let t = &ip[(ip[0] & 0xf) as usize * 4..];
    (u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]]))
}

/// Sends what fits of `data[*sent..]`.
fn send_some(s: &mut tcp::Socket, data: &[u8], sent: &mut usize) {
    if *sent < data.len() && s.may_send() {
        *sent += s.send_slice(&data[*sent..]).expect("send");
    }
}

/// Appends what the socket received.
fn recv_some(s: &mut tcp::Socket, buf: &mut Vec<u8>) {
    while s.can_recv() {
        s.recv(|d| {
            buf.extend_from_slice(d);
            (d.len(), ())
        })
        .expect("recv");
    }
}

/// An HTTP/1.1 message once it is whole (head and a Content-Length body): its head and body.
fn whole_message(buf: &[u8]) -> Option<(String, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8(buf[..end].to_vec()).expect("an ASCII head");
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().expect("a length"));
    (buf.len() >= end + len).then(|| (head, &buf[end..end + len]))
}

/// One HTTP/1.1 exchange played by the peers' applications: the client sends `request`; the
/// server, once it has the whole request, sends `response`; the client reads it.
struct Exchange {
    request: Vec<u8>,
    response: Vec<u8>,
    request_sent: usize,
    response_sent: usize,
    server_got: Vec<u8>,
    client_got: Vec<u8>,
}

impl Exchange {
    fn new(request: Vec<u8>, response: Vec<u8>) -> Exchange {
        Exchange {
            request,
            response,
            request_sent: 0,
            response_sent: 0,
            server_got: Vec::new(),
            client_got: Vec::new(),
        }
    }

    /// One turn of both applications; true once the client has the whole response.
    fn play(&mut self, net: &mut Net) -> bool {
        let (c, s) = (net.client.tcp, net.server.tcp);
        self.play_at(net, c, s)
    }

    /// [`Exchange::play`] on other sockets of the peers.
    fn play_at(&mut self, net: &mut Net, client: SocketHandle, server: SocketHandle) -> bool {
        send_some(net.client.socket_at(client), &self.request, &mut self.request_sent);
        recv_some(net.server.socket_at(server), &mut self.server_got);
        if whole_message(&self.server_got).is_some() {
            send_some(net.server.socket_at(server), &self.response, &mut self.response_sent);
        }
        recv_some(net.client.socket_at(client), &mut self.client_got);
        whole_message(&self.client_got).is_some()
    }

    /// The request head as the server saw it.
    fn server_head(&self) -> String {
        whole_message(&self.server_got).expect("a whole request").0
    }
}

fn get(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: test/1\r\nAccept: */*\r\n\r\n").into_bytes()
}

const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

/// A network with the server listening on :80 and the client connecting to it.
fn connected_net(client: Host, server: Host) -> Net {
    let mut net = Net::new(client, server);
    net.server.socket().listen(80).expect("listen");
    net.client.connect(SERVER, 80, CLIENT_PORT);
    net
}

#[test]
fn http11_through_the_proxy() {
    let mut net = connected_net(LINUX, LINUX);
    let mut x = Exchange::new(get("www.example"), HELLO.to_vec());
    net.run_until(2000, |n| x.play(n));

    let head = x.server_head();
    assert!(head.contains("\r\nuser-agent: test/1\r\n"), "the rewrite for www.example: {head:?}");
    let (resp, body) = whole_message(&x.client_got).expect("a whole response");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp:?}");
    assert!(resp.lines().any(|l| l.eq_ignore_ascii_case("x-flowdog: 1")), "{resp:?}");
    assert_eq!(body, b"hello");
    // The server sees the client's own address: the appliance is transparent.
    let remote = net.server.socket().remote_endpoint().expect("connected");
    assert_eq!((remote.addr, remote.port), (IpAddress::Ipv4(CLIENT), CLIENT_PORT));

    // Delayed SYN-ACK: the client's handshake completes only after the server's began (it got
    // the SYN and answered) and no earlier than the server's completed.
    let client_up = net.reached("client", State::Established);
    assert!(net.reached("server", State::SynReceived) < client_up, "{:?}", net.events);
    assert!(net.reached("server", State::Established) <= client_up, "{:?}", net.events);

    assert_eq!((net.icpt.counters.created, net.icpt.counters.refused), (1, 0));
    let h = net.icpt.http_stats();
    assert_eq!((h.requests.get(), h.responses.get()), (1, 1));
    assert_eq!(net.icpt.active(), 1, "the connection stays open (keep-alive)");
    net.check_clean();
}

#[test]
fn refused_connection_gets_a_reset() {
    // No listening socket: the server's stack answers the SYN with a RST.
    let mut net = Net::new(LINUX, LINUX);
    net.client.connect(SERVER, 80, CLIENT_PORT);
    let rounds = net.run_until(50, |n| n.client.state() == State::Closed);
    assert!(rounds <= 5, "reset after {rounds} rounds");
    assert!(!net.events.iter().any(|e| e.1 == "client" && e.2 == State::Established), "{:?}", net.events);
    assert_eq!(net.icpt.counters.refused, 1);
    assert_eq!(net.icpt.active(), 0);
    net.check_clean();
}

#[test]
fn another_host_keeps_its_header_case() {
    let mut net = connected_net(LINUX, LINUX);
    let mut x = Exchange::new(get("other.example"), HELLO.to_vec());
    net.run_until(2000, |n| x.play(n));
    let head = x.server_head();
    assert!(head.contains("\r\nUser-Agent: test/1\r\n"), "{head:?}");
    assert!(head.contains("\r\nAccept: */*\r\n"), "{head:?}");
    let (_, body) = whole_message(&x.client_got).expect("a whole response");
    assert_eq!(body, b"hello");
    net.check_clean();
}

#[test]
fn both_closing_tears_the_pair_down() {
    let mut net = connected_net(LINUX, LINUX);
    let mut x = Exchange::new(get("www.example"), HELLO.to_vec());
    net.run_until(2000, |n| x.play(n));
    assert_eq!(net.icpt.active(), 1);

    // The client closes; the server closes when it sees the FIN (the proxy passes it on).
    net.client.socket().close();
    let gone = |s: State| matches!(s, State::Closed | State::TimeWait);
    net.run_until(2000, |n| {
        if n.server.state() == State::CloseWait {
            n.server.socket().close();
        }
        gone(n.client.state()) && gone(n.server.state()) && n.icpt.active() == 0
    });
    assert_eq!(net.icpt.counters.closed, 1);
    // The proxy's tasks end with the connection.
    net.run_until(100, |n| n.icpt.tasks() == 0);
    net.check_clean();
}

/// A server that fails in the middle of a response (a RST after part of its body) ends that
/// response and its connection only: the client gets the head and what arrived, then its
/// connection ends; the pair and its tasks go; another connection of the same client through
/// the same worker, opened before the failure, still works after it.
#[test]
fn upstream_failing_mid_response_ends_only_that_response() {
    // The server sends full segments: no timestamps (see [`Host::timestamps`]).
    let mut net = connected_net(LINUX, PLAIN);
    let up = |s: State| s == State::Established;
    net.run_until(100, |n| up(n.client.state()) && up(n.server.state()) && n.icpt.active() == 1);
    net.run_until(100, |n| !n.icpt.busy());
    // What one idle intercepted connection runs (its proxy task waiting for the request).
    let idle_tasks = net.icpt.tasks();
    assert!(idle_tasks > 0);

    // The second connection, from another source port, opened before the failure.
    let (c2, s2) = (net.client.add_socket(), net.server.add_socket());
    net.server.socket_at(s2).listen(80).expect("listen");
    net.client.connect_at(c2, SERVER, 80, CLIENT_PORT + 1);
    net.run_until(100, |n| {
        up(n.client.socket_at(c2).state()) && up(n.server.socket_at(s2).state()) && n.icpt.active() == 2
    });
    let remote = net.server.socket_at(s2).remote_endpoint().expect("connected");
    assert_eq!(remote.port, CLIENT_PORT + 1, "the second listener took the second connection");

    // The first connection: the server sends the head and 10 000 of 100 000 body bytes; once
    // they are acknowledged (the appliance has them), it aborts (RST).
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
    response.extend((0..10_000).map(|i| (i % 251) as u8));
    let (request, mut request_sent, mut response_sent) = (get("www.example"), 0, 0);
    let (mut server_got, mut client_got) = (Vec::new(), Vec::new());
    net.run_until(500, |n| {
        send_some(n.client.socket(), &request, &mut request_sent);
        recv_some(n.server.socket(), &mut server_got);
        if whole_message(&server_got).is_some() {
            send_some(n.server.socket(), &response, &mut response_sent);
        }
        recv_some(n.client.socket(), &mut client_got);
        response_sent == response.len() && n.server.socket().send_queue() == 0
    });
    net.server.socket().abort();

    // The client's connection ends (FIN or RST) within a bounded number of rounds; it closes
    // its side on the FIN, as an application at the end of the stream.
    let rounds = net.run_until(200, |n| {
        recv_some(n.client.socket(), &mut client_got);
        let s = n.client.socket();
        if s.state() == State::CloseWait {
            s.close();
        }
        matches!(s.state(), State::Closed | State::TimeWait)
    });
    eprintln!("the client's connection ended {rounds} rounds after the RST; events {:?}", net.events);
    let end = client_got.windows(4).position(|w| w == b"\r\n\r\n").expect("the response head") + 4;
    let head = String::from_utf8(client_got[..end].to_vec()).expect("an ASCII head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    let body = &client_got[end..];
    assert!(body.len() < 100_000, "{} body bytes", body.len());
    eprintln!("the client got {} body bytes", body.len());
    assert!(body == &response[response.len() - 10_000..][..body.len()], "the body arrived changed");

    // The first pair and its tasks go; the second's stay as they were.
    net.run_until(200, |n| n.icpt.active() == 1 && n.icpt.tasks() == idle_tasks);
    assert_eq!(net.icpt.counters.closed, 1);

    // The second connection, used after the failure: a normal exchange.
    let mut x = Exchange::new(get("www.example"), HELLO.to_vec());
    net.run_until(2000, |n| x.play_at(n, c2, s2));
    let (resp, body) = whole_message(&x.client_got).expect("a whole response");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp:?}");
    assert_eq!(body, b"hello");
    assert!(x.server_head().contains("\r\nuser-agent: test/1\r\n"), "{:?}", x.server_head());

    // It closes; then nothing is left.
    net.client.socket_at(c2).close();
    let gone = |s: State| matches!(s, State::Closed | State::TimeWait);
    net.run_until(2000, |n| {
        if n.server.socket_at(s2).state() == State::CloseWait {
            n.server.socket_at(s2).close();
        }
        gone(n.client.socket_at(c2).state()) && gone(n.server.socket_at(s2).state()) && n.icpt.active() == 0
    });
    net.run_until(100, |n| n.icpt.tasks() == 0);
    assert_eq!((net.icpt.counters.created, net.icpt.counters.closed), (2, 2));
    net.check_clean();
}

/// `up` bytes of request body to the server and `down` bytes of response body back, both
/// compared byte for byte. Returns the network after.
fn transfer(client: Host, server: Host, up: usize, down: usize) -> Net {
    let body = |n: usize, seed: usize| (0..n).map(|i| ((i * 7 + seed) % 251) as u8).collect::<Vec<u8>>();
    let (up, down) = (body(up, 1), body(down, 2));
    let len = up.len();
    let mut request = format!("POST /up HTTP/1.1\r\nHost: www.example\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    request.extend_from_slice(&up);
    let len = down.len();
    let mut response = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    response.extend_from_slice(&down);

    let mut net = connected_net(client, server);
    let mut x = Exchange::new(request, response);
    net.run_until(20_000, |n| x.play(n));

    let (_, got_up) = whole_message(&x.server_got).expect("the whole request");
    assert!(got_up == &up[..], "the request body arrived changed");
    let (head, got_down) = whole_message(&x.client_got).expect("the whole response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    assert!(got_down == &down[..], "the response body arrived changed");
    net.check_clean();
    net
}

const MIB: usize = 1 << 20;

#[test]
fn a_mebibyte_each_way() {
    let net = transfer(PLAIN, PLAIN, MIB, MIB);
    // Many full segments each way, through 64 KiB windows.
    for p in [&net.client, &net.server] {
        assert!(p.rx_packets > MIB / 1460, "{}: {} packets", p.name, p.rx_packets);
        assert_eq!(p.rx_largest, 1500, "{}", p.name);
    }
    eprintln!("2 MiB through the proxy in {} ms of the fake clock", net.round);
}

/// The client leg's segments to a 1500-byte-MTU client with timestamps are exactly 1500 bytes:
/// the client's MSS was lowered by the 12 bytes of the option (`clamp_mss`). The jumbo server
/// sends full segments (the upstream leg's MSS is the smaller).
#[test]
fn a_mebibyte_down_to_a_linux_client() {
    let net = transfer(LINUX, JUMBO, 0, MIB);
    assert_eq!(net.client.rx_largest, 1500);
}

/// Hosts with a 9001-byte MTU and timestamps (EC2's and Linux's defaults) advertise MSS 8961,
/// more than a leg whose MTU the mbuf room caps at 1 942 can carry once smoltcp adds its 12-byte
/// timestamp option (it does not count options): `clamp_mss` lowers the MSS to what fits the
/// leg, or every full segment would exceed the leg's MTU and stall the exchange.
#[test]
fn a_mebibyte_between_jumbo_hosts() {
    transfer(JUMBO, JUMBO, MIB, MIB);
}
