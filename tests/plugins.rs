//! The plugin host through real plugins compiled to wasm (`scripts/build-plugins.sh` builds
//! them into wasm-plugins/target/wasm32-wasip1/release): every host function with good and bad
//! arguments, the seed's plugins, and a plugin that traps, loops or eats memory.

use bytes::Bytes;
use flowdog::intercept::exec::{spawn, Executor};
use flowdog::intercept::hook::FlowInfo;
use flowdog::plugin::http::{Exchange, Stop};
use flowdog::plugin::vm::Vm;
use flowdog::plugin::{test_events, Event, OnFailure, PluginEntry, Plugins, PluginsSection};
use std::cell::RefCell;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

// The seed's plugins that have a module of their own (they use the harness below).
#[path = "plugins/acceptor.rs"]
mod acceptor;
#[path = "plugins/cloudfront.rs"]
mod cloudfront;
#[path = "plugins/seed.rs"]
mod seed;
#[path = "plugins/template.rs"]
mod template;

fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("FLOWDOG_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wasm-plugins/target/wasm32-wasip1/release"));
    let f = dir.join(format!("{name}.wasm"));
    assert!(f.exists(), "{} is missing: build the plugins first (scripts/build-plugins.sh)", f.display());
    f
}

struct Chain {
    vms: Vec<Rc<RefCell<Vm>>>,
    events: Receiver<Event>,
    _plugins: Plugins,
}

/// Settings for tests that are not about the deadline: one a loaded CI machine never trips.
fn relaxed() -> PluginsSection {
    toml::from_str("callback_deadline_ms = 2000").unwrap()
}

fn chain(list: &[(&str, &str, OnFailure)], settings: PluginsSection) -> Chain {
    let entries: Vec<PluginEntry> = list
        .iter()
        .map(|(name, cfg, fail)| {
            let mut e: PluginEntry =
                toml::from_str(&format!("name = \"{name}\"\nfile = \"{}\"", wasm(name).display())).unwrap();
            e.configuration = Some(flowdog::plugin::Configuration::Text(cfg.to_string()));
            e.on_failure = *fail;
            e
        })
        .collect();
    let (tx, events) = test_events();
    let (plugins, _calls) = Plugins::load(&settings, &entries, 1, tx).expect("the plugins load");
    let vms = plugins.instantiate(0, true).expect("the plugins start");
    Chain { vms, events, _plugins: plugins }
}

fn flow() -> Rc<FlowInfo> {
    Rc::new(FlowInfo {
        client: "198.18.1.10:40000".parse().unwrap(),
        server: "198.18.2.10:8080".parse().unwrap(),
        vpc_endpoint_id: 0x0123456789abcdef,
        attachment_id: 42,
        flow_cookie: 0xdeadbeef,
        worker: 0,
        protocol: 6,
        tls: None,
    })
}

