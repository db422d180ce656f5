//! The webhook's certificate when the operator manages it: kept in a Secret (`ca.crt`,
//! `tls.crt`, `tls.key`), replaced before it expires, and its CA written into the
//! MutatingWebhookConfiguration's `caBundle` so the API server trusts the webhook.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use time::{Duration, OffsetDateTime};

use crate::certs::{generate, service_dns_names, ServingCertificate};

/// When the certificate in the Secret expires (RFC 3339), so renewal needs no X.509 parsing.
pub const EXPIRES_ANNOTATION: &str = "memgate.dev/expires";
/// How long a new certificate is valid.
pub const VALIDITY: Duration = Duration::days(365);
/// A certificate this close to expiry is replaced.
pub const RENEW_BEFORE: Duration = Duration::days(30);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Where the webhook's certificate lives.
#[derive(Debug, Clone)]
pub struct WebhookCertSettings {
    pub namespace: String,
    pub secret: String,
    /// The webhook Service (the certificate's DNS names).
    pub service: String,
    /// The MutatingWebhookConfiguration whose `caBundle` trusts it.
    pub configuration: String,
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
}

fn stored(secret: &Secret) -> Option<ServingCertificate> {
    let expires = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPIRES_ANNOTATION))
        .and_then(|value| {
            OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok()
        })?;
    Some(ServingCertificate {
        ca_pem: text(secret, "ca.crt")?,
        cert_pem: text(secret, "tls.crt")?,
        key_pem: text(secret, "tls.key")?,
        not_after: expires,
    })
}

fn secret_of(settings: &WebhookCertSettings, certificate: &ServingCertificate) -> Secret {
    let expires = certificate
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: Some(settings.secret.clone()),
            namespace: Some(settings.namespace.clone()),
            annotations: Some(BTreeMap::from([(EXPIRES_ANNOTATION.to_string(), expires)])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "ca.crt".to_string(),
                ByteString(certificate.ca_pem.clone().into_bytes()),
            ),
            (
                "tls.crt".to_string(),
                ByteString(certificate.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(certificate.key_pem.clone().into_bytes()),
            ),
        ])),
        ..Default::default()
    }
}

/// The first certificate of a PEM bundle.
fn first_certificate(pem: &str) -> Option<&str> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let end = pem[start..].find(END)? + start + END.len();
    Some(&pem[start..end])
}

/// What the `caBundle` trusts after a renewal: the new CA and the one it replaces. Every
/// replica reloads the Secret on its own schedule, so for a while some still serve the old
/// certificate; with only the new CA in the bundle the API server would refuse them.
fn trust_bundle(new_ca: &str, previous_bundle: &str) -> String {
    match first_certificate(previous_bundle) {
        Some(previous) if previous.trim() != new_ca.trim() => {
            format!("{}\n{}\n", new_ca.trim_end(), previous)
        }
        _ => new_ca.to_string(),
    }
}

/// The certificate to serve: the stored one while it is far from expiry, else a new one
/// (stored before it is returned), whose `ca_pem` also trusts the CA it replaces. Returns it
/// and whether it is new.
pub async fn ensure_certificate(
    client: &Client,
    settings: &WebhookCertSettings,
    now: OffsetDateTime,
) -> Result<(ServingCertificate, bool), CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let existing = api.get_opt(&settings.secret).await?;
    if let Some(certificate) = existing.as_ref().and_then(stored) {
        if certificate.not_after - now > RENEW_BEFORE {
            return Ok((certificate, false));
        }
    }
    let mut certificate = generate(
        service_dns_names(&settings.service, &settings.namespace),
        VALIDITY,
    )?;
    if let Some(previous) = existing.as_ref().and_then(|secret| text(secret, "ca.crt")) {
        certificate.ca_pem = trust_bundle(&certificate.ca_pem, &previous);
    }
    let mut secret = secret_of(settings, &certificate);
    match existing {
        Some(existing) => {
            secret.metadata.resource_version = existing.metadata.resource_version;
            api.replace(&settings.secret, &PostParams::default(), &secret)
                .await?;
        }
        None => {
            api.create(&PostParams::default(), &secret).await?;
        }
    }
    tracing::info!(secret = %settings.secret, "issued a new webhook certificate");
    Ok((certificate, true))
}

/// Writes the CA into every webhook of the MutatingWebhookConfiguration. Returns whether it
/// changed anything.
pub async fn publish_ca_bundle(
    client: &Client,
    settings: &WebhookCertSettings,
    ca_pem: &str,
) -> Result<bool, CertError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mut configuration) = api.get_opt(&settings.configuration).await? else {
        tracing::warn!(configuration = %settings.configuration, "no MutatingWebhookConfiguration to trust the webhook");
        return Ok(false);
    };
    let bundle = ByteString(ca_pem.as_bytes().to_vec());
    let mut changed = false;
    for webhook in configuration.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
            webhook.client_config.ca_bundle = Some(bundle.clone());
            changed = true;
        }
    }
    if changed {
        api.replace(
            &settings.configuration,
            &PostParams::default(),
            &configuration,
        )
        .await?;
    }
    Ok(changed)
}

/// Where the webhook's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Issued and rotated by the operator (this module).
    Managed(WebhookCertSettings),
    /// `tls.crt` and `tls.key` in a directory, kept fresh by someone else (cert-manager).
    Files(std::path::PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Managed(#[from] CertError),
    #[error("cannot read {path}: {error}")]
    File { path: String, error: std::io::Error },
}

/// The certificate and key (PEM) to serve now. Managed: issued or renewed when due, and the
/// CA published into the webhook configuration.
pub async fn current(client: &Client, source: &CertSource) -> Result<(String, String), LoadError> {
    match source {
        CertSource::Managed(settings) => {
            let (certificate, _) =
                ensure_certificate(client, settings, OffsetDateTime::now_utc()).await?;
            publish_ca_bundle(client, settings, &certificate.ca_pem).await?;
            Ok((certificate.cert_pem, certificate.key_pem))
        }
        CertSource::Files(dir) => {
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read_to_string(&path).map_err(|error| LoadError::File {
                    path: path.display().to_string(),
                    error,
                })
            };
            Ok((read("tls.crt")?, read("tls.key")?))
        }
    }
}

/// Re-reads the certificate every `every` and serves it when it changed.
pub async fn keep_fresh(
    client: Client,
    source: CertSource,
    serving: std::sync::Arc<crate::webhook::ReloadableCert>,
    mut last: (String, String),
    every: std::time::Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        match current(&client, &source).await {
            Ok(fresh) if fresh != last => match serving.replace(&fresh.0, &fresh.1) {
                Ok(()) => {
                    tracing::info!("webhook certificate replaced");
                    last = fresh;
                }
                Err(error) => tracing::warn!(%error, "the new webhook certificate does not load"),
            },
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot refresh the webhook certificate"),
        }
    }
}
