//! Objects that annotations name, besides the Ingress's own Services and TLS
//! Secrets: the Secret of `proxy-ssl-secret` (CA and client certificate for
//! HTTPS backends), the ConfigMap of `custom-headers` and the Services of
//! `service-upstream` (their ClusterIP).
//!
//! Translation says which it wants ([`Wanted`]); the controller follows
//! exactly those by name (`kube::Named`) and translates again once they are
//! listed. A named object that is missing or unusable refuses the Ingress:
//! serving it without its CA (unverified) or with other headers would not be
//! what was asked. Offline (`ingress-check`), named objects are taken to be
//! in place.

use crate::kube::Named;
use crate::route::{ServicePort, UpstreamKey, UpstreamTrust};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::ByteString;
use kube::api::DynamicObject;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// (namespace, name)
pub type ObjectKey = (String, String);

/// The named objects as followed (untyped: see `kube::Named`; the few
/// fields used are read here).
#[derive(Default)]
pub struct NamedObjects {
    pub secrets: HashMap<ObjectKey, Arc<DynamicObject>>,
    pub config_maps: HashMap<ObjectKey, Arc<DynamicObject>>,
    pub services: HashMap<ObjectKey, Arc<DynamicObject>>,
}

/// A Secret's `data` (base64 in the object, decoded here).
pub fn secret_data(secret: &DynamicObject) -> Result<BTreeMap<String, ByteString>, String> {
    match secret.data.get("data") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(data) => serde_json::from_value(data.clone()).map_err(|e| format!("data: {e}")),
    }
}

/// A ConfigMap's `data`.
fn config_map_data(map: &DynamicObject) -> Result<BTreeMap<String, String>, String> {
    match map.data.get("data") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(data) => serde_json::from_value(data.clone()).map_err(|e| format!("data: {e}")),
    }
}

/// The watches of the named objects, a `kube::Named` per kind.
pub struct Watches {
    secrets: Named,
    config_maps: Named,
    services: Named,
}

impl Watches {
    pub fn new(client: kube::Client, changed: &Arc<tokio::sync::Notify>) -> Self {
        Watches {
            secrets: Named::new::<Secret>(client.clone(), changed.clone()),
            config_maps: Named::new::<ConfigMap>(client.clone(), changed.clone()),
            services: Named::new::<Service>(client, changed.clone()),
        }
    }

    /// Follow exactly what `wanted` names; whether any watch started.
    pub fn follow_only(&mut self, wanted: &Wanted) -> bool {
        // Not `||`: every kind follows its own list.
        self.secrets.follow_only(&wanted.secrets)
            | self.config_maps.follow_only(&wanted.config_maps)
            | self.services.follow_only(&wanted.services)
    }

    /// Wait (at most `limit` each) until every watch has its first list.
    pub async fn wait_listed(&self, limit: std::time::Duration) -> bool {
        self.secrets.wait_listed(limit).await
            && self.config_maps.wait_listed(limit).await
            && self.services.wait_listed(limit).await
    }

    pub fn objects(&self) -> NamedObjects {
        NamedObjects {
            secrets: self.secrets.objects(),
            config_maps: self.config_maps.objects(),
            services: self.services.objects(),
        }
    }
}

/// The named objects a translation needed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub secrets: BTreeSet<ObjectKey>,
    pub config_maps: BTreeSet<ObjectKey>,
    pub services: BTreeSet<ObjectKey>,
}

/// `NAMESPACE/NAME` or `NAME` (in `namespace`). ingress-nginx reads only
/// objects in the Ingress's own namespace (its default; another namespace's
/// object would let one tenant use another's), and so does this.
pub fn reference(value: &str, namespace: &str) -> Result<ObjectKey, String> {
    let (ns, name) = value.split_once('/').unwrap_or((namespace, value));
    if !crate::config::is_dns_label(ns) || name.is_empty() || name.contains('/') {
        return Err(format!("{value:?} is not NAMESPACE/NAME"));
    }
    if ns != namespace {
        return Err(format!(
            "{value:?} is in another namespace than the Ingress ({namespace}): not allowed"
        ));
    }
    Ok((ns.to_string(), name.to_string()))
}

/// The Secret `key` names, followed from now on: its name for messages and
/// its data (`None` offline, where named objects are taken to be in place).
/// Missing or unreadable is an error naming it.
fn followed_secret(
    key: &ObjectKey,
    objects: Option<&NamedObjects>,
    wanted: &mut Wanted,
) -> Result<(String, Option<BTreeMap<String, ByteString>>), String> {
    wanted.secrets.insert(key.clone());
    let source = format!("Secret {}/{}", key.0, key.1);
    let Some(objects) = objects else {
        return Ok((source, None));
    };
    let secret = objects
        .secrets
        .get(key)
        .ok_or_else(|| format!("{source}: not found"))?;
    let data = secret_data(secret).map_err(|e| format!("{source}: {e}"))?;
    Ok((source, Some(data)))
}

