//! Cookie session affinity: the cookie value that names an endpoint.
//!
//! The value is a keyed SipHash-1-3 of the Service and the endpoint's address,
//! written as 16 hex digits. It is a pure function of what every proxy instance
//! already knows, so every node maps the same cookie to the same endpoint, across
//! restarts and reloads, with no shared state. It does not show the address.
//! We own the algorithm and its key (not std's `DefaultHasher`, whose output may
//! change between Rust releases), so values stay valid across upgrades.

use crate::route::{Affinity, SameSite};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::net::SocketAddr;

/// Identifies one endpoint of one upstream in a cookie.
pub type EndpointId = u64;

/// Fixed keys: changing them invalidates every cookie in the field.
const KEY0: u64 = 0x6564_6765_2d70_726f; // "edge-pro"
const KEY1: u64 = 0x7879_2d61_6666_696e; // "xy-affin"

/// The environment variable holding an optional secret for the cookie hash.
/// With it set (the same value on every node, e.g. from a Kubernetes Secret),
/// a client that knows a pod's address cannot compute its cookie and pick the
/// pod at will. Changing it re-pins every session once.
pub const SECRET_ENV: &str = "EDGE_PROXY_AFFINITY_SECRET";

/// The SipHash keys: the fixed ones, or ones derived from the secret.
static KEYS: std::sync::LazyLock<(u64, u64)> =
    std::sync::LazyLock::new(|| match std::env::var(SECRET_ENV) {
        Ok(secret) if !secret.is_empty() => keys_for_secret(secret.as_bytes()),
        _ => (KEY0, KEY1),
    });

fn keys_for_secret(secret: &[u8]) -> (u64, u64) {
    let derive = |salt: u8| {
        let mut h = SipHasher13::new_with_keys(KEY0, KEY1);
        h.write_u8(salt);
        h.write(secret);
        h.finish()
    };
    (derive(0), derive(1))
}

/// Hashes endpoints for one upstream; the scope (namespace and Service) is mixed
/// in so that two Services never share ids.
#[derive(Debug, Clone)]
pub struct EndpointHasher {
    scope: Vec<u8>,
    keys: (u64, u64),
}

impl EndpointHasher {
    pub fn new(namespace: &str, service: &str) -> Self {
        let mut scope = Vec::with_capacity(namespace.len() + service.len() + 2);
        scope.extend_from_slice(namespace.as_bytes());
        scope.push(b'/');
        scope.extend_from_slice(service.as_bytes());
        scope.push(0);
        EndpointHasher { scope, keys: *KEYS }
    }

    /// As `new`, keyed by `secret` instead of the environment.
    #[cfg(test)]
    pub fn with_secret(namespace: &str, service: &str, secret: &[u8]) -> Self {
        EndpointHasher {
            keys: keys_for_secret(secret),
            ..Self::new(namespace, service)
        }
    }

    /// The id of an endpoint: a function of its IP and port only, in a fixed
    /// binary form (no string formatting, no allocation).
    pub fn id(&self, addr: &SocketAddr) -> EndpointId {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write(&self.scope);
        match addr {
            SocketAddr::V4(a) => {
                h.write_u8(4);
                h.write(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                h.write_u8(6);
                h.write(&a.ip().octets());
            }
        }
        h.write(&addr.port().to_be_bytes());
        h.finish()
    }
}

/// The cookie value for an endpoint id: 16 lowercase hex digits.
pub fn encode(id: EndpointId) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, byte) in id.to_be_bytes().iter().enumerate() {
        out[2 * i] = HEX[(byte >> 4) as usize];
        out[2 * i + 1] = HEX[(byte & 0xf) as usize];
    }
    out
}

/// Decode a cookie value; anything but exactly 16 lowercase hex digits is `None`.
pub fn decode(value: &[u8]) -> Option<EndpointId> {
    if value.len() != 16 {
        return None;
    }
    let mut id = 0u64;
    for &c in value {
        let nibble = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        id = (id << 4) | nibble as u64;
    }
    Some(id)
}

