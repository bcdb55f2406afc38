//! The flow acceptor: the `flow_acceptor` plugin in stream contexts, asking a real HTTP
//! authorizer on loopback, driven through the worker's `Acceptor` (held packets are numbers here;
//! the lab's tests hold real frames on DPDK).

use super::*;
use flowdog::accept::{AcceptStats, Acceptor, AcceptorConfig, AcceptorSection, Decision};
use flowdog::plugin::PluginKind;
use flowdog_core::FlowKey;
use std::io::{Read, Write};

/// An authorizer on loopback: for each of `n` connections, reads one request and answers with
/// `status` and `body` (or, with `hang`, keeps the connection open without answering for 3 s).
/// Returns the requests' bodies.
fn authorizer(status: u16, body: &'static str, n: usize, hang: bool) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // The head, then as many body bytes as Content-Length says.
            loop {
                let k = s.read(&mut chunk).unwrap_or(0);
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        bodies.push(text[end + 4..end + 4 + len].to_owned());
                        break;
                    }
                }
            }
            if hang {
                std::thread::sleep(Duration::from_secs(3));
                continue;
            }
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        bodies
    });
    (url, h)
}

struct Setup {
    acceptor: Rc<flowdog::plugin::Chain>,
    held: Acceptor<u32>,
    events: Receiver<Event>,
    _plugins: Plugins,
}

/// The flow_acceptor plugin as the acceptor, calling `url`; its `on_error` as given; the
/// acceptor's clock in milliseconds.
fn setup(url: &str, on_error: &str, section: &str) -> Setup {
    let settings: PluginsSection =
        toml::from_str(&format!("callback_deadline_ms = 2000\n[upstreams]\nauthorizer = \"{url}\"")).unwrap();
    let entry: PluginEntry = toml::from_str(&format!(
        "name = \"flow_acceptor\"\nfile = \"{}\"\nkind = \"acceptor\"\n\
         configuration = '{{\"upstream\": \"authorizer\", \"path\": \"/authorize\", \"on_error\": \"{on_error}\"}}'",
        wasm("flow_acceptor").display()
    ))
    .unwrap();
    assert_eq!(entry.kind, PluginKind::Acceptor);
    let (tx, events) = test_events();
    let (plugins, _calls) = Plugins::load(&settings, &[entry], 1, tx).expect("the plugin loads");
    let (http, acceptor) = flowdog::plugin::split(plugins.instantiate(0, true).expect("the plugin starts"));
    assert!(http.is_empty(), "an acceptor is not part of the HTTP chain");
    let section: AcceptorSection = toml::from_str(section).unwrap();
    section.check().unwrap();
    Setup {
        acceptor: acceptor.expect("the acceptor"),
        held: Acceptor::new(AcceptorConfig::new(&section, 1)),
        events,
        _plugins: plugins,
    }
}

fn key(n: u8) -> FlowKey {
    FlowKey { lo: [n; 16], hi: [n + 1; 16], lo_port: 1, hi_port: 2, protocol: 17, ipv6: false }
}

fn udp_flow() -> FlowInfo {
    FlowInfo {
        client: "198.18.1.10:5353".parse().unwrap(),
        server: "198.18.2.10:53".parse().unwrap(),
        vpc_endpoint_id: 0x0123456789abcdef,
        attachment_id: 42,
        flow_cookie: 0xdeadbeef,
        worker: 3,
        protocol: 17,
        tls: None,
    }
}

/// Runs the worker's executor and the acceptor's tick (the clock in ms since the start) until a
/// decision comes, or 10 s pass.
fn decided(s: &mut Setup, ex: &mut Executor, start: Instant) -> Decision<u32> {
    let mut out = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        ex.run(1000);
        s.held.poll(start.elapsed().as_millis() as u64, &mut out);
        if let Some(d) = out.pop() {
            return d;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("no decision");
}

fn stats(s: &Setup) -> AcceptStats {
    s.held.stats
}

#[test]
fn the_acceptor_posts_the_seed_input_and_holds_the_flow_until_the_answer() {
    for (answer, accept) in [(r#"{"Accept": true}"#, true), (r#"{"Accept": false}"#, false)] {
        let (url, server) = authorizer(200, answer, 1, false);
        let mut s = setup(&url, "accept", "");
        let mut ex = Executor::new();
        let start = Instant::now();
        let chain = s.acceptor.clone();
        assert_eq!(s.held.ask(Some(&chain), 7, key(1), udp_flow(), 0), None, "it waits for the authorizer");
        assert_eq!(s.held.waiting(), 1);
        s.held.hold(7, 100).unwrap();
        s.held.hold(7, 101).unwrap();
        let d = decided(&mut s, &mut ex, start);
        assert_eq!((d.slot, d.key, d.accept, d.packets), (7, key(1), accept, vec![100, 101]));
        assert_eq!(s.held.waiting(), 0);
        let st = stats(&s);
        assert_eq!((st.asked, st.accepted, st.denied, st.timed_out), (1, accept as u64, !accept as u64, 0));
        let bodies = server.join().unwrap();
        let v: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "Geneve": {"VpcEndpointId": "vpce-00123456789abcdef", "AttachmentId": "42", "FlowCookie": "deadbeef"},
                "NetworkProtocol": "ipv4",
                "TransportProtocol": "udp",
                "Source": {"Address": "198.18.1.10", "Port": 5353},
                "Destination": {"Address": "198.18.2.10", "Port": 53}
            })
        );
        assert!(failures(&s.events).is_empty());
    }
}

