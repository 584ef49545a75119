//! A `coordination.k8s.io` Lease taken and renewed as client-go's leader
//! election does: expiry is judged by when *we* saw the holder's last renewal,
//! so clocks need not agree; the resourceVersion makes every write a
//! compare-and-swap; a holder that shuts down releases it (an empty holder,
//! as client-go's ReleaseOnCancel) so another takes over at its next try.

use crate::drain::ShutdownHooks;
use crate::metrics::METRICS;
use ::kube::api::PostParams;
use ::kube::{Api, Client};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a Lease holds without renewal.
pub const LEASE_SECONDS: i32 = 15;

/// The Lease whose holder writes the status of Ingresses and Gateway API
/// objects: one proxy at a time.
pub const STATUS_LEASE: &str = "edge-proxy-status";
/// How often the holder renews and the others try.
const INTERVAL: Duration = Duration::from_secs(2);
/// How long shutdown waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

static LEADERSHIP: OnceLock<watch::Receiver<bool>> = OnceLock::new();

/// Whether this proxy holds the status Lease, kept current by one task for
/// the life of the process (started by the first caller; the Ingress and
/// Gateway status writers share it). At shutdown (a hook in `hooks`) the
/// Lease is released for another proxy, which takes over at its next try
/// (2 s); a proxy that dies is replaced once the Lease expires (15 s).
pub fn leadership(client: &Client, hooks: &Arc<ShutdownHooks>) -> watch::Receiver<bool> {
    LEADERSHIP
        .get_or_init(|| {
            let (tx, rx) = watch::channel(false);
            tokio::spawn(contend(client.clone(), hooks.clone(), tx));
            rx
        })
        .clone()
}

async fn contend(client: Client, hooks: Arc<ShutdownHooks>, leading: watch::Sender<bool>) {
    let namespace = super::own_namespace(&client);
    let mut elector = Elector::new(client, &namespace, STATUS_LEASE, identity());
    // Shutdown (a plain thread) asks for the release and waits for it.
    let (stop, mut stopping) = watch::channel(false);
    let (released, wait_released) = std::sync::mpsc::channel::<()>();
    hooks.add(move || {
        stop.send_replace(true);
        let _ = wait_released.recv_timeout(RELEASE_TIMEOUT);
    });
    tracing::info!(lease = %format!("{namespace}/{STATUS_LEASE}"), identity = %elector.identity, "status: contending for the Lease");
    loop {
        if *stopping.borrow() {
            if elector.is_leader() {
                leading.send_replace(false);
                elector.release().await;
                METRICS.ingress_status_leader.set(0);
            }
            let _ = released.send(());
            return;
        }
        let was = elector.is_leader();
        if let Err(e) = elector.try_lead().await {
            tracing::warn!("status Lease: {e}");
        }
        let now = elector.is_leader();
        if now != was {
            METRICS.ingress_status_leader.set(i64::from(now));
            if now {
                tracing::info!(identity = %elector.identity, "status: this proxy holds the Lease and writes the status");
            } else {
                tracing::info!("status: another proxy holds the Lease");
            }
        }
        leading.send_if_modified(|l| std::mem::replace(l, now) != now);
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// One contender for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    pub identity: String,
    /// The holder and renew time last seen, and when we saw them change.
    observed: Option<(String, Option<MicroTime>, Instant)>,
    leader: bool,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Who this process is to a Lease: the pod's name, or outside a pod the host
/// name and process id (two containers may both be pid 1).
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity,
            observed: None,
            leader: false,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Take or renew the Lease; whether we hold it now. An error means we
    /// cannot know, so we do not hold it.
    pub async fn try_lead(&mut self) -> Result<bool, ::kube::Error> {
        let result = self.acquire_or_renew().await;
        self.leader = *result.as_ref().unwrap_or(&false);
        result
    }

    async fn acquire_or_renew(&mut self) -> Result<bool, ::kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ::kube::api::ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now(), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(::kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec.renew_time.clone();
        let seen_at = match &self.observed {
            Some((h, r, at)) if *h == holder && *r == renewed => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((holder.clone(), renewed.clone(), at));
                at
            }
        };
        let duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS).max(1) as u64);
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() && seen_at.elapsed() < duration {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine {
            spec.acquire_time.unwrap_or_else(now)
        } else {
            now()
        };
        lease.spec = Some(self.spec(acquired, transitions));
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(::kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(acquired),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Give the Lease up (an empty holder), as client-go's ReleaseOnCancel.
    pub async fn release(&mut self) {
        if !self.leader {
            return;
        }
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "Lease released for another proxy"),
            Err(e) => tracing::warn!(lease = %self.name, "releasing the Lease: {e}"),
        }
        self.leader = false;
    }
}
