//! From Gateway API objects to routes, certificates and the status each
//! object should have: a pure function of what the API server holds, so every
//! node computes the same routes (and the status writer the same status).
//!
//! In four steps: our GatewayClass ([`class_status`]); each Gateway's
//! listeners, matched to the proxy's ports ([`listeners`]); each route's
//! parents, the listeners that accept it and the hostnames they intersect to
//! ([`attach`]); then each rule as routes of the route model ([`rule_routes`]).
//! Routes carry their object's age as `Origin`: between objects the older
//! wins a match (state.rs), as Gateway API orders routes.

use super::types::*;
use crate::ingress::named::{self, NamedObjects, Wanted};
use crate::problems::{Problem, ProblemKind};
use crate::route::{
    Affinity, Backend, HeaderChanges, HostMatch, Match, Mirror, Origin, PathChange, PathType,
    Policy, RedirectTo, RewriteUrl, Route, ServicePort, StringMatch, UpstreamKey, UpstreamProtocol,
    ValueMatch,
};
use crate::tls::CertStore;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The proxy's ports, which listeners must name to be served.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub https: Option<u16>,
}

/// Everything translation reads.
pub struct Inputs<'a> {
    pub class: &'a str,
    pub classes: &'a [Arc<GatewayClass>],
    pub gateways: &'a [Arc<Gateway>],
    pub http_routes: &'a [Arc<HttpRoute>],
    pub grpc_routes: &'a [Arc<GrpcRoute>],
    pub grants: &'a [Arc<ReferenceGrant>],
    pub namespaces: &'a [Arc<NamespaceLabels>],
    /// The Secrets and Services references name, as followed.
    pub named: &'a NamedObjects,
    pub ports: Ports,
}

/// Which object a status is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
}

impl Kind {
    pub fn plural(&self) -> &'static str {
        match self {
            Kind::GatewayClass => "gatewayclasses",
            Kind::Gateway => "gateways",
            Kind::HttpRoute => "httproutes",
            Kind::GrpcRoute => "grpcroutes",
        }
    }
}

/// (kind, namespace or "", name)
pub type StatusKey = (Kind, String, String);

#[derive(Default)]
pub struct Translation {
    pub routes: Vec<Route>,
    pub certs: CertStore,
    /// The status each object of ours should have; conditions without
    /// `lastTransitionTime` (the writer keeps or sets it). For routes: our
    /// entries of `status.parents` only.
    pub status: BTreeMap<StatusKey, Value>,
    pub problems: Vec<Problem>,
    /// The Secrets and Services references name (to follow by name).
    pub wanted: Wanted,
}

/// The Route kinds a listener can take.
const ROUTE_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

/// The features the GatewayClass status announces (Gateway API's names,
/// sorted as the spec asks).
pub const SUPPORTED_FEATURES: &[&str] = &[
    "GRPCRoute",
    "Gateway",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendRequestTimeout",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

fn condition(kind: &str, ok: bool, reason: &str, message: &str, generation: i64) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    })
}

