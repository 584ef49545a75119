//! ingress-nginx's annotations (`nginx.ingress.kubernetes.io/*`), with its
//! meaning and defaults, read into route settings.
//!
//! Nothing is ignored silently: an annotation we do not support, or a value we
//! cannot read, is a [`Problem`] (logged once per change and counted). A bad
//! value falls back to ingress-nginx's default, as ingress-nginx does, except
//! where that would open up what the annotation closes: an allowlist that does
//! not parse denies everyone, and an authentication annotation (which we do not
//! implement) refuses the Ingress rather than serving it unprotected.

use crate::problems::ProblemKind;
use crate::route::{
    Affinity, Canary, Cors, ExternalAuth, HashBy, IpNet, Redirect, RequestRate, ResponseRate,
    RouteLimits, SameSite, TimeoutOverrides, UpstreamProtocol,
};
use std::collections::BTreeMap;
use std::time::Duration;

pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The affinity cookie's name when `session-cookie-name` is not set.
pub const DEFAULT_COOKIE: &str = "INGRESSCOOKIE";

/// What one Ingress's annotations ask of its routes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Annotations {
    /// `affinity: cookie`. `path` is empty when `session-cookie-path` is not
    /// set: each route then uses its own path, as ingress-nginx does.
    pub affinity: Option<Affinity>,
    /// `ssl-redirect` (default true): redirect to https when the host has TLS.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect`: redirect to https even without TLS here.
    pub force_ssl_redirect: bool,
    /// `proxy-body-size`: instead of `limits.max_body_bytes`; `u64::MAX` unlimited.
    pub max_body_bytes: Option<u64>,
    /// `proxy-{connect,read,send}-timeout`.
    pub timeouts: TimeoutOverrides,
    /// `allowlist-source-range`: only clients in these ranges. `Some(empty)`:
    /// nobody (an allowlist that did not parse fails closed).
    pub allow: Option<Vec<IpNet>>,
    /// `denylist-source-range`: these clients get 403. A list that did not
    /// parse denies everyone (`0.0.0.0/0` and `::/0`): it must not fail open.
    pub deny: Option<Vec<IpNet>>,
    /// `use-regex`: the host's paths are regular expressions.
    pub use_regex: bool,
    /// `rewrite-target` (it makes the host's paths regular expressions too).
    pub rewrite_target: Option<String>,
    /// `x-forwarded-prefix`: sent upstream when the path is rewritten.
    pub x_forwarded_prefix: Option<String>,
    /// `app-root`: `/` redirects (302) here.
    pub app_root: Option<String>,
    /// `temporal-redirect` (wins) or `permanent-redirect`, with their codes.
    pub redirect: Option<Redirect>,
    /// `from-to-www-redirect`.
    pub from_to_www: bool,
    /// `canary: "true"` and its rules: this Ingress's backends are the
    /// canary of the main Ingress with the same host and path.
    pub canary: Option<Canary>,
    /// `upstream-vhost`: the Host header sent upstream.
    pub upstream_vhost: Option<String>,
    /// `upstream-hash-by`: the consistent-hash key's template.
    pub hash_by: Option<HashBy>,
    /// `load-balance: ewma`: the least-loaded endpoint for new sessions.
    pub least_loaded: bool,
    /// `backend-protocol` other than HTTP, with `proxy-ssl-*`.
    pub protocol: Option<UpstreamProtocol>,
    /// `proxy-ssl-secret`: `NAMESPACE/NAME` (or `NAME`) of a Secret with
    /// `ca.crt` (and optionally `tls.crt`/`tls.key`) for HTTPS backends.
    pub proxy_ssl_secret: Option<String>,
    /// `custom-headers`: `NAMESPACE/NAME` (or `NAME`) of a ConfigMap whose
    /// data are response headers; read by translation into `response_headers`.
    pub custom_headers: Option<String>,
    pub response_headers: Vec<(String, String)>,
    /// `default-backend`: a Service (in the Ingress's namespace) that serves
    /// when the route's has no ready endpoint, and the error pages.
    pub default_backend: Option<String>,
    /// `custom-http-errors`: the codes whose pages the default backend serves.
    pub custom_http_errors: Vec<u16>,
    /// `service-upstream`: to the Services' ClusterIPs, not their endpoints.
    pub service_upstream: bool,
    /// `enable-cors` with the `cors-*` annotations.
    pub cors: Option<Cors>,
    /// `auth-url` with the other external auth annotations.
    pub external_auth: Option<ExternalAuth>,
    /// `auth-type: basic` with `auth-secret`, `auth-secret-type`, `auth-realm`.
    pub basic_auth: Option<BasicAuthSecret>,
    /// Its users, read by translation from the Secret.
    pub basic_auth_users: Option<crate::route::BasicAuth>,
    /// `limit-rps`, `limit-rpm`, `limit-connections` with
    /// `limit-burst-multiplier` and `limit-allowlist`; translation names the
    /// zone (the Ingress).
    pub client_limits: Option<RouteLimits>,
    /// `limit-rate` with `limit-rate-after`.
    pub response_rate: Option<ResponseRate>,
    /// Why the Ingress is not served at all, when it is not.
    pub refused: Option<String>,
    pub problems: Vec<Problem>,
}

/// Where basic auth's users are: a Secret in the Ingress's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuthSecret {
    /// `auth-secret`: `NAMESPACE/NAME` or `NAME`.
    pub secret: String,
    /// `auth-secret-type: auth-map` (a key per user) rather than `auth-file`
    /// (an htpasswd file under the key `auth`).
    pub map: bool,
    pub realm: String,
}

/// One annotation we could not honour as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Unsupported, invalid or refused.
    pub kind: ProblemKind,
    pub annotation: String,
    pub value: String,
    pub message: String,
}

