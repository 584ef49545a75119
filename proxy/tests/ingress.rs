//! `ingress:` end to end: real edge-proxies outside a cluster, KUBECONFIG
//! pointing at the stand-in API server (utils/kube_api.rs) that holds the
//! Ingresses, IngressClasses, Secrets, EndpointSlices, Pods, Nodes and the
//! status Lease, routing to real hello-app processes that play the pods.

mod utils;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use utils::kube_api::FakeApiServer;
use utils::*;

const ANNOTATION: &str = "nginx.ingress.kubernetes.io/";

struct Cluster {
    api: FakeApiServer,
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        let api = FakeApiServer::start();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.kubeconfig(dir.path());
        api.put("ingressclasses", class(false));
        Cluster {
            api,
            dir,
            kubeconfig,
        }
    }

    /// Service `service` in `default` with these hello-apps as its ready pods.
    fn service(&self, service: &str, pods: &[&HelloApp]) {
        let port = pods.first().map_or(8080, |p| p.addr.port());
        let ips: Vec<String> = pods.iter().map(|p| p.addr.ip().to_string()).collect();
        let endpoints: Vec<_> = ips
            .iter()
            .map(|ip| (ip.as_str(), true, true, false))
            .collect();
        self.api.apply(
            "default",
            &format!("{service}-abcde"),
            service,
            port,
            &endpoints,
        );
    }

    /// Service `service` in `default` with one ready pod: an echo origin
    /// (it answers with the request it received).
    fn echo_service(&self, service: &str) -> EchoOrigin {
        let app = EchoOrigin::start("app");
        self.api.apply(
            "default",
            &format!("{service}-abcde"),
            service,
            app.addr.port(),
            &[("127.0.0.1", true, true, false)],
        );
        app
    }

    /// A proxy serving Ingresses; `extra` is appended to the configuration.
    fn proxy(&self, extra: &str, env: &[(&str, &Path)]) -> Proxy {
        self.proxy_with("listen:\n  http: \"{http}\"\n", extra, env)
    }

    fn proxy_with(&self, listen: &str, extra: &str, env: &[(&str, &Path)]) -> Proxy {
        let config = format!("{listen}admin: \"{{admin}}\"\ndiscovery: kubernetes\n{extra}");
        self.ready_proxy(&config, env)
    }

    /// A proxy on `config` (with `{http}` and `{admin}`), talking to this
    /// API server, once `/readyz` says its Ingresses are listed.
    fn ready_proxy(&self, config: &str, env: &[(&str, &Path)]) -> Proxy {
        let mut env = env.to_vec();
        env.push(("KUBECONFIG", &self.kubeconfig));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let proxy = Proxy::start_with_env(config, http, &env);
        eventually(
            "the Ingresses listed (/readyz)",
            Duration::from_secs(10),
            || curl(&[&format!("http://{}/readyz", proxy.admin)]).status == 200,
        );
        proxy
    }
}

fn class(default: bool) -> Value {
    json!({
        "metadata": {"name": "edge-proxy", "annotations": {"ingressclass.kubernetes.io/is-default-class": default.to_string()}},
        "spec": {"controller": "edge-proxy.io/ingress-controller"}
    })
}

/// An Ingress of `class` with one rule per (host, path, service) and port 80.
fn ingress(name: &str, created: &str, class: Option<&str>, rules: &[(&str, &str, &str)]) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|(host, path, service)| {
            json!({"host": host, "http": {"paths": [
                {"path": path, "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}
            ]}})
        })
        .collect();
    json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": {"ingressClassName": class, "rules": rules}
    })
}

fn with_annotations(mut ingress: Value, pairs: &[(&str, &str)]) -> Value {
    for (k, v) in pairs {
        ingress["metadata"]["annotations"][format!("{ANNOTATION}{k}")] = json!(v);
    }
    ingress
}

/// An Ingress of our class, created 2026-01-01, routing `host` `/` to
/// `service`, with these `nginx.ingress.kubernetes.io/` annotations.
fn annotated(name: &str, host: &str, service: &str, pairs: &[(&str, &str)]) -> Value {
    with_annotations(
        ingress(
            name,
            "2026-01-01T00:00:00Z",
            Some("edge-proxy"),
            &[(host, "/", service)],
        ),
        pairs,
    )
}

fn get(proxy: &Proxy, host: &str, path: &str, extra: &[&str]) -> Response {
    let url = proxy.url(path);
    let header = format!("Host: {host}");
    let mut args = vec!["-H", header.as_str()];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// The hello-app answering `host` `path`, or the status when none did.
fn who(proxy: &Proxy, host: &str, path: &str) -> String {
    let r = get(proxy, host, path, &[]);
    if r.status == 200 {
        r.served_by().to_string()
    } else {
        r.status.to_string()
    }
}

fn problems(proxy: &Proxy, ingress: &str, problem: &str) -> f64 {
    proxy.metrics().sum(
        "edge_proxy_ingress_problems",
        &[("ingress", ingress), ("problem", problem)],
    )
}

/// A keep-alive connection that sends GETs one after another.
struct KeepAlive(BufReader<TcpStream>);

impl KeepAlive {
    fn open(addr: SocketAddr) -> KeepAlive {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        KeepAlive(BufReader::new(s))
    }

    fn get(&mut self, host: &str, path: &str) -> (u16, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.0.get_mut().write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.0.read_line(&mut line).unwrap() > 0,
                "connection closed"
            );
            if line == "\r\n" {
                break;
            }
            head.push(line);
        }
        let status = head[0].split_whitespace().nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .iter()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

#[test]
fn ingresses_of_our_class_route_beside_the_configmap_and_follow_changes() {
    let cluster = Cluster::start();
    let web = HelloApp::start("web-1");
    let api = HelloApp::start("api-1");
    let cm = HelloApp::start("cm-1");
    let newer = HelloApp::start("newer-1");
    cluster.service("web", &[&web]);
    cluster.service("api", &[&api]);
    cluster.service("cm", &[&cm]);
    cluster.service("newer", &[&newer]);
    let a = &cluster.api;
    a.put(
        "ingresses",
        ingress(
            "web",
            "2026-01-01T00:00:00Z",
            Some("edge-proxy"),
            &[("a.test", "/", "web"), ("a.test", "/cm", "web")],
        ),
    );
    a.put(
        "ingresses",
        ingress(
            "theirs",
            "2026-01-01T00:00:00Z",
            Some("nginx"),
            &[("b.test", "/", "web")],
        ),
    );
    a.put(
        "ingresses",
        ingress(
            "classless",
            "2026-01-01T00:00:00Z",
            None,
            &[("c.test", "/", "web")],
        ),
    );
    // A host split across Ingresses: /api from a second one.
    a.put(
        "ingresses",
        ingress(
            "api",
            "2026-02-01T00:00:00Z",
            Some("edge-proxy"),
            &[("a.test", "/api", "api")],
        ),
    );
    // A newer claim on a.test / : the older Ingress keeps it.
    a.put(
        "ingresses",
        ingress(
            "newer",
            "2026-03-01T00:00:00Z",
            Some("edge-proxy"),
            &[("a.test", "/", "newer")],
        ),
    );
    // The ConfigMap's route for a.test /cm wins over the Ingress's.
    let proxy = cluster.proxy(
        "ingress: {}\nroutes:\n  - host: a.test\n    path: /cm\n    service: cm\n    port: 80\n",
        &[],
    );

    assert_eq!(who(&proxy, "a.test", "/"), "web-1");
    assert_eq!(who(&proxy, "a.test", "/api/users"), "api-1");
    assert_eq!(who(&proxy, "a.test", "/cm"), "cm-1");
    assert_eq!(
        who(&proxy, "b.test", "/"),
        "404",
        "another class is not ours"
    );
    assert_eq!(
        who(&proxy, "c.test", "/"),
        "404",
        "no class, and ours is not the default"
    );
    let m = proxy.metrics();
    assert_eq!(m.sum("edge_proxy_ingress_shadowed_routes", &[]), 1.0);
    // web's two paths and api's; newer's lost to web's.
    assert_eq!(m.sum("edge_proxy_ingress_routes", &[]), 3.0);
    assert_eq!(problems(&proxy, "default/newer", "conflict"), 1.0);
    let log = proxy.log();
    let conflict = log
        .lines()
        .find(|l| l.contains("default/newer") && l.contains("conflict"))
        .unwrap_or_else(|| panic!("no conflict line in\n{log}"));
    assert!(conflict.contains("default/web"), "names both: {conflict}");

    // Changes reach routing within a second, on a connection kept open.
    let mut conn = KeepAlive::open(proxy.http);
    assert_eq!(conn.get("a.test", "/").0, 200);
    let changed = Instant::now();
    a.put("ingressclasses", class(true));
    eventually("the default class served", Duration::from_secs(1), || {
        who(&proxy, "c.test", "/") == "web-1"
    });
    a.remove("ingresses", "default", "web");
    eventually(
        "the newer Ingress takes a.test /",
        Duration::from_secs(1),
        || who(&proxy, "a.test", "/") == "newer-1",
    );
    let took = changed.elapsed();
    let (status, body) = conn.get("a.test", "/");
    assert_eq!(status, 200);
    assert!(
        body.starts_with("Hello world from newer-1"),
        "same connection, new route: {body}"
    );
    assert_eq!(problems(&proxy, "default/newer", "conflict"), 0.0);
    assert!(
        proxy.log().contains("resolved"),
        "the conflict's end is logged"
    );
    eprintln!("two changes reached routing in {took:?}");
}

#[test]
fn affinity_annotations_set_ingress_nginx_cookies_and_change_on_failure_both_ways() {
    let cluster = Cluster::start();
    let port = free_port();
    let mut pods: Vec<HelloApp> = (1..=2)
        .map(|i| {
            HelloApp::start_on(
                &format!("pod-{i}"),
                SocketAddr::from(([127, 0, 0, i as u8], port)),
            )
        })
        .collect();
    cluster.service("web", &[&pods[0], &pods[1]]);
    let sticky = |name: &str, host: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![("affinity", "cookie")];
        pairs.extend_from_slice(extra);
        with_annotations(
            ingress(
                name,
                "2026-01-01T00:00:00Z",
                Some("edge-proxy"),
                &[(host, "/", "web")],
            ),
            &pairs,
        )
    };
    cluster.api.put(
        "ingresses",
        sticky(
            "keep",
            "keep.test",
            &[
                ("session-cookie-max-age", "172800"),
                ("session-cookie-expires", "172800"),
                ("session-cookie-samesite", "None"),
                ("session-cookie-conditional-samesite-none", "true"),
                ("session-cookie-secure", "true"),
                ("session-cookie-domain", "keep.test"),
                ("session-cookie-path", "/"),
            ],
        ),
    );
    cluster.api.put(
        "ingresses",
        sticky(
            "change",
            "change.test",
            &[
                ("session-cookie-name", "route"),
                ("session-cookie-change-on-failure", "true"),
                ("affinity-mode", "persistent"),
            ],
        ),
    );
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    let other = cluster.proxy("ingress: {}\n", &[]);

    // ingress-nginx's cookie: INGRESSCOOKIE and every attribute asked for.
    let first = get(
        &proxy,
        "keep.test",
        "/",
        &["-A", "Mozilla/5.0 Chrome/120.0"],
    );
    let set = first
        .set_cookie("INGRESSCOOKIE")
        .expect("a cookie")
        .to_string();
    for attribute in [
        "Path=/",
        "Domain=keep.test",
        "HttpOnly",
        "SameSite=None",
        "Expires=",
        "Max-Age=172800",
        "Secure",
    ] {
        assert!(set.contains(attribute), "{attribute} not in {set}");
    }
    // A client that mishandles SameSite=None gets none.
    let ios12 = "Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) Safari/604.1";
    let old = get(&proxy, "keep.test", "/", &["-A", ios12]);
    assert!(!old
        .set_cookie("INGRESSCOOKIE")
        .unwrap()
        .contains("SameSite"));

    // Pinned, on either proxy (the cookie contract holds for Ingress routes).
    let value = first.cookie_value("INGRESSCOOKIE").unwrap();
    let pinned = first.served_by().to_string();
    let cookie = format!("INGRESSCOOKIE={value}");
    for p in [&proxy, &other, &proxy] {
        let r = get(p, "keep.test", "/", &["-b", &cookie]);
        assert_eq!(r.served_by(), pinned);
        assert!(r.set_cookie("INGRESSCOOKIE").is_none());
    }

    // change-on-failure false: the pinned pod fails; the request is served by
    // the other one and the cookie is kept, so the client returns once it is back.
    let i = pods.iter().position(|p| p.name == pinned).unwrap();
    let addr = pods[i].addr;
    pods[i].kill();
    let r = get(&proxy, "keep.test", "/", &["-b", &cookie]);
    assert_eq!(r.status, 200);
    assert_ne!(r.served_by(), pinned);
    assert!(
        r.set_cookie("INGRESSCOOKIE").is_none(),
        "kept: {:?}",
        r.headers
    );
    pods[i] = HelloApp::start_on(&pinned, addr);
    eventually("back to its pod", Duration::from_secs(15), || {
        get(&proxy, "keep.test", "/", &["-b", &cookie]).served_by() == pinned
    });
    let m = proxy.metrics();
    assert!(m.sum("edge_proxy_affinity_total", &[("outcome", "kept")]) >= 1.0);

    // change-on-failure true: re-pinned with a new cookie, as ConfigMap routes.
    let first = get(&proxy, "change.test", "/", &[]);
    let value = first.cookie_value("route").expect("a route cookie");
    let pinned = first.served_by().to_string();
    let i = pods.iter().position(|p| p.name == pinned).unwrap();
    pods[i].kill();
    let r = get(
        &proxy,
        "change.test",
        "/",
        &["-b", &format!("route={value}")],
    );
    assert_ne!(r.served_by(), pinned);
    let new = r.cookie_value("route").expect("re-pinned");
    assert_ne!(new, value);
}