/// The Secret of `proxy-ssl-secret`: `ca.crt` (required, PEM, one or more
/// certificates) and, when both are present, `tls.crt`/`tls.key` as the
/// client certificate. `objects` is `None` offline.
pub fn upstream_trust(
    key: &ObjectKey,
    objects: Option<&NamedObjects>,
    wanted: &mut Wanted,
) -> Result<Arc<UpstreamTrust>, String> {
    let (source, data) = followed_secret(key, objects, wanted)?;
    let Some(data) = data else {
        return Ok(Arc::new(UpstreamTrust {
            source,
            ca: Vec::new(),
            client: None,
        }));
    };
    let ca_pem = data
        .get("ca.crt")
        .ok_or_else(|| format!("{source}: needs ca.crt (the CA of the pods' certificates)"))?;
    let ca = certificates(&ca_pem.0).map_err(|e| format!("{source}: ca.crt: {e}"))?;
    let client = match (data.get("tls.crt"), data.get("tls.key")) {
        (Some(cert), Some(key_pem)) => {
            // The same checks as a served certificate: parses, key matches a
            // supported algorithm.
            crate::tls::certified_key(&cert.0, &key_pem.0)
                .map_err(|e| format!("{source}: tls.crt/tls.key: {e}"))?;
            let chain = certificates(&cert.0).map_err(|e| format!("{source}: tls.crt: {e}"))?;
            Some((chain, private_key(&key_pem.0)?))
        }
        _ => None,
    };
    Ok(Arc::new(UpstreamTrust { source, ca, client }))
}

/// Basic auth's users from their Secret: an htpasswd file under `auth`
/// (`auth-file`) or a key per user whose value is the hash (`auth-map`).
/// The second list names users left out (a hash that cannot be used).
pub fn basic_auth_users(
    key: &ObjectKey,
    map: bool,
    objects: Option<&NamedObjects>,
    wanted: &mut Wanted,
) -> Result<crate::auth::basic::Users, String> {
    let (source, data) = followed_secret(key, objects, wanted)?;
    let Some(data) = data else {
        return Ok((Vec::new(), Vec::new()));
    };
    let text = |bytes: &ByteString| String::from_utf8_lossy(&bytes.0).into_owned();
    if !map {
        let file = data
            .get("auth")
            .ok_or_else(|| format!("{source}: needs the key auth (an htpasswd file)"))?;
        return Ok(crate::auth::basic::parse_file(&text(file)));
    }
    let (mut users, mut bad) = (Vec::new(), Vec::new());
    for (user, hash) in &data {
        crate::auth::basic::check_user(user, &text(hash), &mut users, &mut bad);
    }
    Ok((users, bad))
}

/// The `custom-headers` ConfigMap's data: response headers for the client.
/// Names and values as ingress-nginx accepts them; names must be in
/// `allowed` (ingress-nginx's `global-allowed-response-headers`).
pub fn response_headers(
    key: &ObjectKey,
    objects: Option<&NamedObjects>,
    allowed: &[String],
    wanted: &mut Wanted,
) -> Result<Vec<(String, String)>, String> {
    headers_of(key, objects, Some(allowed), wanted)
}

/// The `auth-proxy-set-headers` ConfigMap's data: headers set on the auth
/// sub-request (any name: they go to the auth service, not to clients).
pub fn auth_request_headers(
    key: &ObjectKey,
    objects: Option<&NamedObjects>,
    wanted: &mut Wanted,
) -> Result<Vec<(String, String)>, String> {
    headers_of(key, objects, None, wanted)
}

