//! From YAML text to a validated [`Config`], collecting every problem.
//!
//! Each top-level key and each route is deserialized on its own, so a type error in
//! one place does not hide the problems of the others.

use super::file;
use super::*;
use crate::route::{Affinity, Backend, Match, Origin, Policy, ServicePort, UpstreamKey};
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Collects problems while walking the file.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

pub(super) fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::default();
    let root: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.add("", format!("not valid YAML: {e}"));
            return Err(problems.0);
        }
    };
    let map = match root {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => {
            problems.add("", "the configuration must be a YAML mapping of keys");
            return Err(problems.0);
        }
    };
    let keys = file::top_level_keys();
    for key in map.keys() {
        match key.as_str() {
            Some(k) if keys.contains(&k) => {}
            _ => problems.add(
                yaml_key_name(key),
                format!("unknown key, expected one of: {}", keys.join(", ")),
            ),
        }
    }
    // Every value of a mapping fits (each field is a YAML value): no problem to report.
    let file: file::File = serde_yaml::from_value(Value::Mapping(map.clone())).unwrap_or_default();

    let listen = validate_listen(&file, &mut problems);
    let admin = field::<String>(file.admin.as_ref(), "admin", &mut problems)
        .and_then(|a| socket_addr(&a, "admin", &mut problems));
    let tls = validate_tls(&file, &mut problems);
    let discovery = validate_discovery(&file, &mut problems);
    let routes = validate_routes(&file, discovery.as_ref(), &mut problems);
    let timeouts = validate_timeouts(&file, &mut problems);
    let threads = field::<i64>(file.threads.as_ref(), "threads", &mut problems)
        .map(|n| bounded(n, 1, 256, "threads", &mut problems))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let retries = field::<i64>(file.retries.as_ref(), "retries", &mut problems)
        .map(|n| bounded(n, 0, 10, "retries", &mut problems))
        .unwrap_or(2);
    let drain_timeout =
        field::<String>(file.drain_timeout.as_ref(), "drain_timeout", &mut problems)
            .and_then(|text| duration(&text, "drain_timeout", &mut problems))
            .unwrap_or(Duration::from_secs(10));
    if drain_timeout > Duration::from_secs(600) {
        problems.add("drain_timeout", "must be at most 10m");
    }
    let logging = validate_logging(&file, &mut problems);
    let (limits, per_client) = validate_limits(&file, &mut problems);
    let trusted_proxies = field::<Vec<String>>(
        file.trusted_proxies.as_ref(),
        "trusted_proxies",
        &mut problems,
    )
    .unwrap_or_default()
    .iter()
    .enumerate()
    .filter_map(|(i, text)| ip_net(text, &format!("trusted_proxies[{i}]"), &mut problems))
    .collect();

    let ingress = validate_ingress(&file, discovery.as_ref(), &mut problems);
    let gateway = validate_gateway(&file, discovery.as_ref(), &mut problems);
    // With Ingresses or Gateways, certificates may all come from their Secrets.
    let from_objects = ingress.is_some() || gateway.is_some();
    if let (Some(listen), true) = (&listen, tls.is_empty() && !from_objects) {
        if listen.https.is_some() {
            problems.add("listen.https", "needs at least one certificate under `tls`");
        }
    }

    match (listen, discovery, problems.0.is_empty()) {
        (Some(listen), Some(discovery), true) => Ok(Config {
            listen,
            admin,
            discovery,
            tls,
            routes,
            timeouts,
            threads,
            retries,
            drain_timeout,
            logging,
            limits,
            per_client,
            trusted_proxies,
            ingress,
            gateway,
        }),
        _ => Err(problems.0),
    }
}

/// A key that is missing or empty (`routes:` alone is null in YAML): `field`
/// reports neither, so a required key must be checked with this.
fn absent(value: Option<&Value>) -> bool {
    value.is_none_or(Value::is_null)
}

/// Deserialize `map[key]` into `T`; a missing key or null is `None`, a wrong
/// shape is a problem named by its full path.
fn field<T: DeserializeOwned>(
    value: Option<&Value>,
    key: &str,
    problems: &mut Problems,
) -> Option<T> {
    let value = value?;
    if value.is_null() {
        return None;
    }
    deserialize_at(value, key, problems)
}

fn deserialize_at<T: DeserializeOwned>(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            problems.add(
                join(path, &inner),
                in_yaml_terms(&e.into_inner().to_string()),
            );
            None
        }
    }
}

/// `path` and a path below it (`.key` or `[i]`; `.` is the value itself).
fn join(path: &str, inner: &str) -> String {
    if inner == "." || inner.is_empty() {
        path.to_string()
    } else if inner.starts_with('[') || path.is_empty() {
        format!("{path}{inner}")
    } else {
        format!("{path}.{inner}")
    }
}

