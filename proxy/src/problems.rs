//! Problems with what a source asked for (an Ingress that cannot be served as
//! written, a conflict between two objects): one typed [`Problem`], reported
//! the same way for every source. A problem is logged when it appears and
//! when it is resolved, not at every recompute, and the gauge
//! `edge_proxy_ingress_problems{ingress, problem}` holds the current set.

use crate::metrics::METRICS;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// What kind of problem: the `problem` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// Another object (or the file) already serves the same match.
    Conflict,
    /// A TLS Secret that is missing or does not load.
    TlsSecret,
    /// A rule that cannot become a route (bad host, path or backend).
    InvalidRule,
    /// An annotation that is not supported: ignored.
    UnsupportedAnnotation,
    /// An annotation whose value does not parse: its default applies.
    InvalidAnnotation,
    /// An annotation that makes the object unsafe to serve without it.
    RefusedAnnotation,
    /// The object is not served at all.
    Refused,
    /// Our IngressClass names another controller.
    IngressClass,
}

impl ProblemKind {
    pub fn label(self) -> &'static str {
        match self {
            ProblemKind::Conflict => "conflict",
            ProblemKind::TlsSecret => "tls_secret",
            ProblemKind::InvalidRule => "invalid_rule",
            ProblemKind::UnsupportedAnnotation => "unsupported_annotation",
            ProblemKind::InvalidAnnotation => "invalid_annotation",
            ProblemKind::RefusedAnnotation => "refused_annotation",
            ProblemKind::Refused => "refused",
            ProblemKind::IngressClass => "ingress_class",
        }
    }
}

/// Something about one object that is not served as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `NAMESPACE/NAME`, or `ingressclass/NAME`.
    pub object: String,
    pub kind: ProblemKind,
    pub message: String,
}

impl Problem {
    pub fn new(object: &str, kind: ProblemKind, message: String) -> Problem {
        Problem {
            object: object.to_string(),
            kind,
            message,
        }
    }
}

/// The problems last reported, by who reported them.
static REPORTED: Mutex<BTreeMap<&'static str, BTreeSet<Problem>>> = Mutex::new(BTreeMap::new());

/// Replace the problems `scope` reports (a source, or "conflicts" for the
/// snapshot builder): new ones are logged, resolved ones too, and the gauge
/// is set from every scope's.
pub fn report(scope: &'static str, problems: Vec<Problem>) {
    let now: BTreeSet<Problem> = problems.into_iter().collect();
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    let before = reported.remove(scope).unwrap_or_default();
    for p in now.difference(&before) {
        tracing::warn!(ingress = %p.object, problem = p.kind.label(), "{}", p.message);
    }
    for p in before.difference(&now) {
        tracing::info!(ingress = %p.object, problem = p.kind.label(), "resolved: {}", p.message);
    }
    if now.is_empty() && before.is_empty() {
        return;
    }
    reported.insert(scope, now);
    let gauge = &METRICS.ingress_problems;
    gauge.reset();
    for p in reported.values().flatten() {
        gauge.with_label_values(&[&p.object, p.kind.label()]).inc();
    }
}
