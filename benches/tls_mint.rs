//! What a leaf certificate costs the control plane's minter: minted cold with a key generated on
//! demand (the key pool was empty), minted with a key from the pool (what the first handshake to
//! a new host normally pays), and served from the cache. Plus the one-off cost of an
//! intermediate signed by a local root key. No worker is involved: these run on the minter thread.
//!
//! Run: `cargo bench --bench tls_mint`. Figures are in BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion};
use flowdog::tls::ca::{init_local, RootSpec};
use flowdog::tls::mint::{MintConfig, Minter, Name};
use flowdog::tls::root::{Root, RootSource};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn minter(cfg: MintConfig) -> (Minter, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("flowdog-bench-mint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let f = init_local(&dir, &RootSpec::default(), false).expect("a local root");
    let root = Root::load(&RootSource { cert: f.cert, key: Some(f.key), ..Default::default() }).expect("root");
    (Minter::new(root, cfg).expect("minter"), dir)
}

fn names(i: u64) -> Vec<Name> {
    vec![Name::Dns(format!("h{i}.bench.example")), Name::Dns(format!("www.h{i}.bench.example"))]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tls_mint");
    let (mut m, dir) = minter(MintConfig { cache_size: 1 << 20, key_pool: 0, ..Default::default() });
    let mut i = 0u64;
    g.bench_function("leaf_cold_key_generated", |b| {
        b.iter(|| {
            i += 1;
            black_box(m.leaf(&names(i)).expect("leaf"))
        })
    });
    let (mut m, _) = minter(MintConfig { cache_size: 1 << 20, key_pool: 1, ..Default::default() });
    g.bench_function("leaf_cold_key_from_pool", |b| {
        // Only the minting is timed, not the refill that puts a key in the pool first.
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                m.refill_one();
                i += 1;
                let n = names(i);
                let t = Instant::now();
                black_box(m.leaf(&n).expect("leaf"));
                spent += t.elapsed();
            }
            spent
        })
    });
    let cached = names(0);
    m.leaf(&cached).expect("leaf");
    g.bench_function("leaf_cached", |b| b.iter(|| black_box(m.leaf(&cached).expect("leaf"))));
    g.bench_function("intermediate_local_root", |b| {
        b.iter(|| {
            black_box(m.renew_if_due(time::OffsetDateTime::now_utc() + time::Duration::days(365)).expect("renew"))
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