/// A TCP server that accepts and never answers.
fn silent_server() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[test]
fn route_annotations_limits_allowlists_timeouts_and_refusals() {
    let cluster = Cluster::start();
    let web = HelloApp::start("web-1");
    cluster.service("web", &[&web]);
    let (_silent, silent) = silent_server();
    cluster.api.apply(
        "default",
        "slow-abcde",
        "slow",
        silent.port(),
        &[("127.0.0.1", true, true, false)],
    );
    let put = |name: &str, host: &str, service: &str, pairs: &[(&str, &str)]| {
        cluster.api.put(
            "ingresses",
            with_annotations(
                ingress(
                    name,
                    "2026-01-01T00:00:00Z",
                    Some("edge-proxy"),
                    &[(host, "/", service)],
                ),
                pairs,
            ),
        );
    };
    put("small", "small.test", "web", &[("proxy-body-size", "1k")]);
    put(
        "inside",
        "inside.test",
        "web",
        &[("whitelist-source-range", "10.0.0.0/8, 127.0.0.0/8")],
    );
    put(
        "outside",
        "outside.test",
        "web",
        &[("allowlist-source-range", "10.0.0.0/8")],
    );
    put(
        "denied",
        "denied.test",
        "web",
        &[("denylist-source-range", "10.0.0.0/8, 127.0.0.1/32")],
    );
    put(
        "not-denied",
        "not-denied.test",
        "web",
        &[("denylist-source-range", "10.0.0.0/8")],
    );
    put(
        "deny-garbled",
        "deny-garbled.test",
        "web",
        &[("denylist-source-range", "10.0.0.0/8,nonsense")],
    );
    put(
        "garbled",
        "garbled.test",
        "web",
        &[("allowlist-source-range", "10.0.0.0/8,nonsense")],
    );
    put("slow", "slow.test", "slow", &[("proxy-read-timeout", "1")]);
    put("fcgi", "fcgi.test", "web", &[("backend-protocol", "FCGI")]);
    put(
        "auth",
        "auth.test",
        "web",
        &[("auth-type", "basic"), ("auth-secret", "users")],
    );
    put(
        "snippet",
        "snippet.test",
        "web",
        &[
            ("configuration-snippet", "/"),
            ("proxy-connect-timeout", "soon"),
        ],
    );
    put("plain", "plain.test", "web", &[]);
    let proxy = cluster.proxy("ingress: {}\n", &[]);

    let body = "x".repeat(2048);
    let post = |host: &str| get(&proxy, host, "/", &["--data-binary", &body]).status;
    assert_eq!(post("small.test"), 413);
    // Forwarded under the global limit (10 MiB): hello-app answers POST with 405.
    assert_eq!(post("plain.test"), 405);

    assert_eq!(who(&proxy, "inside.test", "/"), "web-1");
    assert_eq!(who(&proxy, "outside.test", "/"), "403");
    assert_eq!(who(&proxy, "denied.test", "/"), "403");
    assert_eq!(who(&proxy, "not-denied.test", "/"), "web-1");
    assert_eq!(
        who(&proxy, "deny-garbled.test", "/"),
        "403",
        "a bad denylist fails closed"
    );
    assert_eq!(
        who(&proxy, "garbled.test", "/"),
        "403",
        "a bad allowlist fails closed"
    );
    assert_eq!(
        problems(&proxy, "default/garbled", "invalid_annotation"),
        1.0
    );

    let started = Instant::now();
    assert_eq!(who(&proxy, "slow.test", "/"), "504");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "proxy-read-timeout 1 s, not 60 s: {waited:?}"
    );

    assert_eq!(
        who(&proxy, "fcgi.test", "/"),
        "404",
        "a FastCGI backend is refused"
    );
    assert_eq!(
        who(&proxy, "auth.test", "/"),
        "404",
        "its users' Secret does not exist: never served without its authentication"
    );
    assert_eq!(problems(&proxy, "default/fcgi", "refused"), 1.0);
    assert_eq!(problems(&proxy, "default/auth", "refused"), 1.0);
    // Unsupported or unreadable: served, a warning naming Ingress, annotation
    // and value, once per change and not per request or recompute.
    assert_eq!(who(&proxy, "snippet.test", "/"), "web-1");
    assert_eq!(
        problems(&proxy, "default/snippet", "unsupported_annotation"),
        1.0
    );
    assert_eq!(
        problems(&proxy, "default/snippet", "invalid_annotation"),
        1.0
    );
    put("other", "other.test", "web", &[]); // a recompute
    eventually("the recompute", Duration::from_secs(2), || {
        who(&proxy, "other.test", "/") == "web-1"
    });
    let log = proxy.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("configuration-snippet"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("default/snippet") && warnings[0].contains("\\\"/\\\""),
        "{}",
        warnings[0]
    );
    assert!(log
        .lines()
        .any(|l| l.contains("proxy-connect-timeout") && l.contains("soon")));
}

/// A TLS Secret of `name` holding a fresh certificate for `host` signed by
/// itself with organisation `org`; also writes `org.crt` for curl's --cacert.
fn tls_secret(dir: &Path, name: &str, host: &str, org: &str) -> Value {
    make_cert(dir, org, host, org);
    let b64 = |file: &str| base64_file(&dir.join(file));
    json!({
        "metadata": {"name": name, "namespace": "default"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(&format!("{org}.crt")), "tls.key": b64(&format!("{org}.key"))}
    })
}

#[test]
fn tls_from_secrets_added_rotated_and_broken_without_certificate_files() {
    let cluster = Cluster::start();
    let web = HelloApp::start("web-1");
    cluster.service("web", &[&web]);
    let dir = cluster.dir.path();
    let mut secure = ingress(
        "secure",
        "2026-01-01T00:00:00Z",
        Some("edge-proxy"),
        &[("s.test", "/", "web")],
    );
    secure["spec"]["tls"] = json!([{"hosts": ["s.test"], "secretName": "s-tls"}]);
    let mut other = ingress(
        "other",
        "2026-01-01T00:00:00Z",
        Some("edge-proxy"),
        &[("o.test", "/", "web")],
    );
    other["spec"]["tls"] = json!([{"hosts": ["o.test"], "secretName": "o-tls"}]);
    let forced = annotated("forced", "f.test", "web", &[("force-ssl-redirect", "true")]);
    cluster
        .api
        .put("secrets", tls_secret(dir, "o-tls", "o.test", "other"));
    // Not a TLS Secret: never read.
    cluster.api.put("secrets", json!({"metadata": {"name": "password", "namespace": "default"}, "type": "Opaque", "data": {"p": "c2VjcmV0"}}));
    for i in [secure, other, forced] {
        cluster.api.put("ingresses", i);
    }
    let https = free_port();
    // No `tls:` at all: every certificate comes from Secrets.
    let listen = format!("listen:\n  http: \"{{http}}\"\n  https: \"127.0.0.1:{https}\"\n");
    let proxy = cluster.proxy_with(&listen, "ingress: {}\n", &[]);
    let tls_get = |host: &str, org: &str| {
        let resolve = format!("{host}:{https}:127.0.0.1");
        let ca = dir.join(format!("{org}.crt"));
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "--resolve", &resolve, "--cacert"])
            .arg(&ca)
            .arg(format!("https://{host}:{https}/"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    // Secret missing: reported; https for s.test fails, o.test is fine, and
    // plain http to s.test is served rather than sent to a broken https.
    assert!(tls_get("o.test", "other")
        .1
        .starts_with("Hello world from web-1"));
    assert!(!tls_get("s.test", "one").0);
    assert_eq!(who(&proxy, "s.test", "/"), "web-1");
    assert_eq!(problems(&proxy, "default/secure", "tls_secret"), 1.0);

    // Added: served within a second, and http now redirects (ssl-redirect).
    cluster
        .api
        .put("secrets", tls_secret(dir, "s-tls", "s.test", "one"));
    eventually(
        "the Secret's certificate served",
        Duration::from_secs(1),
        || tls_get("s.test", "one").0,
    );
    let r = get(&proxy, "s.test", "/x?y=1", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://s.test:{https}/x?y=1").as_str())
    );
    assert_eq!(
        get(&proxy, "f.test", "/", &[]).status,
        308,
        "force-ssl-redirect without TLS"
    );
    assert_eq!(problems(&proxy, "default/secure", "tls_secret"), 0.0);

    // Rotated: the new certificate, without a restart.
    cluster
        .api
        .put("secrets", tls_secret(dir, "s-tls", "s.test", "two"));
    eventually(
        "the rotated certificate served",
        Duration::from_secs(2),
        || tls_get("s.test", "two").0,
    );

    // Broken: reported, the last good certificate stays, the others too.
    let mut broken = tls_secret(dir, "s-tls", "s.test", "three");
    broken["data"]["tls.key"] = json!("bm90IGEga2V5");
    cluster.api.put("secrets", broken);
    eventually("the broken Secret reported", Duration::from_secs(2), || {
        problems(&proxy, "default/secure", "tls_secret") == 1.0
    });
    assert!(
        tls_get("s.test", "two").0,
        "the last good certificate serves"
    );
    assert!(tls_get("o.test", "other").0);
    let m = proxy.metrics();
    assert!(
        m.sum(
            "edge_proxy_tls_certificate_expiry_timestamp_seconds",
            &[("host", "o.test")]
        ) > 0.0
    );
}

/// Pod `name` of the edge-proxy DaemonSet on `node`, ready or not.
fn proxy_pod(name: &str, node: &str, ready: bool) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "edge", "labels": {"app.kubernetes.io/name": "edge-proxy"}},
        "spec": {"nodeName": node, "containers": [{"name": "edge-proxy"}]},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