fn generation(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.generation.unwrap_or(0)
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

/// Why a listener condition is False: (reason, message).
type Why = (&'static str, String);

/// One listener of one of our Gateways, as routes attach to it.
struct ListenerSlot {
    gateway: (String, String),
    name: String,
    port: i32,
    /// Served on the https listener (else the http one).
    tls: bool,
    hostname: Option<String>,
    allowed: Option<AllowedRoutes>,
    /// The route kinds it takes (valid ones only).
    kinds: Vec<String>,
    /// `Accepted`: the protocol and port are served here.
    accepted: Result<(), Why>,
    /// `ResolvedRefs`: its route kinds and certificates.
    resolved: Result<(), Why>,
    /// It names a route kind we do not serve.
    bad_kinds: bool,
    attached: u32,
}

impl ListenerSlot {
    /// Routes attach to an accepted listener whose route kinds are all
    /// served, even while its certificate is not resolved (the spec counts
    /// them; TLS to it fails until the certificate is there).
    fn attachable(&self) -> bool {
        self.accepted.is_ok() && !self.bad_kinds
    }

    fn programmed(&self) -> bool {
        self.accepted.is_ok() && self.resolved.is_ok()
    }
}

pub fn translate(inputs: &Inputs) -> Translation {
    let mut out = Translation::default();
    if !our_class(inputs, &mut out) {
        return out;
    }
    let mut gateways: Vec<&Arc<Gateway>> = inputs
        .gateways
        .iter()
        .filter(|g| g.spec.gateway_class_name == inputs.class)
        .collect();
    gateways.sort_by_key(|g| (created(&g.metadata), key_of(&g.metadata)));
    let mut slots = Vec::new();
    for gateway in &gateways {
        slots.extend(listeners(gateway, inputs, &mut out));
    }
    let mut http: Vec<&Arc<HttpRoute>> = inputs.http_routes.iter().collect();
    http.sort_by_key(|r| (created(&r.metadata), key_of(&r.metadata)));
    for route in http {
        let spec = &route.spec;
        let rules: Vec<RuleSource> = spec.rules.iter().map(RuleSource::Http).collect();
        route_object(
            &route.metadata,
            Kind::HttpRoute,
            &spec.parent_refs,
            &spec.hostnames,
            &rules,
            inputs,
            &mut slots,
            &mut out,
        );
    }
    let mut grpc: Vec<&Arc<GrpcRoute>> = inputs.grpc_routes.iter().collect();
    grpc.sort_by_key(|r| (created(&r.metadata), key_of(&r.metadata)));
    for route in grpc {
        let spec = &route.spec;
        let rules: Vec<RuleSource> = spec.rules.iter().map(RuleSource::Grpc).collect();
        route_object(
            &route.metadata,
            Kind::GrpcRoute,
            &spec.parent_refs,
            &spec.hostnames,
            &rules,
            inputs,
            &mut slots,
            &mut out,
        );
    }
    for gateway in &gateways {
        gateway_status(gateway, &slots, &mut out);
    }
    out
}

/// Our GatewayClass, with its status; `None` when it is missing or names
/// another controller (then nothing is served).
fn our_class(inputs: &Inputs, out: &mut Translation) -> bool {
    let Some(class) = inputs
        .classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(inputs.class))
    else {
        return false;
    };
    if class.spec.controller_name != crate::config::GatewaySettings::CONTROLLER {
        out.problems.push(Problem::new(
            &format!("gatewayclass/{}", inputs.class),
            ProblemKind::IngressClass,
            format!(
                "GatewayClass {} names controller {:?}, not {}: its Gateways are not served",
                inputs.class,
                class.spec.controller_name,
                crate::config::GatewaySettings::CONTROLLER
            ),
        ));
        return false;
    }
    let g = generation(&class.metadata);
    let features: Vec<Value> = SUPPORTED_FEATURES
        .iter()
        .map(|f| json!({ "name": f }))
        .collect();
    out.status.insert(
        (Kind::GatewayClass, String::new(), inputs.class.to_string()),
        json!({
            "conditions": [condition("Accepted", true, "Accepted", "served by edge-proxy", g)],
            "supportedFeatures": features,
        }),
    );
    true
}

/// A Gateway's listeners as slots; their certificates into `out.certs`.
fn listeners(gateway: &Gateway, inputs: &Inputs, out: &mut Translation) -> Vec<ListenerSlot> {
    let key = key_of(&gateway.metadata);
    let mut slots = Vec::new();
    for listener in &gateway.spec.listeners {
        let (tls, served) = match listener.protocol.as_str() {
            "HTTP" => (false, Some(inputs.ports.http)),
            "HTTPS" => (true, inputs.ports.https),
            _ => (false, None),
        };
        let accepted = match (listener.protocol.as_str(), served) {
            ("HTTP" | "HTTPS", Some(port)) if i32::from(port) == listener.port => Ok(()),
            ("HTTP" | "HTTPS", Some(port)) => Err((
                "PortUnavailable",
                format!(
                    "edge-proxy serves {} on port {port} only",
                    listener.protocol
                ),
            )),
            ("HTTPS", None) => Err((
                "PortUnavailable",
                "edge-proxy has no https listener (listen.https)".to_string(),
            )),
            (other, _) => Err((
                "UnsupportedProtocol",
                format!("protocol {other:?} is not served (HTTP and HTTPS are)"),
            )),
        };
        let (kinds, bad_kind) = allowed_kinds(listener);
        let resolved = if bad_kind {
            Err((
                "InvalidRouteKinds",
                "only HTTPRoute and GRPCRoute (gateway.networking.k8s.io) are served".to_string(),
            ))
        } else if tls && accepted.is_ok() {
            certificates(gateway, listener, inputs, out)
        } else {
            Ok(())
        };
        slots.push(ListenerSlot {
            gateway: key.clone(),
            name: listener.name.clone(),
            port: listener.port,
            tls,
            hostname: listener.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
            allowed: listener.allowed_routes.clone(),
            kinds,
            accepted,
            resolved,
            bad_kinds: bad_kind,
            attached: 0,
        });
    }
    slots
}

/// The route kinds a listener allows that we serve, and whether it names one
/// we do not.
fn allowed_kinds(listener: &Listener) -> (Vec<String>, bool) {
    let named = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.kinds.as_ref())
        .filter(|k| !k.is_empty());
    let Some(kinds) = named else {
        return (ROUTE_KINDS.iter().map(|k| k.to_string()).collect(), false);
    };
    let mut ours = Vec::new();
    let mut bad = false;
    for k in kinds {
        let group_ok = k.group.as_deref().unwrap_or(GROUP) == GROUP;
        if group_ok && ROUTE_KINDS.contains(&k.kind.as_str()) {
            ours.push(k.kind.clone());
        } else {
            bad = true;
        }
    }
    (ours, bad)
}

/// Load an HTTPS listener's certificates (the first usable one is served for
/// its hostname, or for any name without one).
fn certificates(
    gateway: &Gateway,
    listener: &Listener,
    inputs: &Inputs,
    out: &mut Translation,
) -> Result<(), Why> {
    let (gw_ns, _) = key_of(&gateway.metadata);
    let refs = listener
        .tls
        .as_ref()
        .map(|t| t.certificate_refs.as_slice())
        .unwrap_or_default();
    let mode = listener.tls.as_ref().and_then(|t| t.mode.as_deref());
    if mode.is_some_and(|m| m != "Terminate") {
        return Err((
            "UnsupportedValue",
            "only TLS mode Terminate is supported".into(),
        ));
    }
    let Some(first) = refs.first() else {
        return Err((
            "InvalidCertificateRef",
            "an HTTPS listener needs tls.certificateRefs".into(),
        ));
    };
    if !is_core(first.group.as_deref(), first.kind.as_deref(), "Secret") {
        return Err((
            "InvalidCertificateRef",
            format!("{}: only core Secrets are supported", first.name),
        ));
    }
    let ns = first.namespace.clone().unwrap_or_else(|| gw_ns.clone());
    if ns != gw_ns && !granted(inputs, &gw_ns, "Gateway", &ns, "", "Secret", &first.name) {
        return Err((
            "RefNotPermitted",
            format!("Secret {ns}/{}: no ReferenceGrant allows it", first.name),
        ));
    }
    let key = (ns.clone(), first.name.clone());
    out.wanted.secrets.insert(key.clone());
    let secret = inputs.named.secrets.get(&key).ok_or_else(|| {
        (
            "InvalidCertificateRef",
            format!("Secret {ns}/{} not found", first.name),
        )
    })?;
    let data = named::secret_data(secret).map_err(|e| ("InvalidCertificateRef", e))?;
    let (Some(cert), Some(private)) = (data.get("tls.crt"), data.get("tls.key")) else {
        return Err((
            "InvalidCertificateRef",
            format!("Secret {ns}/{}: no tls.crt and tls.key", first.name),
        ));
    };
    let (certified, not_after) = crate::tls::certified_key(&cert.0, &private.0).map_err(|e| {
        (
            "InvalidCertificateRef",
            format!("Secret {ns}/{}: {e}", first.name),
        )
    })?;
    match &listener.hostname {
        Some(h) => out
            .certs
            .add(&[h.to_ascii_lowercase()], certified, not_after),
        // No hostname: the listener's certificate is for every other name.
        None => out.certs.add_catch_all(certified, not_after),
    }
    Ok(())
}

