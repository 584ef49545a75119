//! Micro-benchmarks of what every request or every reload runs:
//! route lookup with 10, 1 000 and 10 000 routes, the affinity cookie
//! (find, decode, encode, endpoint hash) and loading a 10 000-route config.
//!
//!   cargo bench -p edge-proxy --bench hot_path

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edge_proxy::affinity::{decode, encode, find_cookie, EndpointHasher};
use edge_proxy::config;
use edge_proxy::route::Router;
use std::hint::black_box;
use std::net::SocketAddr;

/// A config with `n` routes: a host per ten routes, paths under it, a few
/// wildcard hosts and a catch-all, as a cluster with many sites would have.
fn config_text(n: usize) -> String {
    let mut text = String::from(
        "listen: { http: \"127.0.0.1:8080\" }\ndiscovery: static\nstatic:\n  app: [\"127.0.0.1:8081\"]\nroutes:\n",
    );
    for i in 0..n {
        let host = if i % 100 == 99 {
            format!("\"*.site{}.example.com\"", i / 10)
        } else {
            format!("site{}.example.com", i / 10)
        };
        text.push_str(&format!(
            "  - host: {host}\n    path: /api/v{}/items\n    service: app\n    port: 80\n",
            i % 10
        ));
    }
    text.push_str("  - path: /\n    service: app\n    port: 80\n");
    text
}

fn router_of(config: &config::Config) -> Router<usize> {
    let mut router = Router::default();
    for (i, r) in config.routes.iter().enumerate() {
        let _ = router.insert(&r.matches, i);
    }
    router
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route lookup");
    for n in [10, 1_000, 10_000] {
        let config = config::parse("bench.yaml", &config_text(n)).expect("valid");
        let router = router_of(&config);
        let host = format!("site{}.example.com", n / 10 - 1);
        group.bench_with_input(BenchmarkId::new("prefix hit", n), &n, |b, _| {
            b.iter(|| router.find(black_box(&host), black_box("/api/v3/items/42/details")))
        });
        group.bench_with_input(BenchmarkId::new("catch-all", n), &n, |b, _| {
            b.iter(|| router.find(black_box("unknown.example.org"), black_box("/index.html")))
        });
    }
    group.finish();
}

fn cookie(c: &mut Criterion) {
    let hasher = EndpointHasher::new("default", "hello-app");
    let addr: SocketAddr = "10.244.1.17:8080".parse().unwrap();
    let value = encode(hasher.id(&addr));
    let header = format!(
        "_ga=GA1.2.1234567890.1234567890; theme=dark; route={}; csrftoken=abcdef0123456789",
        std::str::from_utf8(&value).unwrap()
    );
    let mut group = c.benchmark_group("affinity cookie");
    group.bench_function("endpoint id (SipHash-1-3)", |b| {
        b.iter(|| hasher.id(black_box(&addr)))
    });
    group.bench_function("encode", |b| {
        b.iter(|| encode(black_box(0x0123_4567_89ab_cdef)))
    });
    group.bench_function("find in a Cookie header + decode", |b| {
        b.iter(|| find_cookie(black_box(header.as_bytes()), "route").and_then(decode))
    });
    group.bench_function("decode a tampered value", |b| {
        b.iter(|| decode(black_box(b"0123456789abcdeZ")))
    });
    group.finish();
}

fn config_load(c: &mut Criterion) {
    let text = config_text(10_000);
    let mut group = c.benchmark_group("config load");
    group.sample_size(10);
    group.bench_function("parse + validate + build router, 10 000 routes", |b| {
        b.iter(|| {
            let config = config::parse("bench.yaml", black_box(&text)).expect("valid");
            router_of(&config)
        })
    });
    group.finish();
}

criterion_group!(benches, route_lookup, cookie, config_load);
criterion_main!(benches);
