//! External authentication (ingress-nginx's `auth-url`): before a request
//! goes to its pods, the proxy asks an auth service (oauth2-proxy, say) with
//! a bodiless sub-request carrying the client's headers (cookies and
//! `Authorization` included) and ingress-nginx's `X-Original-URL`,
//! `X-Original-Method`, `X-Auth-Request-Redirect`, `X-Sent-From`,
//! `X-Real-IP`, `X-Forwarded-For` and `X-Request-ID`.
//!
//! Its answer decides, as nginx's `auth_request` does: 2xx lets the request
//! through with the `auth-response-headers` copied onto it; 401 is returned
//! (with the service's `WWW-Authenticate`), or with `auth-signin` becomes a
//! 302 there carrying the original URL; 403 is returned; anything else, and
//! a service that does not answer in time, is a 500. It never fails open.
//!
//! Basic authentication (`auth-type: basic`) is in basic.rs.

pub mod basic;

use crate::config::Timeouts;
use crate::forwarding::{X_FORWARDED_FOR, X_REQUEST_ID};
use crate::policy::{expand_location, Reply, RequestFacts};
use crate::route::ExternalAuth;
use http::{HeaderName, HeaderValue};
use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An auth answer's body is not used: read and dropped, up to this.
const MAX_AUTH_BODY: usize = 64 * 1024;

/// How long a resolved auth service name is used before it is looked up again.
const RESOLVED_FOR: Duration = Duration::from_secs(10);

/// At most this many answers kept per route (`auth-cache-key`); past it the
/// expired ones go, then all.
const MAX_CACHED: usize = 10_000;

/// A route's external auth, compiled.
pub struct CompiledAuth {
    spec: ExternalAuth,
    method: http::Method,
    copy: Box<[HeaderName]>,
    /// Answers by the expanded `auth-cache-key`, while it is set.
    cache: Mutex<HashMap<Vec<u8>, Cached>>,
}

struct Cached {
    until: Instant,
    status: u16,
    headers: http::HeaderMap,
}

