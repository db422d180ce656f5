//! OAuth 2.1 resource-server mode (`security.oauth`): bearer tokens that are JWTs of one
//! authorization server, checked as the MCP authorization specification asks of a resource
//! server: signed by one of the server's current keys (its JWKS, fetched and cached, fetched
//! again on a key it does not know, so rotations pass), `iss` the server, `aud` memgate's
//! resource URI, `exp`/`nbf` within a small leeway. The tenant comes from a configured claim.
//!
//! A token's `alg` must be the algorithm of the key it names: no `none`, no HMAC with a public
//! key, no downgrade.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

use super::tokens::Bearer;
use crate::config::OAuthConfig;

/// A token naming a key not in the cached set fetches the set again, at most this often.
const UNKNOWN_KEY_REFETCH_AFTER: Duration = Duration::from_secs(1);

/// Why a JWT was refused (the message a `401` carries).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("the bearer token is not a JWT memgate accepts: {0}")]
    Malformed(String),
    #[error("the token names a key the authorization server does not publish")]
    UnknownKey,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token names no tenant (claim `{0}`)")]
    NoTenant(String),
    #[error("the authorization server's keys cannot be read: {0}")]
    KeysUnavailable(String),
}

/// A key of the server's set, with the one algorithm it is used with.
#[derive(Clone)]
struct SigningKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

#[derive(Default)]
struct KeySet {
    by_id: HashMap<String, SigningKey>,
    /// Keys without a `kid` (a set of one key usually has none).
    unnamed: Vec<SigningKey>,
    fetched: Option<Instant>,
}

/// Checks JWTs of `security.oauth.issuer`.
pub struct OAuthVerifier {
    settings: OAuthConfig,
    tenants_required: bool,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    /// One fetch of the keys at a time.
    fetching: Mutex<()>,
}

impl std::fmt::Debug for OAuthVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthVerifier")
            .field("issuer", &self.settings.issuer)
            .field("resource", &self.settings.resource)
            .finish_non_exhaustive()
    }
}

