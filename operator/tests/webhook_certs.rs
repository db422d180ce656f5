//! The webhook certificate kept in a Secret on the in-memory API server: issued once, kept
//! while valid, replaced before expiry; its CA written into the MutatingWebhookConfiguration.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, WebhookClientConfig,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube_fake_client::ClientBuilder;
use memgate_operator::webhook_certs::{
    ensure_certificate, publish_ca_bundle, WebhookCertSettings, RENEW_BEFORE, VALIDITY,
};
use time::{Duration, OffsetDateTime};

fn settings() -> WebhookCertSettings {
    WebhookCertSettings {
        namespace: "memgate-system".into(),
        secret: "memgate-webhook-tls".into(),
        service: "memgate-webhook".into(),
        configuration: "memgate".into(),
    }
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
            client_config: WebhookClientConfig::default(),
            ..Default::default()
        }]),
    }
}

#[tokio::test]
async fn the_certificate_is_issued_once_kept_and_renewed_before_expiry() {
    let client = ClientBuilder::new().build().await.expect("fake client");
    let now = OffsetDateTime::now_utc();
    let (first, new) = ensure_certificate(&client, &settings(), now)
        .await
        .expect("issued");
    assert!(new);
    assert!(first.cert_pem.contains("BEGIN CERTIFICATE"));
    let (kept, new) = ensure_certificate(&client, &settings(), now)
        .await
        .expect("kept");
    assert!(!new, "a valid certificate is kept");
    assert_eq!(kept, first);

    // Near its expiry it is replaced.
    let later = first.not_after - RENEW_BEFORE + Duration::days(1);
    let (renewed, new) = ensure_certificate(&client, &settings(), later)
        .await
        .expect("renewed");
    assert!(new);
    assert_ne!(renewed.cert_pem, first.cert_pem);
    // Replicas still serving the old certificate stay trusted: the bundle has both CAs, the
    // new one first, and no more (the CA before the old one is gone).
    assert_eq!(renewed.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(renewed
        .ca_pem
        .ends_with(&format!("{}\n", first.ca_pem.trim_end())));
    let (stored, new) = ensure_certificate(&client, &settings(), now)
        .await
        .expect("read");
    assert!(!new);
    assert_eq!(stored.cert_pem, renewed.cert_pem, "the renewal was stored");
    let again = first.not_after + VALIDITY - RENEW_BEFORE + Duration::days(1);
    let (third, _) = ensure_certificate(&client, &settings(), again)
        .await
        .expect("renewed again");
    assert_eq!(third.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(
        !third.ca_pem.contains(first.ca_pem.trim()),
        "only the CA it replaced"
    );
}

#[tokio::test]
async fn the_ca_is_written_into_the_webhook_configuration() {
    let client = ClientBuilder::new().build().await.expect("fake client");
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    api.create(&PostParams::default(), &configuration())
        .await
        .expect("configuration");
    let (certificate, _) = ensure_certificate(&client, &settings(), OffsetDateTime::now_utc())
        .await
        .expect("issued");
    assert!(publish_ca_bundle(&client, &settings(), &certificate.ca_pem)
        .await
        .expect("patched"));
    let stored = api.get("memgate").await.expect("configuration");
    let bundle = stored.webhooks.expect("webhooks")[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("caBundle");
    assert_eq!(bundle.0, certificate.ca_pem.as_bytes());
    assert!(
        !publish_ca_bundle(&client, &settings(), &certificate.ca_pem)
            .await
            .expect("no-op"),
        "an up-to-date bundle is left alone"
    );
}

#[tokio::test]
async fn certificates_come_from_files_or_from_the_operator() {
    use memgate_operator::webhook_certs::{current, CertSource};
    let client = ClientBuilder::new().build().await.expect("fake client");
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    api.create(&PostParams::default(), &configuration())
        .await
        .expect("configuration");
    let (cert, key) = current(&client, &CertSource::Managed(settings()))
        .await
        .expect("managed");
    assert!(cert.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
    let published = api
        .get("memgate")
        .await
        .expect("configuration")
        .webhooks
        .expect("webhooks")[0]
        .client_config
        .ca_bundle
        .is_some();
    assert!(published, "the CA is published with it");

    let dir = std::env::temp_dir().join(format!("memgate-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("tls.crt"), "CERT").expect("write");
    std::fs::write(dir.join("tls.key"), "KEY").expect("write");
    let files = current(&client, &CertSource::Files(dir.clone()))
        .await
        .expect("files");
    assert_eq!(files, ("CERT".to_string(), "KEY".to_string()));
    let missing = current(&client, &CertSource::Files(dir.join("nope"))).await;
    assert!(missing
        .expect_err("no files")
        .to_string()
        .contains("tls.crt"));
}
