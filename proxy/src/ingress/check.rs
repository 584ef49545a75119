//! `edge-proxy ingress-check FILE...`: what edge-proxy would serve of a
//! cluster's Ingresses, offline (no API server, no certificates read): per
//! Ingress, its routes and what each does, where it differs from
//! ingress-nginx, what is ignored and what is refused. For a migration:
//! `kubectl get ingress -A -o yaml | edge-proxy ingress-check -`.
//!
//! Every Ingress is checked as if it were of our class (its own class is
//! shown), through the same `translate()` the controller runs, and conflicts
//! are decided as the snapshot builder decides them (the older one wins).

use super::annotations::PREFIX;
use super::translate::{self, Cluster};
use crate::problems::{Problem, ProblemKind};
use crate::route::router::Insert;
use crate::route::{Policy, Route, Router};
use k8s_openapi::api::networking::v1::Ingress;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;

/// Where an annotation we serve behaves differently from ingress-nginx.
const DIFFERENCES: &[(&str, &str)] = &[
    ("use-regex", "paths are the regex crate's regular expressions: no look-around, no backreferences (PCRE in nginx)"),
    ("rewrite-target", "paths are the regex crate's regular expressions: no look-around, no backreferences (PCRE in nginx)"),
    ("canary-by-header-pattern", "the regex crate's syntax, not PCRE"),
    ("canary-weight", "exact shares of each canary-weight-total requests, where nginx draws at random"),
    ("load-balance", "ewma is the endpoint with the fewest requests in flight, not a latency-weighted average"),
    ("affinity-mode", "both modes keep a session on its pod while it is ready; `balanced` does not rebalance sessions on scale-up"),
];

/// The outcome: the report, and whether everything is served as written.
pub struct Report {
    pub text: String,
    pub as_written: bool,
}

/// Check the Ingresses in `inputs` (name, YAML or JSON text; several
/// documents, and `List`s as `kubectl get -o yaml` writes them).
pub fn check(inputs: &[(String, String)]) -> Result<Report, String> {
    let mut ingresses = Vec::new();
    let mut skipped = BTreeMap::<String, usize>::new();
    for (name, text) in inputs {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .map_err(|e| format!("{name}: document {}: not YAML: {e}", i + 1))?;
            collect(value, name, &mut ingresses, &mut skipped)?;
        }
    }
    // One Ingress per namespace/name, as in a cluster: a later one replaces.
    let mut seen: HashMap<(Option<String>, Option<String>), usize> = HashMap::new();
    let mut unique: Vec<Ingress> = Vec::new();
    let mut notes = Vec::new();
    for ingress in ingresses {
        let m = &ingress.metadata;
        let key = (m.namespace.clone(), m.name.clone());
        match seen.get(&key) {
            Some(&i) => {
                notes.push(format!(
                    "note: {}/{} is given more than once: the last one is checked",
                    m.namespace.as_deref().unwrap_or("default"),
                    m.name.as_deref().unwrap_or("")
                ));
                unique[i] = ingress;
            }
            None => {
                seen.insert(key, unique.len());
                unique.push(ingress);
            }
        }
    }
    let mut ingresses = unique;
    // Our class for all; the original is shown.
    let mut classes = HashMap::new();
    for ingress in &mut ingresses {
        let ns = ingress
            .metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        let id = format!("{ns}/{}", ingress.metadata.name.clone().unwrap_or_default());
        let spec = ingress.spec.get_or_insert_with(Default::default);
        let legacy = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(translate::CLASS_ANNOTATION).cloned());
        let class = spec
            .ingress_class_name
            .take()
            .or(legacy)
            .unwrap_or_else(|| "none".into());
        classes.insert(id, class);
        spec.ingress_class_name = Some("edge-proxy".into());
    }
    let ingresses: Vec<Arc<Ingress>> = ingresses.into_iter().map(Arc::new).collect();
    let no_secrets = HashMap::new();
    // Offline, every certificate is taken to load: the routes then are the
    // ones a cluster with its Secrets in place gets.
    let t = translate::translate(
        &ingresses,
        &Cluster {
            class: "edge-proxy",
            classes: &[],
            secrets: &no_secrets,
            file_cert_covers: &|_| true,
            last_loaded: &HashMap::new(),
            named: None,
            allowed_response_headers: &[],
        },
    );
    // The Secrets are in the cluster, not here: not a problem of the Ingress.
    let mut problems: Vec<Problem> = t
        .problems
        .into_iter()
        .filter(|p| p.kind != ProblemKind::TlsSecret)
        .collect();
    problems.extend(conflicts(&t.routes));
    let mut report = report(&ingresses, &classes, &t.routes, &problems, &skipped);
    for note in notes {
        report.text.push_str(&note);
        report.text.push('\n');
    }
    Ok(report)
}

