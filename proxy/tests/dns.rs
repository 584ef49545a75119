//! `discovery: dns` against a real DNS server: dnsmasq (Debian) serving A
//! records with a 1 s TTL on 127.0.0.77:53, edge-proxy pointed at it through
//! EDGE_PROXY_RESOLV_CONF, hello-apps on 127.0.0.1-3 as the Service's pods.
//! dnsmasq binds port 53, so this needs root (as CI has).

mod utils;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use utils::*;

const DNS_IP: &str = "127.0.0.77";
const NAME: &str = "hello-app.default.svc.cluster.local";

struct Dnsmasq {
    child: Child,
    hosts: PathBuf,
}

impl Dnsmasq {
    fn start(dir: &Path, ips: &[&str]) -> Dnsmasq {
        Self::start_on(DNS_IP, dir, ips)
    }

    fn start_on(listen: &str, dir: &Path, ips: &[&str]) -> Dnsmasq {
        let hosts = dir.join(format!("hosts-{listen}"));
        write_hosts(&hosts, ips);
        let mut child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={listen}"),
                "--port=53",
                "--local-ttl=1",
                // Authoritative for the cluster domain: unknown names are NXDOMAIN.
                "--local=/cluster.local/",
                "--user=root",
                "--pid-file=",
                &format!("--addn-hosts={}", hosts.display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)");
        // Wait until it answers over TCP (it serves both).
        let addr: SocketAddr = format!("{listen}:53").parse().unwrap();
        wait_listening(addr, &mut child, "dnsmasq");
        Dnsmasq { child, hosts }
    }

    /// Change the records; SIGHUP makes dnsmasq re-read them.
    fn set(&self, ips: &[&str]) {
        write_hosts(&self.hosts, ips);
        signal(&self.child, "HUP");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_hosts(path: &Path, ips: &[&str]) {
    let text: String = ips.iter().map(|ip| format!("{ip} {NAME}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn served_set(proxy: &Proxy, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let r = curl(&[&proxy.url("/")]);
            if r.status == 200 {
                r.served_by().to_string()
            } else {
                format!("status {}", r.status)
            }
        })
        .collect()
}

#[test]
fn follows_the_records_as_their_ttl_says_and_survives_a_dns_outage() {
    let port = free_port();
    let _apps: Vec<_> = (1..=3)
        .map(|i| {
            HelloApp::start_on(
                &format!("pod-{i}"),
                SocketAddr::from(([127, 0, 0, i], port)),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut dns = Dnsmasq::start(dir.path(), &["127.0.0.1", "127.0.0.2"]);
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {DNS_IP}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();

    let config = format!(
        "listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: dns\nroutes:\n  - service: hello-app\n    port: {port}\n"
    );
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start_with_env(&config, http, &[("EDGE_PROXY_RESOLV_CONF", &resolv)]);
    assert_eq!(
        curl(&[&format!("http://{}/readyz", proxy.admin)]).status,
        200
    );
    assert_eq!(
        served_set(&proxy, 8),
        BTreeSet::from(["pod-1".into(), "pod-2".into()])
    );

    // A third record: picked up once the 1 s TTL runs out.
    dns.set(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    let took = eventually("three endpoints", Duration::from_secs(5), || {
        served_set(&proxy, 9).len() == 3
    });
    println!("added record followed in {took:?}");

    // A record removed: its pod gets no more traffic.
    dns.set(&["127.0.0.3"]);
    eventually("one endpoint", Duration::from_secs(5), || {
        served_set(&proxy, 6) == BTreeSet::from(["pod-3".to_string()])
    });

    // The DNS server goes away: the last good set keeps serving, errors are counted.
    let _ = dns.child.kill();
    let _ = dns.child.wait();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(served_set(&proxy, 6), BTreeSet::from(["pod-3".to_string()]));
    let errors = proxy
        .metrics()
        .sum("edge_proxy_discovery_errors_total", &[]);
    assert!(errors >= 1.0, "no discovery error counted");
    assert!(
        proxy
            .log()
            .contains("DNS lookup failed, keeping the last good endpoints"),
        "the outage is not logged:\n{}",
        proxy.log()
    );

    // The name disappears (NXDOMAIN) once a server answers again: no endpoints, 503.
    let dns2 = Dnsmasq::start(dir.path(), &[]);
    eventually("no endpoints", Duration::from_secs(10), || {
        curl(&[&proxy.url("/")]).status == 503
    });
    dns2.set(&["127.0.0.2"]);
    eventually("back", Duration::from_secs(10), || {
        served_set(&proxy, 3) == BTreeSet::from(["pod-2".to_string()])
    });
}

#[test]
fn name_servers_are_asked_in_order_so_a_later_ones_nxdomain_never_wins() {
    // As in a container: the engine's DNS (knows the name) listed before the
    // host's (NXDOMAIN for it). Asked at once, the NXDOMAIN won about every
    // other lookup and the route had no endpoints until the next one.
    let port = free_port();
    let _app = HelloApp::start_on("pod-1", SocketAddr::from(([127, 0, 0, 1], port)));
    let dir = tempfile::tempdir().unwrap();
    let _engine = Dnsmasq::start_on("127.0.0.80", dir.path(), &["127.0.0.1"]);
    let _host = Dnsmasq::start_on("127.0.0.81", dir.path(), &[]);
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.80\nnameserver 127.0.0.81\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let config = format!(
        "listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: dns\nroutes:\n  - service: hello-app\n    port: {port}\n"
    );
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start_with_env(&config, http, &[("EDGE_PROXY_RESOLV_CONF", &resolv)]);
    let service = format!("default/hello-app:{port}");
    let svc = [("service", service.as_str())];
    // The 1 s TTL makes the proxy look the name up again and again.
    proxy.wait_metrics("four lookups", |m| {
        m.sum("edge_proxy_dns_lookups_total", &svc) >= 4.0
    });
    for i in 0..10 {
        let r = curl(&[&proxy.url("/")]);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    let m = proxy.metrics();
    assert_eq!(
        m.sum(
            "edge_proxy_dns_lookups_total",
            &[svc[0], ("result", "no_records")]
        ),
        0.0,
        "the second server's NXDOMAIN was taken; log:\n{}",
        proxy.log()
    );
    assert!(!proxy.log().contains("does not resolve"), "{}", proxy.log());
}

#[test]
fn a_name_that_does_not_resolve_is_logged_once_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let _dns = Dnsmasq::start_on("127.0.0.79", dir.path(), &[]);
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.79\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let config = "listen:\n  http: \"{http}\"\nadmin: \"{admin}\"\ndiscovery: dns\nroutes:\n  - service: hello-app\n    port: 8080\n";
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start_with_env(config, http, &[("EDGE_PROXY_RESOLV_CONF", &resolv)]);
    let svc = ("service", "default/hello-app:8080");
    proxy.wait_metrics("three failed lookups", |m| {
        m.sum(
            "edge_proxy_dns_lookups_total",
            &[svc, ("result", "no_records")],
        ) >= 3.0
    });
    assert_eq!(curl(&[&proxy.url("/")]).status, 503);
    let log = proxy.log();
    assert_eq!(log.matches("does not resolve").count(), 1, "{log}");
}
