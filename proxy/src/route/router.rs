//! Route lookup by host and path, then method, headers and query parameters.
//!
//! Semantics (Kubernetes Ingress as ingress-nginx applies them, and Gateway
//! API's precedence for the conditions):
//! - the most specific host group wins: exact host, then `*.domain` as an
//!   Ingress writes it (exactly one more label), then `*.domain` as Gateway
//!   API writes it (any number of labels; the longest domain first), then
//!   routes without a host. A request whose host has a group
//!   only looks in that group: no path there means 404, not a fall back to a
//!   less specific host;
//! - within the group, an Exact path equal to the request path wins, then the
//!   regular expressions (longest pattern first, as ingress-nginx orders them),
//!   then the longest Prefix that matches by whole path elements (`/api`
//!   matches `/api`, `/api/` and `/api/x`, not `/apix`);
//! - several routes on one path: the first whose conditions hold, in Gateway
//!   API's order (a method match, then more header matches, then more query
//!   matches, then a scheme condition, then the order of insertion), else the
//!   one without conditions;
//!   if none holds, the next shorter path is tried.
//!
//! Lookups cost a few hash probes per path element, whatever the route count;
//! conditions and regular expressions cost only where a host has them.

use super::{path_regex, value_regex, HostMatch, Match, PathType, StringMatch, ValueMatch};

/// Looked up on every request, built from the configuration only: foldhash
/// (randomly seeded) instead of SipHash: a few times cheaper per probe.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// What conditions are evaluated against: the request beyond host and path.
pub trait RequestParts {
    fn method(&self) -> &str;
    /// The first value of a header, by lowercase name.
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// The raw query string, without `?`.
    fn query(&self) -> Option<&str>;
    /// Whether the request came over TLS.
    fn tls(&self) -> bool {
        false
    }
}

/// A request of which nothing but host and path is known: only routes without
/// conditions match it.
pub struct HostAndPathOnly;

impl RequestParts for HostAndPathOnly {
    fn method(&self) -> &str {
        ""
    }
    fn header(&self, _: &str) -> Option<&[u8]> {
        None
    }
    fn query(&self) -> Option<&str> {
        None
    }
}

enum Matcher {
    Exact(String),
    Regex(regex::Regex),
}

impl Matcher {
    fn new(m: &StringMatch) -> Result<Self, String> {
        Ok(match m {
            StringMatch::Exact(v) => Matcher::Exact(v.clone()),
            StringMatch::Regex(p) => Matcher::Regex(value_regex(p)?),
        })
    }

    fn holds(&self, value: &[u8]) -> bool {
        match self {
            Matcher::Exact(v) => v.as_bytes() == value,
            Matcher::Regex(r) => std::str::from_utf8(value).is_ok_and(|v| r.is_match(v)),
        }
    }
}

/// Method, headers and query parameters of one candidate.
struct Conditions {
    /// As given, for duplicates and ordering.
    key: (
        Option<String>,
        Vec<ValueMatch>,
        Vec<ValueMatch>,
        Option<bool>,
    ),
    headers: Vec<(String, Matcher)>,
    query: Vec<(String, Matcher)>,
}

impl Conditions {
    fn new(m: &Match) -> Result<Self, String> {
        let compile = |list: &[ValueMatch]| -> Result<Vec<(String, Matcher)>, String> {
            list.iter()
                .map(|v| Ok((v.name.clone(), Matcher::new(&v.value)?)))
                .collect()
        };
        let mut headers = m.headers.clone();
        headers.sort();
        let mut query = m.query.clone();
        query.sort();
        Ok(Conditions {
            headers: compile(&headers)?,
            query: compile(&query)?,
            key: (m.method.clone(), headers, query, m.tls),
        })
    }

    /// Gateway API's precedence: a method match, more headers, more
    /// parameters; then a route for one scheme before one for both.
    fn rank(&self) -> (bool, usize, usize, bool) {
        (
            self.key.0.is_some(),
            self.key.1.len(),
            self.key.2.len(),
            self.key.3.is_some(),
        )
    }

