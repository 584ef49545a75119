//! Configuration: loading the YAML file and validating it into the types below.
//!
//! A file that parses is not yet a valid configuration: `load` always runs the
//! validation step and reports every problem with the path of its field
//! (`routes[2].port: ...`), all at once.

mod file;
mod validate;

use crate::route::{HostMatch, PathType, Route};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A validated configuration. The proxy never re-checks what is here.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: Listen,
    pub admin: Option<SocketAddr>,
    pub discovery: Discovery,
    pub tls: Vec<TlsCert>,
    /// The file's routes, already in the route model (`crate::route`).
    pub routes: Vec<Route>,
    pub timeouts: Timeouts,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// How many other endpoints to try when connecting to one fails.
    pub retries: usize,
    /// How long in-flight requests get after SIGTERM.
    pub drain_timeout: Duration,
    pub logging: Logging,
    pub limits: Limits,
    /// `limits.per_client`: rates and connections per client address.
    pub per_client: Option<PerClientLimits>,
    /// Clients whose X-Forwarded-For is kept (other proxies, load balancers).
    pub trusted_proxies: Vec<IpNet>,
    /// Serve Ingress objects too (`discovery: kubernetes` only).
    pub ingress: Option<IngressSettings>,
    /// Serve Gateway API objects too (`discovery: kubernetes` only).
    pub gateway: Option<GatewaySettings>,
}

/// `gateway:` (README.md, "Gateway API"). Read at start only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// The GatewayClass served.
    pub class: String,
    /// Write the status of our GatewayClass, Gateways and routes.
    pub publish_status: bool,
    /// Where the Gateways' `status.addresses` come from, as for Ingresses.
    pub publish_selector: String,
    pub publish_addresses: Vec<String>,
}

impl GatewaySettings {
    /// The controller name a GatewayClass of ours carries in `spec.controllerName`.
    pub const CONTROLLER: &'static str = "edge-proxy.io/gateway-controller";
}

/// `ingress:` (README.md, "Coming from ingress-nginx"). Read at start only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSettings {
    /// The IngressClass served.
    pub class: String,
    /// Write `status.loadBalancer` of the served Ingresses.
    pub publish_status: bool,
    /// The label selector of the proxy's own pods, whose Nodes are the addresses.
    pub publish_selector: String,
    /// When not empty: these addresses (IPs or host names) instead of node IPs.
    pub publish_addresses: Vec<String>,
    /// Response headers a `custom-headers` ConfigMap may set (lowercase).
    pub allowed_response_headers: Vec<String>,
}

impl IngressSettings {
    /// The controller name an IngressClass of ours carries in `spec.controller`.
    pub const CONTROLLER: &'static str = "edge-proxy.io/ingress-controller";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line and headers together; beyond: 431.
    pub max_header_bytes: usize,
    /// Header fields; beyond: 431.
    pub max_headers: usize,
    /// Request body; beyond: 413.
    pub max_body_bytes: u64,
    /// A request head must be complete this long after the connection opened
    /// (or, on a kept-alive connection, after `idle_timeout` more): slowloris.
    pub header_timeout: Duration,
    /// How long a kept-alive client connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Open client connections per proxy process; more wait for a free slot
    /// for `header_timeout`, then are closed. Read at start only.
    pub max_connections: usize,
    /// The answer to a request beyond a per-client rate or count
    /// (`limits.per_client`, `limit-*` annotations).
    pub limited_status: u16,
}

/// `limits.per_client`: what one client address (the peer, or with
/// `trusted_proxies` the forwarded client) may do on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerClientLimits {
    pub rate: Option<crate::route::RequestRate>,
    /// Open connections; one more is closed before its request is read.
    pub connections: Option<u32>,
    /// Addresses no per-client limit applies to.
    pub exempt: Vec<IpNet>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            limited_status: 429,
        }
    }
}

