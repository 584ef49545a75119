//! The configuration file as written by users (serde types).
//!
//! These types only describe the YAML's shape. `validate.rs` turns them into the
//! internal types of `config/mod.rs`, which the proxy uses without re-checking.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub http: Option<String>,
    pub https: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCert {
    pub hosts: Vec<String>,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_type: Option<String>,
    pub service: String,
    pub namespace: Option<String>,
    pub port: Port,
    pub affinity: Option<Affinity>,
    pub redirect_https: Option<bool>,
}

/// A Service port: its number or its name, as in an Ingress backend.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a port number or a port name")]
pub enum Port {
    Number(i64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    pub cookie: String,
    pub max_age: Option<String>,
}

/// Timeouts towards the upstream pods, as durations ("2s", "500ms", "1m").
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub connect: Option<String>,
    pub read: Option<String>,
    pub write: Option<String>,
    pub idle: Option<String>,
}

/// The endpoints of `discovery: static`, keyed by service name.
pub type StaticEndpoints = BTreeMap<String, Vec<String>>;

/// The top-level keys of the file; each one is deserialized on its own so that
/// one bad key does not hide the problems of the others.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "admin",
    "discovery",
    "dns_name",
    "tls",
    "routes",
    "static",
    "timeouts",
    "threads",
    "retries",
    "drain_timeout",
    "logging",
    "limits",
    "trusted_proxies",
];

/// Bounds on what a client may send.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_header_bytes: Option<i64>,
    pub max_headers: Option<i64>,
    pub max_body_bytes: Option<i64>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<i64>,
}

/// Log output: `format` for lifecycle and error logs (stderr), `access` for the
/// one-line-per-request access log (stdout).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub format: Option<String>,
    pub access: Option<String>,
}