impl OAuthVerifier {
    pub fn new(settings: OAuthConfig, tenants_required: bool) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            settings,
            tenants_required,
            http,
            keys: RwLock::default(),
            fetching: Mutex::default(),
        }
    }

    /// The authorization server memgate trusts.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// memgate's resource URI.
    pub fn resource(&self) -> &str {
        &self.settings.resource
    }

    /// Who a valid token speaks for.
    pub async fn verify(&self, token: &str) -> Result<Bearer, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        let key = match self.key(header.kid.as_deref(), header.alg).await? {
            Some(key) => key,
            None => {
                self.refetch_for_unknown_key().await?;
                self.key(header.kid.as_deref(), header.alg)
                    .await?
                    .ok_or(JwtError::UnknownKey)?
            }
        };
        if key.algorithm != header.alg {
            return Err(JwtError::Invalid(format!(
                "signed with {:?}, but its key is for {:?}",
                header.alg, key.algorithm
            )));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.resource]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway.as_secs();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| JwtError::Invalid(e.to_string()))?;
        let tenant = data
            .claims
            .get(&self.settings.tenant_claim)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|tenant| !tenant.is_empty())
            .map(str::to_string);
        if self.tenants_required && tenant.is_none() {
            return Err(JwtError::NoTenant(self.settings.tenant_claim.clone()));
        }
        Ok(Bearer { tenant })
    }

    /// The key a token names, from the cached set (fetched first if there is none, or it is
    /// older than `jwksRefresh`); `None` when the set does not have it.
    async fn key(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Option<SigningKey>, JwtError> {
        let stale = {
            let keys = self.keys.read().await;
            keys.fetched
                .is_none_or(|at| at.elapsed() >= self.settings.jwks_refresh)
        };
        if stale {
            if let Err(error) = self.fetch().await {
                // A server briefly down: the keys fetched before still hold.
                if self.keys.read().await.fetched.is_none() {
                    return Err(error);
                }
                tracing::warn!(%error, "could not refresh the authorization server's keys");
            }
        }
        let keys = self.keys.read().await;
        Ok(match kid {
            Some(kid) => keys.by_id.get(kid).cloned(),
            None => keys
                .unnamed
                .iter()
                .find(|key| key.algorithm == algorithm)
                .cloned(),
        })
    }

    async fn refetch_for_unknown_key(&self) -> Result<(), JwtError> {
        let recent = self
            .keys
            .read()
            .await
            .fetched
            .is_some_and(|at| at.elapsed() < UNKNOWN_KEY_REFETCH_AFTER);
        if recent {
            return Err(JwtError::UnknownKey);
        }
        self.fetch().await
    }

    /// Fetches the key set (once, if several callers ask at the same moment).
    async fn fetch(&self) -> Result<(), JwtError> {
        let asked = Instant::now();
        let _one = self.fetching.lock().await;
        if self.keys.read().await.fetched.is_some_and(|at| at >= asked) {
            return Ok(());
        }
        let url = match &self.settings.jwks_url {
            Some(url) => url.clone(),
            None => self.discover_jwks_url().await?,
        };
        let set: JwkSet = self.get_json(&url).await.and_then(|value| {
            serde_json::from_value(value).map_err(|e| JwtError::KeysUnavailable(e.to_string()))
        })?;
        let mut fresh = KeySet {
            fetched: Some(Instant::now()),
            ..KeySet::default()
        };
        for jwk in &set.keys {
            let Some(key) = signing_key(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    fresh.by_id.insert(kid.clone(), key);
                }
                None => fresh.unnamed.push(key),
            }
        }
        tracing::debug!(keys = fresh.by_id.len() + fresh.unnamed.len(), %url, "fetched the authorization server's keys");
        *self.keys.write().await = fresh;
        Ok(())
    }

    /// The `jwks_uri` of the issuer's metadata (RFC 8414, else OpenID Connect discovery).
    async fn discover_jwks_url(&self) -> Result<String, JwtError> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let mut last = String::new();
        for document in ["oauth-authorization-server", "openid-configuration"] {
            match self
                .get_json(&format!("{issuer}/.well-known/{document}"))
                .await
            {
                Ok(metadata) => {
                    if let Some(url) = metadata.get("jwks_uri").and_then(Value::as_str) {
                        return Ok(url.to_string());
                    }
                    last = format!("{document} names no jwks_uri");
                }
                Err(error) => last = error.to_string(),
            }
        }
        Err(JwtError::KeysUnavailable(last))
    }

    async fn get_json(&self, url: &str) -> Result<Value, JwtError> {
        let unavailable = |e: reqwest::Error| JwtError::KeysUnavailable(format!("{url}: {e}"));
        self.http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)
    }
}

/// A published key memgate can check signatures with, and its algorithm (the JWK's `alg`,
/// else the one its type implies). Secret (`oct`) keys are never taken from a public set.
fn signing_key(jwk: &Jwk) -> Option<SigningKey> {
    let named = jwk
        .common
        .key_algorithm
        .and_then(|alg| Algorithm::from_str(&format!("{alg:?}")).ok());
    let implied = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        // Secret keys, and key types this version does not know.
        _ => return None,
    };
    let algorithm = named.or(implied)?;
    if matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(SigningKey { key, algorithm })
}

/// `/.well-known/oauth-protected-resource` (RFC 9728): where clients learn which
/// authorization server issues tokens for memgate.
pub fn protected_resource_metadata(verifier: &OAuthVerifier) -> Value {
    serde_json::json!({
        "resource": verifier.resource(),
        "authorization_servers": [verifier.issuer()],
        "bearer_methods_supported": ["header"],
        "resource_name": "memgate",
    })
}

/// The metadata document's URL for `resource` (RFC 9728 §3.1: the well-known path inserted
/// before the resource's path).
pub fn metadata_url(resource: &str) -> String {
    match resource.parse::<http::Uri>() {
        Ok(uri) => {
            let path = uri.path().trim_end_matches('/');
            format!(
                "{}://{}/.well-known/oauth-protected-resource{path}",
                uri.scheme_str().unwrap_or("https"),
                uri.authority().map(|a| a.as_str()).unwrap_or_default()
            )
        }
        Err(_) => format!("{resource}/.well-known/oauth-protected-resource"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_url_inserts_the_well_known_path() {
        assert_eq!(
            metadata_url("https://memgate.example/mcp"),
            "https://memgate.example/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn secret_keys_of_a_published_set_are_never_used() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0", "alg": "HS256"}
        ]}))
        .expect("set");
        assert!(signing_key(&set.keys[0]).is_none());
    }
}