fn node(name: &str, internal: &str, external: Option<&str>) -> Value {
    let mut addresses = vec![json!({"type": "InternalIP", "address": internal})];
    if let Some(e) = external {
        addresses.push(json!({"type": "ExternalIP", "address": e}));
    }
    json!({"metadata": {"name": name}, "status": {"addresses": addresses}})
}

fn status_ips(api: &FakeApiServer) -> Vec<String> {
    api.get("ingresses", "default", "web")
        .and_then(|i| i["status"]["loadBalancer"]["ingress"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|a| a["ip"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn leader(p: &Proxy) -> bool {
    p.metrics().sum("edge_proxy_ingress_status_leader", &[]) == 1.0
}

#[test]
fn one_lease_holder_writes_the_status_keeps_it_current_and_hands_over() {
    let cluster = Cluster::start();
    let web = HelloApp::start("web-1");
    cluster.service("web", &[&web]);
    let a = &cluster.api;
    a.put("nodes", node("node-1", "10.0.0.1", Some("203.0.113.1")));
    a.put("nodes", node("node-2", "10.0.0.2", None));
    a.put("nodes", node("node-3", "10.0.0.3", None));
    a.put("pods", proxy_pod("edge-a", "node-1", true));
    a.put("pods", proxy_pod("edge-b", "node-2", true));
    // Another app's pod on node-3: not ours.
    let mut stranger = proxy_pod("other", "node-3", true);
    stranger["metadata"]["labels"] = json!({"app.kubernetes.io/name": "other"});
    a.put("pods", stranger);
    a.put(
        "ingresses",
        ingress(
            "web",
            "2026-01-01T00:00:00Z",
            Some("edge-proxy"),
            &[("a.test", "/", "web")],
        ),
    );
    let ns = Path::new("edge");
    let mut proxies = vec![
        cluster.proxy(
            "ingress: {}\n",
            &[("POD_NAMESPACE", ns), ("POD_NAME", Path::new("edge-a"))],
        ),
        cluster.proxy(
            "ingress: {}\n",
            &[("POD_NAMESPACE", ns), ("POD_NAME", Path::new("edge-b"))],
        ),
    ];

    // ExternalIP, else InternalIP; sorted; written by one proxy, once.
    let want = ["10.0.0.2", "203.0.113.1"];
    eventually("the status written", Duration::from_secs(15), || {
        status_ips(a) == want
    });
    let leaders: Vec<bool> = proxies.iter().map(leader).collect();
    assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "{leaders:?}");
    let holder =
        a.get("leases", "edge", "edge-proxy-status").unwrap()["spec"]["holderIdentity"].clone();
    let l = leaders.iter().position(|l| *l).unwrap();
    assert_eq!(holder, json!(["edge-a", "edge-b"][l]));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        a.writes("/ingresses/web/status").len(),
        1,
        "written once, by one proxy"
    );

    // A node comes: written once it has held. A pod that is not ready for a
    // moment (a rolling update) changes nothing: no flapping.
    a.put("pods", proxy_pod("edge-c", "node-3", true));
    eventually("node-3 published", Duration::from_secs(15), || {
        status_ips(a).len() == 3
    });
    assert_eq!(status_ips(a), ["10.0.0.2", "10.0.0.3", "203.0.113.1"]);
    a.put("pods", proxy_pod("edge-c", "node-3", false));
    std::thread::sleep(Duration::from_millis(1500));
    a.put("pods", proxy_pod("edge-c", "node-3", true));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        a.writes("/ingresses/web/status").len(),
        2,
        "{:#?}",
        a.writes("/status")
    );

    // The holder stops: it releases the Lease and the other takes over.
    let leaving = proxies.remove(l);
    signal(&leaving.child, "TERM");
    let successor = &proxies[0];
    eventually(
        "the other proxy holds the Lease",
        Duration::from_secs(10),
        || leader(successor),
    );
    let holder =
        a.get("leases", "edge", "edge-proxy-status").unwrap()["spec"]["holderIdentity"].clone();
    assert_eq!(holder, json!(["edge-a", "edge-b"][1 - l]));
    a.remove("pods", "edge", "edge-c");
    eventually(
        "node-3 withdrawn by the new holder",
        Duration::from_secs(15),
        || status_ips(a).len() == 2,
    );
    drop(leaving);
}

/// The k8s/ manifests' object of `kind` named `name`, as JSON.
fn manifest(kind: &str, name: &str) -> Value {
    use serde::Deserialize;
    for file in ["k8s/edge-proxy.yaml", "k8s/hello-app.yaml"] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = Value::deserialize(doc).unwrap();
            if v["kind"] == kind && v["metadata"]["name"] == name {
                return v;
            }
        }
    }
    panic!("no {kind}/{name} in k8s/")
}

/// What the "done when" describes: the shipped ConfigMap and
/// IngressClass, an ingress-nginx Ingress with affinity annotations (class
/// changed), two nodes: the same routing and stickiness on both, no problem
/// reported, the ADDRESS filled in.
#[test]
fn the_shipped_manifests_serve_an_ingress_nginx_ingress_on_every_node() {
    let cluster = Cluster::start();
    let a = &cluster.api;
    a.put("ingressclasses", manifest("IngressClass", "edge-proxy"));
    a.put("ingresses", manifest("Ingress", "hello-app"));
    let port = free_port();
    let pods: Vec<HelloApp> = (1..=3)
        .map(|i| {
            HelloApp::start_on(
                &format!("hello-{i}"),
                SocketAddr::from(([127, 0, 0, i as u8], port)),
            )
        })
        .collect();
    cluster.service("hello-app", &pods.iter().collect::<Vec<_>>());
    for (i, ip) in [(1, "198.51.100.1"), (2, "198.51.100.2")] {
        a.put(
            "nodes",
            node(&format!("node-{i}"), &format!("10.0.0.{i}"), Some(ip)),
        );
        let mut pod = proxy_pod(&format!("edge-proxy-{i}"), &format!("node-{i}"), true);
        pod["metadata"]["namespace"] = json!("edge-proxy");
        a.put("pods", pod);
    }
    let config = manifest("ConfigMap", "edge-proxy")["data"]["proxy.yaml"]
        .as_str()
        .unwrap()
        .replace("0.0.0.0:80\"", "{http}\"")
        .replace("0.0.0.0:443", &format!("127.0.0.1:{}", free_port()))
        .replace("0.0.0.0:9901", "{admin}");
    let ns = Path::new("edge-proxy");
    let nodes: Vec<Proxy> = (1..=2)
        .map(|i| {
            let name = format!("edge-proxy-{i}");
            cluster.ready_proxy(
                &config,
                &[("POD_NAMESPACE", ns), ("POD_NAME", Path::new(&name))],
            )
        })
        .collect();

    let host = "hello-ingress.example.com";
    let first = get(&nodes[0], host, "/", &[]);
    assert_eq!(first.status, 200);
    let set = first
        .set_cookie("INGRESSCOOKIE")
        .expect("ingress-nginx's cookie")
        .to_string();
    assert!(
        set.contains("Max-Age=172800") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let cookie = format!(
        "INGRESSCOOKIE={}",
        first.cookie_value("INGRESSCOOKIE").unwrap()
    );
    for node in nodes.iter().chain(nodes.iter()) {
        assert_eq!(
            get(node, host, "/", &["-b", &cookie]).served_by(),
            first.served_by()
        );
    }
    // The ConfigMap's own route still serves beside it.
    assert_eq!(get(&nodes[1], "hello.example.com", "/", &[]).status, 200);
    for node in &nodes {
        let m = node.metrics();
        let reported: f64 = m.sum("edge_proxy_ingress_problems", &[]);
        assert_eq!(reported, 0.0, "{}", node.log());
    }
    eventually("the ADDRESS filled in", Duration::from_secs(15), || {
        a.get("ingresses", "default", "hello-app")
            .and_then(|i| i["status"]["loadBalancer"]["ingress"].as_array().cloned())
            .is_some_and(|l| l == [json!({"ip": "198.51.100.1"}), json!({"ip": "198.51.100.2"})])
    });
}

/// One Ingress rule with paths of `pathType` (host, [(path, service)]).
fn ingress_paths(
    name: &str,
    created: &str,
    host: &str,
    path_type: &str,
    paths: &[(&str, &str)],
) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(path, service)| {
            json!({"path": path, "pathType": path_type, "backend": {"service": {"name": service, "port": {"number": 80}}}})
        })
        .collect();
    json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": {"ingressClassName": "edge-proxy", "rules": [{"host": host, "http": {"paths": paths}}]}
    })
}

