//! Leader election through a `coordination.k8s.io` Lease, so that two
//! operator replicas can run and only one reconciles.
//!
//! The holder renews the Lease every [`RENEW_EVERY`]; another replica takes
//! it over once it has not been renewed for [`LEASE_DURATION`]. A leader
//! that cannot renew stops, and Kubernetes restarts it as a follower.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

/// client-go's defaults: a 15 s lease renewed well before it runs out.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading or writing Lease {name}: {source}")]
    Lease {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Who holds a Lease, and whether `me` may take it at `now`.
pub fn may_acquire(lease: &Lease, me: &str, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return true;
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
    match &spec.renew_time {
        Some(renewed) => {
            let expiry = renewed
                .0
                .checked_add(SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX));
            expiry.is_ok_and(|e| now >= e)
        }
        None => true,
    }
}

pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaseLock {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
        }
    }

    fn err(&self) -> impl Fn(kube::Error) -> LeaderError + '_ {
        move |source| LeaderError::Lease { name: self.name.clone(), source }
    }

    /// Takes or renews the Lease; `Ok(false)` when another replica holds it.
    pub async fn try_acquire(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.name).await.map_err(self.err())?;
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        };
        match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(LeaseSpec { acquire_time: Some(MicroTime(now)), ..spec }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(self.err()(e)),
                }
            }
            Some(lease) if may_acquire(&lease, &self.identity, now) => {
                let taking_over = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                    != Some(&self.identity);
                let mut patch = serde_json::json!({ "spec": spec });
                if taking_over {
                    patch["spec"]["acquireTime"] =
                        serde_json::to_value(MicroTime(now)).unwrap_or_default();
                }
                // The resourceVersion makes a race between two replicas a conflict, not two leaders.
                patch["metadata"] =
                    serde_json::json!({ "resourceVersion": lease.metadata.resource_version });
                match self
                    .api
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(self.err()(e)),
                }
            }
            Some(_) => Ok(false),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) -> Result<(), LeaderError> {
        loop {
            if self.try_acquire().await? {
                tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                return Ok(());
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// Renews until a renewal fails or is refused; returns why leadership ended.
    pub async fn keep(&self) -> String {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_acquire().await {
                Ok(true) => {}
                Ok(false) => return "another replica took the lease".into(),
                Err(e) => return e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_at: i64) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed_at).unwrap())),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_taken_only_when_free_mine_or_expired() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert!(may_acquire(&lease("me", 999), "me", now));
        assert!(!may_acquire(&lease("other", 990), "me", now), "renewed 10 s ago, lasts 15 s");
        assert!(may_acquire(&lease("other", 980), "me", now), "expired 5 s ago");
        assert!(may_acquire(&lease("", 999), "me", now));
        assert!(may_acquire(&Lease::default(), "me", now));
    }
}