/// A ConfigMap's data as headers; with `allowed`, only those names.
fn headers_of(
    key: &ObjectKey,
    objects: Option<&NamedObjects>,
    allowed: Option<&[String]>,
    wanted: &mut Wanted,
) -> Result<Vec<(String, String)>, String> {
    wanted.config_maps.insert(key.clone());
    let source = format!("ConfigMap {}/{}", key.0, key.1);
    let Some(objects) = objects else {
        return Ok(Vec::new());
    };
    let map = objects
        .config_maps
        .get(key)
        .ok_or_else(|| format!("{source}: not found"))?;
    let mut headers = Vec::new();
    for (name, value) in config_map_data(map).map_err(|e| format!("{source}: {e}"))? {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("{source}: {name:?} is not a header name"));
        }
        if value.is_empty() || http::HeaderValue::from_str(&value).is_err() {
            return Err(format!(
                "{source}: the value of {name} is not a header value"
            ));
        }
        let allowed = allowed.is_none_or(|a| a.iter().any(|a| a.eq_ignore_ascii_case(&name)));
        if !allowed {
            return Err(format!(
                "{source}: {name} is not in ingress.allowed_response_headers (ingress-nginx's global-allowed-response-headers)"
            ));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// `service-upstream`: the ClusterIP of `key`'s Service and the port `key`
/// names. Offline, the unspecified address stands for it.
pub fn cluster_ip(
    key: &UpstreamKey,
    objects: Option<&NamedObjects>,
    wanted: &mut Wanted,
) -> Result<SocketAddr, String> {
    let name = (key.namespace.clone(), key.service.clone());
    wanted.services.insert(name.clone());
    let Some(objects) = objects else {
        return Ok(SocketAddr::from(([0, 0, 0, 0], 0)));
    };
    let source = format!("Service {}/{}", key.namespace, key.service);
    let spec = objects
        .services
        .get(&name)
        .and_then(|s| s.data.get("spec"))
        .ok_or_else(|| format!("{source}: not found"))?;
    let ip: IpAddr = spec["clusterIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| format!("{source} has no ClusterIP (headless or ExternalName)"))?;
    let empty = Vec::new();
    let ports = spec["ports"].as_array().unwrap_or(&empty);
    let port = ports
        .iter()
        .find(|p| match &key.port {
            ServicePort::Number(n) => p["port"].as_u64() == Some(u64::from(*n)),
            ServicePort::Name(n) => p["name"].as_str() == Some(n.as_str()),
        })
        .and_then(|p| p["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| format!("{source} has no port {}", key.port))?;
    Ok(SocketAddr::new(ip, port))
}

/// Every certificate of a PEM bundle, as DER, each one parsed.
fn certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not PEM: {e}"))?;
        x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| format!("not a certificate: {e}"))?;
        out.push(cert.to_vec());
    }
    if out.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(out)
}

fn private_key(pem: &[u8]) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("tls.key: {e}"))?;
    let der = key.secret_der().to_vec();
    // What the connector will do with it: fail here, not per connection.
    PrivateKeyDer::try_from(der.clone()).map_err(|e| format!("tls.key: {e}"))?;
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_stay_in_the_ingress_namespace() {
        assert_eq!(
            reference("shop/ca", "shop"),
            Ok(("shop".into(), "ca".into()))
        );
        assert_eq!(reference("ca", "shop"), Ok(("shop".into(), "ca".into())));
        assert!(reference("other/ca", "shop")
            .unwrap_err()
            .contains("another namespace"));
        assert!(reference("shop/", "shop").is_err());
        assert!(reference("a/b/c", "a").is_err());
    }

    #[test]
    fn a_ca_secret_must_hold_certificates() {
        let key = ("shop".to_string(), "ca".to_string());
        let mut wanted = Wanted::default();
        let secret = |data: serde_json::Value| -> Arc<DynamicObject> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "ca", "namespace": "shop"}, "data": data
                }))
                .unwrap(),
            )
        };
        let mut objects = NamedObjects::default();
        let err = upstream_trust(&key, Some(&objects), &mut wanted).unwrap_err();
        assert!(err.contains("Secret shop/ca: not found"), "{err}");
        assert!(wanted.secrets.contains(&key));
        // "not a pem" in base64
        objects.secrets.insert(
            key.clone(),
            secret(serde_json::json!({"ca.crt": "bm90IGEgcGVt"})),
        );
        let err = upstream_trust(&key, Some(&objects), &mut wanted).unwrap_err();
        assert!(err.contains("ca.crt: no certificate"), "{err}");
        objects
            .secrets
            .insert(key.clone(), secret(serde_json::json!({})));
        let err = upstream_trust(&key, Some(&objects), &mut wanted).unwrap_err();
        assert!(err.contains("needs ca.crt"), "{err}");
        // Offline: taken to be there.
        assert!(upstream_trust(&key, None, &mut wanted).is_ok());
    }

    #[test]
    fn custom_headers_are_checked_against_the_allowed_list() {
        let key = ("shop".to_string(), "headers".to_string());
        let mut wanted = Wanted::default();
        let mut objects = NamedObjects::default();
        let map = |data: serde_json::Value| -> Arc<DynamicObject> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "headers", "namespace": "shop"}, "data": data
                }))
                .unwrap(),
            )
        };
        objects.config_maps.insert(
            key.clone(),
            map(serde_json::json!({"X-Frame-Options": "DENY"})),
        );
        let allowed = vec!["x-frame-options".to_string()];
        assert_eq!(
            response_headers(&key, Some(&objects), &allowed, &mut wanted),
            Ok(vec![("x-frame-options".into(), "DENY".into())])
        );
        let err = response_headers(&key, Some(&objects), &[], &mut wanted).unwrap_err();
        assert!(
            err.contains("not in ingress.allowed_response_headers"),
            "{err}"
        );
        objects
            .config_maps
            .insert(key.clone(), map(serde_json::json!({"bad header": "x"})));
        assert!(response_headers(&key, Some(&objects), &allowed, &mut wanted).is_err());
    }
}