/// Ingresses in one document: an Ingress, or a List of them.
fn collect(
    value: serde_yaml::Value,
    name: &str,
    out: &mut Vec<Ingress>,
    skipped: &mut BTreeMap<String, usize>,
) -> Result<(), String> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    match kind.as_str() {
        "" if value.is_null() => Ok(()),
        "Ingress" => {
            let json = serde_json::to_value(&value).map_err(|e| format!("{name}: {e}"))?;
            let ingress: Ingress = serde_json::from_value(json)
                .map_err(|e| format!("{name}: an Ingress that does not parse: {e}"))?;
            out.push(ingress);
            Ok(())
        }
        k if k == "List" || k.ends_with("List") => {
            let items = value
                .get("items")
                .and_then(|i| i.as_sequence())
                .cloned()
                .unwrap_or_default();
            for item in items {
                collect(item, name, out, skipped)?;
            }
            Ok(())
        }
        other => {
            *skipped
                .entry(if other.is_empty() {
                    "(no kind)".into()
                } else {
                    other.into()
                })
                .or_default() += 1;
            Ok(())
        }
    }
}

/// Conflicts as the snapshot builder decides them: routes claim their match
/// oldest first; a later one on a taken match is not served.
fn conflicts(routes: &[Route]) -> Vec<Problem> {
    let mut sorted: Vec<&Route> = routes.iter().collect();
    sorted.sort_by(|a, b| a.origin.cmp(&b.origin));
    let mut router = Router::default();
    let mut out = Vec::new();
    for route in sorted {
        if let Err(Insert::Taken(winner)) = router.insert(&route.matches, route.origin.clone()) {
            if *winner != route.origin {
                out.push(crate::state::conflict(route, winner));
            }
        }
    }
    out
}

fn report(
    ingresses: &[Arc<Ingress>],
    classes: &HashMap<String, String>,
    routes: &[Route],
    problems: &[Problem],
    skipped: &BTreeMap<String, usize>,
) -> Report {
    let mut text = String::new();
    let (mut as_written, mut differing, mut refused) = (0, 0, 0);
    for ingress in ingresses {
        let m = &ingress.metadata;
        let id = format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or("")
        );
        let own: Vec<&Route> = routes.iter().filter(|r| r.origin.object() == id).collect();
        let mine: Vec<&Problem> = problems.iter().filter(|p| p.object == id).collect();
        let not_served = mine.iter().any(|p| p.kind == ProblemKind::Refused);
        let annotations = m.annotations.clone().unwrap_or_default();
        let differences: Vec<(&str, &str)> = DIFFERENCES
            .iter()
            .filter(|(name, _)| annotations.contains_key(&format!("{PREFIX}{name}")))
            .copied()
            .collect();
        let canary = annotations
            .get(&format!("{PREFIX}canary"))
            .is_some_and(|v| v == "true");
        let verdict = if not_served {
            refused += 1;
            "NOT SERVED".to_string()
        } else if mine.is_empty() && differences.is_empty() {
            as_written += 1;
            "served as written".to_string()
        } else {
            differing += 1;
            "served, with differences".to_string()
        };
        let _ = writeln!(
            text,
            "{id} (class {}): {verdict}",
            classes.get(&id).map_or("none", String::as_str)
        );
        for route in &own {
            let _ = writeln!(text, "  route {}", describe(route));
        }
        if canary && !not_served {
            let _ = writeln!(
                text,
                "  canary: its backends join the main Ingress's route for the same host and path"
            );
        }
        for tls in ingress.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let hosts = tls.hosts.clone().unwrap_or_default().join(", ");
            let secret = tls.secret_name.as_deref().unwrap_or("(none)");
            let _ = writeln!(
                text,
                "  tls: {hosts} from Secret {secret} (read in the cluster, not here)"
            );
        }
        for p in &mine {
            let label = match p.kind {
                ProblemKind::Refused | ProblemKind::RefusedAnnotation => "refused",
                ProblemKind::UnsupportedAnnotation => "ignored",
                ProblemKind::Conflict => "conflict",
                _ => "problem",
            };
            let _ = writeln!(text, "  {label}: {}", p.message);
        }
        for (name, note) in differences {
            let _ = writeln!(text, "  differs: {PREFIX}{name}: {note}");
        }
    }
    let _ = writeln!(
        text,
        "{} Ingresses: {as_written} served as written, {differing} served with differences, {refused} not served",
        ingresses.len()
    );
    for (kind, n) in skipped {
        let _ = writeln!(text, "skipped: {n} {kind} (not an Ingress)");
    }
    Report {
        text,
        as_written: differing == 0 && refused == 0,
    }
}

