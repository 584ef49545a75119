//! Certificates for the HTTPS listener, chosen by SNI.
//!
//! An exact host wins over a `*.domain` wildcard; a client that sends no SNI,
//! or a name no certificate covers, gets the first certificate of `tls` (the
//! default). The set is swapped whole on reload, when the config or any of the
//! PEM files change (a Kubernetes TLS Secret mounts `tls.crt` and `tls.key`
//! through the same `..data` symlink swap as a ConfigMap).

use crate::config::TlsCert;
use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` under "example.com".
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// A certificate meant for every name without its own (a Gateway listener
    /// without a hostname): served before another source's incidental default.
    catch_all: Option<Arc<CertifiedKey>>,
    /// Each configured host with its certificate's notAfter (Unix time), for
    /// `edge_proxy_tls_certificate_expiry_timestamp_seconds`.
    expiry: Vec<(String, i64)>,
}

impl CertStore {
    /// Load every certificate and key; the error names the `tls[i]` entry and file.
    pub fn load(certs: &[TlsCert]) -> anyhow::Result<CertStore> {
        let mut store = CertStore::default();
        for (i, c) in certs.iter().enumerate() {
            let read = |path: &str| {
                std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("tls[{i}]: cannot read {path}: {e}"))
            };
            let (cert, key) = (read(&c.cert)?, read(&c.key)?);
            let (certified, not_after) = certified_key(&cert, &key)
                .map_err(|e| anyhow::anyhow!("tls[{i}]: {} / {}: {e}", c.cert, c.key))?;
            store.add(&c.hosts, certified, not_after);
        }
        Ok(store)
    }

    /// Serve `certified` for `hosts` (exact names or `*.domain`); a host that
    /// already has a certificate keeps it. The first certificate added is the
    /// default for clients that send no SNI.
    pub fn add(&mut self, hosts: &[String], certified: Arc<CertifiedKey>, not_after: i64) {
        for host in hosts {
            let host = host.to_ascii_lowercase();
            let added = match host.strip_prefix("*.") {
                Some(suffix) => self.wildcard.entry(suffix.to_string()),
                None => self.exact.entry(host.clone()),
            };
            if let std::collections::hash_map::Entry::Vacant(v) = added {
                v.insert(certified.clone());
                self.expiry.push((host, not_after));
            }
        }
        self.default.get_or_insert(certified);
    }

    /// Serve `certified` for every name no certificate names (the first such
    /// one stays).
    pub fn add_catch_all(&mut self, certified: Arc<CertifiedKey>, not_after: i64) {
        if self.catch_all.is_none() {
            self.catch_all = Some(certified.clone());
            self.expiry.push(("*".to_string(), not_after));
        }
        self.default.get_or_insert(certified);
    }

    /// Whether a certificate names `host` (exactly or by wildcard).
    pub fn covers(&self, host: &str) -> bool {
        self.exact.contains_key(host)
            || host
                .split_once('.')
                .is_some_and(|(_, suffix)| self.wildcard.contains_key(suffix))
    }

    fn by_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.exact.get(name).cloned().or_else(|| {
            let (_, suffix) = name.split_once('.')?;
            self.wildcard.get(suffix).cloned()
        })
    }
}

/// A certificate chain and its private key from PEM text, checked to belong
/// together, with the leaf's notAfter (Unix time).
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<(Arc<CertifiedKey>, i64), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the certificate PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("no private key in the key PEM: {e}"))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the private key does not load: {e}"))?;
    let not_after = not_after(&chain[0])?;
    let certified = Arc::new(CertifiedKey::new(chain, signing_key));
    certified
        .keys_match()
        .map_err(|e| format!("the key does not belong to the certificate: {e}"))?;
    Ok((certified, not_after))
}

/// The rustls side: resolves from the current stores. Certificates of the
/// configuration file win over those of Ingress Secrets, as its routes do,
/// and those over Gateway listeners' (the order of the objects' sources).
#[derive(Default)]
pub struct SniResolver {
    store: ArcSwap<CertStore>,
    ingress: ArcSwap<CertStore>,
    /// The certificates of Gateway listeners.
    gateway: ArcSwap<CertStore>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl SniResolver {
    pub fn new(store: CertStore) -> Self {
        let resolver = SniResolver {
            store: ArcSwap::from_pointee(store),
            ingress: ArcSwap::default(),
            gateway: ArcSwap::default(),
        };
        resolver.export_expiry();
        resolver
    }

    /// The configuration file's certificates.
    pub fn replace(&self, store: CertStore) {
        self.store.store(Arc::new(store));
        self.export_expiry();
    }

    /// The certificates of Ingress Secrets.
    pub fn replace_ingress(&self, store: CertStore) {
        self.ingress.store(Arc::new(store));
        self.export_expiry();
    }

    /// The certificates of Gateway listeners.
    pub fn replace_gateway(&self, store: CertStore) {
        self.gateway.store(Arc::new(store));
        self.export_expiry();
    }

    /// Whether a certificate of the configuration file names `host`.
    pub fn file_covers(&self, host: &str) -> bool {
        self.store.load().covers(host)
    }

    /// Whether some certificate (file or Secret) names `host`.
    pub fn covers(&self, host: &str) -> bool {
        self.store.load().covers(host) || self.ingress.load().covers(host)
    }

    /// Publish both sets' expiry times, replacing the previous ones.
    fn export_expiry(&self) {
        let gauge = &crate::metrics::METRICS.tls_certificate_expiry;
        gauge.reset();
        for store in [self.gateway.load(), self.ingress.load(), self.store.load()] {
            for (host, not_after) in &store.expiry {
                gauge.with_label_values(&[host]).set(*not_after);
            }
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (files, ingress, gateway) =
            (self.store.load(), self.ingress.load(), self.gateway.load());
        let name = hello.server_name().map(str::to_ascii_lowercase);
        name.as_deref()
            .and_then(|n| {
                files
                    .by_name(n)
                    .or_else(|| ingress.by_name(n))
                    .or_else(|| gateway.by_name(n))
            })
            .or_else(|| files.default.clone())
            .or_else(|| gateway.catch_all.clone())
            .or_else(|| ingress.default.clone())
            .or_else(|| gateway.default.clone())
    }
}

/// The leaf certificate's notAfter as Unix time.
fn not_after(leaf: &[u8]) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// A fingerprint of the PEM files' contents, to notice a renewed certificate.
fn files_hash(certs: &[TlsCert]) -> u64 {
    let mut bytes = Vec::new();
    for c in certs {
        for path in [&c.cert, &c.key] {
            bytes.extend_from_slice(path.as_bytes());
            bytes.extend(std::fs::read(path).unwrap_or_default());
        }
    }
    crate::config::content_hash(&bytes)
}

/// Every problem of the `tls` entries' files, each naming its field: a file
/// that cannot be read, PEM that does not parse, a key that does not belong to
/// its certificate. What `edge-proxy check` adds to the configuration's own.
pub fn file_problems(certs: &[TlsCert]) -> Vec<crate::config::Problem> {
    let mut problems = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        let mut read = |field: &str, path: &str| match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                problems.push(crate::config::Problem {
                    path: format!("tls[{i}].{field}"),
                    message: format!("cannot read {path}: {e}"),
                });
                None
            }
        };
        let (cert, key) = (read("cert", &c.cert), read("key", &c.key));
        let (Some(cert), Some(key)) = (cert, key) else {
            continue;
        };
        if let Err(e) = certified_key(&cert, &key) {
            // The key's own faults name the key; the rest the certificate.
            let field = if e.contains("key") { "key" } else { "cert" };
            problems.push(crate::config::Problem {
                path: format!("tls[{i}].{field}"),
                message: format!("{}: {e}", if field == "key" { &c.key } else { &c.cert }),
            });
        }
    }
    problems
}

/// What [`CertWatcher::check`] found.
pub enum CertCheck {
    /// The files are the ones served.
    Unchanged,
    /// A new set is served.
    Reloaded,
    /// The files do not load (newly): the running set stays.
    Rejected(anyhow::Error),
    /// The same files as the last rejected ones: still not served.
    StillRejected,
}

/// Follows the HTTPS listener's certificates: the set is reloaded when `tls`
/// or any PEM file changes (a renewed Secret). The files are read on tokio's
/// blocking pool, never on the runtime the discovery watches share.
pub struct CertWatcher {
    resolver: Arc<SniResolver>,
    /// Hash of the files of the set being served.
    running: u64,
    /// Hash of the files last rejected: not retried, not reported twice.
    rejected: Option<u64>,
}

impl CertWatcher {
    /// Start from the set `resolver` serves, loaded from `tls` (read here, once,
    /// before the runtimes start).
    pub fn new(resolver: Arc<SniResolver>, tls: &[TlsCert]) -> Self {
        CertWatcher {
            resolver,
            running: files_hash(tls),
            rejected: None,
        }
    }

    /// Load the set of `tls` if its files are not the ones served. Files that
    /// do not load (a half-written renewal, a key that does not match) leave
    /// the running set in place, and stay rejected until they change again.
    pub async fn check(&mut self, tls: &[TlsCert]) -> CertCheck {
        let certs = tls.to_vec();
        let (running, rejected) = (self.running, self.rejected);
        let loaded = tokio::task::spawn_blocking(move || {
            let hash = files_hash(&certs);
            let store =
                (hash != running && Some(hash) != rejected).then(|| CertStore::load(&certs));
            (hash, store)
        })
        .await;
        match loaded {
            Err(e) => CertCheck::Rejected(e.into()),
            Ok((hash, None)) if hash == running => CertCheck::Unchanged,
            Ok((_, None)) => CertCheck::StillRejected,
            Ok((hash, Some(Ok(store)))) => {
                self.running = hash;
                self.rejected = None;
                self.resolver.replace(store);
                CertCheck::Reloaded
            }
            Ok((hash, Some(Err(e)))) => {
                self.rejected = Some(hash);
                CertCheck::Rejected(e)
            }
        }
    }
}