/// A mapping of keys into the struct `T`, key by key: every unknown key and
/// every value of the wrong shape is a problem of its own (one does not hide
/// the next), and the struct is built from the keys that were fine, so that
/// their values are checked too. `None` when a required key is missing or bad.
fn object<T: DeserializeOwned>(value: &Value, path: &str, problems: &mut Problems) -> Option<T> {
    let Value::Mapping(map) = value else {
        return deserialize_at(value, path, problems);
    };
    let keys = file::fields_of::<T>();
    let before = problems.0.len();
    let mut fine = Mapping::new();
    for (key, v) in map {
        let name = yaml_key_name(key);
        if !keys.contains(&name.as_str()) {
            problems.add(
                join(path, &name),
                format!("unknown key, expected one of: {}", keys.join(", ")),
            );
            continue;
        }
        let alone = Value::Mapping(Mapping::from_iter([(key.clone(), v.clone())]));
        match serde_path_to_error::deserialize::<_, T>(alone) {
            // Missing *other* keys are not this key's problem (path ".").
            Err(e) if !matches!(e.path().to_string().as_str(), "." | "") => {
                let inner = e.path().to_string();
                problems.add(
                    join(path, &inner),
                    in_yaml_terms(&e.into_inner().to_string()),
                );
            }
            _ => {
                fine.insert(key.clone(), v.clone());
            }
        }
    }
    match serde_path_to_error::deserialize::<_, T>(Value::Mapping(fine)) {
        Ok(t) => Some(t),
        Err(e) => {
            // A required key that was bad is reported already.
            if problems.0.len() == before {
                problems.add(path, in_yaml_terms(&e.into_inner().to_string()));
            }
            None
        }
    }
}

/// `map[key]` as the struct `T` (see [`object`]); a missing key or null is `None`.
fn object_field<T: DeserializeOwned>(
    value: Option<&Value>,
    key: &str,
    problems: &mut Problems,
) -> Option<T> {
    value
        .filter(|v| !v.is_null())
        .and_then(|v| object(v, key, problems))
}

/// serde's wording, in YAML's terms rather than Rust's: `"forever" is text,
/// expected a whole number`, not `invalid type: string "forever", expected i64`.
fn in_yaml_terms(message: &str) -> String {
    static RULES: std::sync::LazyLock<Vec<(regex::Regex, &'static str)>> =
        std::sync::LazyLock::new(|| {
            [
                (
                    r"invalid (?:type|value): (?:integer|floating point) `([^`]*)`",
                    "$1 is a number",
                ),
                (
                    r#"invalid (?:type|value): string "((?:[^"\\]|\\.)*)""#,
                    "\"$1\" is text",
                ),
                (r"invalid type: boolean `([^`]*)`", "$1 is true/false"),
                (r"invalid type: sequence", "got a list"),
                (r"invalid type: map", "got a mapping of keys"),
                (r"invalid type: unit value", "got nothing"),
                (
                    r"expected (?:i8|i16|i32|i64|u8|u16|u32|u64|usize|isize)\b",
                    "expected a whole number",
                ),
                (r"expected a sequence", "expected a list"),
                (
                    r"expected (?:a map|struct \w+)",
                    "expected a mapping of keys",
                ),
                (r"expected a borrowed string", "expected a string"),
                (
                    r"unknown variant `([^`]*)`, expected",
                    "\"$1\" is not a choice here; expected",
                ),
                (r"missing field `([^`]*)`", "missing key `$1` (required)"),
                (
                    r"unknown field `([^`]*)`, expected",
                    "unknown key `$1`, expected",
                ),
                (
                    r"data did not match any variant of untagged enum \w+",
                    "not a value this key takes",
                ),
            ]
            .into_iter()
            .map(|(pattern, with)| (regex::Regex::new(pattern).expect("static pattern"), with))
            .collect()
        });
    let mut out = message.to_string();
    for (pattern, with) in RULES.iter() {
        out = pattern.replace_all(&out, *with).into_owned();
    }
    // "expected `a` or `b`" / "one of `a`, `b`": the names without Rust's quotes.
    out.replace('`', "")
}

fn yaml_key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn bounded(n: i64, min: i64, max: i64, path: &str, problems: &mut Problems) -> usize {
    if n < min || n > max {
        problems.add(path, format!("{n} is out of range {min}..={max}"));
    }
    n.clamp(min, max) as usize
}

fn socket_addr(text: &str, path: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.add(
                path,
                format!("{text:?} is not an IP:port address (e.g. \"0.0.0.0:80\")"),
            );
            None
        }
    }
}

fn validate_listen(file: &file::File, problems: &mut Problems) -> Option<Listen> {
    let Some(listen) = object_field::<file::Listen>(file.listen.as_ref(), "listen", problems)
    else {
        if absent(file.listen.as_ref()) {
            problems.add("listen.http", "required (e.g. \"0.0.0.0:80\")");
        }
        return None;
    };
    let http = match &listen.http {
        Some(h) => socket_addr(h, "listen.http", problems),
        None => {
            problems.add("listen.http", "required (e.g. \"0.0.0.0:80\")");
            None
        }
    };
    let https = listen
        .https
        .as_deref()
        .and_then(|h| socket_addr(h, "listen.https", problems));
    if let (Some(a), Some(b)) = (http, https) {
        if a == b {
            problems.add("listen.https", "must differ from listen.http");
        }
    }
    Some(Listen { http: http?, https })
}

