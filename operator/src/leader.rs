//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once: one holds the Lease and renews it; the other waits until it expires.
//!
//! Every write is a `replace` carrying the `resourceVersion` read just before, so two
//! candidates racing for an expired Lease cannot both win (the loser gets a 409).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

/// Which Lease, who we are, and how long a Lease lasts without renewal.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica (its pod name).
    pub identity: String,
    pub duration: Duration,
}

impl LeaseSettings {
    /// How often the holder renews: a third of the duration.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return true;
    };
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed + SignedDuration::from_secs(seconds) < now
}

/// Takes or renews the Lease when it is ours or free; `Ok(false)` when another replica holds
/// it (or won a race for it).
pub async fn try_acquire(client: &Client, settings: &LeaseSettings) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let now = Timestamp::now();
    let seconds = i32::try_from(settings.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let ours = spec.holder_identity.as_deref() == Some(settings.identity.as_str());
    if !ours && !expired(spec, now) {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(settings.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(seconds);
    spec.renew_time = Some(MicroTime(now));
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: &Client, settings: &LeaseSettings) {
    loop {
        match try_acquire(client, settings).await {
            Ok(true) => {
                tracing::info!(identity = %settings.identity, lease = %settings.name, "became the leader");
                return;
            }
            Ok(false) => tracing::debug!("another replica leads; waiting"),
            Err(error) => tracing::warn!(%error, "could not read the Lease"),
        }
        tokio::time::sleep(settings.renew_every()).await;
    }
}

/// How long the holder may go without a successful renewal before it must stop: the lease
/// duration less one renewal period, so it stops while its Lease is still valid and no other
/// replica can have taken over yet.
pub fn renew_deadline(settings: &LeaseSettings) -> Duration {
    settings.duration.saturating_sub(settings.renew_every())
}

/// Renews the Lease every [`LeaseSettings::renew_every`] until a renewal fails to land
/// within [`renew_deadline`] of the last one (an API server that does not answer counts: each
/// attempt is cut off at the deadline), or another replica took it; then returns, and the
/// caller must stop reconciling at once.
pub async fn hold(client: &Client, settings: &LeaseSettings) {
    let mut deadline = tokio::time::Instant::now() + renew_deadline(settings);
    loop {
        let next = tokio::time::Instant::now() + settings.renew_every();
        tokio::time::sleep_until(next.min(deadline)).await;
        // The Lease is stamped with the time the attempt starts; count from there.
        let attempt = tokio::time::Instant::now();
        match tokio::time::timeout_at(deadline, try_acquire(client, settings)).await {
            Ok(Ok(true)) => deadline = attempt + renew_deadline(settings),
            Ok(Ok(false)) => {
                tracing::error!("the Lease was taken by another replica");
                return;
            }
            Ok(Err(error)) => tracing::warn!(%error, "could not renew the Lease"),
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(
                deadline = ?renew_deadline(settings),
                "could not renew the Lease before its renew deadline; stepping down"
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_duration() {
        let now = Timestamp::now();
        let spec = |ago: i64| LeaseSpec {
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(ago))),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(!expired(&spec(5), now));
        assert!(expired(&spec(20), now));
        assert!(expired(&LeaseSpec::default(), now), "never renewed");
    }
}