/// Whether a reference names the core kind `kind` (group "" and that kind,
/// both defaulted as the API does).
fn is_core(group: Option<&str>, kind: Option<&str>, want: &str) -> bool {
    group.unwrap_or("").is_empty() && kind.unwrap_or(want) == want
}

/// Whether a ReferenceGrant in `to_ns` lets `from_kind` objects of
/// `from_ns` refer to the `to_kind` object `name` there.
fn granted(
    inputs: &Inputs,
    from_ns: &str,
    from_kind: &str,
    to_ns: &str,
    to_group: &str,
    to_kind: &str,
    name: &str,
) -> bool {
    inputs.grants.iter().any(|grant| {
        grant.metadata.namespace.as_deref() == Some(to_ns)
            && grant
                .spec
                .from
                .iter()
                .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
            && grant.spec.to.iter().any(|t| {
                t.group == to_group
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
    })
}

/// One Gateway's status from its listeners' slots.
fn gateway_status(gateway: &Gateway, slots: &[ListenerSlot], out: &mut Translation) {
    let key = key_of(&gateway.metadata);
    let g = generation(&gateway.metadata);
    let ours: Vec<&ListenerSlot> = slots.iter().filter(|s| s.gateway == key).collect();
    // Listeners of this Gateway on the same port with the same hostname.
    let mut seen: BTreeMap<(i32, Option<&str>), usize> = BTreeMap::new();
    for slot in &ours {
        *seen
            .entry((slot.port, slot.hostname.as_deref()))
            .or_default() += 1;
    }
    let mut statuses = Vec::new();
    let (mut all_valid, mut any_valid) = (true, false);
    for slot in ours {
        let conflicted = seen[&(slot.port, slot.hostname.as_deref())] > 1;
        let programmed = slot.programmed() && !conflicted;
        all_valid &= programmed;
        any_valid |= programmed;
        let state = |r: &Result<(), Why>, ok: &str| match r {
            Ok(()) => (true, ok.to_string(), String::new()),
            Err((reason, message)) => (false, reason.to_string(), message.clone()),
        };
        let (a_ok, a_reason, a_msg) = state(&slot.accepted, "Accepted");
        let (r_ok, r_reason, r_msg) = state(&slot.resolved, "ResolvedRefs");
        let supported: Vec<Value> = slot
            .kinds
            .iter()
            .map(|k| json!({"group": GROUP, "kind": k}))
            .collect();
        statuses.push(json!({
            "name": slot.name,
            "supportedKinds": supported,
            "attachedRoutes": slot.attached,
            "conditions": [
                condition("Accepted", a_ok, &a_reason, &a_msg, g),
                condition("ResolvedRefs", r_ok, &r_reason, &r_msg, g),
                condition(
                    "Conflicted",
                    conflicted,
                    if conflicted { "HostnameConflict" } else { "NoConflicts" },
                    if conflicted { "another listener has the same port and hostname" } else { "" },
                    g,
                ),
                condition(
                    "Programmed",
                    programmed,
                    if programmed { "Programmed" } else { "Invalid" },
                    "",
                    g,
                ),
            ],
        }));
    }
    let accepted = condition(
        "Accepted",
        true,
        if all_valid {
            "Accepted"
        } else {
            "ListenersNotValid"
        },
        "",
        g,
    );
    let programmed = condition(
        "Programmed",
        any_valid,
        if any_valid { "Programmed" } else { "Invalid" },
        "",
        g,
    );
    out.status.insert(
        (Kind::Gateway, key.0, key.1),
        json!({"conditions": [accepted, programmed], "listeners": statuses}),
    );
}

/// A rule of either route kind.
enum RuleSource<'a> {
    Http(&'a HttpRule),
    Grpc(&'a GrpcRule),
}

impl RuleSource<'_> {
    fn backend_refs(&self) -> &[BackendRef] {
        match self {
            RuleSource::Http(r) => &r.backend_refs,
            RuleSource::Grpc(r) => &r.backend_refs,
        }
    }

    fn filters(&self) -> &[HttpFilter] {
        match self {
            RuleSource::Http(r) => &r.filters,
            RuleSource::Grpc(r) => &r.filters,
        }
    }

    fn session_persistence(&self) -> Option<&SessionPersistence> {
        match self {
            RuleSource::Http(r) => r.session_persistence.as_ref(),
            RuleSource::Grpc(r) => r.session_persistence.as_ref(),
        }
    }
}

/// Where a route attached: its hostnames, each on plain HTTP, TLS or both.
type Attachments = BTreeMap<HostMatch, (bool, bool)>;

/// One HTTPRoute or GRPCRoute: its parents' status, and its routes when
/// accepted by at least one listener.
#[allow(clippy::too_many_arguments)]
fn route_object(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: Kind,
    parent_refs: &[ParentReference],
    hostnames: &[String],
    rules: &[RuleSource],
    inputs: &Inputs,
    slots: &mut [ListenerSlot],
    out: &mut Translation,
) {
    let (namespace, name) = key_of(meta);
    let g = generation(meta);
    let kind_name = match kind {
        Kind::GrpcRoute => "GRPCRoute",
        _ => "HTTPRoute",
    };
    // What the whole route cannot be served with, and its backends.
    let unsupported = rules
        .iter()
        .enumerate()
        .find_map(|(i, r)| unsupported(r).map(|e| format!("rules[{i}]: {e}")));
    let mut backends: Vec<Vec<Result<(UpstreamKey, u32), Why>>> = Vec::new();
    let mut mirrors: Vec<Vec<Result<Mirror, Why>>> = Vec::new();
    for rule in rules {
        let resolved = rule
            .backend_refs()
            .iter()
            .map(|b| resolve_backend(b, &namespace, kind_name, inputs, out))
            .collect();
        backends.push(resolved);
        let copies = rule
            .filters()
            .iter()
            .filter_map(|f| f.request_mirror.as_ref())
            .map(|m| {
                let (upstream, _) =
                    resolve_backend(&m.backend_ref, &namespace, kind_name, inputs, out)?;
                let (numerator, denominator) = match (&m.fraction, m.percent) {
                    (Some(f), _) => (f.numerator, f.denominator.unwrap_or(100)),
                    (None, Some(p)) => (p, 100),
                    (None, None) => (1, 1),
                };
                Ok(Mirror {
                    upstream,
                    numerator: u32::try_from(numerator).unwrap_or(0),
                    denominator: u32::try_from(denominator).unwrap_or(1).max(1),
                })
            })
            .collect();
        mirrors.push(copies);
    }
    let refs_error = backends
        .iter()
        .flatten()
        .find_map(|b| b.as_ref().err())
        .or_else(|| mirrors.iter().flatten().find_map(|m| m.as_ref().err()));
    let mut attachments = Attachments::new();
    let mut parents = Vec::new();
    for parent in parent_refs {
        if parent.group.as_deref().unwrap_or(GROUP) != GROUP
            || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway"
        {
            continue;
        }
        let gateway = (
            parent
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.clone()),
            parent.name.clone(),
        );
        if !slots.iter().any(|s| s.gateway == gateway)
            && !inputs.gateways.iter().any(|gw| {
                key_of(&gw.metadata) == gateway && gw.spec.gateway_class_name == inputs.class
            })
        {
            continue; // not ours: another controller's parent
        }
        let accepted = match &unsupported {
            Some(e) => Err(("UnsupportedValue", e.clone())),
            None => attach(
                parent,
                &gateway,
                &namespace,
                kind_name,
                hostnames,
                inputs,
                slots,
                &mut attachments,
            ),
        };
        let (a_ok, a_reason, a_msg) = match &accepted {
            Ok(()) => (true, "Accepted", String::new()),
            Err((reason, message)) => (false, *reason, message.clone()),
        };
        let (r_ok, r_reason, r_msg) = match refs_error {
            None => (true, "ResolvedRefs", String::new()),
            Some((reason, message)) => (false, *reason, message.clone()),
        };
        parents.push(json!({
            "parentRef": parent.normalized(),
            "controllerName": crate::config::GatewaySettings::CONTROLLER,
            "conditions": [
                condition("Accepted", a_ok, a_reason, &a_msg, g),
                condition("ResolvedRefs", r_ok, r_reason, &r_msg, g),
            ],
        }));
    }
    if parents.is_empty() {
        return;
    }
    out.status.insert(
        (kind.clone(), namespace.clone(), name.clone()),
        Value::Array(parents),
    );
    if let Some(e) = &unsupported {
        out.problems.push(Problem::new(
            &format!("{namespace}/{name}"),
            ProblemKind::Refused,
            format!("{kind_name} {namespace}/{name}: {e}: not served"),
        ));
    }
    if attachments.is_empty() {
        return;
    }
    let origin = Origin::Object {
        created: created(meta),
        id: format!("{namespace}/{name}"),
        kind: kind_name,
    };
    let prefix = kind_name.to_ascii_lowercase();
    for (i, (rule, resolved)) in rules.iter().zip(&backends).enumerate() {
        let base = format!("{prefix}:{namespace}/{name}:rules[{i}]");
        // A mirror that does not resolve is left out (reported above).
        let copies: Vec<Mirror> = mirrors[i].iter().flatten().cloned().collect();
        match rule_routes(rule, resolved, copies, &base, &origin, &attachments) {
            Ok(routes) => out.routes.extend(routes),
            Err(e) => out.problems.push(Problem::new(
                &format!("{namespace}/{name}"),
                ProblemKind::InvalidRule,
                format!("{base}: {e}"),
            )),
        }
    }
}

/// What in a rule edge-proxy does not serve, if anything.
fn unsupported(rule: &RuleSource) -> Option<String> {
    if let RuleSource::Http(r) = rule {
        if let Err(e) = request_timeout(r) {
            return Some(e);
        }
        if r.retry.is_some() {
            return Some("retry is not supported".into());
        }
    }
    if let Some(s) = rule.session_persistence() {
        if s.kind.as_deref().unwrap_or("Cookie") != "Cookie" {
            return Some("sessionPersistence of type Header is not supported".into());
        }
        if let Some(t) = &s.absolute_timeout {
            if gateway_duration(t).is_none() {
                return Some(format!(
                    "sessionPersistence.absoluteTimeout {t:?} is not a duration"
                ));
            }
        }
    }
    for f in rule.filters() {
        let ok = match f.kind.as_str() {
            "RequestHeaderModifier" => f.request_header_modifier.is_some(),
            "ResponseHeaderModifier" => f.response_header_modifier.is_some(),
            "RequestRedirect" => {
                matches!(rule, RuleSource::Http(_)) && f.request_redirect.is_some()
            }
            "URLRewrite" => matches!(rule, RuleSource::Http(_)) && f.url_rewrite.is_some(),
            "RequestMirror" => f.request_mirror.is_some(),
            _ => false,
        };
        if !ok {
            return Some(format!("filter {:?} is not supported", f.kind));
        }
    }
    None
}

/// A backendRef as an upstream and weight, or why it is not resolved.
fn resolve_backend(
    b: &BackendRef,
    route_ns: &str,
    route_kind: &str,
    inputs: &Inputs,
    out: &mut Translation,
) -> Result<(UpstreamKey, u32), Why> {
    let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
    if !is_core(b.group.as_deref(), b.kind.as_deref(), "Service") {
        return Err((
            "InvalidKind",
            format!(
                "backendRef {}: kind {}/{} is not served (core Services are)",
                b.name,
                b.group.as_deref().unwrap_or(""),
                b.kind.as_deref().unwrap_or("")
            ),
        ));
    }
    let ns = b.namespace.clone().unwrap_or_else(|| route_ns.to_string());
    if ns != route_ns && !granted(inputs, route_ns, route_kind, &ns, "", "Service", &b.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "Service {ns}/{}: no ReferenceGrant in {ns} allows it",
                b.name
            ),
        ));
    }
    let Some(port) = b
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
    else {
        return Err((
            "UnsupportedValue",
            format!("backendRef {}: a Service needs a port", b.name),
        ));
    };
    let key = (ns.clone(), b.name.clone());
    out.wanted.services.insert(key.clone());
    if !inputs.named.services.contains_key(&key) {
        return Err((
            "BackendNotFound",
            format!("Service {ns}/{} not found", b.name),
        ));
    }
    Ok((
        UpstreamKey {
            namespace: ns,
            service: b.name.clone(),
            port: ServicePort::Number(port),
            cluster_ip: None,
        },
        weight,
    ))
}