    fn holds(&self, req: &impl RequestParts) -> bool {
        if self.key.3.is_some_and(|tls| tls != req.tls()) {
            return false;
        }
        if let Some(method) = &self.key.0 {
            if req.method() != method {
                return false;
            }
        }
        let headers = self
            .headers
            .iter()
            .all(|(name, m)| req.header(name).is_some_and(|v| m.holds(v)));
        headers
            && (self.query.is_empty() || {
                let query = req.query().unwrap_or("");
                self.query
                    .iter()
                    .all(|(name, m)| query_value(query, name).is_some_and(|v| m.holds(v)))
            })
    }
}

/// The first value of parameter `name` in a query string, as sent (not decoded).
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

/// The routes on one path: those with conditions, best first, and the one without.
struct Slot<T> {
    conditional: Vec<(Conditions, T)>,
    plain: Option<T>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            conditional: Vec::new(),
            plain: None,
        }
    }
}

impl<T> Slot<T> {
    fn pick(&self, req: &impl RequestParts) -> Option<&T> {
        for (conditions, target) in &self.conditional {
            if conditions.holds(req) {
                return Some(target);
            }
        }
        self.plain.as_ref()
    }

    fn insert(&mut self, m: &Match, target: T) -> Result<(), Insert<'_, T>> {
        if !m.has_conditions() {
            if self.plain.is_none() {
                self.plain = Some(target);
                return Ok(());
            }
            return Err(Insert::Taken(self.plain.as_ref().expect("checked above")));
        }
        let conditions = Conditions::new(m).map_err(Insert::Invalid)?;
        if let Some(i) = self
            .conditional
            .iter()
            .position(|(c, _)| c.key == conditions.key)
        {
            return Err(Insert::Taken(&self.conditional[i].1));
        }
        // After every candidate that ranks as high: insertion order breaks ties.
        let rank = conditions.rank();
        let at = self
            .conditional
            .iter()
            .position(|(c, _)| c.rank() < rank)
            .unwrap_or(self.conditional.len());
        self.conditional.insert(at, (conditions, target));
        Ok(())
    }
}

/// Why a route was not added.
#[derive(Debug)]
pub enum Insert<'a, T> {
    /// The same match is already taken, by this target.
    Taken(&'a T),
    /// A regular expression that does not compile.
    Invalid(String),
}

/// The routes of one host group.
struct PathTable<T> {
    exact: HashMap<String, Slot<T>>,
    /// Longest pattern first.
    regex: Vec<(String, regex::Regex, Slot<T>)>,
    prefix: HashMap<String, Slot<T>>,
}

impl<T> Default for PathTable<T> {
    fn default() -> Self {
        PathTable {
            exact: HashMap::default(),
            regex: Vec::new(),
            prefix: HashMap::default(),
        }
    }
}

impl<T> PathTable<T> {
    fn find(&self, path: &str, req: &impl RequestParts) -> Option<&T> {
        if let Some(t) = self.exact.get(path).and_then(|s| s.pick(req)) {
            return Some(t);
        }
        for (_, regex, slot) in &self.regex {
            if regex.is_match(path) {
                if let Some(t) = slot.pick(req) {
                    return Some(t);
                }
            }
        }
        if self.prefix.is_empty() {
            return None;
        }
        // Try the whole path, then each shorter path at an element boundary.
        let mut candidate = path.trim_end_matches('/');
        loop {
            let key = if candidate.is_empty() { "/" } else { candidate };
            if let Some(t) = self.prefix.get(key).and_then(|s| s.pick(req)) {
                return Some(t);
            }
            if candidate.is_empty() {
                return None;
            }
            match candidate.rfind('/') {
                Some(i) => candidate = &candidate[..i],
                None => return None,
            }
        }
    }

    fn slot(&mut self, m: &Match) -> Result<&mut Slot<T>, String> {
        Ok(match m.path_type {
            PathType::Exact => self.exact.entry(m.path.clone()).or_default(),
            PathType::Prefix => self.prefix.entry(m.path.clone()).or_default(),
            PathType::Regex => {
                let i = match self.regex.iter().position(|(p, _, _)| *p == m.path) {
                    Some(i) => i,
                    None => {
                        let regex = path_regex(&m.path)?;
                        let at = self
                            .regex
                            .iter()
                            .position(|(p, _, _)| p.len() < m.path.len())
                            .unwrap_or(self.regex.len());
                        self.regex
                            .insert(at, (m.path.clone(), regex, Slot::default()));
                        at
                    }
                };
                &mut self.regex[i].2
            }
        })
    }
}

