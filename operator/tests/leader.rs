//! Leader election on a Lease in the in-memory API server: one holder at a time, renewals by
//! the holder, a takeover only after the Lease expired.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube_fake_client::ClientBuilder;
use memgate_operator::leader::{hold, renew_deadline, try_acquire, LeaseSettings};

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "memgate-operator".into(),
        namespace: "memgate-system".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
    }
}

#[tokio::test]
async fn one_replica_leads_until_its_lease_expires() {
    let client = ClientBuilder::new().build().await.expect("fake client");
    let (a, b) = (settings("operator-a"), settings("operator-b"));
    assert!(
        try_acquire(&client, &a).await.expect("api"),
        "the first takes it"
    );
    assert!(
        !try_acquire(&client, &b).await.expect("api"),
        "the second waits"
    );
    assert!(
        try_acquire(&client, &a).await.expect("api"),
        "the holder renews"
    );
    assert!(!try_acquire(&client, &b).await.expect("api"));

    // operator-a stops renewing: after the lease duration, operator-b takes over.
    let api: Api<Lease> = Api::namespaced(client.clone(), "memgate-system");
    let mut lease = api.get("memgate-operator").await.expect("lease");
    let spec = lease.spec.as_mut().expect("spec");
    spec.renew_time = Some(MicroTime(Timestamp::now() - SignedDuration::from_secs(60)));
    api.replace("memgate-operator", &PostParams::default(), &lease)
        .await
        .expect("age the lease");
    assert!(try_acquire(&client, &b).await.expect("api"), "taken over");
    let lease = api.get("memgate-operator").await.expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(
        !try_acquire(&client, &a).await.expect("api"),
        "the old leader waits now"
    );
}

/// A leader whose API server stops answering (requests hang, no error) steps down within its
/// renew deadline, before its Lease can expire and another replica take over.
#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_the_api_server_steps_down_before_its_lease_expires() {
    let (service, handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let client = kube::Client::new(service, "memgate-system");
    let settings = settings("operator-a");
    let started = tokio::time::Instant::now();
    tokio::time::timeout(settings.duration * 2, hold(&client, &settings))
        .await
        .expect("hold returns: a leader cut off must step down");
    let held = started.elapsed();
    assert!(
        held <= renew_deadline(&settings) + Duration::from_millis(10),
        "held {held:?}, past the renew deadline {:?}",
        renew_deadline(&settings)
    );
    assert!(
        held < settings.duration,
        "stepped down before the Lease expired"
    );
    drop(handle);
}