fn validate_tls(file: &file::File, problems: &mut Problems) -> Vec<TlsCert> {
    let certs: Vec<file::TlsCert> = field::<Vec<Value>>(file.tls.as_ref(), "tls", problems)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, v)| object(v, &format!("tls[{i}]"), problems))
        .collect();
    let mut out = Vec::new();
    for (i, c) in certs.into_iter().enumerate() {
        if c.hosts.is_empty() {
            problems.add(format!("tls[{i}].hosts"), "needs at least one host");
        }
        let mut hosts = Vec::new();
        for (j, h) in c.hosts.iter().enumerate() {
            if let Some(h) = host_pattern(h, &format!("tls[{i}].hosts[{j}]"), problems) {
                hosts.push(h);
            }
        }
        for (name, value) in [("cert", &c.cert), ("key", &c.key)] {
            if value.is_empty() {
                problems.add(format!("tls[{i}].{name}"), "needs a file path");
            }
        }
        out.push(TlsCert {
            hosts,
            cert: c.cert,
            key: c.key,
        });
    }
    out
}

fn validate_discovery(file: &file::File, problems: &mut Problems) -> Option<Discovery> {
    let mode = field::<file::DiscoveryMode>(file.discovery.as_ref(), "discovery", problems);
    let dns_name = field::<String>(file.dns_name.as_ref(), "dns_name", problems);
    let statics =
        field::<file::StaticEndpoints>(file.static_endpoints.as_ref(), "static", problems);
    match mode {
        Some(file::DiscoveryMode::Kubernetes) => Some(Discovery::Kubernetes),
        Some(file::DiscoveryMode::Dns) => {
            let template =
                dns_name.unwrap_or_else(|| "{service}.{namespace}.svc.cluster.local".into());
            let rest = template.replace("{service}", "").replace("{namespace}", "");
            if !template.contains("{service}") {
                problems.add("dns_name", format!("{template:?} must contain {{service}}"));
            } else if rest.contains(['{', '}', ' ', '/', ':']) {
                problems.add(
                    "dns_name",
                    format!(
                        "{template:?} may only use the placeholders {{service}} and {{namespace}}"
                    ),
                );
            }
            Some(Discovery::Dns {
                name_template: template,
            })
        }
        Some(file::DiscoveryMode::Static) => {
            let mut endpoints = BTreeMap::new();
            for (service, addrs) in statics.unwrap_or_default() {
                let mut parsed = Vec::new();
                for (i, a) in addrs.iter().enumerate() {
                    if let Some(a) = socket_addr(a, &format!("static.{service}[{i}]"), problems) {
                        parsed.push(a);
                    }
                }
                endpoints.insert(service, parsed);
            }
            Some(Discovery::Static(endpoints))
        }
        // A value that is not one of the modes was reported by `field`.
        None if absent(file.discovery.as_ref()) => {
            problems.add("discovery", "required: kubernetes, dns or static");
            None
        }
        None => None,
    }
}

fn validate_routes(
    file: &file::File,
    discovery: Option<&Discovery>,
    problems: &mut Problems,
) -> Vec<Route> {
    // Ingresses or Gateway API routes may supply every route.
    let routes_optional = !absent(file.ingress.as_ref()) || !absent(file.gateway.as_ref());
    let Some(items) = field::<Vec<Value>>(file.routes.as_ref(), "routes", problems) else {
        if absent(file.routes.as_ref()) && !routes_optional {
            problems.add(
                "routes",
                "required: at least one route (or `ingress` or `gateway`)",
            );
        }
        return Vec::new();
    };
    if items.is_empty() && !routes_optional {
        problems.add(
            "routes",
            "needs at least one route (or `ingress` or `gateway`)",
        );
    }
    let mut routes = Vec::new();
    // (host, path, path_type) -> index of the first route that used it.
    let mut seen: HashMap<(HostMatch, String, PathType), usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("routes[{i}]");
        let Some(raw) = object::<file::Route>(item, &at, problems) else {
            continue;
        };
        let Some(route) = validate_route(raw, &at, discovery, problems) else {
            continue;
        };
        let m = &route.matches;
        let key = (m.host.clone(), m.path.clone(), m.path_type);
        if let Some(first) = seen.get(&key) {
            problems.add(
                at,
                format!("same host, path and path_type as routes[{first}]"),
            );
            continue;
        }
        seen.insert(key, i);
        routes.push(route);
    }
    routes
}

