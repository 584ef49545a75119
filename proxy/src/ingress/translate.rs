//! From Ingress objects to routes (the route model, `crate::route`) and
//! certificates: a pure function of what the API server holds, so every node
//! computes the same result. In four steps: [`select`] (class), [`resolve_tls`]
//! (certificates and which hosts they secure), [`flatten_rules`] (every path
//! of every rule) and [`route_for`] (a path with the annotations' policies).
//!
//! - Served: `spec.ingressClassName` is our class, or (legacy) the
//!   `kubernetes.io/ingress.class` annotation is, or neither is set and our
//!   IngressClass is the cluster default.
//! - Order: oldest first (creationTimestamp, then namespace/name). Routes carry
//!   that as their `Origin`; the snapshot builder decides conflicts (state.rs).
//!   A certificate host claimed by two Ingresses goes to the older one here.
//! - `pathType: ImplementationSpecific` is treated as Prefix; a rule without
//!   host matches any host; `defaultBackend` is a route for any host and `/`.

use super::annotations::{self, Annotations};
use super::named::{self, NamedObjects, Wanted};
use crate::config;
use crate::problems::{Problem, ProblemKind};
use crate::route::{
    Backend, ErrorBackend, HostMatch, Match, Origin, PathType, Policy, Redirect, Rewrite, Route,
    RouteLimits, ServicePort, UpstreamKey,
};
use crate::tls::CertStore;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass, IngressSpec};
use pingora::tls::sign::CertifiedKey;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// What the Origin of an Ingress's routes names as their kind.
pub const KIND: &str = "Ingress";

#[derive(Default)]
pub struct Translation {
    /// Oldest Ingress first.
    pub routes: Vec<Route>,
    pub certs: CertStore,
    /// `(namespace, name)` of every Ingress of our class that is served.
    pub served: Vec<(String, String)>,
    pub problems: Vec<Problem>,
    /// The Secrets' certificates as loaded, for the next translation.
    pub loaded: LoadedSecrets,
    /// The objects annotations named (to follow by name).
    pub wanted: Wanted,
}

/// Certificates by Secret (namespace, name).
pub type LoadedSecrets = HashMap<(String, String), LoadedSecret>;

/// A Secret's certificate as loaded from one resourceVersion of it: that
/// version is not parsed again (every Ingress or status change translates).
#[derive(Clone)]
pub struct LoadedSecret {
    resource_version: Option<String>,
    certified: Arc<CertifiedKey>,
    not_after: i64,
}

/// What translation reads besides the Ingresses.
pub struct Cluster<'a> {
    pub class: &'a str,
    pub classes: &'a [Arc<IngressClass>],
    /// TLS Secrets by (namespace, name).
    pub secrets: &'a HashMap<(String, String), Arc<Secret>>,
    /// Whether the configuration file's certificates cover a host (they win).
    pub file_cert_covers: &'a dyn Fn(&str) -> bool,
    /// The last translation's certificates: a Secret rotated to something
    /// that does not load keeps serving its last good certificate.
    pub last_loaded: &'a LoadedSecrets,
    /// The objects annotations name, as followed; `None` offline
    /// (`ingress-check`): taken to be in place.
    pub named: Option<&'a NamedObjects>,
    /// `ingress.allowed_response_headers`.
    pub allowed_response_headers: &'a [String],
}

fn name_of(ingress: &Ingress) -> (String, String) {
    (
        ingress.metadata.namespace.clone().unwrap_or_default(),
        ingress.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether `ingress` is ours (see the module comment).
pub fn is_served(ingress: &Ingress, class: &str, default_class: bool) -> bool {
    let named = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let annotated = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION))
        .map(String::as_str);
    match named.or(annotated) {
        Some(name) => name == class,
        None => default_class,
    }
}

