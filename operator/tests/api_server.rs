//! The operator's own API calls against a real kube-apiserver and etcd (no controllers, no
//! nodes; `scripts/control-plane.sh` builds them): leader election on a Lease, and the webhook
//! certificate kept in a Secret with its CA written into the MutatingWebhookConfiguration.
//!
//! One API server serves every check, one after another.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use memgate_operator::leader::{try_acquire, LeaseSettings};
use memgate_operator::webhook_certs::{
    current, ensure_certificate, publish_ca_bundle, CertSource, WebhookCertSettings, RENEW_BEFORE,
    VALIDITY,
};
use memgate_testkit::ControlPlane;
use time::{Duration, OffsetDateTime};

const NAMESPACE: &str = "memgate-system";

async fn admin_client(plane: &ControlPlane) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&plane.admin_kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

fn lease_settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "memgate-operator".into(),
        namespace: NAMESPACE.into(),
        identity: identity.into(),
        duration: std::time::Duration::from_secs(15),
    }
}

/// One replica leads until its Lease expires; the holder renews; a takeover counts a
/// transition.
async fn one_replica_leads_until_its_lease_expires(client: &Client) {
    let (a, b) = (lease_settings("operator-a"), lease_settings("operator-b"));
    assert!(
        try_acquire(client, &a).await.expect("api"),
        "the first takes it"
    );
    assert!(
        !try_acquire(client, &b).await.expect("api"),
        "the second waits"
    );
    assert!(
        try_acquire(client, &a).await.expect("api"),
        "the holder renews"
    );
    assert!(!try_acquire(client, &b).await.expect("api"));

    // operator-a stops renewing: after the lease duration, operator-b takes over.
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let mut lease = api.get("memgate-operator").await.expect("lease");
    let spec = lease.spec.as_mut().expect("spec");
    spec.renew_time = Some(MicroTime(Timestamp::now() - SignedDuration::from_secs(60)));
    api.replace("memgate-operator", &PostParams::default(), &lease)
        .await
        .expect("age the lease");
    assert!(try_acquire(client, &b).await.expect("api"), "taken over");
    let spec = api
        .get("memgate-operator")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(
        !try_acquire(client, &a).await.expect("api"),
        "the old leader waits now"
    );
}

fn cert_settings(secret: &str) -> WebhookCertSettings {
    WebhookCertSettings {
        namespace: NAMESPACE.into(),
        secret: secret.into(),
        service: "memgate-webhook".into(),
        configuration: "memgate".into(),
    }
}

/// Issued once, kept while valid, replaced before expiry with a CA bundle that still trusts the
/// certificate it replaces (and no older one).
async fn the_certificate_is_issued_once_kept_and_renewed_before_expiry(client: &Client) {
    let settings = cert_settings("renewed-tls");
    let now = OffsetDateTime::now_utc();
    let (first, new) = ensure_certificate(client, &settings, now)
        .await
        .expect("issued");
    assert!(new);
    assert!(first.cert_pem.contains("BEGIN CERTIFICATE"));
    let (kept, new) = ensure_certificate(client, &settings, now)
        .await
        .expect("kept");
    assert!(!new, "a valid certificate is kept");
    assert_eq!(kept, first);

    let later = first.not_after - RENEW_BEFORE + Duration::days(1);
    let (renewed, new) = ensure_certificate(client, &settings, later)
        .await
        .expect("renewed");
    assert!(new);
    assert_ne!(renewed.cert_pem, first.cert_pem);
    // Replicas still serving the old certificate stay trusted: the bundle has both CAs, the
    // new one first, and no more.
    assert_eq!(renewed.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(renewed
        .ca_pem
        .ends_with(&format!("{}\n", first.ca_pem.trim_end())));
    let (stored, new) = ensure_certificate(client, &settings, now)
        .await
        .expect("read");
    assert!(!new);
    assert_eq!(stored.cert_pem, renewed.cert_pem, "the renewal was stored");
    let again = first.not_after + VALIDITY - RENEW_BEFORE + Duration::days(1);
    let (third, _) = ensure_certificate(client, &settings, again)
        .await
        .expect("renewed again");
    assert_eq!(third.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(
        !third.ca_pem.contains(first.ca_pem.trim()),
        "only the CA it replaced"
    );
}

fn configuration() -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("memgate".into()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "inject.memgate.dev".into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            failure_policy: Some("Ignore".into()),
            client_config: WebhookClientConfig {
                url: Some("https://memgate-webhook.invalid/inject".into()),
                ..Default::default()
            },
            ..Default::default()
        }]),
    }
}

fn ca_bundle(configuration: &MutatingWebhookConfiguration) -> Option<Vec<u8>> {
    let webhooks = configuration.webhooks.as_ref()?;
    Some(
        webhooks
            .first()?
            .client_config
            .ca_bundle
            .as_ref()?
            .0
            .clone(),
    )
}

/// The CA goes into the MutatingWebhookConfiguration once; an up-to-date bundle is left alone.
async fn the_ca_is_written_into_the_webhook_configuration(client: &Client) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    api.create(&PostParams::default(), &configuration())
        .await
        .expect("configuration");
    let settings = cert_settings("published-tls");
    let (certificate, _) = ensure_certificate(client, &settings, OffsetDateTime::now_utc())
        .await
        .expect("issued");
    assert!(publish_ca_bundle(client, &settings, &certificate.ca_pem)
        .await
        .expect("patched"));
    let stored = api.get("memgate").await.expect("configuration");
    assert_eq!(
        ca_bundle(&stored).as_deref(),
        Some(certificate.ca_pem.as_bytes())
    );
    assert!(
        !publish_ca_bundle(client, &settings, &certificate.ca_pem)
            .await
            .expect("no-op"),
        "an up-to-date bundle is left alone"
    );
}

/// The serving certificate comes from the operator (issued, CA published) or from files.
async fn certificates_come_from_files_or_from_the_operator(client: &Client) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let settings = cert_settings("served-tls");
    let (cert, key) = current(client, &CertSource::Managed(settings))
        .await
        .expect("managed");
    assert!(cert.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
    let published = ca_bundle(&api.get("memgate").await.expect("configuration"));
    assert!(
        published.is_some_and(|bundle| String::from_utf8_lossy(&bundle).contains("BEGIN")),
        "the CA is published with it"
    );

    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("tls.crt"), "CERT").expect("write");
    std::fs::write(dir.path().join("tls.key"), "KEY").expect("write");
    let files = current(client, &CertSource::Files(dir.path().to_path_buf()))
        .await
        .expect("files");
    assert_eq!(files, ("CERT".to_string(), "KEY".to_string()));
    let missing = current(client, &CertSource::Files(dir.path().join("nope"))).await;
    assert!(missing
        .expect_err("no files")
        .to_string()
        .contains("tls.crt"));
}

#[tokio::test]
async fn the_operators_api_calls_on_a_real_api_server() {
    let plane = ControlPlane::start_api_server().expect("the API server starts");
    let client = admin_client(&plane).await;
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");

    one_replica_leads_until_its_lease_expires(&client).await;
    the_certificate_is_issued_once_kept_and_renewed_before_expiry(&client).await;
    the_ca_is_written_into_the_webhook_configuration(&client).await;
    certificates_come_from_files_or_from_the_operator(&client).await;
}