fn validate_route(
    raw: file::Route,
    at: &str,
    discovery: Option<&Discovery>,
    problems: &mut Problems,
) -> Option<Route> {
    let before = problems.0.len();
    let host = match raw.host.as_deref() {
        None => Some(HostMatch::Any),
        Some(h) => route_host(h)
            .map_err(|e| problems.add(format!("{at}.host"), e))
            .ok(),
    };
    let path_type = match raw.path_type {
        None | Some(file::PathType::Prefix) => PathType::Prefix,
        Some(file::PathType::Exact) => PathType::Exact,
    };
    let path = route_path(raw.path.as_deref().unwrap_or("/"), path_type)
        .inspect_err(|e| problems.add(format!("{at}.path"), e.clone()))
        .unwrap_or_default();

    if !is_dns_label(&raw.service) {
        problems.add(
            format!("{at}.service"),
            format!(
                "{:?} is not a valid Service name (lowercase letters, digits and '-', at most 63)",
                raw.service
            ),
        );
    }
    let namespace = raw.namespace.unwrap_or_else(|| "default".into());
    if !is_dns_label(&namespace) {
        problems.add(
            format!("{at}.namespace"),
            format!("{namespace:?} is not a valid namespace name"),
        );
    }
    let port = match raw.port {
        file::Port::Number(n) if (1..=65535).contains(&n) => Some(ServicePort::Number(n as u16)),
        file::Port::Number(n) => {
            problems.add(
                format!("{at}.port"),
                format!("{n} is out of range 1..=65535"),
            );
            None
        }
        file::Port::Name(name) if is_port_name(&name) => {
            if matches!(discovery, Some(Discovery::Dns { .. })) {
                problems.add(
                    format!("{at}.port"),
                    format!("{name:?}: a named port needs discovery: kubernetes; use the port number with dns"),
                );
            }
            Some(ServicePort::Name(name))
        }
        file::Port::Name(name) => {
            problems.add(
                format!("{at}.port"),
                format!("{name:?} is neither a port number nor a valid port name (lowercase letters, digits and '-', at most 15)"),
            );
            None
        }
    };
    if let Some(Discovery::Static(endpoints)) = discovery {
        if !endpoints.contains_key(&raw.service) {
            problems.add(
                format!("{at}.service"),
                format!(
                    "{:?} has no entry under `static` (discovery: static)",
                    raw.service
                ),
            );
        }
    }
    let affinity =
        object_field::<file::Affinity>(raw.affinity.as_ref(), &format!("{at}.affinity"), problems)
            .and_then(|a| validate_affinity(a, &format!("{at}.affinity"), problems));

    if problems.0.len() > before {
        return None;
    }
    // Request policies in the order they answer: a redirect before anything
    // is read of the session.
    let mut policies = Vec::new();
    if raw.redirect_https.unwrap_or(false) {
        policies.push(Policy::RedirectHttps);
    }
    policies.extend(affinity.map(Policy::Affinity));
    Some(Route {
        name: at.to_string(),
        origin: Origin::File,
        matches: Match::path(host?, path, path_type),
        backends: vec![Backend {
            upstream: UpstreamKey {
                namespace,
                service: raw.service,
                port: port?,
                cluster_ip: None,
            },
            weight: 1,
        }],
        policies,
    })
}

fn validate_affinity(a: file::Affinity, at: &str, problems: &mut Problems) -> Option<Affinity> {
    let token_ok = is_cookie_name(&a.cookie);
    if !token_ok {
        problems.add(
            format!("{at}.cookie"),
            format!(
                "{:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~, at most 64)",
                a.cookie
            ),
        );
    }
    let max_age = match a.max_age.as_deref() {
        None => None,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if d.as_secs() >= 1 => Some(Duration::from_secs(d.as_secs())),
            Ok(_) => {
                problems.add(
                    format!("{at}.max_age"),
                    format!("{text:?} must be at least 1s"),
                );
                None
            }
            Err(e) => {
                problems.add(
                    format!("{at}.max_age"),
                    format!("{text:?} is not a duration like \"48h\" or \"30m\": {e}"),
                );
                None
            }
        },
    };
    token_ok.then(|| Affinity::new(a.cookie, max_age))
}

fn validate_ingress(
    file: &file::File,
    discovery: Option<&Discovery>,
    problems: &mut Problems,
) -> Option<IngressSettings> {
    let raw = object_field::<file::Ingress>(file.ingress.as_ref(), "ingress", problems)?;
    if discovery.is_some_and(|d| *d != Discovery::Kubernetes) {
        problems.add("ingress", "needs discovery: kubernetes");
    }
    let class = raw.class.unwrap_or_else(|| "edge-proxy".into());
    if !is_dns_subdomain(&class) {
        problems.add(
            "ingress.class",
            format!("{class:?} is not a valid IngressClass name (lowercase letters, digits, '-' and '.')"),
        );
    }
    let publish_selector = raw
        .publish_selector
        .unwrap_or_else(|| "app.kubernetes.io/name=edge-proxy".into());
    if !is_equality_selector(&publish_selector) {
        problems.add(
            "ingress.publish_selector",
            format!("{publish_selector:?} is not a label selector like \"app.kubernetes.io/name=edge-proxy\" (key=value, comma-separated)"),
        );
    }
    let publish_addresses = raw.publish_addresses.unwrap_or_default();
    for (i, a) in publish_addresses.iter().enumerate() {
        if a.parse::<std::net::IpAddr>().is_err() && !is_dns_subdomain(a) {
            problems.add(
                format!("ingress.publish_addresses[{i}]"),
                format!("{a:?} is neither an IP address nor a host name"),
            );
        }
    }
    let allowed_response_headers = raw.allowed_response_headers.unwrap_or_default();
    for (i, h) in allowed_response_headers.iter().enumerate() {
        // RFC 9110 token characters.
        let token = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            problems.add(
                format!("ingress.allowed_response_headers[{i}]"),
                format!("{h:?} is not a header name"),
            );
        }
    }
    Some(IngressSettings {
        class,
        publish_status: raw.publish_status.unwrap_or(true),
        publish_selector,
        publish_addresses,
        allowed_response_headers: allowed_response_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    })
}

