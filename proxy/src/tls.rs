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
    /// Each configured host with its certificate's notAfter (Unix time), for
    /// `edge_proxy_tls_certificate_expiry_timestamp_seconds`.
    expiry: Vec<(String, i64)>,
}

impl CertStore {
    /// Load every certificate and key; the error names the `tls[i]` entry and file.
    pub fn load(certs: &[TlsCert]) -> anyhow::Result<CertStore> {
        pingora::tls::install_default_crypto_provider();
        let provider = CryptoProvider::get_default()
            .ok_or_else(|| anyhow::anyhow!("no TLS crypto provider"))?;
        let mut store = CertStore::default();
        for (i, c) in certs.iter().enumerate() {
            let loaded = pingora::tls::load_certs_and_key_files(&c.cert, &c.key).map_err(|e| {
                anyhow::anyhow!("tls[{i}]: cannot read {} / {}: {e}", c.cert, c.key)
            })?;
            let Some((chain, key)) = loaded else {
                anyhow::bail!(
                    "tls[{i}]: no certificate in {} or no private key in {}",
                    c.cert,
                    c.key
                );
            };
            let signing_key = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| anyhow::anyhow!("tls[{i}].key: {}: {e}", c.key))?;
            let not_after = not_after(&chain[0])
                .map_err(|e| anyhow::anyhow!("tls[{i}].cert: {}: {e}", c.cert))?;
            let certified = Arc::new(CertifiedKey::new(chain, signing_key));
            certified.keys_match().map_err(|e| {
                anyhow::anyhow!("tls[{i}]: {} does not belong to {}: {e}", c.key, c.cert)
            })?;
            for host in &c.hosts {
                store.expiry.push((host.clone(), not_after));
                match host.strip_prefix("*.") {
                    Some(suffix) => store.wildcard.entry(suffix.to_string()),
                    None => store.exact.entry(host.clone()),
                }
                .or_insert_with(|| certified.clone());
            }
            store.default.get_or_insert(certified);
        }
        Ok(store)
    }

    /// Publish the certificates' expiry times, replacing the previous set's.
    fn export_expiry(&self) {
        let gauge = &crate::metrics::METRICS.tls_certificate_expiry;
        gauge.reset();
        for (host, not_after) in &self.expiry {
            gauge.with_label_values(&[host]).set(*not_after);
        }
    }

    fn find(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let by_name = sni.map(str::to_ascii_lowercase).and_then(|name| {
            self.exact.get(&name).cloned().or_else(|| {
                let (_, suffix) = name.split_once('.')?;
                self.wildcard.get(suffix).cloned()
            })
        });
        by_name.or_else(|| self.default.clone())
    }
}

/// The rustls side: resolves from the current store.
#[derive(Default)]
pub struct SniResolver {
    store: ArcSwap<CertStore>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl SniResolver {
    pub fn new(store: CertStore) -> Self {
        store.export_expiry();
        SniResolver {
            store: ArcSwap::from_pointee(store),
        }
    }

    pub fn replace(&self, store: CertStore) {
        store.export_expiry();
        self.store.store(Arc::new(store));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.store.load().find(hello.server_name())
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

/// Follows the HTTPS listener's certificates: the set is reloaded when `tls`
/// or any PEM file changes (a renewed Secret). The files are read on tokio's
/// blocking pool, never on the runtime the discovery watches share.
pub struct CertWatcher {
    resolver: Arc<SniResolver>,
    /// Hash of the files last acted upon (loaded or rejected).
    seen: u64,
}

impl CertWatcher {
    /// Start from the set `resolver` serves, loaded from `tls` (read here, once,
    /// before the runtimes start).
    pub fn new(resolver: Arc<SniResolver>, tls: &[TlsCert]) -> Self {
        CertWatcher {
            resolver,
            seen: files_hash(tls),
        }
    }

    /// `Ok(true)`: a new set is served; `Ok(false)`: nothing changed; `Err`: the
    /// changed files do not load (a half-written renewal, a key that does not
    /// match) and the running set stays; the same files are not retried.
    pub async fn check(&mut self, tls: &[TlsCert]) -> anyhow::Result<bool> {
        let certs = tls.to_vec();
        let seen = self.seen;
        let loaded = tokio::task::spawn_blocking(move || {
            let hash = files_hash(&certs);
            let store = (hash != seen).then(|| CertStore::load(&certs));
            (hash, store)
        })
        .await?;
        match loaded {
            (_, None) => Ok(false),
            (hash, Some(result)) => {
                self.seen = hash;
                self.resolver.replace(result?);
                Ok(true)
            }
        }
    }
}
