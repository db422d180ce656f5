//! Leader election when the API server stops answering (a mocked connection that hangs). The
//! Lease itself on a real API server: `api_server.rs`.

use std::time::Duration;

use memgate_operator::leader::{hold, renew_deadline, LeaseSettings};

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "memgate-operator".into(),
        namespace: "memgate-system".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
    }
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