#[test]
fn rewrites_redirects_acme_challenges_and_canaries_as_ingress_nginx_serves_them() {
    let cluster = Cluster::start();
    let a = &cluster.api;
    let (v1, v2) = (HelloApp::start("v1-1"), HelloApp::start("v2-1"));
    let echo = EchoOrigin::start("echo");
    let solver = EchoOrigin::start("solver");
    cluster.service("v1", &[&v1]);
    cluster.service("v2", &[&v2]);
    for (service, origin) in [("echo", &echo), ("solver", &solver)] {
        let ip = origin.addr.ip().to_string();
        a.apply(
            "default",
            &format!("{service}-abcde"),
            service,
            origin.addr.port(),
            &[(ip.as_str(), true, true, false)],
        );
    }
    // ingress-nginx's rewrite example: /something(/|$)(.*) -> /$2.
    a.put(
        "ingresses",
        with_annotations(
            ingress_paths(
                "rewrite",
                "2026-01-01T00:00:00Z",
                "r.test",
                "ImplementationSpecific",
                &[("/something(/|$)(.*)", "echo")],
            ),
            &[
                ("rewrite-target", "/$2"),
                ("x-forwarded-prefix", "/something"),
            ],
        ),
    );
    // The same host's other Ingress: its Prefix path is a regex too.
    a.put(
        "ingresses",
        ingress_paths(
            "same-host",
            "2026-01-02T00:00:00Z",
            "r.test",
            "Prefix",
            &[("/v1", "v1")],
        ),
    );
    a.put(
        "ingresses",
        annotated(
            "moved",
            "old.test",
            "v1",
            &[("permanent-redirect", "https://new.test$request_uri")],
        ),
    );
    a.put(
        "ingresses",
        annotated(
            "temporary",
            "tmp.test",
            "v1",
            &[
                ("permanent-redirect", "https://p.test"),
                ("temporal-redirect", "https://t.test/"),
                ("temporal-redirect-code", "307"),
            ],
        ),
    );
    a.put(
        "ingresses",
        annotated("rooted", "root.test", "v1", &[("app-root", "/app")]),
    );
    a.put(
        "ingresses",
        annotated(
            "apex",
            "apex.test",
            "v1",
            &[("from-to-www-redirect", "true")],
        ),
    );
    // cert-manager's HTTP-01, both shapes: `http01-edit-in-place` adds the
    // challenge path to the user's Ingress (here with force-ssl-redirect) ...
    a.put(
        "ingresses",
        with_annotations(
            ingress_paths(
                "secure",
                "2026-01-01T00:00:00Z",
                "s.test",
                "ImplementationSpecific",
                &[("/", "v1"), ("/.well-known/acme-challenge/tok-1", "solver")],
            ),
            &[("force-ssl-redirect", "true")],
        ),
    );
    // ... or a solver Ingress of its own beside it, as cert-manager writes it.
    a.put(
        "ingresses",
        annotated(
            "secure2",
            "s2.test",
            "v1",
            &[("force-ssl-redirect", "true")],
        ),
    );
    a.put(
        "ingresses",
        with_annotations(
            ingress_paths(
                "cm-acme-http-solver-x7k2p",
                "2026-01-02T00:00:00Z",
                "s2.test",
                "ImplementationSpecific",
                &[("/.well-known/acme-challenge/tok-2", "solver")],
            ),
            &[("whitelist-source-range", "0.0.0.0/0,::/0")],
        ),
    );
    // A canary beside the main Ingress: 20% by weight, a header, a cookie.
    a.put(
        "ingresses",
        ingress(
            "main",
            "2026-01-01T00:00:00Z",
            Some("edge-proxy"),
            &[("c.test", "/", "v1")],
        ),
    );
    a.put(
        "ingresses",
        with_annotations(
            ingress(
                "main-canary",
                "2026-01-02T00:00:00Z",
                Some("edge-proxy"),
                &[("c.test", "/", "v2")],
            ),
            &[
                ("canary", "true"),
                ("canary-weight", "20"),
                ("canary-by-header", "X-Canary"),
                ("canary-by-cookie", "canary"),
            ],
        ),
    );
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    eventually("the routes", Duration::from_secs(5), || {
        who(&proxy, "c.test", "/") != "404"
    });

    // Rewrite with captures, the query kept, X-Forwarded-Prefix sent.
    let r = get(&proxy, "r.test", "/something/new/path?x=1", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = echo.received().last().cloned().unwrap();
    assert!(seen.starts_with("GET /new/path?x=1 HTTP/1.1"), "{seen}");
    assert!(
        seen.to_ascii_lowercase()
            .contains("x-forwarded-prefix: /something"),
        "{seen}"
    );
    get(&proxy, "r.test", "/SOMETHING", &[]);
    assert!(
        echo.received()
            .last()
            .unwrap()
            .starts_with("GET / HTTP/1.1"),
        "case-insensitive"
    );
    // The host's plain Prefix path became a regex: /v1x matches it too.
    assert_eq!(who(&proxy, "r.test", "/v1x"), "v1-1");

    // Redirects.
    let moved = get(&proxy, "old.test", "/p/q?z=9", &[]);
    assert_eq!(
        (moved.status, moved.header("location")),
        (301, Some("https://new.test/p/q?z=9"))
    );
    let tmp = get(&proxy, "tmp.test", "/x", &[]);
    assert_eq!(
        (tmp.status, tmp.header("location")),
        (307, Some("https://t.test/")),
        "temporal wins"
    );
    let root = get(&proxy, "root.test", "/", &[]);
    assert_eq!(
        (root.status, root.header("location")),
        (302, Some("http://root.test/app"))
    );
    assert_eq!(who(&proxy, "root.test", "/app"), "v1-1");
    let www = get(&proxy, "www.apex.test", "/a?b=c", &[]);
    assert_eq!(
        (www.status, www.header("location")),
        (308, Some("http://apex.test/a?b=c"))
    );

    // ACME challenges reach their solver over plain HTTP; the rest redirects.
    for (host, token) in [("s.test", "tok-1"), ("s2.test", "tok-2")] {
        let path = format!("/.well-known/acme-challenge/{token}");
        let challenge = get(&proxy, host, &path, &[]);
        assert_eq!(challenge.status, 200, "{host}: {challenge:?}");
        assert!(solver
            .received()
            .last()
            .unwrap()
            .starts_with(&format!("GET {path} ")));
        assert_eq!(get(&proxy, host, "/", &[]).status, 308, "{host}");
    }

    // Canary: header, then cookie, then weight (exact shares: 20% of 2 000).
    assert_eq!(
        get(&proxy, "c.test", "/", &["-H", "X-Canary: always"]).served_by(),
        "v2-1"
    );
    assert_eq!(
        get(
            &proxy,
            "c.test",
            "/",
            &["-H", "X-Canary: never", "-b", "canary=always"]
        )
        .served_by(),
        "v1-1"
    );
    assert_eq!(
        get(&proxy, "c.test", "/", &["-b", "canary=always"]).served_by(),
        "v2-1"
    );
    let mut conn = KeepAlive::open(proxy.http);
    let canary = (0..2000)
        .filter(|_| {
            let (status, body) = conn.get("c.test", "/");
            assert_eq!(status, 200);
            body.starts_with("Hello world from v2-1")
        })
        .count();
    assert!(
        (300..=500).contains(&canary),
        "{canary} of 2000 to the canary"
    );
    assert_eq!(problems(&proxy, "default/main-canary", "conflict"), 0.0);
}

#[test]
fn an_affinity_cookie_keeps_a_client_on_its_side_of_a_canary() {
    let cluster = Cluster::start();
    let a = &cluster.api;
    let (v1, v2) = (HelloApp::start("v1-1"), HelloApp::start("v2-1"));
    cluster.service("v1", &[&v1]);
    cluster.service("v2", &[&v2]);
    a.put(
        "ingresses",
        annotated("main", "c.test", "v1", &[("affinity", "cookie")]),
    );
    a.put(
        "ingresses",
        with_annotations(
            ingress(
                "main-canary",
                "2026-01-02T00:00:00Z",
                Some("edge-proxy"),
                &[("c.test", "/", "v2")],
            ),
            &[
                ("canary", "true"),
                ("canary-by-header", "X-Canary"),
                ("canary-weight", "0"),
            ],
        ),
    );
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    eventually("the routes", Duration::from_secs(5), || {
        who(&proxy, "c.test", "/") == "v1-1"
    });
    // Sent to the canary once by the header: its cookie names the canary's pod.
    let first = get(&proxy, "c.test", "/", &["-H", "X-Canary: always"]);
    assert_eq!(first.served_by(), "v2-1");
    let cookie = format!(
        "INGRESSCOOKIE={}",
        first.cookie_value("INGRESSCOOKIE").unwrap()
    );
    // Without the header (weight 0 would say main), the session stays there.
    for _ in 0..5 {
        assert_eq!(
            get(&proxy, "c.test", "/", &["-b", &cookie]).served_by(),
            "v2-1"
        );
    }
    // And a main-side session stays on the main side under the header.
    let main = get(&proxy, "c.test", "/", &[]);
    let main_cookie = format!(
        "INGRESSCOOKIE={}",
        main.cookie_value("INGRESSCOOKIE").unwrap()
    );
    assert_eq!(
        get(
            &proxy,
            "c.test",
            "/",
            &["-H", "X-Canary: always", "-b", &main_cookie]
        )
        .served_by(),
        "v1-1"
    );
}

#[test]
fn upstream_hash_by_keeps_each_key_on_one_pod() {
    let cluster = Cluster::start();
    // Three pods on one port, as a Service's endpoints (127.0.0.1..3).
    let port = free_port();
    let pods: Vec<HelloApp> = (1..=3)
        .map(|i| {
            HelloApp::start_on(
                &format!("web-{i}"),
                SocketAddr::from(([127, 0, 0, i], port)),
            )
        })
        .collect();
    let ips: Vec<String> = pods.iter().map(|p| p.addr.ip().to_string()).collect();
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| (ip.as_str(), true, true, false))
        .collect();
    cluster
        .api
        .apply("default", "web-abcde", "web", port, &endpoints);
    cluster.api.put(
        "ingresses",
        annotated(
            "hashed",
            "h.test",
            "web",
            &[("upstream-hash-by", "$http_x_user")],
        ),
    );
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    eventually("the route", Duration::from_secs(5), || {
        who(&proxy, "h.test", "/") != "404"
    });
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..12 {
        let header = format!("X-User: user-{user}");
        let first = get(&proxy, "h.test", "/", &["-H", &header])
            .served_by()
            .to_string();
        for _ in 0..4 {
            assert_eq!(
                get(&proxy, "h.test", "/", &["-H", &header]).served_by(),
                first,
                "user-{user}"
            );
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "12 keys all on one pod: {seen:?}");
    // upstream-hash-by-subset: each key spreads over exactly its 2 pods.
    cluster.api.put(
        "ingresses",
        annotated(
            "subset",
            "s.test",
            "web",
            &[
                ("upstream-hash-by", "$http_x_user"),
                ("upstream-hash-by-subset", "true"),
                ("upstream-hash-by-subset-size", "2"),
            ],
        ),
    );
    eventually("the subset route", Duration::from_secs(5), || {
        who(&proxy, "s.test", "/") != "404"
    });
    for user in 0..6 {
        let header = format!("X-User: user-{user}");
        let pods: std::collections::BTreeSet<String> = (0..8)
            .map(|_| {
                get(&proxy, "s.test", "/", &["-H", &header])
                    .served_by()
                    .to_string()
            })
            .collect();
        assert_eq!(pods.len(), 2, "user-{user}: {pods:?}");
    }
}

/// grpcio's server and client (tests/tools/grpc_check.py).
fn grpc_tool() -> std::path::PathBuf {
    repo_root().join("proxy/tests/tools/grpc_check.py")
}

#[test]
fn grpc_backends_serve_unary_and_streaming_calls_with_trailers_over_tls_and_h2c() {
    let cluster = Cluster::start();
    // A real gRPC server (h2c) plays the pod.
    let port = free_port();
    let mut server = std::process::Command::new("python3")
        .arg(grpc_tool())
        .args(["serve", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with grpcio (scripts/ci-deps.sh installs it)");
    let mut ready = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    cluster.api.apply(
        "default",
        "grpc-abcde",
        "grpc",
        port,
        &[("127.0.0.1", true, true, false)],
    );
    cluster.api.put(
        "ingresses",
        annotated("grpc", "grpc.test", "grpc", &[("backend-protocol", "GRPC")]),
    );
    make_cert(cluster.dir.path(), "grpc", "grpc.test", "grpc");
    let https = free_port();
    let d = cluster.dir.path().display();
    let listen = format!("listen:\n  http: \"{{http}}\"\n  https: \"127.0.0.1:{https}\"\n");
    let proxy = cluster.proxy_with(
        &listen,
        &format!("ingress: {{}}\ntls:\n  - hosts: [grpc.test]\n    cert: {d}/grpc.crt\n    key: {d}/grpc.key\n"),
        &[],
    );
    eventually("the route", Duration::from_secs(5), || {
        get(&proxy, "grpc.test", "/", &[]).status != 404
    });
    let ca = cluster.dir.path().join("grpc.crt");
    let tls_addr = format!("127.0.0.1:{https}");
    let h2c_addr = proxy.http.to_string();
    for (how, args) in [
        (
            "TLS (HTTP/2 by ALPN)",
            vec![tls_addr.as_str(), "grpc.test", ca.to_str().unwrap()],
        ),
        (
            "h2c on the http listener",
            vec![h2c_addr.as_str(), "grpc.test"],
        ),
    ] {
        let out = std::process::Command::new("python3")
            .arg(grpc_tool())
            .arg("call")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            got,
            json!({
                "unary": "olleh", "unary_trailer": "done",
                "stream": ["item-0", "item-1", "item-2"], "stream_trailer": "streamed",
                "fail": "NOT_FOUND", "fail_details": "no such thing"
            }),
            "{how}"
        );
    }
    // Plain HTTP/1.1 on the same listener is unaffected by h2c.
    assert_eq!(get(&proxy, "other.test", "/", &[]).status, 404);
    let _ = server.kill();
    let _ = server.wait();
}

/// The pod of Service `tls`: openssl's TLS server in the cluster's directory
/// with these certificate arguments, answering every GET with its status
/// page, once it listens.
fn tls_pod(cluster: &Cluster, certificate: &[&str]) -> std::process::Child {
    let port = free_port();
    let pod = std::process::Command::new("openssl")
        .current_dir(cluster.dir.path())
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &format!("127.0.0.1:{port}"),
        ])
        .args(certificate)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("openssl s_server", Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    cluster.api.apply(
        "default",
        "tls-abcde",
        "tls",
        port,
        &[("127.0.0.1", true, true, false)],
    );
    pod
}

#[test]
fn https_backends_speak_tls_to_the_pods_and_verify_only_when_asked() {
    let cluster = Cluster::start();
    // The pod: openssl's TLS server answering every GET with its status page.
    make_cert(cluster.dir.path(), "pod", "pod.internal", "pod");
    let mut pod = tls_pod(&cluster, &["-cert", "pod.crt", "-key", "pod.key"]);
    for (name, host, extra) in [
        ("plain", "plain.test", &[][..]),
        (
            "verified",
            "verified.test",
            &[
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-name", "pod.internal"),
            ][..],
        ),
    ] {
        let mut pairs = vec![("backend-protocol", "HTTPS")];
        pairs.extend_from_slice(extra);
        cluster.api.put(
            "ingresses",
            with_annotations(
                ingress(
                    name,
                    "2026-01-01T00:00:00Z",
                    Some("edge-proxy"),
                    &[(host, "/", "tls")],
                ),
                &pairs,
            ),
        );
    }
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    eventually("the routes", Duration::from_secs(5), || {
        get(&proxy, "plain.test", "/", &[]).status == 200
    });
    // Unverified (ingress-nginx's default): TLS to the pod, its answer back.
    let r = get(&proxy, "plain.test", "/", &[]);
    assert!(r.body.contains("s_server"), "{r:?}");
    // Verified: the pod's self-signed certificate is in no trusted root: refused.
    assert_eq!(get(&proxy, "verified.test", "/", &[]).status, 502);
    let log = proxy.log();
    assert!(
        log.contains("invalid peer certificate"),
        "refused for its certificate: {log}"
    );
    let _ = pod.kill();
    let _ = pod.wait();
}

/// A CA (`{ca}.crt`, `{ca}.key`) and, signed by it, a leaf for `name` in
/// `{leaf}.crt`/`{leaf}.key`, as a cluster's internal CA issues them.
fn ca_and_leaf(dir: &Path, ca: &str, leaf: &str, name: &str) {
    if !dir.join(format!("{ca}.crt")).exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{leaf}.key"),
            "-out",
            &format!("{leaf}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{leaf}.ext")),
        format!("subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{leaf}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{leaf}.ext"),
            "-out",
            &format!("{leaf}.crt"),
        ],
    );
}

