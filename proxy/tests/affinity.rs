//! Cookie session affinity through real edge-proxy processes in front of real
//! hello-app processes, with curl as the client.

mod utils;

use std::collections::{BTreeMap, BTreeSet};
use utils::*;

const ROUTES: &str =
    "  - service: hello-app\n    port: 8080\n    affinity:\n      cookie: route\n      max_age: 2h";

fn apps(n: usize) -> Vec<HelloApp> {
    (1..=n)
        .map(|i| HelloApp::start(&format!("app-{i}")))
        .collect()
}

fn get(proxy: &Proxy, cookie: Option<&str>) -> Response {
    match cookie {
        Some(value) => curl(&[
            "-H",
            &format!("Cookie: theme=dark; route={value}"),
            &proxy.url("/"),
        ]),
        None => curl(&[&proxy.url("/")]),
    }
}

#[test]
fn first_response_sets_the_cookie_with_the_contract_attributes() {
    let apps = apps(2);
    let addrs: Vec<_> = apps.iter().map(|a| a.addr).collect();
    let proxy = Proxy::start(&static_config(ROUTES, &addrs));
    let r = get(&proxy, None);
    assert_eq!(r.status, 200);
    let sc = r.set_cookie("route").expect("Set-Cookie");
    let value = r.cookie_value("route").unwrap();
    assert_eq!(value.len(), 16);
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        sc,
        format!("route={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=7200")
    );
    // Opaque: no part of the endpoint's address shows.
    for a in &addrs {
        assert!(!sc.contains(&a.port().to_string()), "{sc} reveals {a}");
        assert!(!sc.contains("127.0.0.1"));
    }
}

#[test]
fn a_cookie_from_one_proxy_pins_to_the_same_app_through_another() {
    let apps = apps(3);
    let addrs: Vec<_> = apps.iter().map(|a| a.addr).collect();
    let config = static_config(ROUTES, &addrs);
    // Two instances, as on two nodes: same config, no shared state.
    let node_a = Proxy::start(&config);
    let node_b = Proxy::start(&config);

    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let first = get(&node_a, None);
        let cookie = first.cookie_value("route").expect("cookie from node a");
        let app = first.served_by().to_string();
        seen.insert(app.clone());
        for node in [&node_b, &node_a, &node_b] {
            let r = get(node, Some(&cookie));
            assert_eq!(r.status, 200);
            assert_eq!(r.served_by(), app, "cookie {cookie} moved");
            // A pinned hit does not re-set the cookie.
            assert_eq!(r.set_cookie("route"), None);
        }
    }
    assert!(seen.len() > 1, "six new sessions all landed on {seen:?}");

    // A restarted proxy still honours the cookie: it is a function of the endpoint.
    let first = get(&node_a, None);
    let cookie = first.cookie_value("route").unwrap();
    drop(node_a);
    let node_c = Proxy::start(&config);
    assert_eq!(get(&node_c, Some(&cookie)).served_by(), first.served_by());
}

#[test]
fn new_sessions_spread_over_all_apps() {
    let apps = apps(3);
    let addrs: Vec<_> = apps.iter().map(|a| a.addr).collect();
    let proxy = Proxy::start(&static_config(ROUTES, &addrs));
    let mut per_app: BTreeMap<String, usize> = BTreeMap::new();
    let mut cookies = BTreeSet::new();
    for _ in 0..30 {
        let r = get(&proxy, None);
        *per_app.entry(r.served_by().to_string()).or_default() += 1;
        cookies.insert(r.cookie_value("route").unwrap());
    }
    assert_eq!(per_app.len(), 3, "{per_app:?}");
    assert!(
        per_app.values().all(|&n| n >= 5),
        "uneven spread {per_app:?}"
    );
    // One cookie value per endpoint.
    assert_eq!(cookies.len(), 3, "{cookies:?}");
}

