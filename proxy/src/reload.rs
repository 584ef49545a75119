//! Hot reload: follow the configuration file and publish new snapshots.
//!
//! In Kubernetes the file is a ConfigMap volume: `proxy.yaml` is a symlink through
//! `..data`, which the kubelet swaps to a new directory in one rename. Watching
//! the inode would miss that, so we poll the file's *contents* (read through the
//! symlinks) twice a second and react to a change once it has held still for a
//! short debounce; SIGHUP reloads at once. A bad file is logged with its field
//! paths and counted; the running snapshot stays until a good one arrives.

use crate::config::{self, Config};
use crate::metrics::METRICS;
use crate::state::{SharedSnapshot, Snapshot};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A change must hold this long before it is loaded (editors write in steps).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// A stable hash of the file's bytes, shown in `edge_proxy_config_info`.
pub fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = SipHasher13::new();
    h.write(bytes);
    h.finish()
}

/// Record a successfully loaded configuration in the metrics.
pub fn record_loaded(hash: u64, generation: i64) {
    METRICS.config_info.reset();
    METRICS
        .config_info
        .with_label_values(&[&format!("{hash:016x}")])
        .set(1);
    METRICS.config_generation.set(generation);
    METRICS.config_last_reload_successful.set(1);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    METRICS.config_last_success.set(now);
}

/// Count a rejected configuration (or certificate set) and flag it until the
/// next good load: the alert is on the flag, the counter is for the graph.
fn reload_failed() {
    METRICS.config_reloads.with_label_values(&["failure"]).inc();
    METRICS.config_last_reload_successful.set(0);
}

pub struct Reloader {
    path: PathBuf,
    snapshot: SharedSnapshot,
    /// The configuration in use: settings that need a restart are compared to it.
    running: Arc<Config>,
    /// Hash of the last file contents acted upon (loaded or rejected).
    seen: u64,
    generation: i64,
    /// The HTTPS listener's certificates, and a hash of their files.
    certs: Option<Arc<crate::tls::SniResolver>>,
    certs_seen: u64,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        snapshot: SharedSnapshot,
        running: Config,
        hash: u64,
        certs: Option<Arc<crate::tls::SniResolver>>,
    ) -> Self {
        let certs_seen = crate::tls::files_hash(&running.tls);
        Reloader {
            path,
            snapshot,
            running: Arc::new(running),
            seen: hash,
            generation: 1,
            certs,
            certs_seen,
        }
    }

    /// Reload the certificates when `tls` or the PEM files changed. A set that
    /// does not load (a half-written renewal, a key that does not match) is
    /// logged and counted; the running certificates stay.
    fn check_certs(&mut self, tls: &[crate::config::TlsCert]) -> bool {
        let Some(resolver) = &self.certs else {
            return true;
        };
        let hash = crate::tls::files_hash(tls);
        if hash == self.certs_seen {
            return true;
        }
        match crate::tls::CertStore::load(tls) {
            Ok(store) => {
                resolver.replace(store);
                self.certs_seen = hash;
                METRICS.config_last_reload_successful.set(1);
                tracing::info!(certificates = tls.len(), "TLS certificates reloaded");
                true
            }
            Err(e) => {
                self.certs_seen = hash;
                reload_failed();
                tracing::error!("TLS certificates rejected, the running ones stay: {e:#}");
                false
            }
        }
    }

    /// Follow the file for the life of the process (on the control runtime).
    pub async fn run(mut self) {
        use tokio::signal::unix::{signal, SignalKind};
        // Installing the handler also stops SIGHUP from killing the process.
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot handle SIGHUP, reload on file changes only: {e}");
                None
            }
        };
        loop {
            let forced = tokio::select! {
                _ = async { hangup.as_mut().unwrap().recv().await }, if hangup.is_some() => true,
                _ = tokio::time::sleep(POLL_INTERVAL) => false,
            };
            if forced {
                tracing::info!(path = %self.path.display(), "SIGHUP: reloading the configuration");
            }
            self.check(forced).await;
        }
    }

    /// Load the file if it changed (or if `forced`), and apply it if it is valid.
    pub async fn check(&mut self, forced: bool) {
        let running_tls = self.running.tls.clone();
        let Some(bytes) = self.read_settled(forced).await else {
            // The config is unchanged; its certificate files may not be.
            self.check_certs(&running_tls);
            return;
        };
        let hash = content_hash(&bytes);
        if hash == self.seen && !forced {
            return;
        }
        self.seen = hash;
        let text = String::from_utf8_lossy(&bytes);
        let config = match config::parse(&self.path.display().to_string(), &text) {
            Ok(c) => c,
            Err(e) => {
                reload_failed();
                tracing::error!(
                    problems = e.problems.len(),
                    "configuration rejected, the running one stays: {e}"
                );
                return;
            }
        };
        self.warn_about_restart_only_settings(&config);
        if !self.check_certs(&config.tls) {
            return;
        }
        let previous = self.snapshot.load_full();
        match Snapshot::build(config.clone(), Some(&previous)).await {
            Ok(next) => {
                self.snapshot.store(Arc::new(next));
                self.generation += 1;
                self.running = Arc::new(config);
                record_loaded(hash, self.generation);
                METRICS.config_reloads.with_label_values(&["success"]).inc();
                tracing::info!(
                    generation = self.generation,
                    hash = %format!("{hash:016x}"),
                    routes = self.running.routes.len(),
                    "configuration reloaded"
                );
            }
            Err(e) => {
                reload_failed();
                tracing::error!("configuration rejected, the running one stays: {e:#}");
            }
        }
    }

    /// The file's bytes once two reads `DEBOUNCE` apart agree; `None` when it
    /// is unchanged, unreadable or still changing.
    // A small file read on the reload thread: blocking is fine here.
    async fn read_settled(&self, forced: bool) -> Option<Vec<u8>> {
        let first = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                // Mid-swap or deleted: keep serving; say so only when asked.
                if forced {
                    tracing::error!(path = %self.path.display(), "cannot read the configuration: {e}");
                }
                return None;
            }
        };
        if !forced && content_hash(&first) == self.seen {
            return None;
        }
        tokio::time::sleep(DEBOUNCE).await;
        let second = std::fs::read(&self.path).ok()?;
        (first == second).then_some(second)
    }

    fn warn_about_restart_only_settings(&self, next: &Config) {
        let old = &self.running;
        let mut changed = Vec::new();
        if old.listen != next.listen {
            changed.push("listen");
        }
        if old.admin != next.admin {
            changed.push("admin");
        }
        if old.threads != next.threads {
            changed.push("threads");
        }
        if old.logging != next.logging {
            changed.push("logging");
        }
        if old.drain_timeout != next.drain_timeout {
            changed.push("drain_timeout");
        }
        if !changed.is_empty() {
            tracing::warn!(
                "{} changed: applied at the next restart; routes and the rest are applied now",
                changed.join(", ")
            );
        }
    }
}
