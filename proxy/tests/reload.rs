//! Hot reload and graceful shutdown of a running edge-proxy process.

mod utils;

use std::net::TcpStream;
use std::time::{Duration, Instant};
use utils::*;

fn config_for(origins: &[&EchoOrigin], routes: &str) -> String {
    let statics: String = origins
        .iter()
        .map(|o| format!("  {}: [\"{}\"]\n", o.name, o.addr))
        .collect();
    format!("listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: static\ndrain_timeout: 3s\nroutes:\n{routes}\nstatic:\n{statics}")
}

fn origin_of(proxy: &Proxy, host: &str) -> Result<String, u16> {
    let r = curl(&["-H", &format!("Host: {host}"), &proxy.url("/")]);
    match r.header("x-origin") {
        Some(o) if r.status == 200 => Ok(o.to_string()),
        _ => Err(r.status),
    }
}

fn generation(m: &Metrics) -> f64 {
    m.sum("edge_proxy_config_generation", &[])
}

#[test]
fn a_kubelet_style_configmap_update_is_applied_and_a_bad_one_is_not() {
    let a = EchoOrigin::start("a");
    let b = EchoOrigin::start("b");
    let v1 = config_for(&[&a, &b], "  - host: a.test\n    service: a\n    port: 80");
    let proxy = Proxy::start(&v1);
    assert_eq!(origin_of(&proxy, "a.test"), Ok("a".into()));
    assert_eq!(origin_of(&proxy, "b.test"), Err(404));

    // v2 adds a route and moves a.test to b.
    let v2 = config_for(&[&a, &b], "  - host: a.test\n    service: b\n    port: 80\n  - host: b.test\n    service: b\n    port: 80");
    proxy.rewrite_config(&v2);
    proxy.wait_metrics("generation 2", |m| generation(m) == 2.0);
    assert_eq!(origin_of(&proxy, "a.test"), Ok("b".into()));
    assert_eq!(origin_of(&proxy, "b.test"), Ok("b".into()));

    // An invalid v3: logged with the field path, counted, v2 keeps serving.
    let v3 = config_for(
        &[&a, &b],
        "  - host: c.test\n    service: a\n    port: 99999",
    );
    proxy.rewrite_config(&v3);
    let m = proxy.wait_metrics("a failed reload", |m| {
        m.sum("edge_proxy_config_reloads_total", &[("result", "failure")]) == 1.0
    });
    assert_eq!(generation(&m), 2.0);
    assert!(
        proxy
            .log()
            .contains("routes[0].port: 99999 is out of range"),
        "{}",
        proxy.log()
    );
    assert_eq!(origin_of(&proxy, "b.test"), Ok("b".into()));
    assert_eq!(origin_of(&proxy, "c.test"), Err(404));

    // The next valid version is picked up: here by an in-place edit.
    let v4 = config_for(&[&a, &b], "  - host: c.test\n    service: a\n    port: 80");
    proxy.edit_config_in_place(&v4);
    let m = proxy.wait_metrics("generation 3", |m| generation(m) == 3.0);
    assert_eq!(
        m.sum("edge_proxy_config_reloads_total", &[("result", "success")]),
        2.0
    );
    assert_eq!(origin_of(&proxy, "c.test"), Ok("a".into()));
    assert_eq!(origin_of(&proxy, "b.test"), Err(404));
}

#[test]
fn sighup_reloads_and_does_not_kill() {
    let a = EchoOrigin::start("a");
    let proxy = Proxy::start(&config_for(&[&a], "  - service: a\n    port: 80"));
    signal(&proxy.child, "HUP");
    proxy.wait_metrics("a forced reload", |m| {
        m.sum("edge_proxy_config_reloads_total", &[("result", "success")]) == 1.0
    });
    assert_eq!(origin_of(&proxy, "x.test"), Ok("a".into()));
}

