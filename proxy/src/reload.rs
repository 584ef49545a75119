//! Hot reload: follow the configuration file and publish new snapshots.
//!
//! In Kubernetes the file is a ConfigMap volume: `proxy.yaml` is a symlink through
//! `..data`, which the kubelet swaps to a new directory in one rename. Watching
//! the inode would miss that, so we poll the file's *contents* (read through the
//! symlinks) twice a second and react to a change once it has held still for a
//! short debounce; SIGHUP reloads at once. A bad file is logged with its field
//! paths and counted; the running snapshot stays until a good one arrives.

use crate::config::{self, content_hash, Config};
use crate::metrics::METRICS;
use crate::state::Publisher;
use crate::tls::{CertCheck, CertWatcher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A change must hold this long before it is loaded (editors write in steps).
const DEBOUNCE: Duration = Duration::from_millis(200);

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
    publisher: Arc<Publisher>,
    /// The configuration in use: settings that need a restart are compared to it.
    running: Arc<Config>,
    /// Hash of the last file contents acted upon (loaded or rejected).
    seen: u64,
    generation: i64,
    /// The HTTPS listener's certificates.
    certs: Option<CertWatcher>,
    /// The file on disk was rejected (or its certificates were): the
    /// reload-success flag stays down until a good file is loaded, whatever
    /// else reloads meanwhile.
    file_rejected: bool,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        publisher: Arc<Publisher>,
        running: Config,
        hash: u64,
        certs: Option<Arc<crate::tls::SniResolver>>,
    ) -> Self {
        let certs = certs.map(|resolver| CertWatcher::new(resolver, &running.tls));
        Reloader {
            path,
            publisher,
            running: Arc::new(running),
            seen: hash,
            generation: 1,
            certs,
            file_rejected: false,
        }
    }

    /// Reload the certificates when `tls` or the PEM files changed. A set that
    /// does not load is logged and counted; the running certificates stay.
    async fn check_certs(&mut self, tls: &[crate::config::TlsCert]) -> bool {
        let Some(watcher) = &mut self.certs else {
            return true;
        };
        match watcher.check(tls).await {
            CertCheck::Unchanged => true,
            CertCheck::StillRejected => false,
            CertCheck::Reloaded => {
                if !self.file_rejected {
                    METRICS.config_last_reload_successful.set(1);
                }
                tracing::info!(certificates = tls.len(), "TLS certificates reloaded");
                true
            }
            CertCheck::Rejected(e) => {
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
            self.check_certs(&running_tls).await;
            return;
        };
        let hash = content_hash(&bytes);
        if hash == self.seen && !forced {
            return;
        }
        self.seen = hash;
        let config = match config::from_bytes(&self.path.display().to_string(), &bytes) {
            Ok(config) => config,
            Err(e) => {
                self.file_rejected = true;
                reload_failed();
                tracing::error!(
                    problems = e.problems.len(),
                    "configuration rejected, the running one stays: {e}"
                );
                return;
            }
        };
        self.warn_about_restart_only_settings(&config);
        if !self.check_certs(&config.tls).await {
            self.file_rejected = true;
            return;
        }
        match self.publisher.publish_config(config.clone()).await {
            Ok(()) => {
                self.file_rejected = false;
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
                self.file_rejected = true;
                reload_failed();
                tracing::error!("configuration rejected, the running one stays: {e:#}");
            }
        }
    }

    /// The file's bytes once two reads `DEBOUNCE` apart agree; `None` when it
    /// is unchanged, unreadable or still changing. (tokio::fs reads on the
    /// blocking pool, off the runtime the discovery watches share.)
    async fn read_settled(&self, forced: bool) -> Option<Vec<u8>> {
        let first = match tokio::fs::read(&self.path).await {
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
        let second = tokio::fs::read(&self.path).await.ok()?;
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
        if old.ingress != next.ingress {
            changed.push("ingress");
        }
        if !changed.is_empty() {
            tracing::warn!(
                "{} changed: applied at the next restart; routes and the rest are applied now",
                changed.join(", ")
            );
        }
    }
}
