//! The zero-downtime promise under load: scripts/zero-downtime.sh runs wrk for
//! 15 s against edge-proxy and three hello-apps in a network namespace of its
//! own, while it rewrites the config ten times kubelet-style (one invalid),
//! restarts an app with SIGTERM and replaces the proxy on the same port. Any
//! socket error or non-2xx response fails it.

mod utils;

use std::process::Command;
use utils::*;

#[test]
fn no_request_fails_across_reloads_app_restarts_and_proxy_replacement() {
    run_scenario(&[], "15");
}

/// A new connection per request keeps the old proxy's accept queue busy when it
/// closes its listener: this is what net.ipv4.tcp_migrate_req=1 saves (with it
/// set to 0 this run shows a few read errors).
#[test]
fn no_queued_connection_is_reset_when_the_old_proxy_closes_its_listener() {
    run_scenario(&[("ZD_CLOSE", "1")], "10");
}

fn run_scenario(env: &[(&str, &str)], seconds: &str) {
    // hello-app must exist next to edge-proxy (built by `cargo test --workspace`).
    let _ = hello_app_bin();
    let bin_dir = edge_proxy_bin().parent().unwrap().to_path_buf();
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/zero-downtime.sh"))
        .arg(&bin_dir)
        .arg(seconds)
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/zero-downtime.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The figures go to the test output, for the record.
    println!("{stdout}");
    assert!(
        out.status.success(),
        "zero-downtime failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("zero-downtime: requests="))
        .expect("no summary line");
    assert!(summary.contains("socket_errors=0 non_2xx=0"), "{summary}");
    assert!(stdout.contains("zero-downtime: ok"));
}