/// Attach a route to the listeners `parent` selects of `gateway`: into
/// `attachments` its hostnames on each, or why none takes it.
#[allow(clippy::too_many_arguments)]
fn attach(
    parent: &ParentReference,
    gateway: &(String, String),
    route_ns: &str,
    kind: &str,
    hostnames: &[String],
    inputs: &Inputs,
    slots: &mut [ListenerSlot],
    attachments: &mut Attachments,
) -> Result<(), Why> {
    let candidates: Vec<usize> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.gateway == *gateway)
        .filter(|(_, s)| parent.section_name.as_ref().is_none_or(|n| *n == s.name))
        .filter(|(_, s)| parent.port.is_none_or(|p| p == s.port))
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return Err((
            "NoMatchingParent",
            "no listener of the Gateway has this sectionName and port".into(),
        ));
    }
    let allowed: Vec<usize> = candidates
        .into_iter()
        .filter(|i| {
            let s = &slots[*i];
            s.attachable()
                && s.kinds.iter().any(|k| k == kind)
                && namespace_allowed(s.allowed.as_ref(), &s.gateway.0, route_ns, inputs)
        })
        .collect();
    if allowed.is_empty() {
        return Err((
            "NotAllowedByListeners",
            "no listener of the Gateway allows this route (its namespace or kind)".into(),
        ));
    }
    let mut matched = false;
    for i in allowed {
        let Some(hosts) = intersect(slots[i].hostname.as_deref(), hostnames) else {
            continue;
        };
        matched = true;
        slots[i].attached += 1;
        for host in hosts {
            let entry = attachments.entry(host).or_default();
            if slots[i].tls {
                entry.1 = true;
            } else {
                entry.0 = true;
            }
        }
    }
    if !matched {
        return Err((
            "NoMatchingListenerHostname",
            "no hostname of the route matches a listener's".into(),
        ));
    }
    Ok(())
}