#[test]
fn killing_the_pinned_app_fails_over_and_repins() {
    let mut apps = apps(3);
    let addrs: Vec<_> = apps.iter().map(|a| a.addr).collect();
    let proxy = Proxy::start(&static_config(ROUTES, &addrs));
    let first = get(&proxy, None);
    let cookie = first.cookie_value("route").unwrap();
    let victim = first.served_by().to_string();

    apps.iter_mut().find(|a| a.name == victim).unwrap().kill();

    // The request is served by another app, not failed, and a new cookie is set.
    let r = get(&proxy, Some(&cookie));
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(r.served_by(), victim);
    let new_cookie = r.cookie_value("route").expect("re-pinned cookie");
    assert_ne!(new_cookie, cookie);
    // The new cookie holds.
    let survivor = r.served_by().to_string();
    for _ in 0..5 {
        let r = get(&proxy, Some(&new_cookie));
        assert_eq!(r.served_by(), survivor);
        assert_eq!(r.set_cookie("route"), None);
    }
    // The app comes back on the same address: the old cookie pins to it again.
    let addr = apps.iter().find(|a| a.name == victim).unwrap().addr;
    let _back = HelloApp::start_on(&victim, addr);
    assert_eq!(get(&proxy, Some(&cookie)).served_by(), victim);
}

#[test]
fn tampered_or_unknown_cookies_are_replaced_not_failed() {
    let apps = apps(2);
    let addrs: Vec<_> = apps.iter().map(|a| a.addr).collect();
    let proxy = Proxy::start(&static_config(ROUTES, &addrs));
    let good = get(&proxy, None).cookie_value("route").unwrap();
    let mut flipped = good.clone().into_bytes();
    flipped[15] = if flipped[15] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let long = "a".repeat(5000);
    for bad in [
        "garbage",
        "",
        "ZZZZZZZZZZZZZZZZ",
        &good.to_uppercase(),
        &flipped,
        "0000000000000000",
        "%00%ff",
        "\"0123456789abcdef\"",
        "../../etc",
        &long,
    ] {
        let r = get(&proxy, Some(bad));
        assert_eq!(r.status, 200, "cookie {bad:?}: {r:?}");
        let new = r
            .cookie_value("route")
            .unwrap_or_else(|| panic!("no new cookie for {bad:?}"));
        assert_eq!(new.len(), 16);
        // The replacement pins like any other.
        let again = get(&proxy, Some(&new));
        assert_eq!(again.served_by(), r.served_by());
    }
}

#[test]
fn routes_without_affinity_set_no_cookie_and_balance_per_request() {
    let apps = apps(2);
    let addrs: Vec<_> = apps.iter().map(|a| a.addr).collect();
    let proxy = Proxy::start(&static_config(
        "  - service: hello-app\n    port: 8080",
        &addrs,
    ));
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let r = get(&proxy, None);
        assert_eq!(r.set_cookie("route"), None);
        assert!(r.header("set-cookie").is_none());
        seen.insert(r.served_by().to_string());
    }
    assert_eq!(seen.len(), 2);
}

#[test]
fn a_shared_secret_keys_the_cookie_on_every_node() {
    use std::net::SocketAddr;
    use std::path::Path;
    let apps = apps(3);
    let addrs: Vec<_> = apps.iter().map(|a| a.addr).collect();
    let config = static_config(ROUTES, &addrs);
    let start = |secret: Option<&str>| {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        match secret {
            Some(s) => Proxy::start_with_env(
                &config,
                http,
                &[("EDGE_PROXY_AFFINITY_SECRET", Path::new(s))],
            ),
            None => Proxy::start_on(&config, http),
        }
    };
    let node_a = start(Some("s3cret"));
    let node_b = start(Some("s3cret"));
    let unkeyed = start(None);

    let first = get(&node_a, None);
    let keyed_cookie = first.cookie_value("route").unwrap();
    let app = first.served_by().to_string();
    // Same secret: the same value everywhere.
    for _ in 0..3 {
        let r = get(&node_b, Some(&keyed_cookie));
        assert_eq!(r.served_by(), app);
        assert_eq!(r.set_cookie("route"), None);
    }
    // The unkeyed value of that same app is not what the keyed nodes issue.
    let unkeyed_cookie = (0..9)
        .map(|_| get(&unkeyed, None))
        .find(|r| r.served_by() == app)
        .and_then(|r| r.cookie_value("route"))
        .unwrap();
    assert_ne!(unkeyed_cookie, keyed_cookie);
    // A value computed without the secret is unknown to keyed nodes: re-pinned.
    let r = get(&node_a, Some(&unkeyed_cookie));
    assert_eq!(r.status, 200);
    assert!(
        r.cookie_value("route").is_some(),
        "an unknown value gets a new cookie"
    );
}
