//! What the plugin chain costs a request on a worker: a request and its response through 0, 1
//! and 3 plugins (HTTP contexts made, headers in both directions, on_log/on_done/on_delete), a
//! bare host-to-guest call under the epoch deadline, and making one plugin's instance from the
//! pooling allocator (with its root context, on_vm_start and on_configure). Real plugins: the
//! wasm modules of wasm-plugins/ (`scripts/build-plugins.sh` first).
//!
//! Run: `cargo bench --bench plugins`. Figures are in BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion};
use flowdog::intercept::hook::FlowInfo;
use flowdog::plugin::http::Exchange;
use flowdog::plugin::{test_events, PluginEntry, Plugins, PluginsSection};
use std::future::Future;
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

fn wasm(name: &str) -> PathBuf {
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("wasm-plugins/target/wasm32-wasip1/release/{name}.wasm"));
    assert!(f.exists(), "{} is missing: run scripts/build-plugins.sh", f.display());
    f
}

fn load(names: &[(&str, &str)]) -> Plugins {
    let entries: Vec<PluginEntry> = names
        .iter()
        .map(|(n, cfg)| {
            toml::from_str(&format!("name = \"{n}\"\nfile = \"{}\"\nconfiguration = '{cfg}'", wasm(n).display()))
                .unwrap()
        })
        .collect();
    let (events, rx) = test_events();
    std::mem::forget(rx); // log lines pile up in the bounded queue, then are counted as dropped
    Plugins::load(&PluginsSection::default(), &entries, 1, events).expect("the plugins load").0
}

fn flow() -> Rc<FlowInfo> {
    Rc::new(FlowInfo {
        client: "198.18.1.10:40000".parse().unwrap(),
        server: "198.18.2.10:80".parse().unwrap(),
        vpc_endpoint_id: 0x0123456789abcdef,
        attachment_id: 42,
        flow_cookie: 0xdeadbeef,
        worker: 0,
        protocol: 6,
        tls: None,
    })
}

/// Polls a future that never waits (no plugin here pauses) to its end.
fn now<T>(f: impl Future<Output = T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a plugin paused"),
    }
}

fn request() -> http::request::Parts {
    let r = http::Request::get("/index.html")
        .header("Host", "www.lab.test")
        .header("User-Agent", "curl/7.88.1")
        .header("Accept", "*/*");
    r.body(()).unwrap().into_parts().0
}

fn response() -> http::response::Parts {
    let r = http::Response::builder()
        .status(200)
        .header("Content-Type", "text/html")
        .header("Content-Length", "615")
        .header("Server", "nginx");
    r.body(()).unwrap().into_parts().0
}

/// One request and its response through the chain, as the proxy drives it.
fn exchange(chain: &flowdog::plugin::Chain, flow: &Rc<FlowInfo>) {
    if chain.is_empty() {
        // No plugins: the proxy makes no Exchange at all; only the heads are built.
        black_box((request(), response()));
        return;
    }
    let ex = Exchange::new(chain, flow.clone(), 1 << 20);
    let req = now(ex.head(request(), true)).unwrap().unwrap();
    ex.request_sent(&req);
    black_box(now(ex.head(response(), true)).unwrap().unwrap());
}

/// A module with one exported function that returns 7, in wasm's binary format (so that no
/// text-format parser is needed): the bare cost of calling into wasm from the host.
const RETURN_7: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type section: () -> i32
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x00, // export "f" = function 0
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x07, 0x0b, // code: i32.const 7, end
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("plugins");
    let flow = flow();
    let chains = [
        ("request_0_plugins", vec![]),
        ("request_1_plugin", vec![("header_case", r#"{"hosts": ["www.lab.test"]}"#)]),
        (
            "request_3_plugins",
            vec![("header_case", r#"{"hosts": ["www.lab.test"]}"#), ("geneve_headers", ""), ("sts_rickroll", "")],
        ),
    ];
    for (name, list) in &chains {
        let p = load(list);
        let vms = p.instantiate(0, true).unwrap();
        g.bench_function(*name, |b| b.iter(|| exchange(&vms, &flow)));
    }

    let p = load(&[("header_case", "{}")]);
    g.bench_function("instantiate_header_case", |b| b.iter(|| black_box(p.instantiate(0, true).unwrap())));

    let engine = flowdog::plugin::engine(&PluginsSection::default(), 1, 1).unwrap();
    let module = wasmtime::Module::from_binary(&engine, RETURN_7).unwrap();
    let mut store = wasmtime::Store::new(&engine, ());
    store.set_epoch_deadline(1 << 40);
    let inst = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
    let f = inst.get_typed_func::<(), i32>(&mut store, "f").unwrap();
    g.bench_function("host_to_guest_call", |b| b.iter(|| black_box(f.call(&mut store, ()).unwrap())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
