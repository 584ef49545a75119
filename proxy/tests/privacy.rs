//! README (Security): "Logs carry no cookies, no query strings, no secrets."
//! Every line the proxy writes (lifecycle and error logs at debug level, and
//! the access log) is read after proxied, failed-over, failed, refused and
//! malformed requests that all carry a secret in their query and cookies.

mod utils;

use std::path::Path;
use std::time::Duration;
use utils::*;

#[test]
fn no_query_string_or_cookie_value_reaches_any_log_line() {
    let mut apps = [HelloApp::start("app-1"), HelloApp::start("app-2")];
    let config = format!(
        "listen:\n  http: \"{{http}}\"\nadmin: \"{{admin}}\"\ndiscovery: static\n\
         routes:\n\
         \x20 - host: app.test\n    service: hello-app\n    port: 8080\n    affinity:\n      cookie: route\n\
         \x20 - host: empty.test\n    service: nobody\n    port: 8080\n\
         static:\n  hello-app: [\"{}\", \"{}\"]\n  nobody: []\n",
        apps[0].addr, apps[1].addr
    );
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start_with_env(&config, http, &[("EDGE_PROXY_LOG", Path::new("debug"))]);
    let secret_cookie = "cookie-SECRET-0";
    let get = |host: &str, path: &str, cookie: &str| {
        curl(&[
            "-H",
            &format!("Host: {host}"),
            "-b",
            cookie,
            &proxy.url(path),
        ])
    };

    // Proxied, pinning a session.
    let first = get(
        "app.test",
        "/a?token=SECRET-1",
        &format!("other={secret_cookie}"),
    );
    assert_eq!(first.status, 200);
    let route = first.cookie_value("route").unwrap();
    // Its pod dies: failed over, with pingora's retry warning.
    let pinned = apps
        .iter()
        .position(|a| a.name == first.served_by())
        .unwrap();
    apps[pinned].kill();
    let moved = get("app.test", "/b?token=SECRET-2", &format!("route={route}"));
    assert_eq!(moved.status, 200);
    // No endpoint at all: 503.
    assert_eq!(get("empty.test", "/c?token=SECRET-3", "x=y").status, 503);
    // No route: 404.
    assert_eq!(get("nowhere.test", "/d?token=SECRET-4", "x=y").status, 404);
    // Refused by our checks (two Content-Lengths) and by pingora's parser
    // (obsolete line folding; a space before a colon), cookies included.
    for raw in [
        "POST /e?token=SECRET-5 HTTP/1.1\r\nHost: app.test\r\nCookie: c=cookie-SECRET-6\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "GET /f?token=SECRET-7 HTTP/1.1\r\nHost: app.test\r\nCookie: c=cookie-SECRET-8\r\nX-A: b\r\n c\r\n\r\n",
        "GET /g?token=SECRET-9 HTTP/1.1\r\nHost: app.test\r\nCookie : c=cookie-SECRET-10\r\n\r\n",
    ] {
        let response = raw_request(proxy.http, raw.as_bytes());
        assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 400"));
    }

    eventually(
        "every request in the access log",
        Duration::from_secs(5),
        || proxy.access_log().len() >= 7,
    );
    std::thread::sleep(Duration::from_millis(300));
    let stderr = proxy.log();
    let stdout = std::fs::read_to_string(&proxy.access_path).unwrap();
    assert!(
        stderr.contains("debug") || stderr.contains("DEBUG"),
        "at debug level:\n{stderr}"
    );
    for (name, text) in [("stderr", &stderr), ("access log", &stdout)] {
        for line in text.lines() {
            assert!(!line.contains("SECRET"), "{name}: {line}");
            assert!(
                !line.contains(&route),
                "{name} has the affinity cookie: {line}"
            );
        }
    }
    // The paths are there: the lines were written, only without their queries.
    for path in ["/a", "/b", "/c", "/d"] {
        assert!(
            proxy.access_log().iter().any(|l| l["path"] == path),
            "{path} not logged:\n{stdout}"
        );
    }
}