#[test]
fn an_upgraded_connection_opened_before_a_reload_keeps_working_after_it() {
    let a = EchoOrigin::start("a");
    let b = EchoOrigin::start("b");
    let proxy = Proxy::start(&config_for(
        &[&a, &b],
        "  - host: ws.test\n    service: a\n    port: 80",
    ));
    let mut ws = websocket_upgrade(proxy.http, "ws.test");
    echo_round_trip(&mut ws, b"before reload");

    // The route goes to another service entirely: the open tunnel stays where it is.
    proxy.rewrite_config(&config_for(
        &[&a, &b],
        "  - host: ws.test\n    service: b\n    port: 80",
    ));
    proxy.wait_metrics("generation 2", |m| generation(m) == 2.0);
    echo_round_trip(&mut ws, b"after reload");
    assert_eq!(origin_of(&proxy, "ws.test"), Ok("b".into()));
}

#[test]
fn sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_zero() {
    let a = EchoOrigin::start("a");
    let mut proxy = Proxy::start(&config_for(&[&a], "  - service: a\n    port: 80"));
    let url = proxy.url("/slow");
    // A request in flight (the origin takes 1 s) when SIGTERM arrives.
    let in_flight = std::thread::spawn(move || curl(&[&url]));
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    signal(&proxy.child, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(proxy.http).is_err(),
        "still accepting after SIGTERM"
    );
    let r = in_flight.join().unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-origin"), Some("a"));
    // In flight when the signal came, and still told to go elsewhere next.
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    // The process exits once the request is done, with 0, well within drain_timeout (3 s).
    let status = wait_exit(&mut proxy.child, Duration::from_secs(10)).expect("no exit within 10 s");
    assert!(status.success(), "{status}");
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "took {:?}",
        sent.elapsed()
    );
}

#[test]
fn an_idle_proxy_stops_at_once_on_sigterm_not_after_the_drain_timeout() {
    let a = EchoOrigin::start("a");
    let config = config_for(&[&a], "  - service: a\n    port: 80")
        .replace("drain_timeout: 3s", "drain_timeout: 60s");
    let mut proxy = Proxy::start(&config);
    assert_eq!(origin_of(&proxy, "any.test"), Ok("a".into()));
    signal(&proxy.child, "TERM");
    // drain_timeout is the bound, not a sleep: nothing is in flight, so the
    // proxy is gone long before 60 s.
    let status = wait_exit(&mut proxy.child, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("still running 15 s after SIGTERM; log:\n{}", proxy.log()));
    assert!(status.success(), "{status}");
    assert!(proxy.log().contains("drained: exiting"), "{}", proxy.log());
}

#[test]
fn sigint_stops_the_proxy_at_once_every_time() {
    // Ctrl-C (SIGINT) is pingora's quick shutdown: no drain, every worker's
    // runtime stopped at once. With eight workers, one SIGINT in five used to
    // leave an accept loop failing forever on a stopped worker's listener
    // (third_party/README.md), so the process never exited. Twenty rounds
    // would miss that with a chance of about 1 in 100.
    let a = EchoOrigin::start("a");
    let config = format!(
        "{}threads: 8\n",
        config_for(&[&a], "  - service: a\n    port: 80")
    );
    for round in 1..=20 {
        let mut proxy = Proxy::start(&config);
        assert_eq!(origin_of(&proxy, "any.test"), Ok("a".into()));
        signal(&proxy.child, "INT");
        let status = wait_exit(&mut proxy.child, Duration::from_secs(5)).unwrap_or_else(|| {
            let log = proxy.log();
            panic!(
                "round {round}: still running 5 s after SIGINT ({} accept errors); log starts:\n{}",
                log.matches("Accept() failed").count(),
                &log[..log.len().min(4000)]
            )
        });
        assert!(status.success(), "round {round}: {status}");
        assert!(
            !proxy.log().contains("Accept() failed"),
            "round {round}:\n{}",
            proxy.log()
        );
    }
}

#[test]
fn the_health_subcommand_exits_zero_only_while_the_proxy_is_ready() {
    let a = EchoOrigin::start("a");
    let mut proxy = Proxy::start(&config_for(&[&a], "  - service: a\n    port: 80"));
    let config = proxy.config_path.clone();
    let health = || {
        std::process::Command::new(edge_proxy_bin())
            .arg("--config")
            .arg(&config)
            .arg("health")
            .output()
            .unwrap()
    };
    let up = health();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    // `--config` after the subcommand works as well.
    let after = std::process::Command::new(edge_proxy_bin())
        .arg("health")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
    let down = health();
    assert!(!down.status.success());
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(err.contains("/readyz"), "{err}");
}