/// Maps a request to the `T` of the best route: built once per snapshot,
/// then shared read-only by every request.
pub struct Router<T> {
    exact: HashMap<String, PathTable<T>>,
    wildcard: HashMap<String, PathTable<T>>,
    /// Gateway API's `*.domain`, by domain.
    suffix: HashMap<String, PathTable<T>>,
    any: Option<PathTable<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            exact: HashMap::default(),
            wildcard: HashMap::default(),
            suffix: HashMap::default(),
            any: None,
        }
    }
}

impl<T> std::fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Router({} hosts, {} wildcards, any: {})",
            self.exact.len(),
            self.wildcard.len(),
            self.any.is_some()
        )
    }
}

impl<T> Router<T> {
    /// Add a route. Paths must be normalized as the sources do it. A match
    /// already taken keeps the first route added and names it.
    pub fn insert(&mut self, m: &Match, target: T) -> Result<(), Insert<'_, T>> {
        let table = match &m.host {
            HostMatch::Exact(h) => self.exact.entry(h.clone()).or_default(),
            HostMatch::Wildcard(d) => self.wildcard.entry(d.clone()).or_default(),
            HostMatch::Suffix(d) => self.suffix.entry(d.clone()).or_default(),
            HostMatch::Any => self.any.get_or_insert_with(PathTable::default),
        };
        table.slot(m).map_err(Insert::Invalid)?.insert(m, target)
    }

    /// The route for a host and path, among routes without conditions.
    pub fn find(&self, host: &str, path: &str) -> Option<&T> {
        self.find_request(host, path, &HostAndPathOnly)
    }

    /// Find the route for a request. `host` must be lowercase and without port
    /// (see [`normalize_host`]); `path` is the request path without the query.
    pub fn find_request(&self, host: &str, path: &str, req: &impl RequestParts) -> Option<&T> {
        self.table_for(host)?.find(path, req)
    }

    fn table_for(&self, host: &str) -> Option<&PathTable<T>> {
        if let Some(t) = self.exact.get(host) {
            return Some(t);
        }
        if !self.wildcard.is_empty() {
            if let Some((_, parent)) = host.split_once('.') {
                if let Some(t) = self.wildcard.get(parent) {
                    return Some(t);
                }
            }
        }
        if !self.suffix.is_empty() {
            // The longest domain first: `a.b.example.com` tries
            // `b.example.com`, `example.com`, `com`.
            let mut rest = host;
            while let Some((_, parent)) = rest.split_once('.') {
                if let Some(t) = self.suffix.get(parent) {
                    return Some(t);
                }
                rest = parent;
            }
        }
        self.any.as_ref()
    }
}