/// Annotations we implement (without the prefix).
const SUPPORTED: &[&str] = &[
    "affinity",
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-samesite",
    "session-cookie-conditional-samesite-none",
    "session-cookie-secure",
    "session-cookie-domain",
    "session-cookie-change-on-failure",
    "ssl-redirect",
    "force-ssl-redirect",
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
    "backend-protocol",
    "use-regex",
    "rewrite-target",
    "x-forwarded-prefix",
    "app-root",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "from-to-www-redirect",
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "upstream-vhost",
    "upstream-hash-by",
    "proxy-ssl-verify",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-ssl-secret",
    "load-balance",
    "custom-headers",
    "custom-http-errors",
    "default-backend",
    "service-upstream",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-allow-credentials",
    "cors-expose-headers",
    "cors-max-age",
    "auth-url",
    "auth-method",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-request-redirect",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-always-set-cookie",
    "auth-proxy-set-headers",
    // The auth service's connections are always kept alive (60 s idle), and
    // its X-Request-ID is the request's own: what these ask, by default.
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-timeout",
    "auth-keepalive-share-vars",
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-whitelist",
    "limit-allowlist",
    "limit-rate",
    "limit-rate-after",
];

/// Annotations that protect a service: serving the Ingress without them would
/// expose what they guard, so an Ingress carrying one is refused.
fn guards_access(name: &str) -> bool {
    name.starts_with("auth-") || name == "satisfy"
}

/// Read the annotations of one Ingress (`annotations` holds every annotation;
/// only those with [`PREFIX`] are looked at).
pub fn read(annotations: &BTreeMap<String, String>) -> Annotations {
    let mut r = Reader {
        values: annotations
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v.trim())))
            .collect(),
        problems: Vec::new(),
    };
    let mut refused = None;
    let names: Vec<&str> = r.values.keys().copied().collect();
    for name in names {
        if SUPPORTED.contains(&name) {
            continue;
        }
        if guards_access(name) {
            refused = Some(format!(
                "{PREFIX}{name} is not supported, and serving the Ingress without it would expose what it protects"
            ));
            r.problem(
                ProblemKind::RefusedAnnotation,
                name,
                "not supported: the Ingress is not served".into(),
            );
        } else {
            r.problem(
                ProblemKind::UnsupportedAnnotation,
                name,
                "not supported here: ignored".into(),
            );
        }
    }
    let protocol = match r
        .get("backend-protocol")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("HTTP") => None,
        Some(p @ ("HTTPS" | "GRPC" | "GRPCS")) => Some(UpstreamProtocol {
            tls: p != "GRPC",
            http2: p != "HTTPS",
            // ingress-nginx: proxy-ssl-verify off by default, no SNI unless asked.
            verify: r.on_off("proxy-ssl-verify").unwrap_or(false),
            name: r.text("proxy-ssl-name", "a host name"),
            sni: r.on_off("proxy-ssl-server-name").unwrap_or(false),
            trust: None,
        }),
        Some(other) => {
            refused = Some(format!(
                "{PREFIX}backend-protocol: {other:?}: HTTP, HTTPS, GRPC and GRPCS are served, not this"
            ));
            r.problem(
                ProblemKind::RefusedAnnotation,
                "backend-protocol",
                "not served here: the Ingress is not served".into(),
            );
            None
        }
    };
    // Read by translation, which has the Secrets; a CA Secret that is
    // missing or does not load refuses the Ingress there (fail closed).
    let proxy_ssl_secret = r.text("proxy-ssl-secret", "NAMESPACE/NAME of a Secret");
    let custom_headers = r.text("custom-headers", "NAMESPACE/NAME of a ConfigMap");
    let default_backend = match r.get("default-backend") {
        Some(name) if crate::config::is_dns_label(name) => Some(name.to_string()),
        Some(_) => r.invalid(
            "default-backend",
            "a Service name in the Ingress's namespace",
        ),
        None => None,
    };
    let custom_http_errors = match r.get("custom-http-errors") {
        None => Vec::new(),
        Some(list) => {
            let codes: Result<Vec<u16>, _> = list
                .split(',')
                .map(|c| c.trim().parse::<u16>())
                .filter(|c| c.as_ref().map_or(true, |c| (400..=599).contains(c)))
                .collect();
            match codes {
                Ok(codes) if !codes.is_empty() && list.split(',').count() == codes.len() => {
                    if default_backend.is_none() {
                        r.problem(
                            ProblemKind::InvalidAnnotation,
                            "custom-http-errors",
                            "needs default-backend here (there is no controller-wide default backend): the proxy's own error responses stay".into(),
                        );
                    }
                    codes
                }
                _ => r
                    .invalid::<Vec<u16>>(
                        "custom-http-errors",
                        "codes from 400 to 599, like 404,503",
                    )
                    .unwrap_or_default(),
            }
        }
    };
    let service_upstream = r.boolean("service-upstream").unwrap_or(false);
    let client_limits = r.client_limits();
    let response_rate = r.response_rate();
    let cors = r.cors();
    let external_auth = match r.external_auth() {
        Ok(auth) => auth,
        Err(reason) => {
            // Serving it unauthenticated is what must never happen.
            refused = Some(reason);
            None
        }
    };
    let basic_auth = match r.basic_auth() {
        Ok(auth) => auth,
        Err(reason) => {
            refused = Some(reason);
            None
        }
    };
    let mut affinity = r.affinity();
    if service_upstream && affinity.is_some() {
        // One address (kube-proxy picks the pod): no pod to stick to.
        affinity = None;
        r.problem(
            ProblemKind::InvalidAnnotation,
            "affinity",
            "has no effect with service-upstream (one address, kube-proxy picks the pod): ignored"
                .into(),
        );
    }
    let ssl_redirect = r.boolean("ssl-redirect").unwrap_or(true);
    let force_ssl_redirect = r.boolean("force-ssl-redirect").unwrap_or(false);
    let max_body_bytes = r.body_size("proxy-body-size");
    let timeouts = TimeoutOverrides {
        connect: r.seconds("proxy-connect-timeout"),
        read: r.seconds("proxy-read-timeout"),
        write: r.seconds("proxy-send-timeout"),
        request: None,
    };
    // The newer name wins when both are set.
    let allow = r
        .source_ranges("allowlist-source-range")
        .or_else(|| r.source_ranges("whitelist-source-range"));
    let deny = r
        .ranges(
            "denylist-source-range",
            "every client is refused (403) until it is fixed",
        )
        .map(|nets| {
            // A list that did not parse denies everyone: it must not fail open.
            nets.unwrap_or_else(|()| {
                vec![
                    "0.0.0.0/0".parse().expect("net"),
                    "::/0".parse().expect("net"),
                ]
            })
        });
    let use_regex = r.boolean("use-regex").unwrap_or(false);
    let rewrite_target = r.text("rewrite-target", "a path like /$2");
    let x_forwarded_prefix = r.text("x-forwarded-prefix", "a path like /api");
    let app_root = match r.get("app-root") {
        Some(root) if root.starts_with('/') && is_uri_text(root) => Some(root.to_string()),
        Some(_) => r.invalid("app-root", "a path starting with /"),
        None => None,
    };
    let redirect = r
        .redirect("temporal-redirect", 302)
        .or_else(|| r.redirect("permanent-redirect", 301));
    let from_to_www = r.boolean("from-to-www-redirect").unwrap_or(false);
    let canary = r.canary();
    let upstream_vhost = match r.get("upstream-vhost") {
        Some(h) if !h.is_empty() && http::HeaderValue::from_str(h).is_ok() && !h.contains(' ') => {
            Some(h.to_string())
        }
        Some(_) => r.invalid("upstream-vhost", "a host name"),
        None => None,
    };
    let subset = match r.boolean("upstream-hash-by-subset").unwrap_or(false) {
        false => 1,
        // ingress-nginx's default subset size is 3.
        true => match r.get("upstream-hash-by-subset-size").map(str::parse::<u16>) {
            None => 3,
            Some(Ok(n @ 1..=16)) => n,
            Some(_) => r
                .invalid("upstream-hash-by-subset-size", "a number from 1 to 16")
                .unwrap_or(3),
        },
    };
    let hash_by = r
        .text("upstream-hash-by", "an nginx variable like $request_uri")
        .map(|key| HashBy { key, subset });
    let least_loaded = match r.get("load-balance") {
        None | Some("round_robin") => false,
        Some("ewma") => true,
        Some(_) => {
            r.invalid::<()>("load-balance", "round_robin or ewma");
            false
        }
    };
    Annotations {
        least_loaded,
        protocol,
        proxy_ssl_secret,
        custom_headers,
        response_headers: Vec::new(),
        default_backend,
        custom_http_errors,
        service_upstream,
        cors,
        external_auth,
        basic_auth,
        basic_auth_users: None,
        client_limits,
        response_rate,
        hash_by,
        affinity,
        ssl_redirect,
        force_ssl_redirect,
        max_body_bytes,
        timeouts,
        allow,
        deny,
        use_regex,
        rewrite_target,
        x_forwarded_prefix,
        app_root,
        redirect,
        from_to_www,
        canary,
        upstream_vhost,
        refused,
        problems: r.problems,
    }
}