fn validate_gateway(
    file: &file::File,
    discovery: Option<&Discovery>,
    problems: &mut Problems,
) -> Option<GatewaySettings> {
    let raw = object_field::<file::Gateway>(file.gateway.as_ref(), "gateway", problems)?;
    if discovery.is_some_and(|d| *d != Discovery::Kubernetes) {
        problems.add("gateway", "needs discovery: kubernetes");
    }
    let class = raw.class.unwrap_or_else(|| "edge-proxy".into());
    if !is_dns_subdomain(&class) {
        problems.add(
            "gateway.class",
            format!("{class:?} is not a valid GatewayClass name (lowercase letters, digits, '-' and '.')"),
        );
    }
    let publish_selector = raw
        .publish_selector
        .unwrap_or_else(|| "app.kubernetes.io/name=edge-proxy".into());
    if !is_equality_selector(&publish_selector) {
        problems.add(
            "gateway.publish_selector",
            format!("{publish_selector:?} is not a label selector like \"app.kubernetes.io/name=edge-proxy\" (key=value, comma-separated)"),
        );
    }
    let publish_addresses = raw.publish_addresses.unwrap_or_default();
    for (i, a) in publish_addresses.iter().enumerate() {
        if a.parse::<std::net::IpAddr>().is_err() && !is_dns_subdomain(a) {
            problems.add(
                format!("gateway.publish_addresses[{i}]"),
                format!("{a:?} is neither an IP address nor a host name"),
            );
        }
    }
    Some(GatewaySettings {
        class,
        publish_status: raw.publish_status.unwrap_or(true),
        publish_selector,
        publish_addresses,
    })
}

/// A route host as an Ingress rule writes it (`*.domain` allowed), or why not.
pub(super) fn route_host(host: &str) -> Result<HostMatch, String> {
    let mut problems = Problems::default();
    match host_pattern(host, "", &mut problems) {
        Some(h) => Ok(match h.strip_prefix("*.") {
            Some(suffix) => HostMatch::Wildcard(suffix.to_string()),
            None => HostMatch::Exact(h),
        }),
        None => Err(problems.0.remove(0).message),
    }
}

/// A route path checked and normalized as `routes[].path` is, or why not.
pub(super) fn route_path(path: &str, path_type: PathType) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with \"/\""));
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
    {
        return Err(format!(
            "{path:?} must not contain spaces, control characters, '?' or '#'"
        ));
    }
    let path = match path_type {
        PathType::Prefix if path.len() > 1 => path.trim_end_matches('/'),
        _ => path,
    };
    Ok(if path.is_empty() { "/" } else { path }.to_string())
}

/// An HTTP token of at most 64 bytes, as a cookie name must be.
pub(super) fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// An RFC 1123 subdomain, as Kubernetes requires of most object names.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// `key=value[,key=value…]`: what `publish_selector` accepts.
fn is_equality_selector(s: &str) -> bool {
    s.split(',').all(|req| {
        req.split_once('=').is_some_and(|(k, v)| {
            let k = k.trim();
            let name = k.rsplit('/').next().unwrap_or(k);
            !name.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
                && v.trim()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
    })
}

fn validate_timeouts(file: &file::File, problems: &mut Problems) -> Timeouts {
    let raw = object_field::<file::Timeouts>(file.timeouts.as_ref(), "timeouts", problems)
        .unwrap_or_default();
    let mut t = Timeouts::default();
    for (name, text, slot) in [
        ("connect", raw.connect, &mut t.connect),
        ("read", raw.read, &mut t.read),
        ("write", raw.write, &mut t.write),
        ("idle", raw.idle, &mut t.idle),
    ] {
        let Some(text) = text else { continue };
        if let Some(d) = duration(&text, &format!("timeouts.{name}"), problems) {
            *slot = d;
        }
    }
    t
}

/// A positive duration like "5s" or "500ms".
fn duration(text: &str, path: &str, problems: &mut Problems) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            problems.add(path, "must be more than zero");
            None
        }
        Err(e) => {
            problems.add(
                path,
                format!("{text:?} is not a duration like \"5s\" or \"500ms\": {e}"),
            );
            None
        }
    }
}

fn validate_limits(
    file: &file::File,
    problems: &mut Problems,
) -> (Limits, Option<PerClientLimits>) {
    let raw =
        object_field::<file::Limits>(file.limits.as_ref(), "limits", problems).unwrap_or_default();
    let mut limits = Limits::default();
    if let Some(n) = raw.max_header_bytes {
        // Below 1 KiB ordinary browsers fail; pingora itself stops reading at 1 MiB.
        limits.max_header_bytes = bounded(
            n,
            1024,
            1024 * 1024 - 1,
            "limits.max_header_bytes",
            problems,
        );
    }
    if let Some(n) = raw.max_headers {
        // pingora parses at most 256 header fields.
        limits.max_headers = bounded(n, 8, 256, "limits.max_headers", problems);
    }
    if let Some(n) = raw.max_body_bytes {
        limits.max_body_bytes = bounded(n, 0, i64::MAX, "limits.max_body_bytes", problems) as u64;
    }
    for (name, text, slot) in [
        (
            "header_timeout",
            raw.header_timeout,
            &mut limits.header_timeout,
        ),
        ("idle_timeout", raw.idle_timeout, &mut limits.idle_timeout),
    ] {
        let Some(text) = text else { continue };
        if let Some(d) = duration(&text, &format!("limits.{name}"), problems) {
            *slot = d;
        }
    }
    if let Some(n) = raw.max_connections {
        // Each connection costs a file descriptor; the DaemonSet raises nofile well past this.
        limits.max_connections = bounded(n, 1, 1_000_000, "limits.max_connections", problems);
    }
    if let Some(n) = raw.limited_status {
        limits.limited_status = bounded(n, 400, 599, "limits.limited_status", problems) as u16;
    }
    let per_client =
        object_field::<file::PerClient>(raw.per_client.as_ref(), "limits.per_client", problems)
            .map(|raw| per_client_limits(raw, problems));
    (limits, per_client)
}

