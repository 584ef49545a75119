//! Route lookup by host and path.
//!
//! Semantics (Kubernetes Ingress, as ingress-nginx applies them):
//! - the most specific host group wins: exact host, then `*.domain` (exactly one
//!   more label), then routes without a host. A request whose host has a group
//!   only looks in that group: no path there means 404, not a fall back to a
//!   less specific host;
//! - within the group, an Exact path equal to the request path wins, then the
//!   longest Prefix that matches by whole path elements (`/api` matches `/api`,
//!   `/api/` and `/api/x`, not `/apix`).
//!
//! Lookups cost a few hash probes per path element, whatever the route count.

use crate::config::{HostMatch, PathType};

/// Looked up on every request, built from the configuration only: foldhash
/// (randomly seeded) instead of SipHash: a few times cheaper per probe.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The routes of one host group.
#[derive(Debug)]
struct PathTable<T> {
    exact: HashMap<String, T>,
    prefix: HashMap<String, T>,
}

impl<T> Default for PathTable<T> {
    fn default() -> Self {
        PathTable {
            exact: HashMap::default(),
            prefix: HashMap::default(),
        }
    }
}

impl<T> PathTable<T> {
    fn find(&self, path: &str) -> Option<&T> {
        if let Some(t) = self.exact.get(path) {
            return Some(t);
        }
        if self.prefix.is_empty() {
            return None;
        }
        // Try the whole path, then each shorter path at an element boundary.
        let mut candidate = path.trim_end_matches('/');
        loop {
            if let Some(t) = self
                .prefix
                .get(if candidate.is_empty() { "/" } else { candidate })
            {
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
}

/// Maps (host, path) to the `T` of the best route: built once per configuration,
/// then shared read-only by every request.
#[derive(Debug)]
pub struct Router<T> {
    exact: HashMap<String, PathTable<T>>,
    wildcard: HashMap<String, PathTable<T>>,
    any: Option<PathTable<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            exact: HashMap::default(),
            wildcard: HashMap::default(),
            any: None,
        }
    }
}

impl<T> Router<T> {
    /// Add a route. `path` must be normalized as the configuration does it.
    /// A duplicate (host, path, type) keeps the first one added: `false`.
    pub fn insert(&mut self, host: &HostMatch, path: &str, path_type: PathType, target: T) -> bool {
        let table = match host {
            HostMatch::Exact(h) => self.exact.entry(h.clone()).or_default(),
            HostMatch::Wildcard(d) => self.wildcard.entry(d.clone()).or_default(),
            HostMatch::Any => self.any.get_or_insert_with(PathTable::default),
        };
        let map = match path_type {
            PathType::Exact => &mut table.exact,
            PathType::Prefix => &mut table.prefix,
        };
        match map.entry(path.to_string()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(target);
                true
            }
        }
    }

    /// Find the route for a request. `host` must be lowercase and without port
    /// (see [`normalize_host`]); `path` is the request path without the query.
    pub fn find(&self, host: &str, path: &str) -> Option<&T> {
        self.table_for(host)?.find(path)
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

    fn router() -> Router<&'static str> {
        let mut r = Router::default();
        r.insert(&exact("a.com"), "/", PathType::Prefix, "a-root");
        r.insert(&exact("a.com"), "/api", PathType::Prefix, "a-api");
        r.insert(&exact("a.com"), "/api/v1", PathType::Prefix, "a-api-v1");
        r.insert(&exact("a.com"), "/api", PathType::Exact, "a-api-exact");
        r.insert(&exact("a.com"), "/login", PathType::Exact, "a-login");
        r.insert(
            &HostMatch::Wildcard("b.com".into()),
            "/",
            PathType::Prefix,
            "star-b",
        );
        r.insert(&exact("x.b.com"), "/only", PathType::Prefix, "x-b-only");
        r.insert(&HostMatch::Any, "/", PathType::Prefix, "any");
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
    fn no_route_is_none() {
        let mut r = Router::default();
        r.insert(&exact("a.com"), "/app", PathType::Prefix, 1);
        assert_eq!(r.find("b.com", "/app"), None);
        assert_eq!(r.find("a.com", "/"), None);
        assert_eq!(r.find("a.com", "/ap"), None);
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