/// `allowedRoutes.namespaces` of a listener: Same (default), All, Selector.
fn namespace_allowed(
    allowed: Option<&AllowedRoutes>,
    gateway_ns: &str,
    route_ns: &str,
    inputs: &Inputs,
) -> bool {
    let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => {
            let Some(selector) = namespaces.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let labels = inputs
                .namespaces
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(route_ns))
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            selects(selector, &labels)
        }
        _ => gateway_ns == route_ns,
    }
}

/// A Kubernetes label selector against a label set.
fn selects(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_label
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// A hostname as Gateway API writes it: `*.domain` covers any depth.
fn host_match(host: &str) -> HostMatch {
    match host.strip_prefix("*.") {
        Some(domain) => HostMatch::Suffix(domain.to_string()),
        None => HostMatch::Exact(host.to_string()),
    }
}

/// Whether `name` (exact) is covered by the wildcard domain `domain`.
fn under(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

/// The hostnames a route has on a listener: the intersection of the
/// listener's (one or none) with the route's (any or none), as the spec
/// defines it; `None` when they do not meet.
pub fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<HostMatch>> {
    let route: Vec<String> = route.iter().map(|h| h.to_ascii_lowercase()).collect();
    let Some(listener) = listener else {
        return Some(if route.is_empty() {
            vec![HostMatch::Any]
        } else {
            route.iter().map(|h| host_match(h)).collect()
        });
    };
    if route.is_empty() {
        return Some(vec![host_match(listener)]);
    }
    let mut out = Vec::new();
    for r in &route {
        let meet = match (listener.strip_prefix("*."), r.strip_prefix("*.")) {
            (None, None) => (r == listener).then(|| listener.to_string()),
            (None, Some(rd)) => under(listener, rd).then(|| listener.to_string()),
            (Some(ld), None) => under(r, ld).then(|| r.clone()),
            (Some(ld), Some(rd)) => {
                if rd == ld || under(rd, ld) {
                    Some(r.clone())
                } else if under(ld, rd) {
                    Some(listener.to_string())
                } else {
                    None
                }
            }
        };
        if let Some(h) = meet {
            let m = host_match(&h);
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Gateway API's duration: `1h`, `10m`, `30s`, `500ms`, combined (`1h30m`).
pub fn gateway_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        total += unit * u32::try_from(n).ok()?;
        rest = &rest[len..];
    }
    Some(total)
}

/// One rule's routes: a route per match and attached hostname.
fn rule_routes(
    rule: &RuleSource,
    resolved: &[Result<(UpstreamKey, u32), Why>],
    mirrors: Vec<Mirror>,
    base: &str,
    origin: &Origin,
    attachments: &Attachments,
) -> Result<Vec<Route>, String> {
    let backends: Vec<Backend> = resolved
        .iter()
        .flatten()
        .map(|(upstream, weight)| Backend {
            upstream: upstream.clone(),
            weight: *weight,
        })
        .collect();
    // An unresolved backend keeps its weight, answered 500.
    let invalid_weight: u32 = rule
        .backend_refs()
        .iter()
        .zip(resolved)
        .filter(|(_, r)| r.is_err())
        .map(|(b, _)| u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0))
        .sum();
    let matches = match rule {
        RuleSource::Http(r) => http_matches(r)?,
        RuleSource::Grpc(r) => grpc_matches(r)?,
    };
    let mut routes = Vec::new();
    for (j, (m, prefix)) in matches.into_iter().enumerate() {
        let mut policies = rule_policies(rule, prefix.as_deref())?;
        if invalid_weight > 0 && !backends.is_empty() {
            policies.push(Policy::InvalidBackends(invalid_weight));
        }
        if !mirrors.is_empty() {
            policies.push(Policy::Mirror(mirrors.clone()));
        }
        for (host, (plain, tls)) in attachments {
            let mut matches = m.clone();
            matches.host = host.clone();
            matches.tls = match (plain, tls) {
                (true, true) => None,
                (_, tls) => Some(*tls),
            };
            routes.push(Route {
                name: format!("{base}.matches[{j}]"),
                origin: origin.clone(),
                matches,
                backends: backends.clone(),
                policies: policies.clone(),
            });
        }
    }
    Ok(routes)
}

/// An HTTPRoute rule's matches (one `/` prefix when none), each with the
/// prefix a path modifier replaces.
fn http_matches(rule: &HttpRule) -> Result<Vec<(Match, Option<String>)>, String> {
    let default = [HttpMatch::default()];
    let list = if rule.matches.is_empty() {
        &default[..]
    } else {
        &rule.matches
    };
    list.iter()
        .map(|m| {
            let path = m.path.clone().unwrap_or_default();
            let value = path.value.unwrap_or_else(|| "/".into());
            if !value.starts_with('/') {
                return Err(format!("path {value:?} does not start with /"));
            }
            let (path, path_type, prefix) = match path.kind.as_deref().unwrap_or("PathPrefix") {
                "Exact" => (value, PathType::Exact, None),
                "PathPrefix" => {
                    let trimmed = value.trim_end_matches('/');
                    let p = if trimmed.is_empty() { "/" } else { trimmed }.to_string();
                    (p.clone(), PathType::Prefix, Some(p))
                }
                "RegularExpression" => {
                    // Whole path, case-sensitive (the router's regex paths
                    // are prefix-anchored and case-insensitive).
                    let pattern = format!("(?-i:{value})$");
                    crate::route::path_regex(&pattern)?;
                    (pattern, PathType::Regex, None)
                }
                other => return Err(format!("path type {other:?} is not supported")),
            };
            let mut out = Match::path(HostMatch::Any, path, path_type);
            out.method = m.method.as_ref().map(|x| x.to_ascii_uppercase());
            out.headers = value_matches(&m.headers, true)?;
            out.query = value_matches(&m.query_params, false)?;
            Ok((out, prefix))
        })
        .collect()
}

/// Header or query matches; the first of a repeated name counts (the spec).
fn value_matches(
    list: &[super::types::ValueMatch],
    header: bool,
) -> Result<Vec<ValueMatch>, String> {
    let mut out: Vec<ValueMatch> = Vec::new();
    for v in list {
        let name = if header {
            v.name.to_ascii_lowercase()
        } else {
            v.name.clone()
        };
        if out.iter().any(|o| o.name == name) {
            continue;
        }
        let value = match v.kind.as_deref().unwrap_or("Exact") {
            "Exact" => StringMatch::Exact(v.value.clone()),
            "RegularExpression" => {
                crate::route::value_regex(&v.value)?;
                StringMatch::Regex(v.value.clone())
            }
            other => return Err(format!("match type {other:?} is not supported")),
        };
        out.push(ValueMatch { name, value });
    }
    Ok(out)
}

/// A GRPCRoute rule's matches as HTTP/2 paths: `/SERVICE/METHOD`.
fn grpc_matches(rule: &GrpcRule) -> Result<Vec<(Match, Option<String>)>, String> {
    let default = [GrpcMatch::default()];
    let list = if rule.matches.is_empty() {
        &default[..]
    } else {
        &rule.matches
    };
    list.iter()
        .map(|m| {
            let method = m.method.clone().unwrap_or_default();
            let regex = method.kind.as_deref() == Some("RegularExpression");
            let (service, name) = (method.service.as_deref(), method.method.as_deref());
            let (path, path_type) = match (regex, service, name) {
                (_, None, None) => ("/".to_string(), PathType::Prefix),
                (false, Some(s), Some(n)) => (format!("/{s}/{n}"), PathType::Exact),
                (false, Some(s), None) => (format!("/{s}"), PathType::Prefix),
                (false, None, Some(n)) => (
                    format!("(?-i:/[^/]+/{})$", regex::escape(n)),
                    PathType::Regex,
                ),
                (true, s, n) => (
                    format!(
                        "(?-i:/(?:{})/(?:{}))$",
                        s.unwrap_or("[^/]+"),
                        n.unwrap_or("[^/]+")
                    ),
                    PathType::Regex,
                ),
            };
            if path_type == PathType::Regex {
                crate::route::path_regex(&path)?;
            }
            let mut out = Match::path(HostMatch::Any, path, path_type);
            out.headers = value_matches(&m.headers, true)?;
            Ok((out, None))
        })
        .collect()
}

/// A rule's `timeouts` as one deadline for the exchange: the smaller of
/// `request` and `backendRequest` (edge-proxy retries only connections that
/// failed, so a backend request lasts as long as the whole); `0s` is none.
fn request_timeout(rule: &HttpRule) -> Result<Option<Duration>, String> {
    let Some(t) = &rule.timeouts else {
        return Ok(None);
    };
    let mut limit: Option<Duration> = None;
    for field in ["request", "backendRequest"] {
        let Some(text) = t.get(field).and_then(Value::as_str) else {
            continue;
        };
        let d = gateway_duration(text)
            .ok_or_else(|| format!("timeouts.{field} {text:?} is not a duration"))?;
        if !d.is_zero() {
            limit = Some(limit.map_or(d, |l| l.min(d)));
        }
    }
    Ok(limit)
}

/// A rule's filters and settings as policies, in the order they answer.
fn rule_policies(rule: &RuleSource, prefix: Option<&str>) -> Result<Vec<Policy>, String> {
    let mut policies = Vec::new();
    let path_change = |m: &Option<PathModifier>| -> Result<Option<PathChange>, String> {
        let Some(m) = m else { return Ok(None) };
        match m.kind.as_str() {
            "ReplaceFullPath" => Ok(Some(PathChange::Full(
                m.replace_full_path.clone().unwrap_or_else(|| "/".into()),
            ))),
            "ReplacePrefixMatch" => {
                let Some(prefix) = prefix else {
                    return Err("ReplacePrefixMatch needs a PathPrefix match".into());
                };
                Ok(Some(PathChange::Prefix {
                    prefix: prefix.to_string(),
                    with: m.replace_prefix_match.clone().unwrap_or_else(|| "/".into()),
                }))
            }
            other => Err(format!("path modifier {other:?} is not supported")),
        }
    };
    let changes = |m: &HeaderModifier| HeaderChanges {
        set: m
            .set
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        add: m
            .add
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    };
    for f in rule.filters() {
        if let Some(r) = &f.request_redirect {
            let code = u16::try_from(r.status_code.unwrap_or(302)).unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&code) {
                return Err(format!("redirect status {code} is not supported"));
            }
            policies.insert(
                0,
                Policy::RedirectTo(RedirectTo {
                    scheme: r.scheme.as_ref().map(|s| s.to_ascii_lowercase()),
                    hostname: r.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
                    port: r.port.and_then(|p| u16::try_from(p).ok()),
                    path: path_change(&r.path)?,
                    code,
                }),
            );
        }
        if let Some(r) = &f.url_rewrite {
            policies.push(Policy::RewriteUrl(RewriteUrl {
                hostname: r.hostname.clone(),
                path: path_change(&r.path)?,
            }));
        }
        if let Some(m) = &f.request_header_modifier {
            policies.push(Policy::ModifyRequestHeaders(changes(m)));
        }
        if let Some(m) = &f.response_header_modifier {
            policies.push(Policy::ModifyResponseHeaders(changes(m)));
        }
    }
    if let RuleSource::Http(r) = rule {
        if let Ok(Some(limit)) = request_timeout(r) {
            policies.push(Policy::Timeouts(crate::route::TimeoutOverrides {
                request: Some(limit),
                ..Default::default()
            }));
        }
    }
    if matches!(rule, RuleSource::Grpc(_)) {
        // gRPC backends: HTTP/2 with prior knowledge (h2c).
        policies.push(Policy::UpstreamProtocol(UpstreamProtocol {
            http2: true,
            ..Default::default()
        }));
    }
    if let Some(s) = rule.session_persistence() {
        let permanent = s
            .cookie_config
            .as_ref()
            .and_then(|c| c.lifetime_type.as_deref())
            == Some("Permanent");
        let absolute = s.absolute_timeout.as_deref().and_then(gateway_duration);
        let name = s
            .session_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_SESSION_COOKIE.to_string());
        policies.push(Policy::Affinity(Affinity::new(
            name,
            if permanent { absolute } else { None },
        )));
    }
    Ok(policies)
}