/// Runs `f` on a worker-style executor until it finishes.
fn block_on<T: 'static>(f: impl Future<Output = T> + 'static) -> T {
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let mut ex = Executor::new();
    spawn(async move {
        *o.borrow_mut() = Some(f.await);
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        ex.run(1000);
        if let Some(v) = out.borrow_mut().take() {
            return v;
        }
        assert!(Instant::now() < deadline, "the exchange never finished");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn request(path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::get(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn response(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn every_host_function_answers_with_the_spec_status() {
    let c = chain(&[("hostcalls", "hostcalls-config", OnFailure::Closed)], relaxed());
    let ex = Exchange::new(&c.vms, flow(), 1 << 20);
    let r = block_on(async move {
        ex.head(request("/hostcalls", &[("Host", "www.lab.test"), ("User-Agent", "t")]), true).await
    });
    let Err(Stop::Local(resp)) = r else {
        let f: Vec<String> = c.events.try_iter().map(|e| format!("{e:?}")).collect();
        panic!("the test plugin answers locally, got {r:?}; events: {f:?}")
    };
    let body = String::from_utf8(resp.body.to_vec()).unwrap();
    let got: std::collections::HashMap<&str, u32> =
        body.lines().map(|l| l.split_once('=').unwrap()).map(|(k, v)| (k, v.parse().unwrap())).collect();
    // 0 Ok, 1 NotFound, 2 BadArgument, 7 Empty, 8 CasMismatch, 12 Unimplemented; flags 1 = true;
    // WASI errnos: 8 EBADF, 21 EFAULT, 28 EINVAL.
    let want: &[(&str, u32)] = &[
        ("log", 0),
        ("log_bad_level", 2),
        ("log_bad_ptr", 2),
        ("get_log_level", 0),
        ("get_log_level_bad_ptr", 2),
        ("time", 0),
        ("time_nonzero", 1),
        ("time_bad_ptr", 2),
        ("tick", 0),
        ("map_pairs", 0),
        ("map_pairs_has_path", 1),
        ("map_pairs_bad_type", 2),
        ("map_pairs_bad_ret", 2),
        ("map_value", 0),
        ("map_value_is_path", 1),
        ("map_value_missing", 1),
        ("map_value_bad_type", 2),
        ("map_value_bad_key", 2),
        ("map_add", 0),
        ("map_add_bad_name", 2),
        ("map_add_bad_value", 2),
        ("map_add_call_headers", 1),
        ("map_replace", 0),
        ("map_replace_path", 0),
        ("map_replace_bad_path", 2),
        ("map_remove", 0),
        ("map_remove_bad_type", 2),
        ("map_set_garbage", 2),
        ("map_set", 0),
        ("response_map_in_request", 1),
        ("buffer_config", 0),
        ("buffer_config_is", 1),
        ("buffer_bad_type", 2),
        ("buffer_bad_start", 2),
        ("buffer_call_body_outside_call", 1),
        ("buffer_set_config", 1),
        ("buffer_set_body_bad_start", 2),
        ("buffer_set_body", 0),
        ("buffer_set_bad_ptr", 2),
        ("property", 0),
        ("property_is_name", 1),
        ("property_missing", 1),
        ("property_bad_ptr", 2),
        ("property_port", 0),
        ("property_port_is_8_bytes", 1),
        ("property_set", 0),
        ("property_get_set", 0),
        ("property_set_is", 1),
        ("shared_set", 0),
        ("shared_get", 0),
        ("shared_get_is", 1),
        ("shared_set_stale_cas", 8),
        ("shared_set_cas", 0),
        ("shared_get_missing", 1),
        ("shared_get_bad_cas_ptr", 2),
        ("queue_register", 0),
        ("queue_enqueue", 0),
        ("queue_dequeue", 0),
        ("queue_dequeue_is", 1),
        ("queue_dequeue_empty", 7),
        ("queue_enqueue_unknown", 1),
        ("queue_resolve", 0),
        ("queue_resolve_same", 1),
        ("queue_resolve_missing", 1),
        ("metric_define", 0),
        ("metric_define_bad_type", 2),
        ("metric_increment", 0),
        ("metric_increment_negative_counter", 2),
        ("metric_get", 0),
        ("metric_get_is_3", 1),
        ("metric_record_unknown", 1),
        ("metric_get_unknown", 1),
        ("http_call_unknown_upstream", 2),
        ("http_call_bad_headers", 2),
        ("grpc_call", 12),
        ("get_status", 0),
        ("get_status_is_unimplemented", 1),
        ("effective_context_bad", 2),
        ("effective_context", 0),
        ("continue_bad_type", 2),
        ("close_bad_type", 2),
        ("foreign_function", 1),
        ("done", 0),
        ("wasi_fd_write", 0),
        ("wasi_fd_write_all", 1),
        ("wasi_fd_write_bad_fd", 8),
        ("wasi_fd_write_bad_iov", 21),
        ("wasi_random", 0),
        ("wasi_clock", 0),
        ("wasi_clock_bad_id", 28),
        ("local_response_bad_status", 2),
    ];
    for (name, status) in want {
        assert_eq!(got.get(name), Some(status), "{name} (the plugin's report:\n{body})");
    }
    assert_eq!(got.len(), want.len(), "every call the plugin made is checked:\n{body}");
    // Its log lines (proxy_log and fd_write) reached the control plane's queue, the bad ones not.
    let logs: Vec<String> = c
        .events
        .try_iter()
        .filter_map(|e| match e {
            Event::Log { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(logs, vec!["hostcalls: hello".to_string(), "hostcalls: via fd_write".to_string()]);
}

#[test]
fn header_case_lowercases_the_user_agent_name_for_its_hosts() {
    let c = chain(&[("header_case", r#"{"hosts": ["www.lab.test"]}"#, OnFailure::Closed)], relaxed());
    let (a, b) = (Rc::new(Exchange::new(&c.vms, flow(), 1 << 20)), Rc::new(Exchange::new(&c.vms, flow(), 1 << 20)));
    let (ours, other) = block_on(async move {
        let mut ours = request("/", &[("Host", "WWW.lab.test:8080"), ("User-Agent", "curl/8")]);
        ours.extensions.insert(7u32); // stands for hyper's header-case map
        let mut other = request("/", &[("Host", "img.lab.test"), ("User-Agent", "curl/8")]);
        other.extensions.insert(7u32);
        (a.head(ours, true).await.unwrap().unwrap(), b.head(other, true).await.unwrap().unwrap())
    });
    assert_eq!(ours.headers["user-agent"], "curl/8");
    assert!(
        ours.extensions.get::<u32>().is_none(),
        "the name case map goes: the name is written as the plugin spelled it"
    );
    assert!(other.extensions.get::<u32>().is_some(), "other hosts keep the client's header case");
}

#[test]
fn geneve_headers_carry_the_flow_metadata_and_replace_forged_ones() {
    let c = chain(&[("geneve_headers", "", OnFailure::Closed)], relaxed());
    let ex = Exchange::new(&c.vms, flow(), 1 << 20);
    let p = block_on(async move {
        ex.head(request("/", &[("Host", "x"), ("X-Gwlb-Flow-Cookie", "forged")]), true).await.unwrap().unwrap()
    });
    assert_eq!(p.headers["x-gwlb-vpc-endpoint-id"], "vpce-00123456789abcdef");
    assert_eq!(p.headers["x-gwlb-attachment-id"], "42");
    assert_eq!(p.headers.get_all("x-gwlb-flow-cookie").iter().collect::<Vec<_>>(), vec!["deadbeef"]);
    assert_eq!(p.headers["x-flowdog-worker"], "0");
}

const STS: &str = "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n\
  <GetCallerIdentityResult>\n    <Arn>arn:aws:iam::123456789012:user/alice</Arn>\n\
    <UserId>AIDAEXAMPLEUSERID</UserId>\n    <Account>123456789012</Account>\n\
  </GetCallerIdentityResult>\n</GetCallerIdentityResponse>\n";

#[test]
fn sts_rickroll_rewrites_the_user_id_and_fixes_the_length() {
    let c = chain(&[("sts_rickroll", r#"{"user_id": "RICK"}"#, OnFailure::Closed)], relaxed());
    let ex = Rc::new(Exchange::new(&c.vms, flow(), 1 << 20));
    let (head, body) = block_on(async move {
        let req = ex.head(request("/", &[("Host", "sts.lab.test")]), false).await.unwrap().unwrap();
        ex.request_sent(&req);
        let (a, b) = STS.split_at(60);
        let resp = response(200, &[("Content-Type", "text/xml"), ("Content-Length", &STS.len().to_string())]);
        assert!(ex.head(resp, false).await.unwrap().is_none(), "the head waits for the body");
        let first = ex.data::<http::response::Parts>(Bytes::from(a), false).await.unwrap();
        assert!(first.head.is_none() && first.data.is_none(), "the first half is buffered");
        let last = ex.data::<http::response::Parts>(Bytes::from(b), true).await.unwrap();
        (last.head.unwrap(), last.data.unwrap())
    });
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("<UserId>RICK</UserId>") && !text.contains("AIDAEXAMPLEUSERID"), "{text}");
    assert_eq!(head.headers["content-length"], body.len().to_string());
}

fn failures(events: &Receiver<Event>) -> Vec<String> {
    events
        .try_iter()
        .filter_map(|e| match e {
            Event::Failed { what, .. } => Some(what),
            Event::Disabled { failures, .. } => Some(format!("disabled after {failures}")),
            _ => None,
        })
        .collect()
}

#[test]
fn a_trap_fails_its_request_only_and_the_instance_comes_back() {
    let c = chain(&[("misbehave", "", OnFailure::Open)], relaxed());
    let vms = c.vms.clone();
    let (trapped, after) = block_on(async move {
        let trapped = Exchange::new(&vms, flow(), 1 << 20).head(request("/trap", &[("Host", "x")]), true).await;
        let after = Exchange::new(&vms, flow(), 1 << 20).head(request("/ok", &[("Host", "x")]), true).await;
        (trapped, after)
    });
    let p = trapped.expect("fail open: the request goes on").unwrap();
    assert_eq!(p.uri.path(), "/trap");
    assert!(p.headers.get("x-misbehave").is_none());
    assert_eq!(after.unwrap().unwrap().headers["x-misbehave"], "no", "a new instance serves the next request");
    let f = failures(&c.events);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].contains("trap"), "{f:?}");
}

#[test]
fn fail_closed_answers_500_and_loops_hit_the_deadline() {
    let settings: PluginsSection = toml::from_str("callback_deadline_ms = 20\nmax_failures = 3").unwrap();
    let c = chain(&[("misbehave", "", OnFailure::Closed)], settings);
    let vms = c.vms.clone();
    let t0 = Instant::now();
    let r =
        block_on(
            async move { Exchange::new(&vms, flow(), 1 << 20).head(request("/loop", &[("Host", "x")]), true).await },
        );
    assert!(matches!(r, Err(Stop::Failed(ref n)) if n == "misbehave"), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "the deadline stopped the loop");
    assert!(failures(&c.events)[0].contains("deadline"));
    // Memory: the instance may not grow past the limit.
    let vms = c.vms.clone();
    let r =
        block_on(
            async move { Exchange::new(&vms, flow(), 1 << 20).head(request("/alloc", &[("Host", "x")]), true).await },
        );
    assert!(matches!(r, Err(Stop::Failed(_))), "{r:?}");
    // A third failure within the window disables the plugin on this worker; fail closed, its
    // requests now get the 500 without running it.
    let vms = c.vms.clone();
    let r =
        block_on(
            async move { Exchange::new(&vms, flow(), 1 << 20).head(request("/trap", &[("Host", "x")]), true).await },
        );
    assert!(matches!(r, Err(Stop::Failed(_))));
    let f = failures(&c.events);
    assert!(f.iter().any(|x| x == "disabled after 3"), "{f:?}");
    assert!(c.vms[0].borrow().disabled);
    let vms = c.vms.clone();
    let r = block_on(
        async move { Exchange::new(&vms, flow(), 1 << 20).head(request("/ok", &[("Host", "x")]), true).await },
    );
    assert!(matches!(r, Err(Stop::Failed(_))), "disabled and closed: {r:?}");
}

#[test]
fn a_plugin_holding_more_than_max_body_stops_the_exchange() {
    let c = chain(&[("sts_rickroll", "", OnFailure::Closed)], relaxed());
    let ex = Rc::new(Exchange::new(&c.vms, flow(), 1000));
    let r = block_on(async move {
        let req = ex.head(request("/", &[("Host", "sts.lab.test")]), true).await.unwrap().unwrap();
        ex.request_sent(&req);
        assert!(ex.head(response(200, &[("Content-Type", "text/xml")]), false).await.unwrap().is_none());
        ex.data::<http::response::Parts>(Bytes::from(vec![b'x'; 600]), false).await.map(|_| ())?;
        ex.data::<http::response::Parts>(Bytes::from(vec![b'x'; 600]), false).await.map(|_| ())
    });
    assert!(matches!(r, Err(Stop::TooLarge(ref n)) if n == "sts_rickroll"), "{r:?}");
}

/// A config for the watcher's tests: the minimum the appliance needs, then `chain`.
fn config_with(chain: &str) -> String {
    format!(
        "[eal]\nargs = [\"--no-pci\"]\nvdevs = [\"net_null0\"]\n[port]\nname = \"net_null0\"\n\
         [appliance]\nip = \"198.18.0.2\"\n[plugins]\nwatch_interval_ms = 10\ncallback_deadline_ms = 2000\n{chain}"
    )
}

fn entry(name: &str, file: &std::path::Path, configuration: &str) -> String {
    format!("[[plugin]]\nname = \"{name}\"\nfile = \"{}\"\nconfiguration = '{configuration}'\n", file.display())
}

/// Looks until the watcher acts (a change is taken once two looks agree) or `n` looks pass.
fn look_until(w: &mut flowdog::plugin::reload::Watcher, n: usize) -> Option<u64> {
    (0..n).find_map(|_| w.look())
}

#[test]
fn the_watcher_reloads_a_changed_config_or_file_and_refuses_a_broken_one() {
    use flowdog::plugin::reload::{Handoff, Watcher};
    let dir = std::env::temp_dir().join(format!("flowdog-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cfg_path, wasm_path) = (dir.join("flowdog.toml"), dir.join("hc.wasm"));
    std::fs::copy(wasm("header_case"), &wasm_path).unwrap();
    let write = |text: String| {
        // A different size or mtime is what the watcher sees; sizes differ between the texts.
        std::fs::write(&cfg_path, text).unwrap();
    };
    write(config_with(&entry("header_case", &wasm_path, r#"{"hosts": ["a.lab.test"]}"#)));
    let cfg = flowdog::config::Config::load(&cfg_path).unwrap();
    let (tx, events) = test_events();
    let (plugins, _) = Plugins::load(&cfg.plugins, &cfg.plugin, 1, tx.clone()).unwrap();
    let plugins = std::sync::Arc::new(plugins);
    assert_eq!(plugins.generation, 1);
    let handoff = Handoff::default();
    let mut w = Watcher::new(cfg_path.clone(), 1, vec![handoff.clone()], tx, Some(plugins.clone()), &cfg);
    assert_eq!(look_until(&mut w, 3), None, "nothing changed");

    // A new configuration for the plugin: generation 2, started, handed over.
    write(config_with(&entry("header_case", &wasm_path, r#"{"hosts": ["b.lab.test", "c.lab.test"]}"#)));
    assert_eq!(look_until(&mut w, 3), Some(2));
    let g2 = handoff.take().expect("handed to the worker");
    assert_eq!(
        (g2.generation, g2.chain[0].configuration.as_slice()),
        (2, &br#"{"hosts": ["b.lab.test", "c.lab.test"]}"#[..])
    );
    assert!(handoff.take().is_none());
    // It runs: the new host list applies to a request through generation 2's instances.
    let vms = g2.instantiate(0, true).unwrap();
    let p = block_on(async move {
        let ex = Exchange::new(&vms, flow(), 1 << 20);
        ex.head(request("/", &[("Host", "b.lab.test"), ("User-Agent", "curl/8")]), true).await.unwrap().unwrap()
    });
    assert!(p.headers.contains_key("user-agent"));

    // A broken config is refused; the running generation stays and nothing is handed over.
    write(config_with("[[plugin]]\nname = \"x\"\n"));
    assert_eq!(look_until(&mut w, 3), None);
    assert!(handoff.take().is_none());
    // So is a plugin file that is not wasm.
    write(config_with(&entry("header_case", &dir.join("nope.wasm"), "{}")));
    assert_eq!(look_until(&mut w, 3), None);
    assert!(handoff.take().is_none());

    // Back to a good config, then the .wasm file itself swapped for another plugin: each is a
    // new generation.
    write(config_with(&entry("header_case", &wasm_path, "{}")));
    assert_eq!(look_until(&mut w, 3), Some(3));
    std::thread::sleep(Duration::from_millis(20)); // a later mtime, whatever the file system's resolution
    std::fs::copy(wasm("geneve_headers"), dir.join("next.wasm")).unwrap();
    std::fs::rename(dir.join("next.wasm"), &wasm_path).unwrap();
    assert_eq!(look_until(&mut w, 3), Some(4));
    let g4 = handoff.take().unwrap();
    let vms = g4.instantiate(0, true).unwrap();
    let p = block_on(async move {
        let ex = Exchange::new(&vms, flow(), 1 << 20);
        ex.head(request("/", &[("Host", "x")]), true).await.unwrap().unwrap()
    });
    assert!(p.headers.contains_key("x-gwlb-flow-cookie"), "the new module runs: {:?}", p.headers);
    drop(events);
    let _ = std::fs::remove_dir_all(&dir);
}

// The proxy-wasm Rust SDK's own examples (its published 0.2.0 source, unchanged; built by
// scripts/build-plugins.sh as sdk_*.wasm), behaving as their code and the SDK's README say.

fn logs(events: &Receiver<Event>) -> Vec<String> {
    events
        .try_iter()
        .filter_map(|e| match e {
            Event::Log { message, .. } => Some(message),
            _ => None,
        })
        .collect()
}

#[test]
fn sdk_hello_world_greets_at_start_and_tells_the_time_on_its_tick() {
    let c = chain(&[("sdk_hello_world", "", OnFailure::Closed)], relaxed());
    assert!(logs(&c.events).iter().any(|l| l == "Hello, World!"));
    // Its tick period is 5 s: a poll 6 s on is due (WASI's clock and random_get in use).
    c.vms[0].borrow_mut().poll(Instant::now() + Duration::from_secs(6));
    let l = logs(&c.events);
    let line = l.iter().find(|l| l.starts_with("It's ")).unwrap_or_else(|| panic!("{l:?}"));
    let year = line[5..9].parse::<i32>().unwrap();
    assert!(year >= 2025 && line.contains(" UTC, your lucky number is "), "{line}");
}

#[test]
fn sdk_http_headers_answers_hello_and_lets_the_rest_go() {
    let c = chain(&[("sdk_http_headers", "", OnFailure::Closed)], relaxed());
    let vms = c.vms.clone();
    let (hello, other) = block_on(async move {
        let hello = Exchange::new(&vms, flow(), 1 << 20).head(request("/hello", &[("Host", "x")]), true).await;
        let other = Exchange::new(&vms, flow(), 1 << 20).head(request("/other", &[("Host", "x")]), true).await;
        (hello, other)
    });
    let Err(Stop::Local(r)) = hello else { panic!("{hello:?}") };
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"Hello, World!\n"[..]));
    assert_eq!(
        (&r.headers["hello"], &r.headers["powered-by"]),
        (&"World".parse().unwrap(), &"proxy-wasm".parse().unwrap())
    );
    assert_eq!(other.unwrap().unwrap().uri.path(), "/other");
}

#[test]
fn sdk_http_body_redacts_a_secret_body_and_drops_content_length() {
    let c = chain(&[("sdk_http_body", "", OnFailure::Closed)], relaxed());
    let run = |text: &'static str| {
        let ex = Rc::new(Exchange::new(&c.vms, flow(), 1 << 20));
        block_on(async move {
            let req = ex.head(request("/", &[("Host", "x")]), true).await.unwrap().unwrap();
            ex.request_sent(&req);
            let len = text.len().to_string();
            let head = ex.head(response(200, &[("Content-Length", &len)]), false).await.unwrap().unwrap();
            let out = ex.data::<http::response::Parts>(Bytes::from(text), true).await.unwrap();
            (head, out.data.unwrap_or_default())
        })
    };
    let (head, body) = run("the secret is out");
    assert!(!head.headers.contains_key("content-length"));
    assert_eq!(&body[..], b"Original message body (17 bytes) redacted.");
    let (_, body) = run("nothing to see");
    assert_eq!(&body[..], b"nothing to see");
}

#[test]
fn sdk_http_config_adds_its_configuration_as_a_response_header() {
    let c = chain(&[("sdk_http_config", "from the config", OnFailure::Closed)], relaxed());
    let ex = Rc::new(Exchange::new(&c.vms, flow(), 1 << 20));
    let head = block_on(async move {
        let req = ex.head(request("/", &[("Host", "x")]), true).await.unwrap().unwrap();
        ex.request_sent(&req);
        ex.head(response(204, &[]), true).await.unwrap().unwrap()
    });
    assert_eq!(head.headers["custom-header"], "from the config");
}

/// An HTTP server on loopback that answers every request with `body`, for `n` requests.
fn one_byte_server(body: u8, n: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let mut heads = Vec::new();
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let k = s.read(&mut buf).unwrap();
            heads.push(String::from_utf8_lossy(&buf[..k]).into_owned());
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\n");
            let _ = s.write_all(&[body]);
        }
        heads
    });
    (url, h)
}

#[test]
fn sdk_http_auth_random_asks_its_upstream_and_grants_or_forbids() {
    for (byte, granted) in [(2u8, true), (7u8, false)] {
        let (url, server) = one_byte_server(byte, 1);
        let settings: PluginsSection =
            toml::from_str(&format!("callback_deadline_ms = 2000\n[upstreams]\nhttpbin = \"{url}\"")).unwrap();
        let c = chain(&[("sdk_http_auth_random", "", OnFailure::Closed)], settings);
        let ex = Rc::new(Exchange::new(&c.vms, flow(), 1 << 20));
        let r = block_on(async move {
            let req = ex.head(request("/anything", &[("Host", "x")]), true).await?.unwrap();
            ex.request_sent(&req);
            ex.head(response(200, &[]), true).await.map(|h| (req, h.unwrap()))
        });
        let asked = server.join().unwrap();
        assert!(asked[0].starts_with("GET /bytes/1 HTTP/1.1\r\n"), "{asked:?}");
        assert!(asked[0].to_ascii_lowercase().contains("host: httpbin.org"), "{asked:?}");
        match r {
            Ok((req, resp)) => {
                assert!(granted, "an odd byte must forbid");
                assert_eq!(req.uri.path(), "/anything");
                assert_eq!(resp.headers["powered-by"], "proxy-wasm");
            }
            Err(Stop::Local(l)) => {
                assert!(!granted, "an even byte must grant");
                assert_eq!((l.status.as_u16(), &l.body[..]), (403, &b"Access forbidden.\n"[..]));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}