pub fn translate(ingresses: &[Arc<Ingress>], cluster: &Cluster) -> Translation {
    let mut out = Translation::default();
    // certificate host -> the Ingress that claimed it first.
    let mut cert_hosts: HashMap<String, String> = HashMap::new();
    let ours: Vec<(&Arc<Ingress>, Annotations)> = select(ingresses, cluster, &mut out.problems)
        .into_iter()
        .map(|i| {
            let mut notes = annotations::read(&i.metadata.annotations.clone().unwrap_or_default());
            resolve_named(&mut notes, &name_of(i).0, cluster, &mut out.wanted);
            (i, notes)
        })
        .collect();
    let regex_hosts = regex_hosts(&ours);
    // Every rule host served: a www redirect never takes a host of its own.
    let mut rule_hosts = HashSet::new();
    let mut www: Vec<(String, Origin, String, UpstreamKey)> = Vec::new();
    let mut canaries = Vec::new();
    // Hosts with a certificate from an Ingress's `tls`, and the Ingresses
    // served, oldest first, whose routes are built once all TLS is known.
    let mut secured: Vec<String> = Vec::new();
    let mut served = Vec::new();
    let no_spec = IngressSpec::default();
    for (ingress, notes) in &ours {
        let (namespace, name) = name_of(ingress);
        let id = format!("{namespace}/{name}");
        for p in &notes.problems {
            out.problems.push(Problem::new(
                &id,
                p.kind,
                format!("{}: {:?}: {}", p.annotation, p.value, p.message),
            ));
        }
        if let Some(reason) = &notes.refused {
            out.problems.push(Problem::new(
                &id,
                ProblemKind::Refused,
                format!("not served: {reason}"),
            ));
            continue;
        }
        let spec = ingress.spec.as_ref().unwrap_or(&no_spec);
        let Some(paths) = flatten_rules(spec, &id, &regex_hosts, &mut out.problems) else {
            continue;
        };
        out.served.push((namespace.clone(), name.clone()));
        if notes.canary.is_some() {
            canaries.push((id, namespace, notes, paths));
            continue;
        }
        // TLS of every Ingress first: as in ingress-nginx, a host has TLS (and
        // its paths redirect to https) when any Ingress gives it a
        // certificate, not only the one that declares the path.
        secured.extend(resolve_tls(
            spec,
            &id,
            &namespace,
            cluster,
            &mut cert_hosts,
            &mut out,
        ));
        let origin = Origin::Object {
            created: ingress
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(i64::MIN, |t| t.0.as_second()),
            id: id.clone(),
            kind: KIND,
        };
        served.push((id, namespace, notes, paths, origin));
    }
    for (id, namespace, notes, paths, origin) in served {
        for path in paths {
            let upstream = match upstream_of(path.backend, &namespace) {
                Ok(u) => through_cluster_ip(u, &id, notes, cluster, &mut out),
                Err(e) => {
                    out.problems.push(Problem::new(
                        &id,
                        ProblemKind::InvalidRule,
                        format!("{}.backend: {e}", path.at),
                    ));
                    continue;
                }
            };
            if let HostMatch::Exact(h) = &path.host {
                rule_hosts.insert(h.clone());
                if notes.from_to_www && !www.iter().any(|(host, ..)| host == h) {
                    www.push((h.clone(), origin.clone(), id.clone(), upstream.clone()));
                }
            }
            let has_tls = secures(&secured, &path.host);
            out.routes.push(route_for(
                format!("ingress:{id}:{}", path.at),
                origin.clone(),
                notes,
                &path,
                upstream,
                has_tls,
            ));
        }
    }
    www_redirects(www, &rule_hosts, &mut out.routes);
    for (id, namespace, notes, paths) in canaries {
        attach_canary(&id, &namespace, notes, paths, &mut out);
    }
    out.problems.sort();
    out
}

/// Hosts whose paths are all regular expressions: those where any Ingress
/// (not a canary) sets `use-regex` or a `rewrite-target`, as ingress-nginx
/// decides it for a whole server block.
fn regex_hosts(ours: &[(&Arc<Ingress>, Annotations)]) -> HashSet<HostMatch> {
    let mut hosts = HashSet::new();
    for (ingress, notes) in ours {
        let regex = notes.use_regex || notes.rewrite_target.is_some();
        if !regex || notes.canary.is_some() || notes.refused.is_some() {
            continue;
        }
        for rule in ingress.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
            let host = match rule.host.as_deref() {
                None | Some("") => Some(HostMatch::Any),
                Some(h) => config::route_host(h).ok(),
            };
            hosts.extend(host);
        }
    }
    hosts
}

/// `from-to-www-redirect`: for each such rule host, the other name (with or
/// without `www.`) answers 308 to it, path and query kept, unless some
/// Ingress serves that name itself.
fn www_redirects(
    www: Vec<(String, Origin, String, UpstreamKey)>,
    rule_hosts: &HashSet<String>,
    routes: &mut Vec<Route>,
) {
    for (host, origin, id, upstream) in www {
        let other = match host.strip_prefix("www.") {
            Some(bare) => bare.to_string(),
            None => format!("www.{host}"),
        };
        if rule_hosts.contains(&other) {
            continue;
        }
        let mut route = Route::to(
            format!("ingress:{id}:from-to-www[{other}]"),
            origin,
            Match::path(HostMatch::Exact(other), "/", PathType::Prefix),
            upstream,
        );
        route.policies.push(Policy::Redirect(Redirect {
            location: format!("$scheme://{host}$request_uri"),
            code: 308,
        }));
        routes.push(route);
    }
}

/// A canary Ingress's paths join the main Ingress's routes of the same host
/// and path as their second backend, with the canary rules; the rest of the
/// canary's annotations are the main Ingress's (as in ingress-nginx).
fn attach_canary(
    id: &str,
    namespace: &str,
    notes: &Annotations,
    paths: Vec<FlatPath>,
    out: &mut Translation,
) {
    let canary = notes.canary.clone().unwrap_or_default();
    for path in paths {
        let upstream = match upstream_of(path.backend, namespace) {
            Ok(u) => u,
            Err(e) => {
                out.problems.push(Problem::new(
                    id,
                    ProblemKind::InvalidRule,
                    format!("{}.backend: {e}", path.at),
                ));
                continue;
            }
        };
        let m = Match::path(path.host.clone(), path.path.clone(), path.path_type);
        // The oldest main Ingress's route: the one that serves (state.rs).
        let main = out.routes.iter_mut().find(|r| r.matches == m);
        match main {
            Some(main) if main.policies.iter().any(|p| matches!(p, Policy::Canary(_))) => {
                out.problems.push(Problem::new(
                    id,
                    ProblemKind::Conflict,
                    format!(
                        "{}: host {} path {} already has a canary (one per path, as in ingress-nginx): not served",
                        path.at, m.host, m.path
                    ),
                ));
            }
            Some(main) => {
                main.backends.push(Backend {
                    upstream,
                    weight: 1,
                });
                main.policies.push(Policy::Canary(canary.clone()));
            }
            None => out.problems.push(Problem::new(
                id,
                ProblemKind::InvalidRule,
                format!(
                    "{}: canary for host {} path {}, which no main Ingress serves: not served",
                    path.at, m.host, m.path
                ),
            )),
        }
    }
}