fn per_client_limits(raw: file::PerClient, problems: &mut Problems) -> PerClientLimits {
    let path = |key: &str| format!("limits.per_client.{key}");
    let rate = raw.requests_per_second.map(|n| {
        let requests = bounded(n, 1, 1_000_000, &path("requests_per_second"), problems) as u32;
        // Without a burst, as many again at once: a page and its assets.
        let burst = raw.burst.map_or(requests, |b| {
            bounded(b, 0, 1_000_000, &path("burst"), problems) as u32
        });
        crate::route::RequestRate {
            requests,
            per: Duration::from_secs(1),
            burst,
        }
    });
    if raw.burst.is_some() && rate.is_none() {
        problems.add(path("burst"), "needs requests_per_second");
    }
    let connections = raw
        .connections
        .map(|n| bounded(n, 1, 1_000_000, &path("connections"), problems) as u32);
    let exempt = raw
        .exempt
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, text)| ip_net(text, &path(&format!("exempt[{i}]")), problems))
        .collect();
    PerClientLimits {
        rate,
        connections,
        exempt,
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
fn ip_net(text: &str, path: &str, problems: &mut Problems) -> Option<IpNet> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let Ok(addr) = addr.parse::<std::net::IpAddr>() else {
        problems.add(
            path,
            format!("{text:?} is not an address range like \"10.0.0.0/8\""),
        );
        return None;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix.map(str::parse::<u8>) {
        None => max,
        Some(Ok(p)) if p <= max => p,
        _ => {
            problems.add(
                path,
                format!("{text:?}: the prefix length must be 0..={max}"),
            );
            return None;
        }
    };
    IpNet::new(addr, prefix).ok()
}

fn validate_logging(file: &file::File, problems: &mut Problems) -> Logging {
    let raw = object_field::<file::Logging>(file.logging.as_ref(), "logging", problems)
        .unwrap_or_default();
    let mut logging = Logging::DEFAULT;
    let format = field::<file::LogFormat>(raw.format.as_ref(), "logging.format", problems);
    if format == Some(file::LogFormat::Text) {
        logging.format = LogFormat::Text;
    }
    match field::<file::AccessLog>(raw.access.as_ref(), "logging.access", problems) {
        None | Some(file::AccessLog::Json) => {}
        Some(file::AccessLog::Text) => logging.access = Some(LogFormat::Text),
        Some(file::AccessLog::Off) => logging.access = None,
    }
    logging
}

/// A host name or `*.domain` pattern, returned lowercase.
fn host_pattern(host: &str, path: &str, problems: &mut Problems) -> Option<String> {
    let lower = host.to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Some(lower)
    } else {
        let hint = if host.contains(':') {
            " (no port: routes match the host name only)"
        } else if host.contains('*') {
            " (a wildcard is only allowed as the first label: \"*.example.com\")"
        } else {
            ""
        };
        problems.add(path, format!("{host:?} is not a valid host name{hint}"));
        None
    }
}