#[test]
fn https_backends_trust_the_ca_of_a_secret_and_present_its_client_certificate() {
    let cluster = Cluster::start();
    let d = cluster.dir.path();
    // The cluster's CA issues the pod's certificate and the proxy's client
    // certificate; the pod (openssl s_server) requires a client certificate
    // from that CA.
    ca_and_leaf(d, "cluster-ca", "pod", "pod.internal");
    ca_and_leaf(d, "cluster-ca", "client", "edge-proxy");
    ca_and_leaf(d, "other-ca", "other", "pod.internal");
    let mut pod = tls_pod(
        &cluster,
        &[
            "-cert",
            "pod.crt",
            "-key",
            "pod.key",
            "-CAfile",
            "cluster-ca.crt",
            "-Verify",
            "1",
            "-verify_return_error",
        ],
    );
    let secret = |name: &str, ca: &str, client: Option<&str>| {
        let mut data = json!({"ca.crt": base64_file(&d.join(format!("{ca}.crt")))});
        if let Some(c) = client {
            data["tls.crt"] = json!(base64_file(&d.join(format!("{c}.crt"))));
            data["tls.key"] = json!(base64_file(&d.join(format!("{c}.key"))));
        }
        json!({"metadata": {"name": name, "namespace": "default"}, "type": "Opaque", "data": data})
    };
    cluster
        .api
        .put("secrets", secret("pod-ca", "cluster-ca", Some("client")));
    let https = |name: &str, host: &str, ssl_name: &str, secret: &str| {
        with_annotations(
            ingress(
                name,
                "2026-01-01T00:00:00Z",
                Some("edge-proxy"),
                &[(host, "/", "tls")],
            ),
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-name", ssl_name),
                ("proxy-ssl-secret", secret),
            ],
        )
    };
    cluster.api.put(
        "ingresses",
        https("good", "ca.test", "pod.internal", "default/pod-ca"),
    );
    cluster.api.put(
        "ingresses",
        https(
            "wrong-name",
            "name.test",
            "other.internal",
            "default/pod-ca",
        ),
    );
    cluster.api.put(
        "ingresses",
        https("later", "later.test", "pod.internal", "default/later-ca"),
    );
    cluster.api.put(
        "ingresses",
        https("elsewhere", "ns.test", "pod.internal", "kube-system/pod-ca"),
    );
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    // Served from the first publication: the named Secret was listed before.
    let r = get(&proxy, "ca.test", "/", &[]);
    assert_eq!(
        r.status, 200,
        "verified against the Secret's CA, client certificate accepted: {r:?}"
    );
    assert!(r.body.contains("s_server"), "{r:?}");
    // The CA is right, the name is not: refused.
    assert_eq!(get(&proxy, "name.test", "/", &[]).status, 502);
    // A Secret that is not there yet, one in another namespace: not served,
    // never served unverified.
    assert_eq!(get(&proxy, "later.test", "/", &[]).status, 404);
    assert_eq!(get(&proxy, "ns.test", "/", &[]).status, 404);
    eventually("the problems counted", Duration::from_secs(5), || {
        problems(&proxy, "default/later", "refused") == 1.0
            && problems(&proxy, "default/elsewhere", "refused") == 1.0
    });
    let log = proxy.log();
    assert!(log.contains("Secret default/later-ca: not found"), "{log}");
    assert!(log.contains("in another namespace"), "{log}");
    // The Secret created: served without a restart.
    cluster
        .api
        .put("secrets", secret("later-ca", "cluster-ca", Some("client")));
    eventually("the new Secret read", Duration::from_secs(5), || {
        get(&proxy, "later.test", "/", &[]).status == 200
    });
    // Without the client certificate the pod refuses the handshake.
    cluster
        .api
        .put("secrets", secret("later-ca", "cluster-ca", None));
    eventually(
        "the client certificate gone",
        Duration::from_secs(5),
        || get(&proxy, "later.test", "/", &[]).status == 502,
    );
    // The CA rotated to one that did not issue the pod's certificate: new
    // connections are refused (no connection of the old CA is reused).
    cluster
        .api
        .put("secrets", secret("pod-ca", "other-ca", Some("client")));
    eventually("the rotated CA", Duration::from_secs(5), || {
        get(&proxy, "ca.test", "/", &[]).status == 502
    });
    // A Secret that does not hold a CA refuses the Ingress.
    cluster.api.put(
        "secrets",
        json!({"metadata": {"name": "pod-ca", "namespace": "default"}, "type": "Opaque", "data": {"x": "eA=="}}),
    );
    eventually("the broken Secret", Duration::from_secs(5), || {
        get(&proxy, "ca.test", "/", &[]).status == 404
    });
    assert!(proxy.log().contains("needs ca.crt"));
    let _ = pod.kill();
    let _ = pod.wait();
}

#[test]
fn custom_headers_come_from_a_configmap_and_only_those_allowed() {
    let cluster = Cluster::start();
    let app = HelloApp::start("pod-a");
    cluster.service("web", &[&app]);
    let headers = |data: Value| json!({"metadata": {"name": "security-headers", "namespace": "default"}, "data": data});
    cluster.api.put(
        "configmaps",
        headers(
            json!({"X-Frame-Options": "DENY", "Content-Security-Policy": "default-src 'self'"}),
        ),
    );
    cluster.api.put(
        "ingresses",
        annotated(
            "web",
            "web.test",
            "web",
            &[("custom-headers", "default/security-headers")],
        ),
    );
    let proxy = cluster.proxy(
        "ingress:\n  allowed_response_headers: [x-frame-options, content-security-policy]\n",
        &[],
    );
    let r = get(&proxy, "web.test", "/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{r:?}");
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'self'"),
        "{r:?}"
    );
    // The ConfigMap changed: the headers follow.
    cluster.api.put(
        "configmaps",
        headers(json!({"X-Frame-Options": "SAMEORIGIN"})),
    );
    eventually("the new headers", Duration::from_secs(5), || {
        let r = get(&proxy, "web.test", "/", &[]);
        r.header("x-frame-options") == Some("SAMEORIGIN")
            && r.header("content-security-policy").is_none()
    });
    // A header the operator did not allow: the Ingress is refused, as
    // ingress-nginx denies its location.
    cluster
        .api
        .put("configmaps", headers(json!({"Set-Cookie": "admin=1"})));
    eventually("the refusal", Duration::from_secs(5), || {
        get(&proxy, "web.test", "/", &[]).status == 404
    });
    assert!(proxy
        .log()
        .contains("Set-Cookie is not in ingress.allowed_response_headers"));
}