impl CompiledAuth {
    pub fn new(spec: &ExternalAuth) -> Self {
        CompiledAuth {
            method: http::Method::from_bytes(spec.method.as_bytes()).unwrap_or(http::Method::GET),
            copy: spec
                .response_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            spec: spec.clone(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The cache key of this request: `None` without `auth-cache-key`, and
    /// when it expands to nothing (one empty key for every anonymous client
    /// would hand one client's answer to all).
    fn cache_key(&self, facts: &RequestFacts) -> Option<Vec<u8>> {
        let template = self.spec.cache_key.as_deref()?;
        let client = crate::forwarding::client_ip(facts.req, facts.peer, facts.trusted_proxies);
        let key = crate::policy::hash_key(template, facts.req, client);
        (!key.is_empty() && key != template.as_bytes()).then_some(key)
    }

    fn cached(&self, key: &[u8]) -> Option<(u16, http::HeaderMap)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let hit = cache.get(key).filter(|c| c.until > Instant::now())?;
        Some((hit.status, hit.headers.clone()))
    }

    fn keep(&self, key: Vec<u8>, status: u16, headers: &http::HeaderMap) {
        // As nginx's cache: an answer that sets a cookie is this client's alone.
        if headers.contains_key(http::header::SET_COOKIE) {
            return;
        }
        let Some(ttl) = self
            .spec
            .cache_for
            .iter()
            .find(|(codes, _)| codes.contains(&status))
            .map(|(_, ttl)| *ttl)
        else {
            return;
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        // Only what a verdict reads.
        let mut kept = http::HeaderMap::new();
        for name in self.copy.iter().chain([&http::header::WWW_AUTHENTICATE]) {
            if let Some(v) = headers.get(name) {
                kept.insert(name.clone(), v.clone());
            }
        }
        let until = Instant::now() + ttl;
        cache.insert(
            key,
            Cached {
                until,
                status,
                headers: kept,
            },
        );
    }
}

/// What the auth service decided.
pub enum Verdict {
    /// Through, with these headers set on the request sent upstream, and
    /// the auth answer's cookies for the response.
    Allow(Vec<(HeaderName, HeaderValue)>, Option<Box<AuthCookies>>),
    /// Answered here.
    Deny(Reply),
}

/// The auth answer's `Set-Cookie`s (oauth2-proxy refreshes its session
/// this way), for the client's response.
pub struct AuthCookies {
    cookies: Vec<HeaderValue>,
    always: bool,
}

impl AuthCookies {
    /// `None` when the answer sets no cookie (most): nothing to carry.
    fn of(auth: &CompiledAuth, headers: &http::HeaderMap) -> Option<Box<Self>> {
        if !headers.contains_key(http::header::SET_COOKIE) {
            return None;
        }
        Some(Box::new(AuthCookies {
            cookies: headers
                .get_all(http::header::SET_COOKIE)
                .iter()
                .cloned()
                .collect(),
            always: auth.spec.always_set_cookie,
        }))
    }

    /// The cookies a response with `status` carries: as nginx's `add_header`
    /// adds them, on successes and redirects only unless `always`.
    pub fn for_status(&self, status: u16) -> &[HeaderValue] {
        const ADDED_ON: &[u16] = &[200, 201, 204, 206, 301, 302, 303, 304, 307, 308];
        if self.cookies.is_empty() {
            return &[];
        }
        if self.always || ADDED_ON.contains(&status) {
            &self.cookies
        } else {
            &[]
        }
    }
}

/// Client headers that describe the connection to the proxy, not the
/// request: never passed to the auth service.
const NOT_PASSED: &[HeaderName] = &[
    http::header::CONNECTION,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::TE,
    http::header::UPGRADE,
    http::header::HOST,
    http::header::EXPECT,
];

/// Ask the auth service about this request.
pub async fn check(
    connector: &Connector,
    auth: &CompiledAuth,
    facts: &RequestFacts<'_>,
    request_id: &str,
    timeouts: &Timeouts,
) -> Verdict {
    let key = auth.cache_key(facts);
    if let Some((status, headers)) = key.as_deref().and_then(|k| auth.cached(k)) {
        return decide(auth, status, &headers, facts);
    }
    let limit = timeouts.connect + timeouts.read;
    let asked = tokio::time::timeout(limit, ask(connector, auth, facts, request_id, timeouts));
    let (status, headers) = match asked.await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            tracing::warn!(url = %auth.spec.url, "auth service failed, request refused (500): {e}");
            return Verdict::Deny(Reply::text(500, "the authentication service failed\n"));
        }
        Err(_) => {
            tracing::warn!(url = %auth.spec.url, "auth service gave no answer within {limit:?}, request refused (500)");
            return Verdict::Deny(Reply::text(500, "the authentication service failed\n"));
        }
    };
    if let Some(key) = key {
        auth.keep(key, status, &headers);
    }
    decide(auth, status, &headers, facts)
}

/// The verdict of an auth answer (see the module).
fn decide(
    auth: &CompiledAuth,
    status: u16,
    headers: &http::HeaderMap,
    facts: &RequestFacts,
) -> Verdict {
    match status {
        200..=299 => Verdict::Allow(
            auth.copy
                .iter()
                .filter_map(|name| Some((name.clone(), headers.get(name)?.clone())))
                .collect(),
            AuthCookies::of(auth, headers),
        ),
        401 => match &auth.spec.signin {
            Some(signin) => {
                let location = signin_location(signin, &auth.spec.signin_redirect_param, facts);
                let mut reply = Reply::text(302, "sign in first\n");
                reply.location = Some(location);
                Verdict::Deny(reply)
            }
            None => {
                let mut reply = Reply::text(401, "authentication required\n");
                let cookies = AuthCookies::of(auth, headers);
                for cookie in cookies.iter().flat_map(|c| c.for_status(401)) {
                    reply
                        .headers
                        .push((http::header::SET_COOKIE, cookie.clone()));
                }
                if let Some(challenge) = headers.get(http::header::WWW_AUTHENTICATE) {
                    reply
                        .headers
                        .push((http::header::WWW_AUTHENTICATE, challenge.clone()));
                }
                Verdict::Deny(reply)
            }
        },
        403 => Verdict::Deny(Reply::text(403, "forbidden\n")),
        other => {
            tracing::warn!(url = %auth.spec.url, status = other, "auth service answered neither 2xx, 401 nor 403: request refused (500)");
            Verdict::Deny(Reply::text(500, "the authentication service failed\n"))
        }
    }
}

async fn ask(
    connector: &Connector,
    auth: &CompiledAuth,
    facts: &RequestFacts<'_>,
    request_id: &str,
    timeouts: &Timeouts,
) -> pingora::Result<(u16, http::HeaderMap)> {
    use pingora::{Error, ErrorType};
    let url = expand_location(&auth.spec.url, facts);
    let uri: http::Uri = url
        .parse()
        .or_else(|_| Error::e_explain(ErrorType::InternalError, format!("{url:?} is not a URL")))?;
    let tls = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no host in auth-url"))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = resolve(host, port).await?;
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = RequestHeader::build(auth.method.clone(), target.as_bytes(), None)?;
    let original = facts.req;
    for (name, value) in original.headers.iter() {
        if !NOT_PASSED.contains(name) {
            req.append_header(name.clone(), value.clone())?;
        }
    }
    let authority = uri.authority().map_or(host, |a| a.as_str());
    req.insert_header(http::header::HOST, authority)?;
    // auth-proxy-set-headers (checked by translation).
    for (name, value) in &auth.spec.set_headers {
        req.insert_header(name.clone(), value.as_str())?;
    }
    let original_url = expand_location("$scheme://$http_host$request_uri", facts);
    req.insert_header("x-original-url", original_url)?;
    req.insert_header("x-original-method", original.method.as_str())?;
    req.insert_header("x-sent-from", "nginx-ingress-controller")?;
    let redirect = expand_location(
        auth.spec
            .request_redirect
            .as_deref()
            .unwrap_or("$request_uri"),
        facts,
    );
    req.insert_header("x-auth-request-redirect", redirect)?;
    req.insert_header(X_REQUEST_ID.clone(), request_id)?;
    let client = crate::forwarding::client_ip(original, facts.peer, facts.trusted_proxies);
    if let Some(ip) = client {
        req.insert_header("x-real-ip", ip.to_string())?;
        req.insert_header(X_FORWARDED_FOR.clone(), ip.to_string())?;
    }
    // ingress-nginx does not verify the auth service's certificate either.
    let mut peer = HttpPeer::new(addr, tls, host.to_string());
    peer.options.verify_cert = false;
    peer.options.verify_hostname = false;
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.read_timeout = Some(timeouts.read);
    peer.options.idle_timeout = Some(timeouts.idle);
    let (head, _body) = crate::subrequest::send(connector, &peer, req, MAX_AUTH_BODY).await?;
    Ok((head.status.as_u16(), head.headers.clone()))
}

/// `auth-signin` with the original URL in its redirect parameter, unless it
/// carries one already (ingress-nginx's `buildAuthSignURL`).
fn signin_location(signin: &str, param: &str, facts: &RequestFacts) -> String {
    let mut location = expand_location(signin, facts);
    if location.contains(&format!("{param}=")) {
        return location;
    }
    // ingress-nginx's own: `$pass_access_scheme://$http_host$escaped_request_uri`.
    location.push(if location.contains('?') { '&' } else { '?' });
    location.push_str(param);
    location.push('=');
    location.push_str(&expand_location(
        "$pass_access_scheme://$http_host$escaped_request_uri",
        facts,
    ));
    location
}

/// The auth service's address: an IP as written, a name looked up (and
/// kept for [`RESOLVED_FOR`]).
async fn resolve(host: &str, port: u16) -> pingora::Result<SocketAddr> {
    use pingora::{Error, ErrorType};
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    type Resolved = HashMap<(String, u16), (SocketAddr, Instant)>;
    static RESOLVED: Mutex<Option<Resolved>> = Mutex::new(None);
    let key = (host.to_string(), port);
    if let Some((addr, at)) = RESOLVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
    {
        if at.elapsed() < RESOLVED_FOR {
            return Ok(*addr);
        }
    }
    let addr = tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                "auth-url's host does not resolve",
            )
        })?;
    let mut cache = RESOLVED.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    // A bounded cache: a few auth services per cluster.
    if cache.len() > 256 {
        cache.clear();
    }
    cache.insert(key, (addr, Instant::now()));
    Ok(addr)
}
