//! The floor: pingora proxying round-robin to fixed upstreams with nothing of
//! edge-proxy on top (no routing, affinity, metrics, logs or limits). The
//! benchmark runs it beside edge-proxy to show which part of the cost per
//! request is pingora's own and which is ours.
//!
//!   cargo run --release -p edge-proxy --example bare_pingora -- LISTEN UPSTREAM...

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Bare {
    upstreams: Vec<String>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len();
        Ok(Box::new(HttpPeer::new(
            self.upstreams[i].as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("usage: bare_pingora LISTEN UPSTREAM...");
    let upstreams: Vec<String> = args.collect();
    assert!(
        !upstreams.is_empty(),
        "usage: bare_pingora LISTEN UPSTREAM..."
    );
    // The server settings edge-proxy runs with (main.rs), so that this stays
    // the floor under its figures.
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        upstream_keepalive_pool_size: 1024,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Bare {
            upstreams,
            next: AtomicUsize::new(0),
        },
    );
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
