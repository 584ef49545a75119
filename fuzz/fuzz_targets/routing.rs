//! Route lookup against a plain reference: the router's hash probes must pick
//! the same route as "filter every route that matches, take the most specific".
#![no_main]

use arbitrary::Arbitrary;
use edge_proxy::route::{normalize_host, HostMatch, Match, PathType, Router};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<(u8, String, Vec<String>, bool)>,
    host: String,
    path: String,
}

/// Host names and path elements from a small alphabet, so that matches happen.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| matches!(c, 'a'..='c' | '.' | '-'))
        .take(8)
        .collect()
}

struct Route {
    host: HostMatch,
    path: String,
    path_type: PathType,
}

fn host_matches(route: &HostMatch, host: &str) -> bool {
    match route {
        HostMatch::Exact(h) => h == host,
        HostMatch::Wildcard(d) => host.split_once('.').is_some_and(|(_, parent)| parent == d),
        HostMatch::Suffix(d) => host.ends_with(&format!(".{d}")),
        HostMatch::Any => true,
    }
}

fn path_matches(route: &Route, path: &str) -> bool {
    match route.path_type {
        PathType::Exact => route.path == path,
        // The fuzz input makes no regular-expression routes.
        PathType::Regex => false,
        PathType::Prefix => {
            route.path == "/"
                || path.trim_end_matches('/') == route.path
                || path.starts_with(&format!("{}/", route.path))
        }
    }
}

/// Host group first (exact, one-label wildcard, any-depth wildcard with the
/// longest domain first, any), then an exact path, then the longest prefix.
fn reference(routes: &[Route], host: &str, path: &str) -> Option<usize> {
    let rank = |h: &HostMatch| match h {
        HostMatch::Exact(_) => (0, 0),
        HostMatch::Wildcard(_) => (1, 0),
        HostMatch::Suffix(d) => (2, usize::MAX - d.len()),
        HostMatch::Any => (3, 0),
    };
    let group = routes
        .iter()
        .filter(|r| host_matches(&r.host, host))
        .map(|r| rank(&r.host))
        .min()?;
    let in_group = |r: &&Route| rank(&r.host) == group && host_matches(&r.host, host);
    if let Some(i) = routes
        .iter()
        .position(|r| in_group(&r) && r.path_type == PathType::Exact && r.path == path)
    {
        return Some(i);
    }
    let mut best: Option<usize> = None;
    for (i, r) in routes.iter().enumerate() {
        if in_group(&r)
            && r.path_type == PathType::Prefix
            && path_matches(r, path)
            && best.is_none_or(|b| r.path.len() > routes[b].path.len())
        {
            best = Some(i);
        }
    }
    best
}

fuzz_target!(|input: Input| {
    let mut routes = Vec::new();
    for (kind, host, elements, exact) in input.routes.iter().take(32) {
        let host = clean(host);
        let host = match kind % 4 {
            _ if host.is_empty() => HostMatch::Any,
            0 => HostMatch::Exact(host),
            1 => HostMatch::Wildcard(host),
            2 => HostMatch::Suffix(host),
            _ => HostMatch::Any,
        };
        // Paths as the configuration normalizes them: "/" and elements, no trailing "/".
        let elements: Vec<String> = elements.iter().take(4).map(|e| clean(e)).collect();
        let path = format!("/{}", elements.join("/"));
        if path.contains("//") {
            continue;
        }
        let path_type = if *exact {
            PathType::Exact
        } else {
            PathType::Prefix
        };
        let path = match path_type {
            PathType::Prefix if path.len() > 1 => path.trim_end_matches('/').to_string(),
            _ => path,
        };
        routes.push(Route {
            host,
            path,
            path_type,
        });
    }
    let mut router = Router::default();
    for (i, r) in routes.iter().enumerate() {
        let _ = router.insert(&Match::path(r.host.clone(), r.path.clone(), r.path_type), i);
    }
    // Whatever the host header holds, normalizing it never panics.
    let host = normalize_host(&input.host).into_owned();
    let path = format!("/{}", input.path.chars().take(40).collect::<String>());
    let host = clean(&host);
    // Duplicates keep the first route added, as in the reference.
    assert_eq!(
        router.find(&host, &path).copied(),
        reference(&routes, &host, &path),
        "host {host:?} path {path:?} routes {:?}",
        routes
            .iter()
            .map(|r| (&r.host, &r.path, r.path_type))
            .collect::<Vec<_>>()
    );
});