/// The host part of a Host header or URI authority, lowercased, without port.
/// Borrows when the input is already in that form (the common case).
pub fn normalize_host(authority: &str) -> std::borrow::Cow<'_, str> {
    let host = if authority.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a port after them.
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(h: &str) -> HostMatch {
        HostMatch::Exact(h.into())
    }

    fn add<T: std::fmt::Debug>(r: &mut Router<T>, host: HostMatch, path: &str, t: PathType, v: T) {
        r.insert(&Match::path(host, path, t), v).unwrap();
    }

    fn router() -> Router<&'static str> {
        let mut r = Router::default();
        add(&mut r, exact("a.com"), "/", PathType::Prefix, "a-root");
        add(&mut r, exact("a.com"), "/api", PathType::Prefix, "a-api");
        add(
            &mut r,
            exact("a.com"),
            "/api/v1",
            PathType::Prefix,
            "a-api-v1",
        );
        add(
            &mut r,
            exact("a.com"),
            "/api",
            PathType::Exact,
            "a-api-exact",
        );
        add(&mut r, exact("a.com"), "/login", PathType::Exact, "a-login");
        add(
            &mut r,
            HostMatch::Wildcard("b.com".into()),
            "/",
            PathType::Prefix,
            "star-b",
        );
        add(
            &mut r,
            exact("x.b.com"),
            "/only",
            PathType::Prefix,
            "x-b-only",
        );
        add(&mut r, HostMatch::Any, "/", PathType::Prefix, "any");
        r
    }

    #[test]
    fn prefix_matches_by_path_element() {
        let r = router();
        assert_eq!(r.find("a.com", "/api/x"), Some(&"a-api"));
        assert_eq!(r.find("a.com", "/api/"), Some(&"a-api"));
        assert_eq!(r.find("a.com", "/apix"), Some(&"a-root"));
        assert_eq!(r.find("a.com", "/api/v1"), Some(&"a-api-v1"));
        assert_eq!(r.find("a.com", "/api/v1/users/7"), Some(&"a-api-v1"));
        assert_eq!(r.find("a.com", "/api/v10"), Some(&"a-api"));
        assert_eq!(r.find("a.com", "/"), Some(&"a-root"));
        assert_eq!(r.find("a.com", ""), Some(&"a-root"));
    }

    #[test]
    fn exact_beats_prefix_of_equal_length_and_is_exact() {
        let r = router();
        assert_eq!(r.find("a.com", "/api"), Some(&"a-api-exact"));
        assert_eq!(r.find("a.com", "/login"), Some(&"a-login"));
        assert_eq!(r.find("a.com", "/login/"), Some(&"a-root"));
        assert_eq!(r.find("a.com", "/login/x"), Some(&"a-root"));
    }

    #[test]
    fn most_specific_host_wins_without_fallback() {
        let r = router();
        assert_eq!(r.find("y.b.com", "/z"), Some(&"star-b"));
        // x.b.com has its own group: a path it lacks is a 404, not star-b.
        assert_eq!(r.find("x.b.com", "/only/1"), Some(&"x-b-only"));
        assert_eq!(r.find("x.b.com", "/z"), None);
        // The wildcard covers exactly one label.
        assert_eq!(r.find("b.com", "/"), Some(&"any"));
        assert_eq!(r.find("z.y.b.com", "/"), Some(&"any"));
        assert_eq!(r.find("other.org", "/"), Some(&"any"));
    }

    #[test]
    fn gateway_wildcards_cover_any_depth_longest_domain_first() {
        let mut r = Router::default();
        let suffix = |d: &str| HostMatch::Suffix(d.into());
        add(
            &mut r,
            suffix("example.com"),
            "/",
            PathType::Prefix,
            "any-depth",
        );
        add(
            &mut r,
            suffix("b.example.com"),
            "/",
            PathType::Prefix,
            "under-b",
        );
        add(&mut r, exact("x.example.com"), "/", PathType::Prefix, "x");
        assert_eq!(r.find("a.example.com", "/"), Some(&"any-depth"));
        assert_eq!(r.find("a.c.example.com", "/"), Some(&"any-depth"));
        assert_eq!(r.find("a.b.example.com", "/"), Some(&"under-b"));
        assert_eq!(r.find("x.example.com", "/"), Some(&"x"));
        assert_eq!(
            r.find("example.com", "/"),
            None,
            "the domain itself is not covered"
        );
    }

    #[test]
    fn a_scheme_condition_splits_one_path_between_plain_and_tls() {
        let mut r = Router::default();
        let mut plain = Match::path(exact("a.com"), "/", PathType::Prefix);
        plain.tls = Some(false);
        let mut tls = plain.clone();
        tls.tls = Some(true);
        r.insert(&plain, "redirect").unwrap();
        r.insert(&tls, "app").unwrap();
        struct Scheme(bool);
        impl RequestParts for Scheme {
            fn method(&self) -> &str {
                "GET"
            }
            fn header(&self, _: &str) -> Option<&[u8]> {
                None
            }
            fn query(&self) -> Option<&str> {
                None
            }
            fn tls(&self) -> bool {
                self.0
            }
        }
        assert_eq!(
            r.find_request("a.com", "/x", &Scheme(false)),
            Some(&"redirect")
        );
        assert_eq!(r.find_request("a.com", "/x", &Scheme(true)), Some(&"app"));
    }

    #[test]
    fn no_route_is_none() {
        let mut r = Router::default();
        add(&mut r, exact("a.com"), "/app", PathType::Prefix, 1);
        assert_eq!(r.find("b.com", "/app"), None);
        assert_eq!(r.find("a.com", "/"), None);
        assert_eq!(r.find("a.com", "/ap"), None);
    }

    #[test]
    fn a_taken_match_names_its_holder() {
        let mut r = Router::default();
        add(&mut r, exact("a.com"), "/", PathType::Prefix, "first");
        let m = Match::path(exact("a.com"), "/", PathType::Prefix);
        assert!(matches!(
            r.insert(&m, "second"),
            Err(Insert::Taken(&"first"))
        ));
        let bad = Match::path(exact("a.com"), "/(", PathType::Regex);
        assert!(matches!(r.insert(&bad, "bad"), Err(Insert::Invalid(_))));
    }

    struct Req {
        method: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        query: Option<&'static str>,
    }

    impl RequestParts for Req {
        fn method(&self) -> &str {
            self.method
        }
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        }
        fn query(&self) -> Option<&str> {
            self.query
        }
    }

    fn get(headers: Vec<(&'static str, &'static str)>, query: Option<&'static str>) -> Req {
        Req {
            method: "GET",
            headers,
            query,
        }
    }

    #[test]
    fn conditions_choose_among_routes_of_one_path_in_gateway_order() {
        let mut r = Router::default();
        let host = exact("a.com");
        let header = |n: &str, v: StringMatch| ValueMatch {
            name: n.into(),
            value: v,
        };
        let base = Match::path(host.clone(), "/", PathType::Prefix);
        r.insert(&base, "plain").unwrap();
        let mut one_header = base.clone();
        one_header.headers = vec![header("version", StringMatch::Exact("two".into()))];
        r.insert(&one_header, "v2").unwrap();
        let mut two_headers = one_header.clone();
        two_headers
            .headers
            .push(header("env", StringMatch::Regex("canary|beta".into())));
        r.insert(&two_headers, "v2-canary").unwrap();
        let mut by_query = base.clone();
        by_query.query = vec![header("debug", StringMatch::Exact("1".into()))];
        r.insert(&by_query, "debug").unwrap();
        let mut post = base.clone();
        post.method = Some("POST".into());
        r.insert(&post, "post").unwrap();
        // Deeper path with a condition only: falls back to "/" when it fails.
        let mut api = Match::path(host, "/api", PathType::Prefix);
        api.headers = vec![header("version", StringMatch::Exact("three".into()))];
        r.insert(&api, "api-v3").unwrap();

        let find = |req: Req, path: &str| *r.find_request("a.com", path, &req).unwrap();
        assert_eq!(find(get(vec![], None), "/x"), "plain");
        assert_eq!(find(get(vec![("version", "two")], None), "/x"), "v2");
        assert_eq!(
            find(get(vec![("version", "two"), ("env", "beta")], None), "/x"),
            "v2-canary"
        );
        assert_eq!(
            find(
                get(vec![("version", "two"), ("env", "betamax")], None),
                "/x"
            ),
            "v2",
            "a regex matches the whole value"
        );
        assert_eq!(find(get(vec![], Some("a=b&debug=1")), "/x"), "debug");
        assert_eq!(find(get(vec![], Some("debug=10")), "/x"), "plain");
        let post_with_header = Req {
            method: "POST",
            headers: vec![("version", "two")],
            query: None,
        };
        assert_eq!(
            find(post_with_header, "/x"),
            "post",
            "a method match ranks first"
        );
        assert_eq!(
            find(get(vec![("version", "three")], None), "/api/x"),
            "api-v3"
        );
        assert_eq!(find(get(vec![], None), "/api/x"), "plain");
        // Without request details only unconditional routes match.
        assert_eq!(r.find("a.com", "/api/x"), Some(&"plain"));
    }

    #[test]
    fn regex_paths_are_anchored_case_insensitive_and_longest_first() {
        let mut r = Router::default();
        let host = exact("r.com");
        add(
            &mut r,
            host.clone(),
            "/api(/|$)(.*)",
            PathType::Regex,
            "api",
        );
        add(
            &mut r,
            host.clone(),
            "/api/v[0-9]+/users",
            PathType::Regex,
            "users",
        );
        add(&mut r, host.clone(), "/exact", PathType::Exact, "exact");
        add(&mut r, host, "/", PathType::Prefix, "root");
        assert_eq!(r.find("r.com", "/api/v2/users/7"), Some(&"users"));
        assert_eq!(r.find("r.com", "/API/thing"), Some(&"api"));
        assert_eq!(r.find("r.com", "/api"), Some(&"api"));
        assert_eq!(
            r.find("r.com", "/x/api"),
            Some(&"root"),
            "anchored at the start"
        );
        assert_eq!(r.find("r.com", "/exact"), Some(&"exact"));
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert!(matches!(
            normalize_host("a.com"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