/// The session cookie's name when `sessionName` is not given.
pub const DEFAULT_SESSION_COOKIE: &str = "EDGESESSION";

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn hostnames_intersect_as_the_spec_defines() {
        let exact = |h: &str| HostMatch::Exact(h.into());
        let suffix = |d: &str| HostMatch::Suffix(d.into());
        assert_eq!(intersect(None, &[]), Some(vec![HostMatch::Any]));
        assert_eq!(
            intersect(Some("*.example.com"), &[]),
            Some(vec![suffix("example.com")])
        );
        assert_eq!(
            intersect(Some("foo.example.com"), &hosts(&["*.example.com"])),
            Some(vec![exact("foo.example.com")])
        );
        assert_eq!(
            intersect(
                Some("*.example.com"),
                &hosts(&["a.b.example.com", "example.com", "other.org"])
            ),
            Some(vec![exact("a.b.example.com")])
        );
        assert_eq!(
            intersect(Some("*.example.com"), &hosts(&["*.a.example.com"])),
            Some(vec![suffix("a.example.com")])
        );
        assert_eq!(
            intersect(Some("*.a.example.com"), &hosts(&["*.example.com"])),
            Some(vec![suffix("a.example.com")])
        );
        assert_eq!(
            intersect(Some("very.specific.com"), &hosts(&["non.matching.com"])),
            None
        );
        assert_eq!(
            intersect(Some("*.wildcard.io"), &hosts(&["wildcard.io"])),
            None
        );
        assert_eq!(
            intersect(Some("Foo.Example.com"), &hosts(&["FOO.example.COM"])),
            None,
            "the listener's hostname is lowercased by its caller"
        );
    }

    #[test]
    fn durations_as_gateway_api_writes_them() {
        assert_eq!(gateway_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(gateway_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(gateway_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(gateway_duration("10s"), Some(Duration::from_secs(10)));
        for bad in ["", "1", "1d", "h", "123456s", "-1s"] {
            assert_eq!(gateway_duration(bad), None, "{bad:?}");
        }
    }

    fn object<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn a_route_on_both_listeners_is_one_route_and_on_one_listener_carries_its_scheme() {
        let classes = [object::<GatewayClass>(json!({
            "metadata": {"name": "edge-proxy", "generation": 1},
            "spec": {"controllerName": "edge-proxy.io/gateway-controller"}}))];
        let gateways = [object::<Gateway>(json!({
        "metadata": {"name": "gw", "namespace": "default", "generation": 2},
        "spec": {"gatewayClassName": "edge-proxy", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP"},
            {"name": "https", "port": 443, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "missing"}]}},
            {"name": "tcp", "port": 9000, "protocol": "TCP"},
            {"name": "other", "port": 8080, "protocol": "HTTP"},
        ]}}))];
        let routes = [
            object::<HttpRoute>(
                json!({"metadata": {"name": "both", "namespace": "default", "generation": 3},
                "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["a.test"],
                         "rules": [{"backendRefs": [{"name": "svc", "port": 80, "weight": 3}, {"name": "gone", "port": 80}]}]}}),
            ),
            object::<HttpRoute>(
                json!({"metadata": {"name": "plain", "namespace": "default"},
                "spec": {"parentRefs": [{"name": "gw", "sectionName": "http"}], "hostnames": ["b.test"],
                         "rules": [{"matches": [{"path": {"type": "Exact", "value": "/x"}}], "backendRefs": [{"name": "svc", "port": 80}]}]}}),
            ),
            object::<HttpRoute>(
                json!({"metadata": {"name": "mirror", "namespace": "default"},
                "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"filters": [{"type": "CORS", "cors": {}}]}]}}),
            ),
        ];
        let mut named = NamedObjects::default();
        named.services.insert(
            ("default".into(), "svc".into()),
            Arc::new(
                serde_json::from_value(
                    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}}),
                )
                .unwrap(),
            ),
        );
        let t = translate(&Inputs {
            class: "edge-proxy",
            classes: &classes,
            gateways: &gateways,
            http_routes: &routes,
            grpc_routes: &[],
            grants: &[],
            namespaces: &[],
            named: &named,
            ports: Ports {
                http: 80,
                https: Some(443),
            },
        });
        let both: Vec<&Route> = t
            .routes
            .iter()
            .filter(|r| r.name.contains("/both:"))
            .collect();
        assert_eq!(both.len(), 1);
        assert_eq!(both[0].matches.tls, None, "attached to both listeners");
        assert_eq!(both[0].backends.len(), 1);
        assert!(
            both[0].policies.contains(&Policy::InvalidBackends(1)),
            "the missing Service keeps its share"
        );
        let plain: Vec<&Route> = t
            .routes
            .iter()
            .filter(|r| r.name.contains("/plain:"))
            .collect();
        assert_eq!(plain[0].matches.tls, Some(false));
        assert_eq!(plain[0].matches.path_type, PathType::Exact);
        assert!(
            t.routes.iter().all(|r| !r.name.contains("/mirror:")),
            "an unsupported filter is not served"
        );
        let status = |kind: Kind, name: &str| {
            t.status[&(kind, "default".to_string(), name.to_string())].clone()
        };
        let reason = |v: &Value, kind: &str| {
            v.as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == kind)
                .map(|c| (c["status"].clone(), c["reason"].clone()))
        };
        let parents = status(Kind::HttpRoute, "both");
        assert_eq!(
            reason(&parents[0]["conditions"], "ResolvedRefs"),
            Some((json!("False"), json!("BackendNotFound")))
        );
        assert_eq!(parents[0]["conditions"][0]["observedGeneration"], 3);
        let mirror = status(Kind::HttpRoute, "mirror");
        assert_eq!(
            reason(&mirror[0]["conditions"], "Accepted"),
            Some((json!("False"), json!("UnsupportedValue")))
        );
        let gw = status(Kind::Gateway, "gw");
        let listener = |name: &str| {
            gw["listeners"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(
            reason(&listener("https")["conditions"], "ResolvedRefs"),
            Some((json!("False"), json!("InvalidCertificateRef")))
        );
        assert_eq!(
            reason(&listener("tcp")["conditions"], "Accepted"),
            Some((json!("False"), json!("UnsupportedProtocol")))
        );
        assert_eq!(
            reason(&listener("other")["conditions"], "Accepted"),
            Some((json!("False"), json!("PortUnavailable")))
        );
        assert_eq!(listener("http")["attachedRoutes"], 2);
        assert_eq!(
            reason(&gw["conditions"], "Accepted"),
            Some((json!("True"), json!("ListenersNotValid")))
        );
        assert_eq!(gw["conditions"][0]["observedGeneration"], 2);
        assert!(t
            .wanted
            .secrets
            .contains(&("default".to_string(), "missing".to_string())));
    }
}