/// The Ingresses of our class, oldest first; a problem if our IngressClass
/// names another controller.
fn select<'a>(
    ingresses: &'a [Arc<Ingress>],
    cluster: &Cluster,
    problems: &mut Vec<Problem>,
) -> Vec<&'a Arc<Ingress>> {
    let our_class = cluster
        .classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(cluster.class));
    let default_class = our_class.is_some_and(|c| {
        c.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .is_some_and(|v| v == "true")
    });
    if let Some(c) = our_class {
        let controller = c.spec.as_ref().and_then(|s| s.controller.as_deref());
        if controller != Some(config::IngressSettings::CONTROLLER) {
            problems.push(Problem::new(
                &format!("ingressclass/{}", cluster.class),
                ProblemKind::IngressClass,
                format!(
                    "spec.controller is {controller:?}, not {:?}: served anyway, by name",
                    config::IngressSettings::CONTROLLER
                ),
            ));
        }
    }
    let mut ours: Vec<&Arc<Ingress>> = ingresses
        .iter()
        .filter(|i| is_served(i, cluster.class, default_class))
        .collect();
    ours.sort_by(|a, b| {
        (&a.metadata.creation_timestamp, name_of(a))
            .cmp(&(&b.metadata.creation_timestamp, name_of(b)))
    });
    ours
}

/// Load the certificates of an Ingress's `spec.tls` into `out.certs` (a host
/// already claimed by an older Ingress, or covered by the file, keeps its
/// certificate); returns the hosts this Ingress secures that have one now.
fn resolve_tls(
    spec: &IngressSpec,
    id: &str,
    namespace: &str,
    cluster: &Cluster,
    cert_hosts: &mut HashMap<String, String>,
    out: &mut Translation,
) -> Vec<String> {
    let mut tls_hosts = Vec::new();
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        let hosts: Vec<String> = match tls.hosts.as_deref() {
            Some(h) if !h.is_empty() => h.iter().map(|h| h.to_ascii_lowercase()).collect(),
            // No hosts: the certificate is for this Ingress's rule hosts.
            _ => spec
                .rules
                .iter()
                .flatten()
                .filter_map(|r| r.host.as_ref().map(|h| h.to_ascii_lowercase()))
                .collect(),
        };
        tls_hosts.extend(hosts.iter().cloned());
        let at = format!("spec.tls[{i}]");
        let mut problem = |message: String| {
            out.problems.push(Problem::new(
                id,
                ProblemKind::TlsSecret,
                format!("{at}: {message}"),
            ))
        };
        let Some(secret_name) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            problem("no secretName: its hosts get no certificate from this Ingress".into());
            continue;
        };
        let free: Vec<String> = hosts
            .iter()
            .filter(|h| match cert_hosts.get(*h) {
                Some(owner) if owner != id => {
                    problem(format!("host {h:?} already has the certificate of Ingress {owner} (older): not replaced"));
                    false
                }
                _ => !(cluster.file_cert_covers)(h),
            })
            .cloned()
            .collect();
        let key = (namespace.to_string(), secret_name.to_string());
        let secret = cluster.secrets.get(&key);
        let last = cluster.last_loaded.get(&key);
        let version = secret.and_then(|s| s.metadata.resource_version.clone());
        let unchanged = last.filter(|l| version.is_some() && l.resource_version == version);
        let parsed = match unchanged {
            Some(l) => Ok(l.clone()),
            None => load_secret(secret).map(|(certified, not_after)| LoadedSecret {
                resource_version: version,
                certified,
                not_after,
            }),
        };
        let loaded = match parsed {
            Ok(loaded) => Some(loaded),
            Err(e) => match last.filter(|_| secret.is_some()) {
                Some(last) => {
                    problem(format!(
                        "Secret {namespace}/{secret_name}: {e}; its last good certificate stays"
                    ));
                    Some(last.clone())
                }
                None => {
                    problem(format!(
                        "Secret {namespace}/{secret_name}: {e}; its hosts are served without it"
                    ));
                    None
                }
            },
        };
        if let Some(loaded) = loaded {
            for h in &free {
                cert_hosts
                    .entry(h.clone())
                    .or_insert_with(|| id.to_string());
            }
            out.certs
                .add(&free, loaded.certified.clone(), loaded.not_after);
            out.loaded.insert(key, loaded);
        }
    }
    tls_hosts
        .into_iter()
        .filter(|h| out.certs.covers(h) || (cluster.file_cert_covers)(h))
        .collect()
}

/// Whether a rule host is secured: by its own name or by a `*.` name above it.
fn secures(secured: &[String], host: &HostMatch) -> bool {
    let wildcard = match host {
        HostMatch::Exact(h) => h.split_once('.').map(|(_, d)| format!("*.{d}")),
        _ => None,
    };
    secured.contains(&host.to_string()) || wildcard.is_some_and(|w| secured.contains(&w))
}