/// Find the value of cookie `name` in one `Cookie` request header value
/// (`a=1; b=2`). The first occurrence wins, as most servers read it.
pub fn find_cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (k, v) = (&pair[..eq], &pair[eq + 1..]);
        if k.trim_ascii() != name.as_bytes() {
            return None;
        }
        let v = v.trim_ascii();
        Some(
            v.strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v),
        )
    })
}

/// The `Set-Cookie` value pinning a client to `id`. `user_agent` matters only
/// for a conditional `SameSite=None`; `now` dates an `Expires`.
pub fn set_cookie(
    affinity: &Affinity,
    id: EndpointId,
    secure: bool,
    user_agent: Option<&[u8]>,
    now: std::time::SystemTime,
) -> String {
    use std::fmt::Write;
    let value = encode(id);
    let value = std::str::from_utf8(&value).unwrap_or_default();
    let mut out = format!("{}={value}; Path={}", affinity.cookie, affinity.path);
    if let Some(domain) = &affinity.domain {
        let _ = write!(out, "; Domain={domain}");
    }
    out.push_str("; HttpOnly");
    let same_site = affinity.same_site.filter(|s| {
        *s != SameSite::None
            || !affinity.same_site_none_if_compatible
            || same_site_none_compatible(user_agent.unwrap_or_default())
    });
    if let Some(same_site) = same_site {
        let _ = write!(out, "; SameSite={}", same_site.as_str());
    }
    if let Some(expires) = affinity.expires {
        let _ = write!(out, "; Expires={}", httpdate::fmt_http_date(now + expires));
    }
    if let Some(max_age) = affinity.max_age {
        let _ = write!(out, "; Max-Age={}", max_age.as_secs());
    }
    if secure || affinity.secure {
        out.push_str("; Secure");
    }
    out
}

/// Whether a client handles `SameSite=None` (Chromium's list of incompatible
/// clients, as ingress-nginx applies it): Chrome 40-69 and Safari on iOS 12 and
/// macOS 10.14 treat it as Strict or drop the cookie.
pub fn same_site_none_compatible(user_agent: &[u8]) -> bool {
    let has = |needle: &[u8]| user_agent.windows(needle.len()).any(|w| w == needle);
    let old_chrome = [b"Chrome/4", b"Chrome/5", b"Chrome/6"]
        .iter()
        .any(|n| has(*n));
    let ios_12 = has(b"CPU iPhone OS 12") || has(b"iPad; CPU OS 12");
    let mac_safari_10_14 =
        has(b"Macintosh") && has(b"Intel Mac OS X 10_14") && has(b"Safari") && !has(b"Chrome");
    !(old_chrome || ios_12 || mac_safari_10_14)
}

/// What affinity did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AffinityOutcome {
    /// Not an affinity route.
    #[default]
    None,
    /// No cookie: a new session was pinned.
    New,
    /// The cookie's endpoint served the request.
    Pinned,
    /// The cookie's endpoint is gone, not serving or refused: pinned anew.
    Repinned,
    /// The cookie's endpoint is known but failed: served elsewhere, and the
    /// cookie kept to return there (`session-cookie-change-on-failure: false`).
    Kept,
    /// The cookie's value was not one we issue (tampered, garbage): pinned anew.
    Rejected,
}

impl AffinityOutcome {
    /// The outcomes of affinity routes, as counted in the metrics.
    pub const COUNTED: [AffinityOutcome; 5] = [
        AffinityOutcome::New,
        AffinityOutcome::Pinned,
        AffinityOutcome::Repinned,
        AffinityOutcome::Kept,
        AffinityOutcome::Rejected,
    ];

    /// Whether the response pins the client (anew) with a Set-Cookie.
    pub fn sets_cookie(self) -> bool {
        !matches!(self, AffinityOutcome::Pinned | AffinityOutcome::Kept)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AffinityOutcome::None => "none",
            AffinityOutcome::New => "new",
            AffinityOutcome::Pinned => "pinned",
            AffinityOutcome::Repinned => "repinned",
            AffinityOutcome::Kept => "kept",
            AffinityOutcome::Rejected => "rejected",
        }
    }
}

