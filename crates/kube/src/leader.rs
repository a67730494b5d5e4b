//! Leader election over a `coordination.k8s.io/v1` Lease: every replica serves
//! proxies, and the one holding the Lease also does the singleton duties (status
//! write-back, the webhook's caBundle). A holder renews every `renew` interval; a
//! Lease not renewed for `duration` may be taken by another replica. Every write is
//! an update at the resourceVersion read, so two replicas never both believe they
//! won the same term.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// The Lease the control plane's replicas compete for.
pub const LEASE: &str = "trellis-control-plane";

/// How the election runs.
#[derive(Debug, Clone)]
pub struct LeaderOptions {
    pub namespace: String,
    pub lease: String,
    /// This replica's name (its pod name in a cluster).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews (and others look).
    pub renew: Duration,
}

impl LeaderOptions {
    pub fn new(namespace: &str, identity: &str) -> LeaderOptions {
        LeaderOptions {
            namespace: namespace.into(),
            lease: LEASE.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(2),
        }
    }
}

/// A running election; dropping it stops it (and gives up leading).
pub struct Election {
    leading: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Whether this replica leads now, and changes to that.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts competing for the Lease.
pub fn start(client: kube::Client, options: LeaderOptions) -> Election {
    let (tx, leading) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &options.namespace);
        loop {
            let now_leading = match try_acquire(&api, &options).await {
                Ok(leading) => leading,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %options.lease, "leader election");
                    // Cannot tell: a leader that cannot renew steps down before its
                    // Lease could pass to another replica.
                    false
                }
            };
            if *tx.borrow() != now_leading {
                tracing::info!(
                    identity = %options.identity,
                    leading = now_leading,
                    "control plane leadership changed"
                );
            }
            tx.send_replace(now_leading);
            tokio::time::sleep(options.renew).await;
        }
    });
    Election { leading, task }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// One round: create, renew or take over the Lease. Whether this replica holds it.
async fn try_acquire(api: &Api<Lease>, options: &LeaderOptions) -> Result<bool, kube::Error> {
    let seconds = i32::try_from(options.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&options.lease).await? else {
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(options.lease.clone()),
                namespace: Some(options.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(options.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(options.identity.as_str());
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(held)) => {
            let age = k8s_openapi::jiff::Timestamp::now().duration_since(renewed.0);
            age.as_secs() >= i64::from(held)
        }
        _ => true,
    };
    if !mine && !expired {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(options.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(seconds);
    // At the resourceVersion read: a replica that lost the race gets a 409.
    match api
        .replace(&options.lease, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