/// One path of an Ingress.
struct FlatPath<'a> {
    /// Where it is written: `rules[0].paths[1]`, `defaultBackend`.
    at: String,
    host: HostMatch,
    /// Normalized, or for a regex host the pattern as written.
    path: String,
    path_type: PathType,
    backend: &'a IngressBackend,
}

/// Every path of `spec`: `defaultBackend` first, then each rule's paths. A
/// host or path that is not valid is a problem and left out; on a host whose
/// paths are regular expressions, one that does not compile refuses the
/// whole Ingress (`None`): it would route differently than written.
fn flatten_rules<'a>(
    spec: &'a IngressSpec,
    id: &str,
    regex_hosts: &HashSet<HostMatch>,
    problems: &mut Vec<Problem>,
) -> Option<Vec<FlatPath<'a>>> {
    let mut paths = Vec::new();
    if let Some(backend) = &spec.default_backend {
        paths.push(FlatPath {
            at: "defaultBackend".into(),
            host: HostMatch::Any,
            path: "/".into(),
            path_type: PathType::Prefix,
            backend,
        });
    }
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match rule.host.as_deref() {
            None | Some("") => HostMatch::Any,
            Some(h) => match config::route_host(h) {
                Ok(h) => h,
                Err(e) => {
                    problems.push(Problem::new(
                        id,
                        ProblemKind::InvalidRule,
                        format!("spec.rules[{i}].host: {e}"),
                    ));
                    continue;
                }
            },
        };
        let regex = regex_hosts.contains(&host);
        for (j, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let at = format!("rules[{i}].paths[{j}]");
            let written = p.path.as_deref().unwrap_or("/");
            if regex {
                // ingress-nginx: `location ~* "^PATH"` for every path type.
                if let Err(e) = crate::route::path_regex(written) {
                    problems.push(Problem::new(
                        id,
                        ProblemKind::Refused,
                        format!("not served: spec.{at}.path: {e} (the regex crate: no look-around, no backreferences)"),
                    ));
                    return None;
                }
                paths.push(FlatPath {
                    at,
                    host: host.clone(),
                    path: written.to_string(),
                    path_type: PathType::Regex,
                    backend: &p.backend,
                });
                continue;
            }
            let path_type = match p.path_type.as_str() {
                "Exact" => PathType::Exact,
                // Documented: ImplementationSpecific is Prefix here.
                _ => PathType::Prefix,
            };
            match config::route_path(written, path_type) {
                Ok(path) => paths.push(FlatPath {
                    at,
                    host: host.clone(),
                    path,
                    path_type,
                    backend: &p.backend,
                }),
                Err(e) => problems.push(Problem::new(
                    id,
                    ProblemKind::InvalidRule,
                    format!("spec.{at}.path: {e}"),
                )),
            }
        }
    }
    Some(paths)
}

/// One path's route: the annotations as policies, in the order they answer
/// (as nginx's phases run them: app-root and redirects, then the allowlist,
/// the redirect to https, the body size), then the settings.
fn route_for(
    name: String,
    origin: Origin,
    notes: &Annotations,
    path: &FlatPath,
    upstream: UpstreamKey,
    has_tls: bool,
) -> Route {
    let matches = Match::path(path.host.clone(), path.path.clone(), path.path_type);
    let mut policies = Vec::new();
    if let Some(root) = &notes.app_root {
        policies.push(Policy::AppRoot(root.clone()));
    }
    if let Some(redirect) = &notes.redirect {
        policies.push(Policy::Redirect(redirect.clone()));
    }
    if let Some(limits) = &notes.client_limits {
        // One zone per Ingress: its paths share each client's counts.
        policies.push(Policy::ClientLimits(RouteLimits {
            zone: origin.describe(),
            ..limits.clone()
        }));
    }
    if let Some(allow) = &notes.allow {
        policies.push(Policy::AllowSources(allow.clone()));
    }
    if let Some(deny) = &notes.deny {
        policies.push(Policy::DenySources(deny.clone()));
    }
    if notes.force_ssl_redirect || (notes.ssl_redirect && has_tls) {
        policies.push(Policy::RedirectHttps);
    }
    if let Some(cors) = &notes.cors {
        policies.push(Policy::Cors(cors.clone()));
    }
    if let Some(basic) = &notes.basic_auth_users {
        policies.push(Policy::BasicAuth(basic.clone()));
    }
    if let Some(auth) = &notes.external_auth {
        policies.push(Policy::ExternalAuth(auth.clone()));
    }
    if let Some(n) = notes.max_body_bytes {
        policies.push(Policy::MaxBodyBytes(n));
    }
    if let Some(rate) = notes.response_rate {
        policies.push(Policy::ResponseRate(rate));
    }
    if notes.timeouts != Default::default() {
        policies.push(Policy::Timeouts(notes.timeouts));
    }
    let mut headers = Vec::new();
    // ingress-nginx rewrites only when the target differs from the path.
    if let Some(target) = notes.rewrite_target.as_ref().filter(|t| **t != path.path) {
        policies.push(Policy::Rewrite(Rewrite {
            pattern: path.path.clone(),
            target: target.clone(),
        }));
        if let Some(prefix) = &notes.x_forwarded_prefix {
            headers.push(("x-forwarded-prefix".to_string(), prefix.clone()));
        }
    }
    if let Some(vhost) = &notes.upstream_vhost {
        headers.push(("host".to_string(), vhost.clone()));
    }
    if !headers.is_empty() {
        policies.push(Policy::SetRequestHeaders(headers));
    }
    if let Some(service) = &notes.default_backend {
        policies.push(Policy::ErrorBackend(ErrorBackend {
            upstream: UpstreamKey {
                namespace: upstream.namespace.clone(),
                service: service.clone(),
                // ingress-nginx uses the Service's first port: here port 80,
                // or the only port of its EndpointSlices.
                port: ServicePort::Number(80),
                cluster_ip: None,
            },
            intercept: notes.custom_http_errors.clone(),
        }));
    }
    if notes.custom_headers.is_some() {
        policies.push(Policy::SetResponseHeaders(notes.response_headers.clone()));
    }
    if let Some(h) = &notes.hash_by {
        policies.push(Policy::HashBy(h.clone()));
    }
    if notes.least_loaded {
        policies.push(Policy::LeastLoaded);
    }
    if let Some(protocol) = &notes.protocol {
        let mut protocol = protocol.clone();
        // ingress-nginx verifies against proxy-ssl-name, else the upstream's
        // name: here the Service's DNS name.
        protocol
            .name
            .get_or_insert_with(|| format!("{}.{}.svc", upstream.service, upstream.namespace));
        policies.push(Policy::UpstreamProtocol(protocol));
    }
    if let Some(mut a) = notes.affinity.clone() {
        if a.path.is_empty() {
            // ingress-nginx's default: the cookie is scoped to the location
            // (a regular expression is no cookie path: `/`).
            a.path = match path.path_type {
                PathType::Regex => "/".into(),
                _ => path.path.clone(),
            };
        }
        policies.push(Policy::Affinity(a));
    }
    Route {
        name,
        origin,
        matches,
        backends: vec![Backend {
            upstream,
            weight: 1,
        }],
        policies,
    }
}