/// What a request's affinity cookie asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Requested {
    /// No cookie of that name.
    #[default]
    NoCookie,
    /// A value we issued: this endpoint.
    Endpoint(EndpointId),
    /// A value we never issue (tampered, truncated, another site's).
    Invalid,
}

/// The affinity cookie `name` among a request's `Cookie` header values (the
/// first one that has it).
pub fn requested<'a>(cookie_headers: impl IntoIterator<Item = &'a [u8]>, name: &str) -> Requested {
    match cookie_headers
        .into_iter()
        .find_map(|h| find_cookie(h, name))
    {
        None => Requested::NoCookie,
        Some(value) => decode(value).map_or(Requested::Invalid, Requested::Endpoint),
    }
}

impl Requested {
    pub fn endpoint(self) -> Option<EndpointId> {
        match self {
            Requested::Endpoint(id) => Some(id),
            _ => None,
        }
    }

    /// The outcome when the request is not served by the endpoint it names:
    /// none named (new), gone or refusing (re-pinned), or not ours (rejected).
    pub fn outcome_of_a_new_pick(self) -> AffinityOutcome {
        match self {
            Requested::NoCookie => AffinityOutcome::New,
            Requested::Endpoint(_) => AffinityOutcome::Repinned,
            Requested::Invalid => AffinityOutcome::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_are_stable_across_builds_and_releases() {
        // Pinned values: if this test fails, every cookie in the field breaks.
        let h = EndpointHasher::new("default", "hello-app");
        let a: SocketAddr = "10.0.0.7:8080".parse().unwrap();
        assert_eq!(h.id(&a), h.id(&a));
        assert_eq!(
            std::str::from_utf8(&encode(h.id(&a))).unwrap(),
            PINNED_10_0_0_7
        );
    }
    const PINNED_10_0_0_7: &str = "a287f6094971deea";

    #[test]
    fn a_secret_changes_every_value_and_is_stable_itself() {
        let a: SocketAddr = "10.0.0.7:8080".parse().unwrap();
        let plain = EndpointHasher::new("default", "hello-app").id(&a);
        let s1 = EndpointHasher::with_secret("default", "hello-app", b"s3cret").id(&a);
        let s1_again = EndpointHasher::with_secret("default", "hello-app", b"s3cret").id(&a);
        let s2 = EndpointHasher::with_secret("default", "hello-app", b"other").id(&a);
        assert_eq!(s1, s1_again);
        assert_ne!(s1, plain);
        assert_ne!(s1, s2);
        // Pinned too: every node with this secret must agree, release after release.
        assert_eq!(
            std::str::from_utf8(&encode(s1)).unwrap(),
            PINNED_SECRET_10_0_0_7
        );
    }
    const PINNED_SECRET_10_0_0_7: &str = "24b9dc772979593b";

    #[test]
    fn ids_differ_by_address_port_and_service() {
        let h = EndpointHasher::new("default", "hello-app");
        let ids = [
            h.id(&"10.0.0.7:8080".parse().unwrap()),
            h.id(&"10.0.0.8:8080".parse().unwrap()),
            h.id(&"10.0.0.7:8081".parse().unwrap()),
            EndpointHasher::new("default", "other").id(&"10.0.0.7:8080".parse().unwrap()),
            EndpointHasher::new("prod", "hello-app").id(&"10.0.0.7:8080".parse().unwrap()),
            h.id(&"[::1]:8080".parse().unwrap()),
        ];
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn the_value_reveals_no_address() {
        let h = EndpointHasher::new("default", "hello-app");
        let v = encode(h.id(&"10.0.0.7:8080".parse().unwrap()));
        let v = std::str::from_utf8(&v).unwrap();
        assert!(!v.contains("0a000007") && !v.contains("1f90"), "{v}");
    }

    #[test]
    fn encode_decode_round_trip_and_rejects_garbage() {
        for id in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(decode(&encode(id)), Some(id));
        }
        for bad in [
            &b""[..],
            b"0123456789abcde",
            b"0123456789abcdef0",
            b"0123456789ABCDEF",
            b"0123456789abcdeg",
            b"../../etc/passwd",
            "é123456789abcde".as_bytes(),
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn finds_the_named_cookie() {
        let h = b"a=1; route=0123456789abcdef;b=2";
        assert_eq!(find_cookie(h, "route"), Some(&b"0123456789abcdef"[..]));
        assert_eq!(find_cookie(h, "b"), Some(&b"2"[..]));
        assert_eq!(find_cookie(b"route=\"x\"", "route"), Some(&b"x"[..]));
        assert_eq!(find_cookie(b"xroute=1; routex=2", "route"), None);
        assert_eq!(find_cookie(b"route", "route"), None);
        assert_eq!(find_cookie(b";;; =; route=", "route"), Some(&b""[..]));
        assert_eq!(find_cookie(b"route=1; route=2", "route"), Some(&b"1"[..]));
    }

    #[test]
    fn set_cookie_attributes() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let session = Affinity::new("route", None);
        assert_eq!(
            set_cookie(&session, 1, false, None, now),
            "route=0000000000000001; Path=/; HttpOnly; SameSite=Lax"
        );
        let lasting = Affinity::new("r", Some(Duration::from_secs(172800)));
        assert_eq!(
            set_cookie(&lasting, 1, true, None, now),
            "r=0000000000000001; Path=/; HttpOnly; SameSite=Lax; Max-Age=172800; Secure"
        );
        // What ingress-nginx's session-cookie-* annotations set.
        let annotated = Affinity {
            path: "/shop".into(),
            expires: Some(Duration::from_secs(3600)),
            same_site: Some(SameSite::None),
            same_site_none_if_compatible: true,
            secure: true,
            domain: Some("example.com".into()),
            ..Affinity::new("INGRESSCOOKIE", None)
        };
        assert_eq!(
            set_cookie(&annotated, 1, false, Some(b"curl/8.0"), now),
            "INGRESSCOOKIE=0000000000000001; Path=/shop; Domain=example.com; HttpOnly; \
             SameSite=None; Expires=Tue, 14 Nov 2023 23:13:20 GMT; Secure"
        );
        let iphone_12 = b"Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) Safari/604.1";
        assert!(!set_cookie(&annotated, 1, false, Some(iphone_12), now).contains("SameSite"));
        assert!(same_site_none_compatible(
            b"Mozilla/5.0 Chrome/120.0 Safari/537.36"
        ));
        assert!(!same_site_none_compatible(
            b"Mozilla/5.0 Chrome/65.0.3325 Safari/537.36"
        ));
    }

    #[test]
    fn the_requested_endpoint_and_the_outcome_of_a_new_pick() {
        let id = EndpointHasher::new("default", "web").id(&"10.0.0.1:8080".parse().unwrap());
        let value = String::from_utf8(encode(id).to_vec()).unwrap();
        let ours = format!("theme=dark; route={value}");
        let headers = [b"a=1".as_slice(), ours.as_bytes()];
        assert_eq!(requested(headers, "route"), Requested::Endpoint(id));
        assert_eq!(requested(headers, "other"), Requested::NoCookie);
        assert_eq!(
            requested([b"route=0123456789abcdeg".as_slice()], "route"),
            Requested::Invalid
        );
        assert_eq!(Requested::Endpoint(id).endpoint(), Some(id));
        assert_eq!(Requested::Invalid.endpoint(), None);
        assert_eq!(
            Requested::NoCookie.outcome_of_a_new_pick(),
            AffinityOutcome::New
        );
        assert_eq!(
            Requested::Endpoint(id).outcome_of_a_new_pick(),
            AffinityOutcome::Repinned
        );
        assert_eq!(
            Requested::Invalid.outcome_of_a_new_pick(),
            AffinityOutcome::Rejected
        );
    }
}