struct Reader<'a> {
    values: BTreeMap<&'a str, &'a str>,
    problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.values.get(name).copied()
    }

    fn problem(&mut self, kind: ProblemKind, name: &str, message: String) {
        self.problems.push(Problem {
            kind,
            annotation: format!("{PREFIX}{name}"),
            value: self.get(name).unwrap_or_default().to_string(),
            message,
        });
    }

    /// Report `name` as refusing the Ingress, for `why`; the refusal.
    fn refuse<T>(&mut self, name: &str, why: &str) -> Result<T, String> {
        self.problem(
            ProblemKind::RefusedAnnotation,
            name,
            format!("{why}: the Ingress is not served"),
        );
        Err(format!("{PREFIX}{name}: {why}"))
    }

    fn invalid<T>(&mut self, name: &str, expected: &str) -> Option<T> {
        self.problem(
            ProblemKind::InvalidAnnotation,
            name,
            format!("expected {expected}; ignored"),
        );
        None
    }

    /// Go's `strconv.ParseBool`, which ingress-nginx uses.
    fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.get(name)? {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
            _ => self.invalid(name, "true or false"),
        }
    }

    /// `auth-url` and its companions. A value that does not read refuses the
    /// Ingress (ingress-nginx denies the location): never served unprotected.
    fn external_auth(&mut self) -> Result<Option<ExternalAuth>, String> {
        let Some(url) = self.get("auth-url") else {
            return Ok(None);
        };
        let refuse = |r: &mut Self, name: &str, expected: &str| {
            r.refuse(name, &format!("expected {expected}"))
        };
        if !is_http_url(url) {
            return refuse(self, "auth-url", "an http(s) URL");
        }
        let method = self
            .get("auth-method")
            .unwrap_or("GET")
            .to_ascii_uppercase();
        const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
        if !METHODS.contains(&method.as_str()) {
            return refuse(
                self,
                "auth-method",
                "GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS",
            );
        }
        let signin = self.get("auth-signin").map(str::to_string);
        if signin.as_deref().is_some_and(|s| !is_http_url(s)) {
            return refuse(self, "auth-signin", "an http(s) URL");
        }
        let param = self.get("auth-signin-redirect-param").unwrap_or("rd");
        if param.is_empty()
            || !param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return refuse(self, "auth-signin-redirect-param", "a parameter name");
        }
        let mut response_headers = Vec::new();
        for h in self.get("auth-response-headers").unwrap_or("").split(',') {
            let h = h.trim();
            if h.is_empty() {
                continue;
            }
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return refuse(
                    self,
                    "auth-response-headers",
                    "header names, comma-separated",
                );
            }
            response_headers.push(h.to_ascii_lowercase());
        }
        let request_redirect = self.get("auth-request-redirect").map(str::to_string);
        let cache_key = self
            .get("auth-cache-key")
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        // ingress-nginx's default: "200 202 401 5m".
        let durations = self.get("auth-cache-duration").unwrap_or("200 202 401 5m");
        let mut cache_for = Vec::new();
        for entry in durations
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            match cache_duration(entry) {
                Some(d) => cache_for.push(d),
                None => {
                    return refuse(
                        self,
                        "auth-cache-duration",
                        "codes then a time, like 200 202 401 5m",
                    )
                }
            }
        }
        let always_set_cookie = match self.get("auth-always-set-cookie") {
            None => false,
            Some(_) => match self.boolean("auth-always-set-cookie") {
                Some(b) => b,
                None => return refuse(self, "auth-always-set-cookie", "true or false"),
            },
        };
        let proxy_set_headers = self.get("auth-proxy-set-headers").map(str::to_string);
        Ok(Some(ExternalAuth {
            url: url.to_string(),
            method,
            signin,
            signin_redirect_param: param.to_string(),
            response_headers,
            request_redirect,
            cache_key,
            cache_for,
            always_set_cookie,
            proxy_set_headers,
            set_headers: Vec::new(),
        }))
    }

    /// `enable-cors` and the `cors-*` annotations, with ingress-nginx's
    /// defaults and its checks: a bad value falls back to the default, an
    /// origin that does not read as one is left out (and said).
    fn cors(&mut self) -> Option<Cors> {
        if !self.boolean("enable-cors").unwrap_or(false) {
            return None;
        }
        let allow_origins = match self.get("cors-allow-origin") {
            None => vec!["*".to_string()],
            Some(list) => {
                let mut origins = Vec::new();
                for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                    if origin == "*" {
                        origins = vec!["*".to_string()];
                        break;
                    }
                    if is_cors_origin(origin) {
                        origins.push(origin.to_string());
                    } else {
                        self.problem(
                            ProblemKind::InvalidAnnotation,
                            "cors-allow-origin",
                            format!("{origin:?} is not an origin like https://app.example.com: left out"),
                        );
                    }
                }
                origins
            }
        };
        let listed = |value: Option<&'a str>, extra: &[u8]| {
            value.filter(|v| {
                !v.is_empty()
                    && v.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || b == b',' || b == b' ' || extra.contains(&b)
                    })
            })
        };
        let allow_methods = listed(self.get("cors-allow-methods"), b"")
            .unwrap_or("GET, PUT, POST, DELETE, PATCH, OPTIONS")
            .to_string();
        let allow_headers = listed(self.get("cors-allow-headers"), b"-_")
            .unwrap_or("DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization")
            .to_string();
        let expose_headers = listed(self.get("cors-expose-headers"), b"-_*")
            .unwrap_or("")
            .to_string();
        let allow_credentials = self.boolean("cors-allow-credentials").unwrap_or(true);
        let max_age = match self.get("cors-max-age").map(str::parse::<u32>) {
            None => 1_728_000,
            Some(Ok(n)) => n,
            Some(Err(_)) => self
                .invalid("cors-max-age", "a number of seconds")
                .unwrap_or(1_728_000),
        };
        Some(Cors {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age,
        })
    }

    /// `auth-type: basic` and its Secret. Anything that does not read
    /// refuses the Ingress (ingress-nginx denies the location).
    fn basic_auth(&mut self) -> Result<Option<BasicAuthSecret>, String> {
        let Some(kind) = self.get("auth-type") else {
            for name in ["auth-secret", "auth-secret-type", "auth-realm"] {
                if self.get(name).is_some() {
                    self.invalid::<()>(name, "auth-type basic beside it");
                }
            }
            return Ok(None);
        };
        if kind != "basic" {
            return self.refuse(
                "auth-type",
                "only basic is served (digest is not: its MD5 challenge is no safer than basic over TLS)",
            );
        }
        let Some(secret) = self.get("auth-secret") else {
            return self.refuse(
                "auth-secret",
                "auth-type basic needs the Secret of its users",
            );
        };
        let map = match self.get("auth-secret-type") {
            None | Some("auth-file") => false,
            Some("auth-map") => true,
            Some(_) => return self.refuse("auth-secret-type", "expected auth-file or auth-map"),
        };
        Ok(Some(BasicAuthSecret {
            secret: secret.to_string(),
            map,
            realm: self.get("auth-realm").unwrap_or("").to_string(),
        }))
    }

    /// A whole number from 0; 0 (and a bad value, reported) is no limit, as
    /// in ingress-nginx.
    fn limit(&mut self, name: &str) -> Option<u32> {
        match self.get(name)?.parse::<u32>() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => self.invalid(name, "a whole number (0: no limit)"),
        }
    }

    /// ingress-nginx's rate limits: per client address and proxy instance,
    /// bursts of `limit-burst-multiplier` (5) times the rate, clients in
    /// `limit-allowlist` (or its older name `limit-whitelist`) exempt.
    fn client_limits(&mut self) -> Option<RouteLimits> {
        let rps = self.limit("limit-rps");
        let rpm = self.limit("limit-rpm");
        let connections = self.limit("limit-connections");
        let multiplier = match self.get("limit-burst-multiplier").map(str::parse::<u32>) {
            None => 5,
            Some(Ok(n)) => n,
            Some(Err(_)) => self
                .invalid("limit-burst-multiplier", "a whole number")
                .unwrap_or(5),
        };
        let allowlist = ["limit-allowlist", "limit-whitelist"]
            .into_iter()
            .find(|name| self.get(name).is_some());
        // A limit must not fail open: a list that did not parse exempts nobody.
        let exempt = allowlist
            .and_then(|name| self.ranges(name, "no client is exempt until it is fixed"))
            .and_then(Result::ok)
            .unwrap_or_default();
        if rps.is_none() && rpm.is_none() && connections.is_none() {
            return None;
        }
        // nginx applies limit-rpm and limit-rps both.
        let rate = |requests: u32, per: u64| RequestRate {
            requests,
            per: Duration::from_secs(per),
            burst: requests.saturating_mul(multiplier),
        };
        Some(RouteLimits {
            zone: String::new(),
            rates: [rpm.map(|n| rate(n, 60)), rps.map(|n| rate(n, 1))]
                .into_iter()
                .flatten()
                .collect(),
            connections,
            exempt,
        })
    }

    /// `limit-rate` KB/s per request after `limit-rate-after` KB.
    fn response_rate(&mut self) -> Option<ResponseRate> {
        let kilobytes = self.limit("limit-rate")?;
        let after = self
            .get("limit-rate-after")
            .map_or(Some(0), |t| t.parse::<u64>().ok());
        let after = match after {
            Some(n) => n,
            None => self
                .invalid("limit-rate-after", "a whole number of kilobytes")
                .unwrap_or(0),
        };
        Some(ResponseRate {
            bytes_per_second: u64::from(kilobytes) * 1024,
            after_bytes: after.saturating_mul(1024),
        })
    }

    /// Whole seconds, as ingress-nginx's timeouts and cookie ages are written.
    fn seconds(&mut self, name: &str) -> Option<Duration> {
        let text = self.get(name)?;
        match text.parse::<u64>() {
            Ok(n) if n > 0 && n <= 365 * 24 * 3600 => Some(Duration::from_secs(n)),
            _ => self.invalid(name, "a whole number of seconds, at least 1"),
        }
    }

    /// nginx's size syntax: `8m`, `512k`, `1g`, bytes without a unit; `0` is
    /// unlimited.
    fn body_size(&mut self, name: &str) -> Option<u64> {
        let text = self.get(name)?;
        let (digits, unit) = match text.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
            _ => (text, 'b'),
        };
        let scale: u64 = match unit {
            'b' => 1,
            'k' => 1 << 10,
            'm' => 1 << 20,
            'g' => 1 << 30,
            _ => return self.invalid(name, "a size like 8m, 512k or 1g"),
        };
        match digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
        {
            Some(0) => Some(u64::MAX),
            Some(n) => Some(n),
            None => self.invalid(name, "a size like 8m, 512k or 1g"),
        }
    }

    /// Comma-separated CIDRs or addresses; `Err` when an item is neither,
    /// reported with what that means (`if_bad`).
    fn ranges(&mut self, name: &str, if_bad: &str) -> Option<Result<Vec<IpNet>, ()>> {
        let text = self.get(name)?;
        let mut nets = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .ok()
                .or_else(|| item.parse::<std::net::IpAddr>().ok().map(IpNet::from));
            match net {
                Some(net) => nets.push(net),
                None => {
                    self.problem(
                        ProblemKind::InvalidAnnotation,
                        name,
                        format!("{item:?} is not a CIDR like 10.0.0.0/8: {if_bad}"),
                    );
                    return Some(Err(()));
                }
            }
        }
        Some(Ok(nets))
    }

    /// An allowlist: one that does not parse allows nobody (`Some(empty)`),
    /// it must never fail open.
    fn source_ranges(&mut self, name: &str) -> Option<Vec<IpNet>> {
        self.ranges(name, "every client is refused (403) until it is fixed")
            .map(Result::unwrap_or_default)
    }

    /// nginx's `on` / `off`.
    fn on_off(&mut self, name: &str) -> Option<bool> {
        match self.get(name)? {
            "on" => Some(true),
            "off" => Some(false),
            _ => self.invalid(name, "on or off"),
        }
    }

    /// Text that can go into a path or header as is: no spaces or controls.
    fn text(&mut self, name: &str, expected: &str) -> Option<String> {
        match self.get(name)? {
            v if !v.is_empty() && is_uri_text(v) => Some(v.to_string()),
            _ => self.invalid(name, expected),
        }
    }

    /// `NAME` (a URL, nginx variables allowed) and `NAME-code` (3xx; a bad
    /// code falls back to `default`, as ingress-nginx does).
    fn redirect(&mut self, name: &str, default: u16) -> Option<Redirect> {
        let location = self.text(name, "a URL like https://example.com$request_uri")?;
        let code_name = format!("{name}-code");
        let code = match self.get(&code_name) {
            None => default,
            Some(c) => match c.parse::<u16>() {
                Ok(c @ (300..=308)) => c,
                _ => {
                    self.invalid::<()>(&code_name, "a redirect code from 300 to 308");
                    default
                }
            },
        };
        Some(Redirect { location, code })
    }

    /// `canary: "true"` and the `canary-*` rules.
    fn canary(&mut self) -> Option<Canary> {
        if !self.boolean("canary").unwrap_or(false) {
            return None;
        }
        let weight_total = match self.get("canary-weight-total") {
            None => 100,
            Some(t) => match t.parse::<u32>() {
                Ok(t) if t > 0 => t,
                _ => {
                    self.invalid::<()>("canary-weight-total", "a whole number above 0");
                    100
                }
            },
        };
        let weight = match self.get("canary-weight") {
            None => 0,
            Some(w) => match w.parse::<u32>() {
                Ok(w) if w <= weight_total => w,
                _ => {
                    self.invalid::<()>("canary-weight", "a whole number from 0 to the total");
                    0
                }
            },
        };
        let header = match self.get("canary-by-header") {
            Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                Some(h.to_ascii_lowercase())
            }
            Some(_) => self.invalid("canary-by-header", "a header name"),
            None => None,
        };
        let header_value = self.text("canary-by-header-value", "a header value");
        let header_pattern = match self.get("canary-by-header-pattern") {
            Some(p) if header_value.is_none() => match crate::route::value_regex(p) {
                Ok(_) => Some(p.to_string()),
                Err(e) => {
                    self.problem(
                        ProblemKind::InvalidAnnotation,
                        "canary-by-header-pattern",
                        format!("{e}; ignored"),
                    );
                    None
                }
            },
            // ingress-nginx: the value wins over the pattern.
            _ => None,
        };
        let cookie = match self.get("canary-by-cookie") {
            Some(c) if crate::config::is_cookie_name(c) => Some(c.to_string()),
            Some(_) => self.invalid("canary-by-cookie", "a cookie name"),
            None => None,
        };
        Some(Canary {
            header,
            header_value,
            header_pattern,
            cookie,
            weight,
            weight_total,
        })
    }

    fn affinity(&mut self) -> Option<Affinity> {
        match self.get("affinity")? {
            "cookie" => {}
            _ => return self.invalid("affinity", "\"cookie\" (the only affinity type)"),
        }
        if let Some(mode) = self.get("affinity-mode") {
            // Both modes pin a session to its endpoint while it is ready (the
            // cookie contract); "balanced" moves no pinned session on scale-up.
            if mode != "balanced" && mode != "persistent" {
                self.invalid::<()>("affinity-mode", "balanced or persistent");
            }
        }
        let cookie = match self.get("session-cookie-name") {
            None => DEFAULT_COOKIE.to_string(),
            Some(name) if crate::config::is_cookie_name(name) => name.to_string(),
            Some(_) => {
                self.invalid::<()>(
                    "session-cookie-name",
                    "a cookie name (letters, digits, -_.)",
                );
                DEFAULT_COOKIE.to_string()
            }
        };
        let path = match self.get("session-cookie-path") {
            None => String::new(),
            Some(p) if p.starts_with('/') && is_attribute_value(p) => p.to_string(),
            Some(_) => {
                self.invalid::<()>("session-cookie-path", "a path starting with /");
                String::new()
            }
        };
        let domain = match self.get("session-cookie-domain") {
            None => None,
            Some(d) if !d.is_empty() && is_attribute_value(d) && !d.contains('/') => {
                Some(d.to_string())
            }
            Some(_) => self.invalid("session-cookie-domain", "a domain name"),
        };
        let same_site = match self.get("session-cookie-samesite") {
            None => None,
            Some(s) if s.eq_ignore_ascii_case("none") => Some(SameSite::None),
            Some(s) if s.eq_ignore_ascii_case("lax") => Some(SameSite::Lax),
            Some(s) if s.eq_ignore_ascii_case("strict") => Some(SameSite::Strict),
            Some(_) => self.invalid("session-cookie-samesite", "None, Lax or Strict"),
        };
        Some(Affinity {
            cookie,
            max_age: self.seconds("session-cookie-max-age"),
            path,
            expires: self.seconds("session-cookie-expires"),
            same_site,
            same_site_none_if_compatible: self
                .boolean("session-cookie-conditional-samesite-none")
                .unwrap_or(false),
            secure: self.boolean("session-cookie-secure").unwrap_or(false),
            domain,
            change_on_failure: self
                .boolean("session-cookie-change-on-failure")
                .unwrap_or(false),
        })
    }
}