#[test]
fn custom_http_errors_and_default_backend_serve_error_pages_from_another_service() {
    let cluster = Cluster::start();
    let app = EchoOrigin::start("app");
    let pages = EchoOrigin::start("error-pages");
    let slice = |service: &str, addr: Option<SocketAddr>| {
        let port = addr.map_or(8080, |a| a.port());
        let endpoints: Vec<_> = addr
            .iter()
            .map(|_| ("127.0.0.1", true, true, false))
            .collect();
        cluster.api.apply(
            "default",
            &format!("{service}-abcde"),
            service,
            port,
            &endpoints,
        );
    };
    slice("web", Some(app.addr));
    slice("errors", Some(pages.addr));
    slice("nopods", None);
    slice("gone", None);
    // A pod whose port refuses connections: the proxy's own 502.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    slice("dead", Some(dead));
    let with_errors = |name: &str, host: &str, service: &str, backend: &str, codes: &str| {
        annotated(
            name,
            host,
            service,
            &[("default-backend", backend), ("custom-http-errors", codes)],
        )
    };
    cluster.api.put(
        "ingresses",
        with_errors("web", "errors.test", "web", "errors", "404,502,503"),
    );
    cluster.api.put(
        "ingresses",
        with_errors("dead", "dead.test", "dead", "errors", "502"),
    );
    cluster.api.put(
        "ingresses",
        annotated(
            "empty",
            "empty.test",
            "nopods",
            &[("default-backend", "errors")],
        ),
    );
    cluster.api.put(
        "ingresses",
        with_errors("fallback", "fallback.test", "web", "gone", "404"),
    );
    cluster.api.put(
        "ingresses",
        annotated(
            "nobackend",
            "nobackend.test",
            "web",
            &[("custom-http-errors", "404")],
        ),
    );
    let proxy = cluster.proxy("ingress: {}\n", &[]);

    // The app's 404: replaced by the error backend's answer for it, with the
    // headers ingress-nginx sends; its status is the page's.
    let r = get(
        &proxy,
        "errors.test",
        "/status/404?q=1",
        &["-H", "Accept: text/html"],
    );
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.header("x-origin"), Some("error-pages"), "{r:?}");
    assert!(r.header("x-request-id").is_some(), "{r:?}");
    for line in [
        "GET / HTTP/1.1",
        "x-code: 404",
        "x-format: text/html",
        "x-original-uri: /status/404?q=1",
        "x-namespace: default",
        "x-ingress-name: web",
        "x-service-name: web",
        "x-service-port: 80",
        "x-forwarded-for: 127.0.0.1",
        "x-request-id: ",
        "host: errors.test",
    ] {
        assert!(
            r.body
                .to_ascii_lowercase()
                .contains(&line.to_ascii_lowercase()),
            "{line} in {}",
            r.body
        );
    }
    // A 404 without a body, and a HEAD: replaced too.
    let r = get(&proxy, "errors.test", "/bare/404", &[]);
    assert_eq!(
        (r.status, r.header("x-origin")),
        (404, Some("error-pages")),
        "{r:?}"
    );
    let r = get(&proxy, "errors.test", "/status/404", &["-I"]);
    assert_eq!(
        (r.status, r.header("x-origin")),
        (404, Some("error-pages")),
        "{r:?}"
    );
    assert!(r.body.is_empty(), "{r:?}");
    // Codes not listed pass as the app sent them.
    let r = get(&proxy, "errors.test", "/status/500", &[]);
    assert_eq!(
        (r.status, r.header("x-origin")),
        (500, Some("app")),
        "{r:?}"
    );
    assert_eq!(get(&proxy, "errors.test", "/", &[]).status, 200);
    // The proxy's own 502 (the pod refuses connections): replaced.
    let r = get(&proxy, "dead.test", "/", &[]);
    assert_eq!(
        (r.status, r.header("x-origin")),
        (502, Some("error-pages")),
        "{r:?}"
    );
    assert!(r.body.contains("x-code: 502"), "{r:?}");
    // No ready pod: the default backend serves the request itself, path kept,
    // with X-Code 503 (ingress-nginx's custom default backend).
    let r = get(&proxy, "empty.test", "/some/page", &[]);
    assert_eq!(
        (r.status, r.header("x-origin")),
        (503, Some("error-pages")),
        "{r:?}"
    );
    assert!(r.body.starts_with("GET /some/page HTTP/1.1"), "{r:?}");
    assert!(
        r.body.contains("x-code: 503") && r.body.contains("x-service-name: nopods"),
        "{r:?}"
    );
    // An error backend that cannot answer: the original response goes out.
    let r = get(&proxy, "fallback.test", "/status/404", &[]);
    assert_eq!(
        (r.status, r.header("x-origin")),
        (404, Some("app")),
        "{r:?}"
    );
    // custom-http-errors without default-backend: reported, answers unchanged.
    let r = get(&proxy, "nobackend.test", "/status/404", &[]);
    assert_eq!(
        (r.status, r.header("x-origin")),
        (404, Some("app")),
        "{r:?}"
    );
    eventually("the problem counted", Duration::from_secs(5), || {
        problems(&proxy, "default/nobackend", "invalid_annotation") == 1.0
    });
    // A replaced answer is no error in the access log.
    let logged = || {
        proxy
            .access_log()
            .into_iter()
            .find(|l| l["host"] == "errors.test" && l["status"] == 404)
    };
    eventually("the access log line", Duration::from_secs(5), || {
        logged().is_some()
    });
    let page = logged().unwrap();
    assert!(page.get("error").is_none_or(|e| e.is_null()), "{page}");
    // Every page came from the error backend's GET / (or the default backend's path).
    assert!(pages
        .received()
        .iter()
        .all(|h| h.starts_with("GET /") || h.starts_with("HEAD /")));
}

#[test]
fn service_upstream_sends_to_the_cluster_ip_instead_of_the_endpoints() {
    let cluster = Cluster::start();
    // The ClusterIP (kube-proxy's address, here a loopback one) and the
    // Service's endpoints are different processes: the answer says which.
    let pod = HelloApp::start("pod-endpoint");
    let port = pod.addr.port();
    let _virtual_ip =
        HelloApp::start_on("via-cluster-ip", SocketAddr::from(([127, 0, 0, 2], port)));
    cluster.service("web", &[&pod]);
    let service = |cluster_ip: &str| {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": port, "targetPort": port}]}
        })
    };
    cluster.api.put("services", service("127.0.0.2"));
    let mut web = annotated(
        "web",
        "svc.test",
        "web",
        &[("service-upstream", "true"), ("affinity", "cookie")],
    );
    // The Service's port (the pods' too, here): the ClusterIP's port.
    web["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] =
        json!(port);
    cluster.api.put("ingresses", web);
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    let r = get(&proxy, "svc.test", "/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.served_by(), "via-cluster-ip", "{r:?} {}", proxy.log());
    // No affinity through one address: reported, no cookie.
    assert!(r.set_cookie("INGRESSCOOKIE").is_none(), "{r:?}");
    eventually("the affinity problem", Duration::from_secs(5), || {
        problems(&proxy, "default/web", "invalid_annotation") >= 1.0
    });
    // Headless now: no ClusterIP, its endpoints serve, reported.
    cluster.api.put("services", service("None"));
    eventually("the endpoints", Duration::from_secs(5), || {
        who(&proxy, "svc.test", "/") == "pod-endpoint"
    });
    assert!(proxy.log().contains("has no ClusterIP"));
    // A ClusterIP again: back to it.
    cluster.api.put("services", service("127.0.0.2"));
    eventually("the ClusterIP", Duration::from_secs(5), || {
        who(&proxy, "svc.test", "/") == "via-cluster-ip"
    });
}

#[test]
fn cors_preflights_are_answered_and_allowed_origins_get_the_headers() {
    let cluster = Cluster::start();
    let app = cluster.echo_service("web");
    cluster.api.put(
        "ingresses",
        annotated(
            "listed",
            "listed.test",
            "web",
            &[
                ("enable-cors", "true"),
                (
                    "cors-allow-origin",
                    "https://app.example.com, https://*.example.org, not an origin",
                ),
                ("cors-allow-credentials", "false"),
                ("cors-expose-headers", "X-Total, X-Page"),
                ("cors-max-age", "600"),
            ],
        ),
    );
    cluster.api.put(
        "ingresses",
        annotated("open", "open.test", "web", &[("enable-cors", "true")]),
    );
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    let preflight = |host: &str, origin: &str| {
        get(
            &proxy,
            host,
            "/api",
            &[
                "-X",
                "OPTIONS",
                "-H",
                &format!("Origin: {origin}"),
                "-H",
                "Access-Control-Request-Method: PUT",
            ],
        )
    };
    // An allowed origin's preflight: 204 from the proxy, the app never asked.
    for origin in [
        "https://app.example.com",
        "https://shop.example.org",
        "HTTPS://APP.EXAMPLE.COM",
    ] {
        let r = preflight("listed.test", origin);
        assert_eq!(r.status, 204, "{origin}: {r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(origin),
            "{r:?}"
        );
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
        );
        assert!(r
            .header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization"));
        assert_eq!(
            r.header("access-control-expose-headers"),
            Some("X-Total, X-Page")
        );
        assert_eq!(r.header("access-control-max-age"), Some("600"));
        assert_eq!(r.header("access-control-allow-credentials"), None, "{r:?}");
        assert!(
            r.header("content-length").is_none(),
            "a 204 has no length: {r:?}"
        );
    }
    assert!(app.received().is_empty(), "{:?}", app.received());
    // Another origin (a wildcard is one label): the OPTIONS goes to the app, no CORS.
    for origin in [
        "https://evil.example.com",
        "https://a.b.example.org",
        "https://app.example.com.evil",
    ] {
        let r = preflight("listed.test", origin);
        assert_eq!(
            (r.status, r.header("x-origin")),
            (200, Some("app")),
            "{origin}: {r:?}"
        );
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "{origin}: {r:?}"
        );
    }
    // Normal responses carry the headers for allowed origins only.
    let r = get(
        &proxy,
        "listed.test",
        "/",
        &["-H", "Origin: https://app.example.com"],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com"),
        "{r:?}"
    );
    let r = get(&proxy, "listed.test", "/", &[]);
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    // The bad origin is left out, and said.
    eventually("the problem counted", Duration::from_secs(5), || {
        problems(&proxy, "default/listed", "invalid_annotation") == 1.0
    });
    // enable-cors alone: ingress-nginx's defaults, any origin as `*`, credentials true.
    let r = preflight("open.test", "https://anyone.test");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("1728000"));
    let r = get(&proxy, "open.test", "/", &[]);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{r:?}");
}

