//! The Secrets a store uses: generated credentials created once (never rotated behind the
//! user's back), and a digest of every referenced Secret's value, so a change rolls the pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};

use crate::build::labels::metadata;
use crate::build::{secret_refs, GeneratedSecret, SecretDigests};
use crate::crd::MemoryStore;
use crate::error::{Error, Result};

/// 64 hex characters from the OS's random source.
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Creates the Secret holding a generated credential unless it exists. Returns whether it
/// was created.
pub async fn ensure_generated(
    client: &Client,
    store: &MemoryStore,
    generated: &GeneratedSecret,
) -> Result<bool> {
    let secret = &generated.secret;
    let namespace = store.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    if api.get_opt(&secret.name).await?.is_some() {
        return Ok(false);
    }
    let object = Secret {
        metadata: metadata(store, secret.name.clone(), generated.component),
        data: Some(BTreeMap::from([(
            secret.key.clone(),
            ByteString(random_token().into_bytes()),
        )])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(true),
        // Another reconcile created it first: keep theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// A digest of each value of a Secret the pods read; fails when one is missing.
pub async fn digests(client: &Client, store: &MemoryStore) -> Result<SecretDigests> {
    let namespace = store.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut digests = SecretDigests::default();
    for (_, reference) in secret_refs(store) {
        let missing = || Error::MissingSecret {
            name: reference.name.clone(),
            key: reference.key.clone(),
        };
        let secret = api.get_opt(&reference.name).await?.ok_or_else(missing)?;
        let value = secret
            .data
            .as_ref()
            .and_then(|data| data.get(&reference.key))
            .ok_or_else(missing)?;
        digests.insert(&reference, hex::encode(Sha256::digest(&value.0)));
    }
    Ok(digests)
}