/// An address range of `trusted_proxies`, like `10.0.0.0/8` or `2001:db8::/32`
/// (the `ipnet` crate's type).
pub use ipnet::IpNet;

/// Whether `net` holds `ip`; an IPv4-mapped IPv6 client (`::ffff:10.0.0.1`, as
/// a dual-stack listener reports it) matches IPv4 ranges.
pub fn net_contains(net: &IpNet, ip: std::net::IpAddr) -> bool {
    net.contains(&ip.to_canonical())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Logging {
    /// Lifecycle and error logs (stderr).
    pub format: LogFormat,
    /// The access log (stdout); `None` is off.
    pub access: Option<LogFormat>,
}

impl Logging {
    pub const DEFAULT: Logging = Logging {
        format: LogFormat::Json,
        access: Some(LogFormat::Json),
    };
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// Watch EndpointSlices of the routes' Services.
    Kubernetes,
    /// Resolve a name per Service; the template holds `{service}` and `{namespace}`.
    Dns { name_template: String },
    /// Fixed endpoints per service name.
    Static(BTreeMap<String, Vec<SocketAddr>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsCert {
    pub hosts: Vec<String>,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// How long an idle upstream connection stays in the pool.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// One problem in a configuration: the field's path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// A configuration file as loaded: the validated configuration and a hash of
/// the file's bytes (shown in `edge_proxy_config_info`, and how a reload
/// notices a change).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub hash: u64,
}

/// Read and validate the configuration file at `path`: the one way `check`,
/// start-up and reloads read it.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let name = path.display().to_string();
    // One byte past the cap is enough to refuse it (from_bytes says how big).
    let read = || -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = read().map_err(|e| ConfigError {
        source_name: name.clone(),
        problems: vec![Problem {
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    Ok(Loaded {
        config: from_bytes(&name, &bytes)?,
        hash: content_hash(&bytes),
    })
}

/// The largest configuration file read: what a ConfigMap holds. A larger
/// file is refused before it is parsed (10 MB of routes took 619 MB to load).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Validate a configuration file's bytes (a reload hashes them itself first,
/// to see whether they changed). YAML is UTF-8 text: anything else is a
/// problem, named with the offset of the first bad byte.
pub fn from_bytes(source_name: &str, bytes: &[u8]) -> Result<Config, ConfigError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ConfigError {
            source_name: source_name.to_string(),
            problems: vec![Problem {
                path: String::new(),
                message: format!(
                    "the file is larger than {MAX_FILE_BYTES} bytes (1 MiB, what a ConfigMap holds)"
                ),
            }],
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError {
        source_name: source_name.to_string(),
        problems: vec![Problem {
            path: String::new(),
            message: format!("not UTF-8 text: invalid byte at offset {}", e.valid_up_to()),
        }],
    })?;
    parse(source_name, text)
}

/// A stable hash of a file's bytes (SipHash-1-3, fixed keys).
pub fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(bytes);
    h.finish()
}

/// A route host as an Ingress rule writes it, or why it is not one.
pub fn route_host(host: &str) -> Result<HostMatch, String> {
    validate::route_host(host)
}

/// A route path, normalized as `routes[].path` is, or why it is not one.
pub fn route_path(path: &str, path_type: PathType) -> Result<String, String> {
    validate::route_path(path, path_type)
}

/// A Service or namespace name (RFC 1123 label).
pub fn is_dns_label(s: &str) -> bool {
    validate::is_dns_label(s)
}

/// A cookie name (an HTTP token of at most 64 bytes).
pub fn is_cookie_name(s: &str) -> bool {
    validate::is_cookie_name(s)
}

/// A Service port name.
pub fn is_port_name(s: &str) -> bool {
    validate::is_port_name(s)
}

/// Parse and validate configuration text; `source_name` names it in errors.
pub fn parse(source_name: &str, text: &str) -> Result<Config, ConfigError> {
    validate::parse(text).map_err(|problems| ConfigError {
        source_name: source_name.to_string(),
        problems,
    })
}
