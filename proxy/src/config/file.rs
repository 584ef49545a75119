//! The configuration file as written by users (serde types).
//!
//! These types only describe the YAML's shape. `validate.rs` turns them into the
//! internal types of `config/mod.rs`, which the proxy uses without re-checking.

use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;

/// The file's top level. Each key stays a YAML value here and is deserialized
/// on its own (validate.rs), so that one bad key does not hide the problems of
/// the others. The list of known keys is read off this struct
/// (`top_level_keys`); any other key is reported.
#[derive(Debug, Deserialize, Default)]
pub struct File {
    pub listen: Option<Value>,
    pub admin: Option<Value>,
    pub discovery: Option<Value>,
    pub dns_name: Option<Value>,
    pub tls: Option<Value>,
    pub routes: Option<Value>,
    #[serde(rename = "static")]
    pub static_endpoints: Option<Value>,
    pub timeouts: Option<Value>,
    pub threads: Option<Value>,
    pub retries: Option<Value>,
    pub drain_timeout: Option<Value>,
    pub logging: Option<Value>,
    pub limits: Option<Value>,
    pub trusted_proxies: Option<Value>,
    pub ingress: Option<Value>,
    pub gateway: Option<Value>,
}

/// `ingress:`: serve Ingress objects (README.md, "Coming from ingress-nginx").
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Ingress {
    pub class: Option<String>,
    pub publish_status: Option<bool>,
    pub publish_selector: Option<String>,
    pub publish_addresses: Option<Vec<String>>,
    pub allowed_response_headers: Option<Vec<String>>,
}

/// `gateway:`: serve Gateway API objects (README.md, "Gateway API").
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub class: Option<String>,
    pub publish_status: Option<bool>,
    pub publish_selector: Option<String>,
    pub publish_addresses: Option<Vec<String>>,
}

/// `discovery:`
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    Kubernetes,
    Dns,
    Static,
}

/// `routes[].path_type`, as in an Ingress.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum PathType {
    Prefix,
    Exact,
}

/// `logging.format`
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// `logging.access`
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    Json,
    Text,
    Off,
}

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
    pub path_type: Option<PathType>,
    pub service: String,
    pub namespace: Option<String>,
    pub port: Port,
    /// An [`Affinity`], read on its own (validate.rs) so that each of its
    /// keys is reported.
    pub affinity: Option<Value>,
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

/// The keys `File` knows, in its order.
pub fn top_level_keys() -> &'static [&'static str] {
    fields_of::<File>()
}

/// The keys a struct knows, in its order: read off its `Deserialize` impl (the
/// fields serde asks a deserializer for), so the list cannot drift from the
/// struct.
pub fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Deserializer, Visitor};

    struct Fields(&'static [&'static str]);

    #[derive(Debug)]
    struct Captured;
    impl std::fmt::Display for Captured {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names captured")
        }
    }
    impl std::error::Error for Captured {}
    impl de::Error for Captured {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Captured
        }
    }

    struct Introspect<'a>(&'a mut Fields);
    impl<'de> Deserializer<'de> for Introspect<'_> {
        type Error = Captured;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
            Err(Captured)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Captured> {
            self.0 .0 = fields;
            Err(Captured)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields = Fields(&[]);
    let _ = T::deserialize(Introspect(&mut fields));
    fields.0
}

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
    /// A [`PerClient`].
    pub per_client: Option<Value>,
    pub limited_status: Option<i64>,
}

/// `limits.per_client`: what one client address may do on this node.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PerClient {
    pub requests_per_second: Option<i64>,
    pub burst: Option<i64>,
    pub connections: Option<i64>,
    pub exempt: Option<Vec<String>>,
}

/// Log output: `format` for lifecycle and error logs (stderr), `access` for the
/// one-line-per-request access log (stdout).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// A [`LogFormat`]; each key is read on its own, so both can be reported.
    pub format: Option<Value>,
    /// An [`AccessLog`].
    pub access: Option<Value>,
}
