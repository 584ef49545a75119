//! What the proxy tells an upstream about the request it forwards.
//!
//! - An absolute-form target (`GET http://host/path`) names the host (RFC 9112
//!   section 3.2.2): it is forwarded as `Host` with an origin-form target.
//! - `X-Forwarded-For`: a client's own list is kept (and extended) only when the
//!   client is a trusted proxy (`trusted_proxies`); anyone else could write
//!   anything there. Upstreams read the *last* address as the client the proxy
//!   saw. `Forwarded` is dropped from untrusted clients for the same reason.
//! - `X-Forwarded-Proto` (http or https) and `X-Forwarded-Host` (the Host).
//! - `X-Request-Id` (set by proxy.rs), also on the proxy's own sub-requests.

use crate::config::{net_contains, IpNet};
use http::header::{HeaderName, HeaderValue, FORWARDED, HOST};
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use std::net::IpAddr;

// Built once: a name given as `&str` is parsed and hashed at every use.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Rewrite `req` for the upstream; `client` is the peer the proxy accepted.
pub fn apply(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    tls: bool,
    trusted_proxies: &[IpNet],
) -> Result<()> {
    if let RawTargetAuthority::Absolute { authority, .. } = raw_target_authority(req.raw_path()) {
        let host = http::HeaderValue::from_bytes(authority)
            .or_err(InvalidHTTPHeader, "request authority")?;
        let origin_form = req.uri.clone();
        req.insert_header(HOST, host)?;
        req.set_uri(origin_form);
    }
    let trusted = client.is_some_and(|ip| trusted_proxies.iter().any(|n| net_contains(n, ip)));
    if !trusted {
        req.remove_header(&FORWARDED);
    }
    if let Some(ip) = client {
        // A trusted proxy's list, comma-joined, then the address we saw.
        let mut xff = Vec::with_capacity(48);
        if trusted {
            for v in req.headers.get_all(&X_FORWARDED_FOR) {
                xff.extend_from_slice(v.as_bytes());
                xff.extend_from_slice(b", ");
            }
        }
        crate::access_log::write_ip(&mut xff, ip);
        let value = HeaderValue::from_bytes(&xff).or_err(InvalidHTTPHeader, "x-forwarded-for")?;
        req.insert_header(X_FORWARDED_FOR.clone(), value)?;
    }
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    req.insert_header(X_FORWARDED_PROTO.clone(), proto)?;
    if let Some(host) = req.headers.get(HOST).cloned() {
        req.insert_header(X_FORWARDED_HOST.clone(), host)?;
    }
    Ok(())
}

/// The client's address for an allowlist: the peer, or, when the peer is a
/// trusted proxy, the last address in X-Forwarded-For that is not trusted
/// (what nginx's real_ip module with `real_ip_recursive on` takes).
pub fn client_ip(req: &RequestHeader, peer: Option<IpAddr>, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| net_contains(n, ip));
    let mut ip = peer?;
    if !is_trusted(ip) {
        return Some(ip);
    }
    let hops: Vec<&[u8]> = req
        .headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .collect();
    for hop in hops.iter().rev() {
        let parsed = std::str::from_utf8(hop.trim_ascii())
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok());
        let Some(hop) = parsed else {
            break; // garbage: the last good address is the client
        };
        ip = hop;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn header<'a>(req: &'a RequestHeader, name: &str) -> Vec<&'a str> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn an_untrusted_clients_forwarding_claims_are_replaced() {
        let mut req = request(
            "/x",
            &[
                ("host", "app.test"),
                ("x-forwarded-for", "6.6.6.6"),
                ("forwarded", "for=6.6.6.6"),
            ],
        );
        let client = Some("203.0.113.7".parse().unwrap());
        apply(&mut req, client, false, &nets(&["10.0.0.0/8"])).unwrap();
        assert_eq!(header(&req, "x-forwarded-for"), ["203.0.113.7"]);
        assert!(header(&req, "forwarded").is_empty());
        assert_eq!(header(&req, "x-forwarded-proto"), ["http"]);
        assert_eq!(header(&req, "x-forwarded-host"), ["app.test"]);
    }

    #[test]
    fn a_trusted_proxys_list_is_extended_also_when_it_connects_over_ipv4_mapped_ipv6() {
        let mut req = request(
            "/x",
            &[
                ("host", "app.test"),
                ("x-forwarded-for", "198.51.100.1"),
                ("x-forwarded-for", "10.1.2.3"),
                ("forwarded", "for=198.51.100.1"),
            ],
        );
        let client = Some("::ffff:10.0.0.9".parse().unwrap());
        apply(&mut req, client, true, &nets(&["10.0.0.0/8"])).unwrap();
        assert_eq!(
            header(&req, "x-forwarded-for"),
            ["198.51.100.1, 10.1.2.3, ::ffff:10.0.0.9"]
        );
        assert_eq!(header(&req, "forwarded"), ["for=198.51.100.1"]);
        assert_eq!(header(&req, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn an_absolute_form_target_becomes_host_and_an_origin_form_target() {
        let mut req = request("http://named.test/p?q=1", &[("host", "other.test")]);
        apply(&mut req, None, false, &[]).unwrap();
        assert_eq!(header(&req, "host"), ["named.test"]);
        assert_eq!(header(&req, "x-forwarded-host"), ["named.test"]);
        assert_eq!(req.uri.path_and_query().unwrap().as_str(), "/p?q=1");
        assert!(header(&req, "x-forwarded-for").is_empty());
    }
}