/// `host path (type) -> backends; what its policies do`.
fn describe(route: &Route) -> String {
    let m = &route.matches;
    let backends: Vec<String> = route
        .backends
        .iter()
        .map(|b| match b.upstream.cluster_ip {
            Some(_) => format!("{} (its ClusterIP)", b.upstream),
            None => b.upstream.to_string(),
        })
        .collect();
    let mut out = format!(
        "{} {} ({:?}) -> {}",
        m.host,
        m.path,
        m.path_type,
        backends.join(" + ")
    );
    for policy in &route.policies {
        let what = match policy {
            Policy::AllowSources(nets) => format!("only {} address ranges", nets.len()),
            Policy::DenySources(nets) => format!("not {} address ranges", nets.len()),
            Policy::RedirectHttps => "plain HTTP redirected to https".into(),
            Policy::Redirect(r) => format!("redirect {} to {}", r.code, r.location),
            Policy::AppRoot(root) => format!("/ redirected (302) to {root}"),
            Policy::Rewrite(r) => format!("path rewritten to {}", r.target),
            // Gateway API's filters: never from an Ingress.
            Policy::ModifyRequestHeaders(_) => "request headers modified".into(),
            Policy::ModifyResponseHeaders(_) => "response headers modified".into(),
            Policy::RedirectTo(r) => format!("redirect {}", r.code),
            Policy::RewriteUrl(_) => "host or path rewritten".into(),
            Policy::InvalidBackends(w) => format!("weight {w} answered 500"),
            Policy::Mirror(m) => format!("mirrored to {} backends", m.len()),
            Policy::SetRequestHeaders(h) => {
                let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
                format!("sets {}", names.join(", "))
            }
            Policy::SetResponseHeaders(h) if h.is_empty() => {
                "response headers from its custom-headers ConfigMap (read in the cluster, not here; \
                 their names must be in ingress.allowed_response_headers)"
                    .into()
            }
            Policy::SetResponseHeaders(h) => {
                let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
                format!("responses get {}", names.join(", "))
            }
            Policy::Canary(c) => format!(
                "canary (header {}, cookie {}, weight {}/{})",
                c.header.as_deref().unwrap_or("-"),
                c.cookie.as_deref().unwrap_or("-"),
                c.weight,
                c.weight_total
            ),
            Policy::MaxBodyBytes(u64::MAX) => "no body size limit".into(),
            Policy::MaxBodyBytes(n) => format!("bodies up to {n} bytes"),
            Policy::Timeouts(_) => "own timeouts".into(),
            Policy::Affinity(a) => format!("cookie affinity ({})", a.cookie),
            Policy::ExternalAuth(a) => match &a.signin {
                Some(signin) => format!("authenticated by {} (sign in at {signin})", a.url),
                None => format!("authenticated by {}", a.url),
            },
            Policy::BasicAuth(b) => format!("basic auth, users from {}", b.source),
            Policy::ClientLimits(l) => {
                let mut parts: Vec<String> = l
                    .rates
                    .iter()
                    .map(|r| {
                        let per = if r.per.as_secs() == 60 { "minute" } else { "second" };
                        format!("{} requests a {per} (burst {})", r.requests, r.burst)
                    })
                    .collect();
                if let Some(n) = l.connections {
                    parts.push(format!("{n} requests in flight"));
                }
                format!("per client and node: {}", parts.join(", "))
            }
            Policy::ResponseRate(r) => format!(
                "responses at {} KB/s after {} KB",
                r.bytes_per_second / 1024,
                r.after_bytes / 1024
            ),
            Policy::Cors(c) if c.allow_origins.is_empty() => {
                "CORS enabled, but no origin is allowed".into()
            }
            Policy::Cors(c) => format!("CORS for {}", c.allow_origins.join(", ")),
            Policy::HashBy(h) if h.subset > 1 => {
                format!(
                    "consistent hashing on {} to subsets of {} pods",
                    h.key, h.subset
                )
            }
            Policy::HashBy(h) => format!("consistent hashing on {}", h.key),
            Policy::ErrorBackend(e) if e.intercept.is_empty() => {
                format!("default backend {} when no pod is ready", e.upstream)
            }
            Policy::ErrorBackend(e) => {
                let codes: Vec<String> = e.intercept.iter().map(u16::to_string).collect();
                format!(
                    "default backend {} when no pod is ready, and for error pages {}",
                    e.upstream,
                    codes.join(",")
                )
            }
            Policy::LeastLoaded => "least-loaded endpoint".into(),
            Policy::UpstreamProtocol(p) => format!(
                "to the pods: {}{}{}",
                match (p.tls, p.http2) {
                    (false, false) => "HTTP/1.1",
                    (true, false) => "HTTPS",
                    (false, true) => "gRPC (h2c)",
                    (true, true) => "gRPC over TLS",
                },
                if p.tls && p.verify {
                    ", certificate verified"
                } else {
                    ""
                },
                match &p.trust {
                    Some(t) => format!(", CA and client certificate from {}", t.source),
                    None => String::new(),
                }
            ),
        };
        out.push_str("; ");
        out.push_str(&what);
    }
    out
}