/// Safe in a path, a Location or a header as is: printable, no spaces.
fn is_uri_text(s: &str) -> bool {
    s.len() <= 2048 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Safe inside a `Set-Cookie` attribute: no separators or control characters.
fn is_attribute_value(s: &str) -> bool {
    s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
}

/// One `auth-cache-duration` entry, nginx's `proxy_cache_valid`: status
/// codes (none: 200, 301, 302), then a time such as `5m` or `1h 30m`.
fn cache_duration(entry: &str) -> Option<(Vec<u16>, Duration)> {
    let words: Vec<&str> = entry.split_whitespace().collect();
    let codes_end = words
        .iter()
        .position(|w| w.parse::<u16>().is_err())
        .unwrap_or(words.len());
    let codes: Vec<u16> = words[..codes_end]
        .iter()
        .map(|w| w.parse().ok().filter(|c| (100..=599).contains(c)))
        .collect::<Option<_>>()?;
    let time = words[codes_end..].join(" ");
    let duration = humantime::parse_duration(&time).ok()?;
    let codes = if codes.is_empty() {
        vec![200, 301, 302]
    } else {
        codes
    };
    Some((codes, duration))
}

/// `http://` or `https://` with a host (nginx variables allowed after it).
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?']).next().unwrap_or("");
        !host.is_empty() && !host.contains(' ') && is_uri_text(url)
    })
}