/// An auth service shaped like oauth2-proxy's `/oauth2/auth`: by the
/// `session` cookie, 202 with the user's headers (alice), 200 setting a
/// refreshed cookie (refresh), 401 clearing it (expired), 403 (banned), 502
/// (broken), else 401 with a challenge. Every request head is recorded.
fn auth_service() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let Some(head) = read_request_head(&mut reader) else {
                        return;
                    };
                    let lower = head.to_ascii_lowercase();
                    log.lock().unwrap().push(lower.clone());
                    let response = if lower.contains("session=alice") {
                        "HTTP/1.1 202 Accepted\r\nx-auth-request-user: alice\r\nx-auth-request-email: alice@example.com\r\nx-other: not copied\r\ncontent-length: 0\r\n\r\n"
                    } else if lower.contains("session=banned") {
                        "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"
                    } else if lower.contains("session=refresh") {
                        "HTTP/1.1 200 OK\r\nset-cookie: session=refreshed; Path=/\r\ncontent-length: 0\r\n\r\n"
                    } else if lower.contains("session=expired") {
                        "HTTP/1.1 401 Unauthorized\r\nset-cookie: session=; Max-Age=0\r\ncontent-length: 0\r\n\r\n"
                    } else if lower.contains("session=broken") {
                        "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"test\"\r\ncontent-length: 5\r\n\r\nlogin"
                    };
                    if writer.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn external_auth_asks_the_auth_service_and_never_fails_open() {
    let cluster = Cluster::start();
    let app = cluster.echo_service("web");
    let (auth, asked) = auth_service();
    let auth_url = format!("http://{auth}/oauth2/auth");
    let dead_url = format!("http://127.0.0.1:{}/oauth2/auth", free_port());
    let headers = "X-Auth-Request-User, X-Auth-Request-Email";
    let ingresses = [
        annotated(
            "protected",
            "auth.test",
            "web",
            &[("auth-url", &auth_url), ("auth-response-headers", headers)],
        ),
        annotated(
            "signin",
            "signin.test",
            "web",
            &[
                ("auth-url", &auth_url),
                ("auth-signin", "https://login.example.com/oauth2/start"),
            ],
        ),
        annotated(
            "signin-rd",
            "rd.test",
            "web",
            &[
                ("auth-url", &auth_url),
                (
                    "auth-signin",
                    "https://$host/oauth2/start?rd=$escaped_request_uri",
                ),
            ],
        ),
        annotated("down", "down.test", "web", &[("auth-url", &dead_url)]),
        annotated(
            "cached",
            "cached.test",
            "web",
            &[
                ("auth-url", &auth_url),
                ("auth-cache-key", "$cookie_session"),
                ("auth-cache-duration", "200 202 1m"),
            ],
        ),
        annotated("bad-url", "bad.test", "web", &[("auth-url", "not a url")]),
        annotated(
            "snippet",
            "snippet.test",
            "web",
            &[("auth-url", &auth_url), ("auth-snippet", "return 200;")],
        ),
    ];
    for i in ingresses {
        cluster.api.put("ingresses", i);
    }
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    let cookie = |c: &str| format!("Cookie: session={c}");

    // No session: the service's 401 and its challenge; the app is never asked.
    let r = get(&proxy, "auth.test", "/page?a=1", &[]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"test\""));
    assert!(app.received().is_empty());
    // Alice: through, with the listed headers of the answer, not the others.
    let r = get(&proxy, "auth.test", "/page?a=1", &["-H", &cookie("alice")]);
    assert_eq!(
        (r.status, r.header("x-origin")),
        (200, Some("app")),
        "{r:?}"
    );
    let forwarded = app.received().pop().unwrap().to_ascii_lowercase();
    assert!(
        forwarded.contains("x-auth-request-user: alice"),
        "{forwarded}"
    );
    assert!(
        forwarded.contains("x-auth-request-email: alice@example.com"),
        "{forwarded}"
    );
    assert!(!forwarded.contains("x-other"), "{forwarded}");
    // What the auth service was told, as ingress-nginx tells it.
    let told = asked.lock().unwrap().last().unwrap().clone();
    for line in [
        "get /oauth2/auth http/1.1",
        "cookie: session=alice",
        "x-original-url: http://auth.test/page?a=1",
        "x-original-method: get",
        "x-auth-request-redirect: /page?a=1",
        "x-sent-from: nginx-ingress-controller",
        "x-real-ip: 127.0.0.1",
        "x-forwarded-for: 127.0.0.1",
        "x-request-id: ",
        &format!("host: {auth}"),
    ] {
        assert!(told.contains(line), "{line} in {told}");
    }
    // A request body goes to the app only: the auth request has none.
    let r = get(
        &proxy,
        "auth.test",
        "/upload",
        &["-H", &cookie("alice"), "--data", "payload"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(app.received().pop().unwrap().ends_with("payload"));
    let told = asked.lock().unwrap().last().unwrap().clone();
    assert!(
        told.contains("x-original-method: post") && !told.contains("content-length"),
        "{told}"
    );
    // Banned: 403. A service answering anything else: 500, never through.
    assert_eq!(
        get(&proxy, "auth.test", "/", &["-H", &cookie("banned")]).status,
        403
    );
    assert_eq!(
        get(&proxy, "auth.test", "/", &["-H", &cookie("broken")]).status,
        500
    );
    // auth-signin: a 401 becomes a redirect carrying the original URL...
    let r = get(&proxy, "signin.test", "/page?a=1", &[]);
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://login.example.com/oauth2/start?rd=http://signin.test%2Fpage%3Fa%3D1")
    );
    // ...or the one the template writes itself.
    let r = get(&proxy, "rd.test", "/page?a=1", &[]);
    assert_eq!(
        r.header("location"),
        Some("https://rd.test/oauth2/start?rd=%2Fpage%3Fa%3D1"),
        "{r:?}"
    );
    // auth-cache-key: alice's 202 is kept (one question for three requests);
    // 401s are not in the durations, and no cookie means no key: each asked.
    let asked_for = |needle: &str| {
        asked
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.contains("x-original-url: http://cached.test/") && h.contains(needle))
            .count()
    };
    for _ in 0..3 {
        let r = get(&proxy, "cached.test", "/", &["-H", &cookie("alice")]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(
        asked_for("session=alice"),
        1,
        "one question, then the cache"
    );
    for _ in 0..2 {
        assert_eq!(
            get(&proxy, "cached.test", "/", &["-H", &cookie("eve")]).status,
            401
        );
        assert_eq!(get(&proxy, "cached.test", "/", &[]).status, 401);
    }
    assert_eq!(asked_for("session=eve"), 2, "401s are not kept here");
    // ingress-nginx's oauth2-proxy pattern: `auth-url: https://$host/oauth2/auth`,
    // the auth service behind another Ingress on the same host. The name is
    // resolved, the sub-request comes back through this proxy (here plain
    // HTTP on its port) and its /oauth2 route.
    cluster.api.apply(
        "default",
        "oauth2-abcde",
        "oauth2",
        auth.port(),
        &[("127.0.0.1", true, true, false)],
    );
    let mut oauth2 = ingress(
        "oauth2-proxy",
        "2026-01-01T00:00:00Z",
        Some("edge-proxy"),
        &[("localhost", "/oauth2", "oauth2")],
    );
    oauth2["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] =
        json!(auth.port());
    cluster.api.put("ingresses", oauth2);
    let hairpin_url = format!("http://$host:{}/oauth2/auth", proxy.http.port());
    let mut app_ingress = annotated(
        "dashboard",
        "localhost",
        "web",
        &[
            ("auth-url", &hairpin_url),
            (
                "auth-signin",
                "https://$host/oauth2/start?rd=$escaped_request_uri",
            ),
        ],
    );
    app_ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] =
        json!(app.addr.port());
    cluster.api.put("ingresses", app_ingress);
    eventually("the hairpin routes", Duration::from_secs(5), || {
        get(&proxy, "localhost", "/", &[]).status == 302
    });
    let r = get(&proxy, "localhost", "/", &["-H", &cookie("alice")]);
    assert_eq!(
        (r.status, r.header("x-origin")),
        (200, Some("app")),
        "{r:?}"
    );
    let told = asked.lock().unwrap().last().unwrap().clone();
    assert!(told.contains("x-original-url: http://localhost/"), "{told}");
    // An auth service that is down: 500, not open.
    let r = get(&proxy, "down.test", "/", &["-H", &cookie("alice")]);
    assert_eq!(r.status, 500, "{r:?}");
    // An auth-url that does not read, an auth-snippet: not served at all.
    assert_eq!(get(&proxy, "bad.test", "/", &[]).status, 404);
    assert_eq!(get(&proxy, "snippet.test", "/", &[]).status, 404);
    eventually("the refusals counted", Duration::from_secs(5), || {
        problems(&proxy, "default/bad-url", "refused") == 1.0
            && problems(&proxy, "default/snippet", "refused") == 1.0
    });
}

#[test]
fn load_balance_ewma_sends_new_requests_to_the_least_loaded_pod() {
    let cluster = Cluster::start();
    let (a, b) = (EchoOrigin::start("a"), EchoOrigin::start("b"));
    // One Service, two slices: a pod each (different ports are fine).
    for (slice, origin) in [("lb-a", &a), ("lb-b", &b)] {
        let ip = origin.addr.ip().to_string();
        cluster.api.apply(
            "default",
            slice,
            "lb",
            origin.addr.port(),
            &[(ip.as_str(), true, true, false)],
        );
    }
    cluster.api.put(
        "ingresses",
        annotated("lb", "lb.test", "lb", &[("load-balance", "ewma")]),
    );
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    eventually("both pods", Duration::from_secs(5), || {
        let origins: std::collections::BTreeSet<String> = (0..4)
            .map(|_| {
                get(&proxy, "lb.test", "/", &[])
                    .header("x-origin")
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        origins.len() == 2
    });
    // A slow request (1 s at the origin) holds one pod; meanwhile every new
    // request goes to the other, where round robin would alternate.
    let url = proxy.url("/slow");
    let slow = std::thread::spawn(move || curl(&["-H", "Host: lb.test", &url]));
    std::thread::sleep(Duration::from_millis(300));
    let busy = if a.received().iter().any(|r| r.starts_with("GET /slow")) {
        "a"
    } else {
        "b"
    };
    for _ in 0..6 {
        let r = get(&proxy, "lb.test", "/", &[]);
        assert_ne!(r.header("x-origin"), Some(busy), "sent to the busy pod");
    }
    assert_eq!(slow.join().unwrap().status, 200);
}

#[test]
fn limit_annotations_count_each_client_per_ingress_and_pace_responses() {
    let cluster = Cluster::start();
    let app = cluster.echo_service("web");
    cluster.api.put(
        "ingresses",
        annotated(
            "limited",
            "limited.test",
            "web",
            &[
                ("limit-rps", "2"),
                ("limit-burst-multiplier", "1"),
                ("limit-connections", "1"),
                ("limit-whitelist", "127.0.0.3/32"),
            ],
        ),
    );
    cluster.api.put(
        "ingresses",
        annotated(
            "paced",
            "paced.test",
            "web",
            &[("limit-rate", "32"), ("limit-rate-after", "32")],
        ),
    );
    cluster
        .api
        .put("ingresses", annotated("open", "open.test", "web", &[]));
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    eventually("the Ingresses served", Duration::from_secs(10), || {
        get(&proxy, "open.test", "/", &[]).status == 200
            && get(&proxy, "paced.test", "/", &[]).status == 200
    });
    let url = proxy.url("/");
    let count = |r: &[(u16, String)], status| r.iter().filter(|(s, _)| *s == status).count();

    // limit-rps 2 with a burst of 2: three at once, then 429s with Retry-After.
    let flood = requests_from("127.0.0.4", &url, 12, &["-H", "Host: limited.test"]);
    let served = count(&flood, 200);
    assert!((3..=4).contains(&served), "{flood:?}");
    assert_eq!(count(&flood, 429), 12 - served, "{flood:?}");
    assert!(
        flood.iter().any(|(s, r)| *s == 429 && r == "1"),
        "{flood:?}"
    );
    // Counted per Ingress: the same client is not limited on another one.
    let open = requests_from("127.0.0.4", &url, 12, &["-H", "Host: open.test"]);
    assert_eq!(count(&open, 200), 12);
    // limit-whitelist: never limited.
    let exempt = requests_from("127.0.0.3", &url, 12, &["-H", "Host: limited.test"]);
    assert_eq!(count(&exempt, 200), 12);

    // limit-connections 1: a second request in flight from the same client is
    // turned away while the first is at the pod.
    let slow_url = proxy.url("/slow");
    let slow = std::thread::spawn(move || {
        requests_from("127.0.0.5", &slow_url, 1, &["-H", "Host: limited.test"])
    });
    eventually(
        "the slow request at the pod",
        Duration::from_secs(5),
        || app.received().iter().any(|r| r.starts_with("GET /slow")),
    );
    let second = requests_from("127.0.0.5", &url, 1, &["-H", "Host: limited.test"]);
    assert_eq!(second[0].0, 429, "{second:?}");
    assert_eq!(second[0].1, "", "no Retry-After for a count");
    assert_eq!(slow.join().unwrap()[0].0, 200);
    std::thread::sleep(Duration::from_millis(600));
    let after = requests_from("127.0.0.5", &url, 1, &["-H", "Host: limited.test"]);
    assert_eq!(after[0].0, 200, "the place was given back");
    let m = proxy.metrics();
    assert!(
        m.sum(
            "edge_proxy_client_limited_total",
            &[("reason", "route_rate")]
        ) >= 8.0
    );
    assert_eq!(
        m.sum(
            "edge_proxy_client_limited_total",
            &[("reason", "route_connections")]
        ),
        1.0
    );

    // limit-rate 32 KB/s after 32 KB: 96 KiB take about two seconds, in full;
    // the same body from an Ingress without it comes at once.
    let timed = |host: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{time_total}",
            ])
            .args(["-H", &format!("Host: {host}"), &proxy.url("/big/96")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (size, time) = text.split_once(' ').unwrap();
        (size.parse::<u64>().unwrap(), time.parse::<f64>().unwrap())
    };
    let (size, paced) = timed("paced.test");
    assert_eq!(size, 96 * 1024);
    assert!((1.5..6.0).contains(&paced), "took {paced}s");
    let (size, fast) = timed("open.test");
    assert_eq!(size, 96 * 1024);
    assert!(fast < 1.0, "took {fast}s");
}

/// `user:hash` as `htpasswd -n` writes it; `flag` picks the hash (-B bcrypt,
/// -m apr1, -s SHA-1).
fn htpasswd(flag: &str, user: &str, password: &str) -> String {
    let out = std::process::Command::new("htpasswd")
        .args(["-nb", flag, user, password])
        .output()
        .expect("htpasswd (apache2-utils)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn b64(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, text).unwrap();
    base64_file(&file)
}

#[test]
fn basic_auth_checks_htpasswd_hashes_from_a_secret_and_follows_its_rotation() {
    let cluster = Cluster::start();
    let app = cluster.echo_service("web");
    let file = |alice: &str| {
        [
            htpasswd("-B", "alice", alice),
            htpasswd("-m", "bob", "b0b"),
            htpasswd("-s", "carol", "c@rol:x"),
            "dave:plaintext".to_string(),
        ]
        .join("\n")
    };
    let team = |alice: &str| {
        json!({"metadata": {"name": "team", "namespace": "default"}, "type": "Opaque",
               "data": {"auth": b64(&file(alice))}})
    };
    cluster.api.put("secrets", team("wonderland"));
    cluster.api.put(
        "secrets",
        json!({"metadata": {"name": "map", "namespace": "default"}, "type": "Opaque",
               "data": {"erin": b64(htpasswd("-m", "erin", "e").split_once(':').unwrap().1)}}),
    );
    cluster.api.put(
        "ingresses",
        annotated(
            "guarded",
            "guarded.test",
            "web",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "team"),
                ("auth-realm", "Team only"),
            ],
        ),
    );
    cluster.api.put(
        "ingresses",
        annotated(
            "mapped",
            "mapped.test",
            "web",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "default/map"),
                ("auth-secret-type", "auth-map"),
            ],
        ),
    );
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    let as_user = |host: &str, credentials: Option<&str>| match credentials {
        Some(c) => get(&proxy, host, "/", &["-u", c]),
        None => get(&proxy, host, "/", &[]),
    };
    eventually("the Ingresses served", Duration::from_secs(10), || {
        as_user("guarded.test", None).status == 401
    });
    let challenge = as_user("guarded.test", None);
    assert_eq!(
        challenge.header("www-authenticate"),
        Some("Basic realm=\"Team only\"")
    );
    assert!(app.received().is_empty(), "nothing reached the pod");
    // Each hash htpasswd writes, with its right password; the pod never
    // sees the password.
    for user in ["alice:wonderland", "bob:b0b", "carol:c@rol:x"] {
        let r = as_user("guarded.test", Some(user));
        assert_eq!(r.status, 200, "{user}: {r:?}");
        assert!(
            !r.body.to_ascii_lowercase().contains("authorization"),
            "{r:?}"
        );
    }
    // Wrong passwords, unknown users and a hash that cannot be used.
    for user in ["alice:Wonderland", "bob:", "mallory:b0b", "dave:plaintext"] {
        assert_eq!(as_user("guarded.test", Some(user)).status, 401, "{user}");
    }
    let garbled = get(
        &proxy,
        "guarded.test",
        "/",
        &["-H", "Authorization: Basic %%%"],
    );
    assert_eq!(garbled.status, 401);
    assert_eq!(
        problems(&proxy, "default/guarded", "invalid_annotation"),
        1.0
    );
    // auth-map: a key per user.
    assert_eq!(as_user("mapped.test", Some("erin:e")).status, 200);
    assert_eq!(as_user("mapped.test", Some("erin:f")).status, 401);

    // The Secret rotated: the old password stops working (a remembered login
    // included), the new one works.
    cluster.api.put("secrets", team("looking-glass"));
    eventually("the new password", Duration::from_secs(10), || {
        as_user("guarded.test", Some("alice:looking-glass")).status == 200
    });
    assert_eq!(
        as_user("guarded.test", Some("alice:wonderland")).status,
        401
    );
    // The Secret gone: the Ingress is not served at all, never open.
    cluster.api.remove("secrets", "default", "team");
    eventually("the Ingress refused", Duration::from_secs(10), || {
        as_user("guarded.test", Some("bob:b0b")).status == 404
    });
}