fn upstream_of(backend: &IngressBackend, namespace: &str) -> Result<UpstreamKey, String> {
    let Some(service) = &backend.service else {
        return Err("only Service backends are supported (not `resource`)".into());
    };
    if !config::is_dns_label(&service.name) {
        return Err(format!("{:?} is not a Service name", service.name));
    }
    let port = service.port.as_ref();
    let port = match (
        port.and_then(|p| p.number),
        port.and_then(|p| p.name.as_deref()),
    ) {
        (Some(n), _) => u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .map(ServicePort::Number)
            .ok_or_else(|| format!("port number {n} is out of range"))?,
        (None, Some(name)) if config::is_port_name(name) => ServicePort::Name(name.into()),
        (None, Some(name)) => return Err(format!("{name:?} is not a port name")),
        (None, None) => return Err("a Service backend needs a port number or name".into()),
    };
    Ok(UpstreamKey {
        namespace: namespace.into(),
        service: service.name.clone(),
        port,
        cluster_ip: None,
    })
}

/// With `service-upstream`, `upstream` goes to its Service's ClusterIP; when
/// that cannot be read, to its endpoints, reported.
fn through_cluster_ip(
    mut upstream: UpstreamKey,
    id: &str,
    notes: &Annotations,
    cluster: &Cluster,
    out: &mut Translation,
) -> UpstreamKey {
    if notes.service_upstream {
        match named::cluster_ip(&upstream, cluster.named, &mut out.wanted) {
            Ok(addr) => upstream.cluster_ip = Some(addr),
            Err(e) => out.problems.push(Problem::new(
                id,
                ProblemKind::InvalidAnnotation,
                format!(
                    "{}service-upstream: {e}: its endpoints are used",
                    annotations::PREFIX
                ),
            )),
        }
    }
    upstream
}

/// Read the objects `notes` names into it; one that is missing or unusable
/// refuses the Ingress (see `named`).
fn resolve_named(notes: &mut Annotations, namespace: &str, cluster: &Cluster, wanted: &mut Wanted) {
    let mut resolve = || -> Result<(), String> {
        if let Some(value) = &notes.proxy_ssl_secret {
            let key = named::reference(value, namespace)
                .map_err(|e| format!("{}proxy-ssl-secret: {e}", annotations::PREFIX))?;
            let trust = named::upstream_trust(&key, cluster.named, wanted)
                .map_err(|e| format!("{}proxy-ssl-secret: {e}", annotations::PREFIX))?;
            // Only HTTPS and GRPCS backends use it, as in ingress-nginx.
            if let Some(p) = notes.protocol.as_mut().filter(|p| p.tls) {
                p.trust = Some(trust);
            }
        }
        if let Some(auth) = notes.external_auth.as_mut() {
            if let Some(value) = &auth.proxy_set_headers {
                let key = named::reference(value, namespace)
                    .map_err(|e| format!("{}auth-proxy-set-headers: {e}", annotations::PREFIX))?;
                auth.set_headers = named::auth_request_headers(&key, cluster.named, wanted)
                    .map_err(|e| format!("{}auth-proxy-set-headers: {e}", annotations::PREFIX))?;
            }
        }
        if let Some(basic) = &notes.basic_auth {
            let key = named::reference(&basic.secret, namespace)
                .map_err(|e| format!("{}auth-secret: {e}", annotations::PREFIX))?;
            let (users, bad) = named::basic_auth_users(&key, basic.map, cluster.named, wanted)
                .map_err(|e| format!("{}auth-secret: {e}", annotations::PREFIX))?;
            for why in bad {
                notes.problems.push(annotations::Problem {
                    kind: ProblemKind::InvalidAnnotation,
                    annotation: format!("{}auth-secret", annotations::PREFIX),
                    value: basic.secret.clone(),
                    message: format!("{why}: this user cannot log in"),
                });
            }
            notes.basic_auth_users = Some(crate::route::BasicAuth {
                realm: basic.realm.clone(),
                source: format!("Secret {}/{}", key.0, key.1),
                users,
            });
        }
        if let Some(value) = &notes.custom_headers {
            let key = named::reference(value, namespace)
                .map_err(|e| format!("{}custom-headers: {e}", annotations::PREFIX))?;
            notes.response_headers = named::response_headers(
                &key,
                cluster.named,
                cluster.allowed_response_headers,
                wanted,
            )
            .map_err(|e| format!("{}custom-headers: {e}", annotations::PREFIX))?;
        }
        Ok(())
    };
    if let Err(reason) = resolve() {
        notes.refused.get_or_insert(reason);
    }
}