#[test]
fn an_authorizer_that_hangs_gets_the_timeout_default_and_other_flows_go_on() {
    let (url, server) = authorizer(200, "", 1, true);
    let mut s = setup(&url, "accept", "timeout_ms = 300\ndefault = \"deny\"");
    let mut ex = Executor::new();
    let start = Instant::now();
    let chain = s.acceptor.clone();
    assert_eq!(s.held.ask(Some(&chain), 1, key(1), udp_flow(), 0), None);
    let d = decided(&mut s, &mut ex, start);
    assert!(!d.accept, "the default (deny) applies");
    assert!(start.elapsed() >= Duration::from_millis(300), "not before the timeout");
    assert_eq!(stats(&s).timed_out, 1);
    server.join().unwrap();
}

#[test]
fn a_bad_answer_or_a_dead_authorizer_takes_on_error() {
    // A 500, then garbage, then nobody listening: on_error = "deny" each time.
    let (url, server) = authorizer(500, r#"{"Accept": true}"#, 1, false);
    let mut s = setup(&url, "deny", "");
    let mut ex = Executor::new();
    let chain = s.acceptor.clone();
    assert_eq!(s.held.ask(Some(&chain), 1, key(1), udp_flow(), 0), None);
    assert!(!decided(&mut s, &mut ex, Instant::now()).accept);
    server.join().unwrap();

    let (url, server) = authorizer(200, "yes", 1, false);
    let mut s = setup(&url, "deny", "");
    let chain = s.acceptor.clone();
    assert_eq!(s.held.ask(Some(&chain), 1, key(1), udp_flow(), 0), None);
    assert!(!decided(&mut s, &mut ex, Instant::now()).accept);
    server.join().unwrap();

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut s = setup(&url, "accept", "");
    let chain = s.acceptor.clone();
    assert_eq!(s.held.ask(Some(&chain), 1, key(1), udp_flow(), 0), None);
    assert!(decided(&mut s, &mut ex, Instant::now()).accept, "on_error = accept");
}

#[test]
fn waiting_flows_and_their_packets_are_bounded() {
    let (url, server) = authorizer(200, "", 2, true);
    let mut s = setup(&url, "deny", "max_pending_flows = 1\nhold_packets = 2\ndefault = \"accept\"");
    let chain = s.acceptor.clone();
    assert_eq!(s.held.ask(Some(&chain), 1, key(1), udp_flow(), 0), None);
    // A second flow finds the waiting room full: the default at once, not a wait.
    assert_eq!(s.held.ask(Some(&chain), 2, key(2), udp_flow(), 0), Some(true));
    s.held.hold(1, 10).unwrap();
    s.held.hold(1, 11).unwrap();
    assert_eq!(s.held.hold(1, 12), Err((12, true)), "the third packet of a flow is dropped");
    assert_eq!(s.held.hold(2, 20), Err((20, false)), "flow 2 does not wait");
    // Without a plugin, the default.
    assert_eq!(s.held.ask(None, 3, key(3), udp_flow(), 0), Some(true));
    let st = stats(&s);
    assert_eq!((st.asked, st.defaulted, st.queue_full), (1, 2, 1));
    drop(s);
    drop(server);
}

#[test]
fn a_failing_acceptor_decides_by_its_on_failure_at_once() {
    // geneve_headers is an HTTP plugin: loaded as an acceptor, its contexts are HTTP ones and
    // the SDK traps in on_new_connection; its on_failure (open) accepts the flow at once.
    let settings = relaxed();
    let mut e: PluginEntry = toml::from_str(&format!(
        "name = \"geneve_headers\"\nfile = \"{}\"\nkind = \"acceptor\"",
        wasm("geneve_headers").display()
    ))
    .unwrap();
    e.on_failure = OnFailure::Open;
    let (tx, _events) = test_events();
    let (plugins, _calls) = Plugins::load(&settings, &[e], 1, tx).unwrap();
    let (_, acceptor) = flowdog::plugin::split(plugins.instantiate(0, true).unwrap());
    let chain = acceptor.unwrap();
    let mut held: Acceptor<u32> = Acceptor::new(AcceptorConfig::new(&AcceptorSection::default(), 1));
    assert_eq!(held.ask(Some(&chain), 1, key(1), udp_flow(), 0), Some(true));
    assert_eq!(held.stats.defaulted, 1, "decided by on_failure, not by the plugin");
}