/// ingress-nginx's origin check: `scheme://host[:port]` (one leading `*.`
/// label allowed) or `null`.
fn is_cors_origin(origin: &str) -> bool {
    if origin == "null" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    let (host, port) = host.split_once(':').unwrap_or((host, "0"));
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_lowercase())
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(pairs: &[(&str, &str)]) -> Annotations {
        read(
            &pairs
                .iter()
                .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_are_ingress_nginx_defaults() {
        let a = read_all(&[("affinity", "cookie")]);
        let affinity = a.affinity.unwrap();
        assert_eq!(affinity.cookie, "INGRESSCOOKIE");
        assert_eq!(affinity.path, "");
        assert_eq!(affinity.same_site, None);
        assert!(!affinity.change_on_failure);
        assert!(!affinity.secure);
        assert!(a.ssl_redirect && !a.force_ssl_redirect);
        assert_eq!(
            (a.max_body_bytes, a.timeouts, a.allow),
            (None, TimeoutOverrides::default(), None)
        );
        assert!(a.problems.is_empty() && a.refused.is_none());
        assert!(read_all(&[]).affinity.is_none());
    }

    #[test]
    fn every_supported_annotation_is_read() {
        let a = read_all(&[
            ("affinity", "cookie"),
            ("affinity-mode", "persistent"),
            ("session-cookie-name", "route"),
            ("session-cookie-path", "/shop"),
            ("session-cookie-max-age", "172800"),
            ("session-cookie-expires", "3600"),
            ("session-cookie-samesite", "None"),
            ("session-cookie-conditional-samesite-none", "true"),
            ("session-cookie-secure", "true"),
            ("session-cookie-domain", "example.com"),
            ("session-cookie-change-on-failure", "true"),
            ("ssl-redirect", "false"),
            ("force-ssl-redirect", "true"),
            ("proxy-body-size", "8m"),
            ("proxy-connect-timeout", "5"),
            ("proxy-read-timeout", "120"),
            ("proxy-send-timeout", "30"),
            ("whitelist-source-range", "10.0.0.0/8, 192.168.1.7"),
            ("backend-protocol", "http"),
        ]);
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        let f = a.affinity.unwrap();
        assert_eq!(
            (f.cookie.as_str(), f.path.as_str(), f.domain.as_deref()),
            ("route", "/shop", Some("example.com"))
        );
        assert_eq!(f.max_age, Some(Duration::from_secs(172800)));
        assert_eq!(f.expires, Some(Duration::from_secs(3600)));
        assert_eq!(f.same_site, Some(SameSite::None));
        assert!(f.same_site_none_if_compatible && f.secure && f.change_on_failure);
        assert!(!a.ssl_redirect && a.force_ssl_redirect);
        assert_eq!(a.max_body_bytes, Some(8 << 20));
        assert_eq!(a.timeouts.connect, Some(Duration::from_secs(5)));
        assert_eq!(a.timeouts.read, Some(Duration::from_secs(120)));
        assert_eq!(a.timeouts.write, Some(Duration::from_secs(30)));
        assert_eq!(
            a.allow.unwrap(),
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.168.1.7/32".parse().unwrap()
            ]
        );
    }

    #[test]
    fn bad_values_are_problems_and_fall_back_or_fail_closed() {
        let a = read_all(&[
            ("affinity", "cookie"),
            ("session-cookie-max-age", "two days"),
            ("session-cookie-samesite", "sometimes"),
            ("session-cookie-name", "a;b"),
            ("ssl-redirect", "yes"),
            ("proxy-body-size", "8 MB"),
            ("allowlist-source-range", "10.0.0.0/8,not-a-net"),
            ("configuration-snippet", "more_set_headers x;"),
            ("permanent-redirect-code", "200"),
            ("permanent-redirect", "https://new.test$request_uri"),
            ("canary", "true"),
            ("canary-weight", "150"),
            ("canary-by-header-pattern", "(?<=x)"),
            ("app-root", "relative"),
        ]);
        let named: Vec<(&str, &str)> = a
            .problems
            .iter()
            .map(|p| (p.kind.label(), p.annotation.trim_start_matches(PREFIX)))
            .collect();
        for expected in [
            ("invalid_annotation", "session-cookie-max-age"),
            ("invalid_annotation", "session-cookie-samesite"),
            ("invalid_annotation", "session-cookie-name"),
            ("invalid_annotation", "ssl-redirect"),
            ("invalid_annotation", "proxy-body-size"),
            ("invalid_annotation", "allowlist-source-range"),
            ("unsupported_annotation", "configuration-snippet"),
            ("invalid_annotation", "permanent-redirect-code"),
            ("invalid_annotation", "canary-weight"),
            ("invalid_annotation", "canary-by-header-pattern"),
            ("invalid_annotation", "app-root"),
        ] {
            assert!(named.contains(&expected), "{expected:?} not in {named:?}");
        }
        let f = a.affinity.unwrap();
        assert_eq!(
            (f.cookie.as_str(), f.max_age, f.same_site),
            ("INGRESSCOOKIE", None, None)
        );
        assert!(a.ssl_redirect, "a bad ssl-redirect keeps the default");
        // A bad code keeps the default (301); a bad weight is 0; a bad root none.
        assert_eq!(a.redirect.as_ref().map(|r| r.code), Some(301));
        assert_eq!(a.canary.as_ref().map(|c| c.weight), Some(0));
        assert_eq!(a.app_root, None);
        assert_eq!(a.max_body_bytes, None);
        assert_eq!(a.allow, Some(Vec::new()), "fails closed");
        assert!(a.refused.is_none());
        assert_eq!(
            read_all(&[("proxy-body-size", "0")]).max_body_bytes,
            Some(u64::MAX)
        );
    }

    #[test]
    fn other_backends_and_auth_refuse_the_ingress() {
        let fcgi = read_all(&[("backend-protocol", "FCGI")]);
        assert!(fcgi.refused.unwrap().contains("GRPCS are served"));
        let grpc = read_all(&[("backend-protocol", "grpc")]);
        assert!(grpc.refused.is_none());
        assert_eq!(
            grpc.protocol,
            Some(UpstreamProtocol {
                tls: false,
                http2: true,
                ..Default::default()
            })
        );
        let https = read_all(&[
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-name", "api.internal"),
            ("proxy-ssl-server-name", "on"),
        ]);
        assert_eq!(
            https.protocol,
            Some(UpstreamProtocol {
                tls: true,
                http2: false,
                verify: true,
                name: Some("api.internal".into()),
                sni: true,
                trust: None,
            })
        );
        let ca = read_all(&[
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-secret", "default/ca"),
        ]);
        assert_eq!(ca.proxy_ssl_secret.as_deref(), Some("default/ca"));
        assert!(ca.refused.is_none(), "translation reads the Secret");
        // Basic auth is not built: refused, never served open.
        let basic = read_all(&[("auth-type", "basic")]);
        assert!(basic.refused.is_some());
        assert_eq!(basic.problems[0].kind, ProblemKind::RefusedAnnotation);
        // External auth is; a value that does not read refuses.
        let auth = read_all(&[
            ("auth-url", "http://auth.svc/verify?u=$request_uri"),
            ("auth-response-headers", "X-User, X-Email"),
            ("auth-cache-key", "$cookie_session"),
        ]);
        assert!(auth.refused.is_none(), "{:?}", auth.problems);
        let external = auth.external_auth.unwrap();
        assert_eq!(
            (
                external.method.as_str(),
                external.signin_redirect_param.as_str()
            ),
            ("GET", "rd")
        );
        assert_eq!(external.response_headers, vec!["x-user", "x-email"]);
        assert!(auth.problems.is_empty(), "{:?}", auth.problems);
        assert_eq!(external.cache_key.as_deref(), Some("$cookie_session"));
        assert_eq!(
            external.cache_for,
            vec![(vec![200, 202, 401], Duration::from_secs(300))],
            "ingress-nginx's default duration"
        );
        assert_eq!(
            cache_duration("1h 30m"),
            Some((vec![200, 301, 302], Duration::from_secs(5400)))
        );
        assert_eq!(cache_duration("200 soon"), None);
        for (name, bad) in [
            ("auth-url", "ftp://auth"),
            ("auth-method", "BREW"),
            ("auth-signin", "login"),
            ("auth-response-headers", "X User"),
            ("auth-cache-duration", "200 5m, forever"),
        ] {
            let a = read_all(&[("auth-url", "http://auth.svc/"), (name, bad)]);
            assert!(
                a.refused.is_some() && a.external_auth.is_none(),
                "{name}: {bad}"
            );
        }
        // Annotations of other controllers are none of our business.
        let other = read(&[("kubernetes.io/ingress.class".to_string(), "x".to_string())].into());
        assert!(other.problems.is_empty());
    }

    #[test]
    fn error_pages_subsets_and_service_upstream_read_as_there() {
        let errors = read_all(&[
            ("custom-http-errors", "404, 503"),
            ("default-backend", "error-pages"),
        ]);
        assert_eq!(errors.custom_http_errors, vec![404, 503]);
        assert_eq!(errors.default_backend.as_deref(), Some("error-pages"));
        assert!(errors.problems.is_empty(), "{:?}", errors.problems);
        for bad in ["404,abc", "200", "", "99999"] {
            let a = read_all(&[("custom-http-errors", bad), ("default-backend", "e")]);
            assert!(a.custom_http_errors.is_empty(), "{bad}");
            assert_eq!(a.problems[0].kind, ProblemKind::InvalidAnnotation, "{bad}");
        }
        // No controller-wide default backend here: said, not ignored.
        let alone = read_all(&[("custom-http-errors", "404")]);
        assert!(alone.problems[0].message.contains("needs default-backend"));
        let bad_name = read_all(&[("default-backend", "Not_A_Service")]);
        assert_eq!(bad_name.default_backend, None);
        assert_eq!(bad_name.problems.len(), 1);

        let subset = read_all(&[
            ("upstream-hash-by", "$request_uri"),
            ("upstream-hash-by-subset", "true"),
        ]);
        assert_eq!(
            subset.hash_by,
            Some(HashBy {
                key: "$request_uri".into(),
                subset: 3
            })
        );
        let sized = read_all(&[
            ("upstream-hash-by", "$request_uri"),
            ("upstream-hash-by-subset", "true"),
            ("upstream-hash-by-subset-size", "99"),
        ]);
        assert_eq!(
            sized.hash_by.map(|h| h.subset),
            Some(3),
            "bad size: the default"
        );
        assert_eq!(sized.problems.len(), 1);

        let upstream = read_all(&[("service-upstream", "true"), ("affinity", "cookie")]);
        assert!(upstream.service_upstream);
        assert_eq!(upstream.affinity, None, "one address: no affinity");
        assert!(upstream.problems[0]
            .message
            .contains("no effect with service-upstream"));
    }

    #[test]
    fn limits_read_as_ingress_nginx_writes_them() {
        let a = read_all(&[
            ("limit-rps", "10"),
            ("limit-rpm", "300"),
            ("limit-connections", "4"),
            ("limit-whitelist", "10.0.0.0/8, 192.0.2.7"),
            ("limit-rate", "100"),
            ("limit-rate-after", "1024"),
        ]);
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        let l = a.client_limits.unwrap();
        // rpm then rps, each with 5 times its rate as burst.
        assert_eq!(
            l.rates,
            vec![
                RequestRate {
                    requests: 300,
                    per: Duration::from_secs(60),
                    burst: 1500
                },
                RequestRate {
                    requests: 10,
                    per: Duration::from_secs(1),
                    burst: 50
                },
            ]
        );
        assert_eq!(l.connections, Some(4));
        assert_eq!(l.exempt.len(), 2);
        assert_eq!(
            a.response_rate,
            Some(ResponseRate {
                bytes_per_second: 100 * 1024,
                after_bytes: 1024 * 1024
            })
        );
        // 0 is no limit; limit-allowlist is the newer name.
        let zero = read_all(&[("limit-rps", "0"), ("limit-rate", "0")]);
        assert!(zero.client_limits.is_none() && zero.response_rate.is_none());
        let multiplied = read_all(&[
            ("limit-rps", "3"),
            ("limit-burst-multiplier", "1"),
            ("limit-allowlist", "10.0.0.0/8"),
        ]);
        let l = multiplied.client_limits.unwrap();
        assert_eq!(l.rates[0].burst, 3);
        assert_eq!(l.exempt.len(), 1);
        // A bad value is reported; a bad allowlist exempts nobody.
        let bad = read_all(&[
            ("limit-rps", "ten"),
            ("limit-rpm", "60"),
            ("limit-whitelist", "10.0.0.0/8, everyone"),
        ]);
        let l = bad.client_limits.unwrap();
        assert_eq!(l.rates.len(), 1);
        assert!(l.exempt.is_empty());
        let named: Vec<&str> = bad
            .problems
            .iter()
            .map(|p| p.annotation.trim_start_matches(PREFIX))
            .collect();
        assert_eq!(named, ["limit-rps", "limit-whitelist"]);
        assert!(bad.refused.is_none());
    }

    #[test]
    fn cors_reads_with_ingress_nginx_defaults_and_checks() {
        assert_eq!(
            read_all(&[("cors-allow-origin", "*")]).cors,
            None,
            "off unless enabled"
        );
        let open = read_all(&[("enable-cors", "true")]).cors.unwrap();
        assert_eq!(open.allow_origins, vec!["*"]);
        assert_eq!(open.allow_methods, "GET, PUT, POST, DELETE, PATCH, OPTIONS");
        assert!(open.allow_credentials);
        assert_eq!(
            (open.max_age, open.expose_headers.as_str()),
            (1_728_000, "")
        );
        let listed = read_all(&[
            ("enable-cors", "true"),
            (
                "cors-allow-origin",
                "https://a.com, http://*.b.org:8080, null, ftp//x, https://",
            ),
            ("cors-allow-methods", "GET; DROP"),
            ("cors-max-age", "soon"),
        ]);
        let cors = listed.cors.unwrap();
        assert_eq!(
            cors.allow_origins,
            vec!["https://a.com", "http://*.b.org:8080", "null"]
        );
        assert_eq!(
            cors.allow_methods, "GET, PUT, POST, DELETE, PATCH, OPTIONS",
            "bad: default"
        );
        assert_eq!(cors.max_age, 1_728_000);
        // Two origins left out, the bad max age: said.
        assert_eq!(listed.problems.len(), 3, "{:?}", listed.problems);
        let star = read_all(&[
            ("enable-cors", "true"),
            ("cors-allow-origin", "https://a.com,*"),
        ]);
        assert_eq!(star.cors.unwrap().allow_origins, vec!["*"]);
    }
}