fn load_secret(secret: Option<&Arc<Secret>>) -> Result<(Arc<CertifiedKey>, i64), String> {
    let secret = secret.ok_or("not found (or not of type kubernetes.io/tls)")?;
    let data: BTreeMap<_, _> = secret.data.clone().unwrap_or_default();
    let (Some(cert), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) else {
        return Err("needs tls.crt and tls.key".into());
    };
    crate::tls::certified_key(&cert.0, &key.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(value: serde_json::Value) -> Arc<Ingress> {
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn simple(
        name: &str,
        created: &str,
        class: Option<&str>,
        host: &str,
        path: &str,
    ) -> Arc<Ingress> {
        ingress(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {
                "ingressClassName": class,
                "rules": [{"host": host, "http": {"paths": [
                    {"path": path, "pathType": "Prefix", "backend": {"service": {"name": name, "port": {"number": 80}}}}
                ]}}]
            }
        }))
    }

    fn class(name: &str, default: bool) -> Arc<IngressClass> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "annotations": {DEFAULT_CLASS_ANNOTATION: default.to_string()}},
                "spec": {"controller": config::IngressSettings::CONTROLLER}
            }))
            .unwrap(),
        )
    }

    fn run(ingresses: &[Arc<Ingress>], classes: &[Arc<IngressClass>]) -> Translation {
        let secrets = HashMap::new();
        translate(
            ingresses,
            &Cluster {
                class: "edge-proxy",
                classes,
                secrets: &secrets,
                file_cert_covers: &|_| false,
                last_loaded: &HashMap::new(),
                named: Some(&NamedObjects::default()),
                allowed_response_headers: &[],
            },
        )
    }

    #[test]
    fn class_filtering_and_the_default_class() {
        let ours = simple(
            "a",
            "2026-01-01T00:00:00Z",
            Some("edge-proxy"),
            "a.com",
            "/",
        );
        let theirs = simple("b", "2026-01-01T00:00:00Z", Some("nginx"), "b.com", "/");
        let classless = simple("c", "2026-01-01T00:00:00Z", None, "c.com", "/");
        let all = [ours, theirs, classless];
        let served = |t: Translation| t.served.into_iter().map(|(_, n)| n).collect::<Vec<_>>();
        assert_eq!(served(run(&all, &[class("edge-proxy", false)])), ["a"]);
        assert_eq!(served(run(&all, &[class("edge-proxy", true)])), ["a", "c"]);
        // The legacy annotation names a class too.
        let legacy = ingress(json!({
            "metadata": {"name": "d", "namespace": "default", "annotations": {CLASS_ANNOTATION: "edge-proxy"}},
            "spec": {"defaultBackend": {"service": {"name": "d", "port": {"name": "http"}}}}
        }));
        let t = run(&[legacy], &[]);
        assert_eq!(t.routes.len(), 1);
        assert_eq!(t.routes[0].matches.host, HostMatch::Any);
        assert_eq!(
            t.routes[0].backends[0].upstream.port,
            ServicePort::Name("http".into())
        );
    }

    #[test]
    fn routes_carry_their_ingress_and_age_for_the_conflict_rule() {
        // Conflicts are decided where every source meets (state.rs); here each
        // route says which Ingress it comes from and how old that is.
        let old = simple(
            "old",
            "2026-01-01T00:00:00Z",
            Some("edge-proxy"),
            "x.com",
            "/",
        );
        let new = simple(
            "new",
            "2026-02-01T00:00:00Z",
            Some("edge-proxy"),
            "x.com",
            "/",
        );
        let t = run(&[new, old], &[]);
        let origins: Vec<&Origin> = t.routes.iter().map(|r| &r.origin).collect();
        assert_eq!(origins.len(), 2);
        assert!(origins[0] < origins[1], "the older first: {origins:?}");
        assert_eq!(origins[0].describe(), "Ingress default/old");
        assert!(t.problems.is_empty(), "{:?}", t.problems);
    }

    #[test]
    fn paths_hosts_and_backends_as_the_api_defines_them() {
        let i = ingress(json!({
            "metadata": {"name": "web", "namespace": "shop", "annotations": {"nginx.ingress.kubernetes.io/affinity": "cookie"}},
            "spec": {"ingressClassName": "edge-proxy", "rules": [
                {"host": "*.Example.com", "http": {"paths": [
                    {"path": "/api/", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 8080}}}},
                    {"path": "/login", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                    {"pathType": "ImplementationSpecific", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                    {"path": "no-slash", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                    {"path": "/r", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}}
                ]}},
                {"host": "bad host", "http": {"paths": []}}
            ]}
        }));
        let t = run(&[i], &[]);
        let routes: Vec<(HostMatch, &str, PathType, String, &str)> = t
            .routes
            .iter()
            .map(|r| {
                let a = r.affinity().unwrap();
                (
                    r.matches.host.clone(),
                    r.matches.path.as_str(),
                    r.matches.path_type,
                    r.backends[0].upstream.to_string(),
                    a.path.as_str(),
                )
            })
            .collect();
        let wild = HostMatch::Wildcard("example.com".into());
        assert_eq!(
            routes,
            [
                (
                    wild.clone(),
                    "/api",
                    PathType::Prefix,
                    "shop/api:8080".to_string(),
                    "/api"
                ),
                (
                    wild.clone(),
                    "/login",
                    PathType::Exact,
                    "shop/web:http".to_string(),
                    "/login"
                ),
                (
                    wild.clone(),
                    "/",
                    PathType::Prefix,
                    "shop/web:80".to_string(),
                    "/"
                ),
            ]
        );
        let kinds: Vec<ProblemKind> = t.problems.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [ProblemKind::InvalidRule; 3], "{:?}", t.problems);
        assert_eq!(t.routes[0].name, "ingress:shop/web:rules[0].paths[0]");
    }

    #[test]
    fn a_host_with_tls_from_any_ingress_redirects_every_path_to_https() {
        // ingress-nginx's oauth2-proxy example: the app's Ingress has no `tls`,
        // the auth path's Ingress (newer) gives the host its certificate.
        let app = simple(
            "app",
            "2026-01-01T00:00:00Z",
            Some("edge-proxy"),
            "h.test",
            "/",
        );
        let auth = ingress(json!({
            "metadata": {"name": "auth", "namespace": "default", "creationTimestamp": "2026-01-02T00:00:00Z"},
            "spec": {"ingressClassName": "edge-proxy",
                "tls": [{"hosts": ["h.test"], "secretName": "h-tls"}],
                "rules": [{"host": "h.test", "http": {"paths": [{"path": "/oauth2", "pathType": "Prefix", "backend": {"service": {"name": "auth", "port": {"number": 80}}}}]}}]}
        }));
        let other = simple(
            "other",
            "2026-01-01T00:00:00Z",
            Some("edge-proxy"),
            "o.test",
            "/",
        );
        let t = translate(
            &[app, auth, other],
            &Cluster {
                class: "edge-proxy",
                classes: &[],
                secrets: &HashMap::new(),
                // The certificate is there (here from the file).
                file_cert_covers: &|h| h == "h.test",
                last_loaded: &HashMap::new(),
                named: Some(&NamedObjects::default()),
                allowed_response_headers: &[],
            },
        );
        let redirects = |path: &str, host: &str| {
            t.routes
                .iter()
                .find(|r| r.matches.path == path && r.matches.host.to_string() == host)
                .unwrap()
                .policies
                .contains(&Policy::RedirectHttps)
        };
        assert!(redirects("/", "h.test"), "the app's path too");
        assert!(redirects("/oauth2", "h.test"));
        assert!(
            !redirects("/", "o.test"),
            "a host without TLS is not redirected"
        );
    }

    #[test]
    fn a_missing_or_broken_secret_is_reported_and_the_routes_still_serve() {
        let i = ingress(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ingressClassName": "edge-proxy",
                "tls": [{"hosts": ["a.com"], "secretName": "gone"}, {"hosts": ["b.com"], "secretName": "broken"}],
                "rules": [{"host": "a.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
        }));
        let broken: Secret = serde_json::from_value(json!({
            "metadata": {"name": "broken", "namespace": "default"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "bm90IGEgY2VydA==", "tls.key": "bm90IGEga2V5"}
        }))
        .unwrap();
        let secrets = HashMap::from([(
            ("default".to_string(), "broken".to_string()),
            Arc::new(broken),
        )]);
        let t = translate(
            &[i],
            &Cluster {
                class: "edge-proxy",
                classes: &[],
                secrets: &secrets,
                file_cert_covers: &|_| false,
                last_loaded: &HashMap::new(),
                named: Some(&NamedObjects::default()),
                allowed_response_headers: &[],
            },
        );
        assert_eq!(t.routes.len(), 1);
        assert!(
            !t.routes[0].policies.contains(&Policy::RedirectHttps),
            "no certificate: no redirect to a broken https"
        );
        let messages: Vec<&str> = t.problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            messages[0].contains("Secret default/gone: not found"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("Secret default/broken"),
            "{messages:?}"
        );
    }

    fn annotated(
        name: &str,
        created: &str,
        annotations: serde_json::Value,
        host: &str,
        paths: &[(&str, &str)],
    ) -> Arc<Ingress> {
        let paths: Vec<serde_json::Value> = paths
            .iter()
            .map(|(path, service)| json!({"path": path, "pathType": "ImplementationSpecific", "backend": {"service": {"name": service, "port": {"number": 80}}}}))
            .collect();
        ingress(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created, "annotations": annotations},
            "spec": {"ingressClassName": "edge-proxy", "rules": [{"host": host, "http": {"paths": paths}}]}
        }))
    }

    const P: &str = "nginx.ingress.kubernetes.io/";

    #[test]
    fn a_rewrite_makes_every_path_of_its_host_a_regex_and_rewrites_its_own() {
        let rewriting = annotated(
            "api",
            "2026-01-01T00:00:00Z",
            json!({format!("{P}rewrite-target"): "/$2", format!("{P}x-forwarded-prefix"): "/api"}),
            "r.test",
            &[("/api(/|$)(.*)", "api")],
        );
        let plain = annotated(
            "web",
            "2026-01-02T00:00:00Z",
            json!({}),
            "r.test",
            &[("/web", "web")],
        );
        let elsewhere = annotated(
            "other",
            "2026-01-02T00:00:00Z",
            json!({}),
            "o.test",
            &[("/web", "web")],
        );
        let t = run(&[rewriting, plain, elsewhere], &[]);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let by_service = |s: &str, host: &str| {
            t.routes
                .iter()
                .find(|r| {
                    r.backends[0].upstream.service == s
                        && r.matches.host == HostMatch::Exact(host.into())
                })
                .unwrap()
        };
        let api = by_service("api", "r.test");
        assert_eq!(api.matches.path_type, PathType::Regex);
        assert!(api.policies.contains(&Policy::Rewrite(Rewrite {
            pattern: "/api(/|$)(.*)".into(),
            target: "/$2".into()
        })));
        assert!(api.policies.contains(&Policy::SetRequestHeaders(vec![(
            "x-forwarded-prefix".into(),
            "/api".into()
        )])));
        // The other Ingress on the host: a regex too (case-insensitive, no
        // element boundary), without a rewrite.
        let web = by_service("web", "r.test");
        assert_eq!(
            (web.matches.path_type, web.matches.path.as_str()),
            (PathType::Regex, "/web")
        );
        assert!(!web.policies.iter().any(|p| matches!(p, Policy::Rewrite(_))));
        // Another host is not affected.
        assert_eq!(
            by_service("web", "o.test").matches.path_type,
            PathType::Prefix
        );
    }

    #[test]
    fn a_regex_that_does_not_compile_refuses_its_ingress() {
        let bad = annotated(
            "bad",
            "2026-01-01T00:00:00Z",
            json!({format!("{P}use-regex"): "true"}),
            "b.test",
            &[("/ok", "a"), ("/(?<=x)y", "b")],
        );
        let t = run(&[bad], &[]);
        assert!(t.routes.is_empty());
        assert!(t.served.is_empty());
        assert_eq!(t.problems[0].kind, ProblemKind::Refused);
        assert!(
            t.problems[0].message.contains("look-around"),
            "{}",
            t.problems[0].message
        );
    }

    #[test]
    fn a_canary_joins_the_main_route_and_a_lone_canary_is_reported() {
        let main = annotated(
            "main",
            "2026-01-01T00:00:00Z",
            json!({}),
            "c.test",
            &[("/", "v1")],
        );
        let canary = annotated(
            "canary",
            "2026-01-02T00:00:00Z",
            json!({format!("{P}canary"): "true", format!("{P}canary-weight"): "20", format!("{P}canary-by-header"): "X-Canary"}),
            "c.test",
            &[("/", "v2"), ("/lonely", "v2")],
        );
        let t = run(&[main, canary], &[]);
        assert_eq!(t.routes.len(), 1, "the canary adds no route of its own");
        let r = &t.routes[0];
        let services: Vec<&str> = r
            .backends
            .iter()
            .map(|b| b.upstream.service.as_str())
            .collect();
        assert_eq!(services, ["v1", "v2"]);
        let rules = r.policies.iter().find_map(|p| match p {
            Policy::Canary(c) => Some(c),
            _ => None,
        });
        let rules = rules.unwrap();
        assert_eq!((rules.weight, rules.weight_total), (20, 100));
        assert_eq!(rules.header.as_deref(), Some("x-canary"));
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
        assert!(t.problems[0].message.contains("no main Ingress"));
        assert_eq!(t.served.len(), 2, "the canary's status is written too");
    }

    #[test]
    fn from_to_www_adds_the_other_name_unless_an_ingress_serves_it() {
        let apex = annotated(
            "apex",
            "2026-01-01T00:00:00Z",
            json!({format!("{P}from-to-www-redirect"): "true"}),
            "example.test",
            &[("/", "web")],
        );
        let t = run(std::slice::from_ref(&apex), &[]);
        let www = t
            .routes
            .iter()
            .find(|r| r.matches.host == HostMatch::Exact("www.example.test".into()))
            .unwrap();
        assert!(www.policies.contains(&Policy::Redirect(Redirect {
            location: "$scheme://example.test$request_uri".into(),
            code: 308
        })));
        let own = annotated(
            "own",
            "2026-01-02T00:00:00Z",
            json!({}),
            "www.example.test",
            &[("/", "www")],
        );
        let t = run(&[apex, own], &[]);
        assert_eq!(t.routes.len(), 2, "no redirect over an Ingress's own host");
    }
}