/// An RFC 1123 label, as Kubernetes requires of Service and namespace names.
pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An IANA service name, as Kubernetes requires of port names.
pub(super) fn is_port_name(s: &str) -> bool {
    is_dns_label(s)
        && s.len() <= 15
        && !s.contains("--")
        && s.bytes().any(|b| b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(yaml: &str) -> Vec<String> {
        match parse(yaml) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    const GOOD: &str = r#"
listen: { http: "127.0.0.1:8080" }
admin: "127.0.0.1:9901"
discovery: static
routes:
  - host: Hello.Example.com
    path: /api/
    service: hello-app
    port: 8080
    affinity: { cookie: route, max_age: 48h }
  - host: "*.example.com"
    path: /exact
    path_type: Exact
    service: hello-app
    port: http
static:
  hello-app: ["127.0.0.1:8081", "127.0.0.1:8082"]
"#;

    #[test]
    fn required_keys_left_empty_are_problems_too() {
        // Found by the `config` fuzz target: `listen:` alone gave an error with
        // no problem in it, and `routes:` alone a valid config with no routes.
        let p = problems_of("listen:\ndiscovery: static\nroutes:\n");
        assert!(
            p.iter().any(|p| p.starts_with("listen.http: required")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.starts_with("routes: required")), "{p:?}");
    }

    #[test]
    fn a_good_file_loads_with_normalized_values() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.routes.len(), 2);
        let r = &c.routes[0];
        assert_eq!(r.name, "routes[0]");
        assert_eq!(r.matches.host, HostMatch::Exact("hello.example.com".into()));
        assert_eq!(r.matches.path, "/api");
        assert_eq!(r.backends[0].upstream.namespace, "default");
        assert_eq!(
            r.affinity().unwrap().max_age,
            Some(Duration::from_secs(48 * 3600))
        );
        let r = &c.routes[1];
        assert_eq!(r.matches.host, HostMatch::Wildcard("example.com".into()));
        assert_eq!(
            r.backends[0].upstream.port,
            ServicePort::Name("http".into())
        );
        assert_eq!(c.retries, 2);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let yaml = r#"
listen: { http: "nope" }
discovery: static
routes:
  - service: hello-app
    port: 8080
  - service: hello-app
    port: 70000
  - service: Bad_Name
    port: 80
    path: api
  - service: hello-app
    port: "x"
    affinity: { cookie: "a b", max_age: soon }
  - service: hello-app
    prot: 80
static:
  hello-app: ["127.0.0.1"]
colour: blue
"#;
        let p = problems_of(yaml);
        let expect = [
            "colour: unknown key",
            "listen.http: \"nope\" is not an IP:port",
            "static.hello-app[0]: \"127.0.0.1\" is not an IP:port",
            "routes[1].port: 70000 is out of range",
            "routes[2].service: \"Bad_Name\" is not a valid Service name",
            "routes[2].path: \"api\" must start with",
            "routes[3].affinity.cookie: \"a b\" is not a valid cookie name",
            "routes[3].affinity.max_age: \"soon\" is not a duration",
            "routes[4].prot: unknown key, expected one of: host, path, path_type, service,",
        ];
        for e in expect {
            assert!(
                p.iter().any(|l| l.starts_with(e)),
                "missing {e:?} in {p:#?}"
            );
        }
        assert!(!p.iter().any(|l| l.starts_with("routes[0]")), "{p:#?}");
        assert!(!p.iter().any(|l| l.starts_with("routes[3].port")), "{p:#?}");
    }

    #[test]
    fn wrong_types_name_the_nested_field() {
        let p = problems_of(
            "listen: { http: \"127.0.0.1:80\" }\ndiscovery: kubernetes\nroutes:\n  - service: a\n    port: 80\n    affinity: { cookie: [1] }\ntimeouts: { connect: 5 }\n",
        );
        assert!(
            p.contains(&"routes[0].affinity.cookie: got a list, expected a string".to_string()),
            "{p:#?}"
        );
        assert!(
            p.contains(&"timeouts.connect: 5 is a number, expected a string".to_string()),
            "{p:#?}"
        );
    }

    #[test]
    fn one_bad_value_hides_nothing_beside_it() {
        // A bad path_type beside a bad port, a wrong type beside a bad
        // duration, two bad keys in one affinity: every one is reported.
        let p = problems_of(
            "listen: { http: \"127.0.0.1:80\" }\ndiscovery: kubernetes\nroutes:\n  - service: a\n    port: 99999\n    path_type: Regex\n    affinity: { cookie: 7, max_age: [1] }\ntimeouts: { connect: 5, read: forever }\nthreads: ten\nretries: 1.5\n",
        );
        for expected in [
            "routes[0].path_type: \"Regex\" is not a choice here; expected Prefix or Exact",
            "routes[0].port: 99999 is out of range 1..=65535",
            "routes[0].affinity.cookie: 7 is a number, expected a string",
            "routes[0].affinity.max_age: got a list, expected a string",
            "timeouts.connect: 5 is a number, expected a string",
            "timeouts.read: \"forever\" is not a duration",
            "threads: \"ten\" is text, expected a whole number",
            "retries: 1.5 is a number, expected a whole number",
        ] {
            assert!(
                p.iter().any(|l| l.starts_with(expected)),
                "{expected:?} not in {p:#?}"
            );
        }
        // Rust's words do not reach users.
        for rust in ["invalid type", "i64", "`", "unknown field", "variant"] {
            assert!(!p.iter().any(|l| l.contains(rust)), "{rust:?} in {p:#?}");
        }
    }

    #[test]
    fn missing_required_keys_are_named() {
        let p = problems_of("");
        assert!(
            p.contains(&"listen.http: required (e.g. \"0.0.0.0:80\")".to_string()),
            "{p:#?}"
        );
        assert!(p.iter().any(|l| l.starts_with("discovery: required")));
        assert!(p.iter().any(|l| l.starts_with("routes: required")));
    }

    #[test]
    fn duplicate_routes_and_static_services_are_checked() {
        let p = problems_of(
            "listen: { http: \"127.0.0.1:80\" }\ndiscovery: static\nroutes:\n  - { service: a, port: 80, path: /x/ }\n  - { service: a, port: 80, path: /x }\n  - { service: b, port: 80 }\nstatic: { a: [\"127.0.0.1:1\"] }\n",
        );
        assert!(
            p.iter()
                .any(|l| l.starts_with("routes[1]: same host, path and path_type as routes[0]")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|l| l.starts_with("routes[2].service: \"b\" has no entry under `static`")),
            "{p:#?}"
        );
    }

    #[test]
    fn host_patterns() {
        let mut p = Problems::default();
        assert_eq!(host_pattern("A.b", "h", &mut p), Some("a.b".into()));
        assert_eq!(host_pattern("*.b.c", "h", &mut p), Some("*.b.c".into()));
        assert!(p.0.is_empty());
        for bad in ["a.b:80", "a.*.c", "*", "", "a..b", "-a.b"] {
            assert_eq!(host_pattern(bad, "h", &mut p), None, "{bad}");
        }
        assert_eq!(p.0.len(), 6);
    }

    #[test]
    fn named_ports_need_kubernetes_with_dns() {
        let p = problems_of(
            "listen: { http: \"127.0.0.1:80\" }\ndiscovery: dns\nroutes:\n  - { service: a, port: http }\n",
        );
        assert!(
            p[0].starts_with("routes[0].port: \"http\": a named port needs discovery: kubernetes"),
            "{p:#?}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "[",
            "- 1",
            "listen: 5",
            "routes: {a: 1}",
            "\u{0}",
            "routes:\n  - 7",
            "static: [1]",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn enumerated_values_are_named_by_field_and_the_known_keys_come_from_the_struct() {
        let p = problems_of(
            "listen:\n  http: \"127.0.0.1:1\"\ndiscovery: magic\nlogging: { format: xml, access: loud }\nroutes:\n  - service: a\n    port: 80\n    path_type: Regex\ncolour: blue\nshape: round\n",
        );
        for expected in [
            "colour: unknown key, expected one of: listen, admin, discovery, dns_name, tls, routes, static,",
            "shape: unknown key",
            "discovery: \"magic\" is not a choice here; expected one of kubernetes, dns, static",
            "routes[0].path_type: \"Regex\" is not a choice here; expected Prefix or Exact",
            "logging.format: \"xml\" is not a choice here; expected json or text",
            "logging.access: \"loud\" is not a choice here; expected one of json, text, off",
        ] {
            assert!(p.iter().any(|l| l.starts_with(expected)), "{expected:?} not in {p:#?}");
        }
        assert_eq!(file::top_level_keys().len(), 16);
        assert!(file::top_level_keys().contains(&"static"));
    }

    #[test]
    fn the_gateway_section() {
        let base = "listen:\n  http: \"127.0.0.1:1\"\n  https: \"127.0.0.1:2\"\n";
        // Routes and certificates may all come from Gateway API objects.
        let c = parse(&format!("{base}discovery: kubernetes\ngateway: {{}}\n")).unwrap();
        let gateway = c.gateway.unwrap();
        assert_eq!(gateway.class, "edge-proxy");
        assert!(gateway.publish_status);
        assert_eq!(
            gateway.publish_selector,
            "app.kubernetes.io/name=edge-proxy"
        );
        let p = problems_of(&format!(
            "{base}discovery: static\nstatic: {{}}\ngateway:\n  class: Bad_Class\n  publish_selector: \"a in (b)\"\n  publish_addresses: [\"not an address\"]\n"
        ));
        for expected in [
            "gateway: needs discovery: kubernetes",
            "gateway.class: \"Bad_Class\" is not a valid GatewayClass name",
            "gateway.publish_selector: \"a in (b)\" is not a label selector",
            "gateway.publish_addresses[0]: \"not an address\" is neither",
        ] {
            assert!(
                p.iter().any(|l| l.starts_with(expected)),
                "{expected:?} not in {p:#?}"
            );
        }
        let p = problems_of(&format!(
            "{base}discovery: kubernetes\ngateway:\n  colour: red\n"
        ));
        assert!(
            p.iter()
                .any(|l| l.starts_with("gateway.colour: unknown key, expected one of: class,")),
            "{p:#?}"
        );
    }

    #[test]
    fn the_ingress_section() {
        let base = "listen:\n  http: \"127.0.0.1:1\"\n  https: \"127.0.0.1:2\"\n";
        // Routes and certificates may all come from Ingresses.
        let c = parse(&format!("{base}discovery: kubernetes\ningress: {{}}\n")).unwrap();
        let ingress = c.ingress.unwrap();
        assert_eq!(ingress.class, "edge-proxy");
        assert!(ingress.publish_status);
        assert_eq!(
            ingress.publish_selector,
            "app.kubernetes.io/name=edge-proxy"
        );
        assert!(c.routes.is_empty());
        let p = problems_of(&format!(
            "{base}discovery: static\nstatic: {{}}\ningress:\n  class: Bad_Class\n  publish_selector: \"a in (b)\"\n  publish_addresses: [\"203.0.113.7\", \"lb.example.com\", \"not an address\"]\n  colour: red\n"
        ));
        assert!(
            p.iter()
                .any(|l| l.starts_with("ingress.colour: unknown key, expected one of: class,")),
            "{p:#?}"
        );
        let p = problems_of(&format!(
            "{base}discovery: static\nstatic: {{}}\ningress:\n  class: Bad_Class\n  publish_selector: \"a in (b)\"\n  publish_addresses: [\"203.0.113.7\", \"lb.example.com\", \"not an address\"]\n  allowed_response_headers: [X-Frame-Options, \"bad header\"]\n"
        ));
        for expected in [
            "ingress: needs discovery: kubernetes",
            "ingress.class: \"Bad_Class\" is not a valid IngressClass name",
            "ingress.publish_selector: \"a in (b)\" is not a label selector",
            "ingress.publish_addresses[2]: \"not an address\" is neither",
            "ingress.allowed_response_headers[1]: \"bad header\" is not a header name",
        ] {
            assert!(
                p.iter().any(|l| l.starts_with(expected)),
                "{expected:?} not in {p:#?}"
            );
        }
        assert_eq!(p.len(), 5, "{p:#?}");
        let c = parse(&format!(
            "{base}discovery: kubernetes\ningress:\n  allowed_response_headers: [X-Frame-Options]\n"
        ))
        .unwrap();
        assert_eq!(
            c.ingress.unwrap().allowed_response_headers,
            vec!["x-frame-options"]
        );
        // Without `ingress`, routes and certificates are still required.
        let p = problems_of(&format!("{base}discovery: kubernetes\n"));
        assert!(
            p.iter().any(|l| l.starts_with("routes: required")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|l| l.starts_with("listen.https: needs")),
            "{p:#?}"
        );
    }
}