#[test]
fn external_auth_hands_on_its_cookies_and_sends_configured_headers() {
    let cluster = Cluster::start();
    let _app = cluster.echo_service("web");
    let (auth, asked) = auth_service();
    let auth_url = format!("http://{auth}/oauth2/auth");
    cluster.api.put(
        "configmaps",
        json!({"metadata": {"name": "auth-headers", "namespace": "default"},
               "data": {"X-Auth-Tenant": "blue"}}),
    );
    for ingress in [
        annotated(
            "cookies",
            "cookies.test",
            "web",
            &[
                ("auth-url", &auth_url),
                ("auth-proxy-set-headers", "auth-headers"),
                // Tuning that is already how the auth service is reached.
                ("auth-keepalive", "10"),
            ],
        ),
        annotated(
            "always",
            "always.test",
            "web",
            &[("auth-url", &auth_url), ("auth-always-set-cookie", "true")],
        ),
        annotated(
            "missing",
            "missing.test",
            "web",
            &[("auth-url", &auth_url), ("auth-proxy-set-headers", "nope")],
        ),
    ] {
        cluster.api.put("ingresses", ingress);
    }
    let proxy = cluster.proxy("ingress: {}\n", &[]);
    let with = |host: &str, path: &str, session: &str| {
        get(
            &proxy,
            host,
            path,
            &["-H", &format!("Cookie: session={session}")],
        )
    };
    eventually("the Ingresses served", Duration::from_secs(10), || {
        with("cookies.test", "/", "refresh").status == 200
    });
    // The refreshed session cookie reaches the client on a success...
    let r = with("cookies.test", "/", "refresh");
    assert_eq!(r.header("set-cookie"), Some("session=refreshed; Path=/"));
    // ...and the ConfigMap's header reached the auth service.
    assert!(asked
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.contains("x-auth-tenant: blue")));
    // Not on an error from the pod, unless auth-always-set-cookie.
    let r = with("cookies.test", "/status/404", "refresh");
    assert_eq!((r.status, r.header("set-cookie")), (404, None));
    let r = with("always.test", "/status/404", "refresh");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("set-cookie"), Some("session=refreshed; Path=/"));
    // A 401 clearing the cookie: passed on only with always.
    let r = with("always.test", "/", "expired");
    assert_eq!(
        (r.status, r.header("set-cookie")),
        (401, Some("session=; Max-Age=0"))
    );
    let r = with("cookies.test", "/", "expired");
    assert_eq!((r.status, r.header("set-cookie")), (401, None));
    // The headers' ConfigMap missing: not served at all.
    assert_eq!(with("missing.test", "/", "refresh").status, 404);
    assert_eq!(problems(&proxy, "default/missing", "refused"), 1.0);
    assert_eq!(
        problems(&proxy, "default/cookies", "unsupported_annotation"),
        0.0
    );
}
