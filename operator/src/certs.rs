//! The webhook's serving certificate: a CA of its own and a leaf for the webhook Service's DNS
//! names, signed by it. The CA goes into the MutatingWebhookConfiguration's `caBundle`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// PEM texts of a CA and of a serving certificate it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingCertificate {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// When the leaf expires; renew well before.
    pub not_after: OffsetDateTime,
}

/// The DNS names a webhook Service answers to inside the cluster.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A new CA and a leaf for `dns_names`, both valid from an hour ago for `valid_for`.
pub fn generate(
    dns_names: Vec<String>,
    valid_for: Duration,
) -> Result<ServingCertificate, rcgen::Error> {
    let not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    let not_after = not_before + valid_for;

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "memgate webhook CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let common_name = dns_names.first().cloned().unwrap_or_default();
    let mut leaf = CertificateParams::new(dns_names)?;
    leaf.distinguished_name
        .push(DnType::CommonName, common_name);
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(ServingCertificate {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
        not_after,
    })
}
