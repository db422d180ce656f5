//! OAuth 2.1 resource-server mode: JWTs signed by keys of a local authorization server (its
//! metadata and JWKS served here, ES256 keys made by rcgen), each case of the table checked
//! for its status and for writing nothing when refused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use memgate::config::{OAuthConfig, ScopeConfig};
use memgate_testkit::{start_proxy, test_config, McpHttpClient, McpSseClient, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

const RESOURCE: &str = "http://memgate.test/mcp";

/// A signing key and the JWK that publishes it.
struct Key {
    kid: String,
    pem: String,
    jwk: Value,
}

impl Key {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().expect("P-256 key");
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
        });
        Self {
            kid: kid.into(),
            pem: pair.serialize_pem(),
            jwk,
        }
    }

    /// A JWT of `claims`, signed by this key, naming `kid`.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        let key = EncodingKey::from_ec_pem(self.pem.as_bytes()).expect("encoding key");
        jsonwebtoken::encode(&header, claims, &key).expect("signed")
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

/// The authorization server: RFC 8414 metadata naming its JWKS, and the JWKS (changeable).
struct Issuer {
    server: TestServer,
    published: Arc<Mutex<Vec<Value>>>,
}

impl Issuer {
    async fn start() -> Self {
        let published: Arc<Mutex<Vec<Value>>> = Arc::default();
        let keys = published.clone();
        let server = TestServer::start(move |request, _| {
            let keys = keys.clone();
            async move {
                let host = request
                    .headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = match request.uri().path() {
                    "/.well-known/oauth-authorization-server" => json!({
                        "issuer": format!("http://{host}"),
                        "jwks_uri": format!("http://{host}/jwks"),
                    }),
                    "/jwks" => json!({"keys": keys.lock().expect("keys").clone()}),
                    _ => {
                        return hyper::Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::new()))
                            .expect("response")
                    }
                };
                hyper::Response::new(Full::new(Bytes::from(body.to_string())))
            }
        })
        .await
        .expect("issuer");
        Self { server, published }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn publish(&self, key: &Key) {
        self.published.lock().expect("keys").push(key.jwk.clone());
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

struct Env {
    base: String,
    http: reqwest::Client,
    issuer: Issuer,
    _proxy: memgate::app::RunningProxy,
    _data: tempfile::TempDir,
}

impl Env {
    async fn start() -> Self {
        let issuer = Issuer::start().await;
        let data = tempfile::tempdir().expect("dir");
        let mut config = test_config(data.path(), None, None, None);
        config.scope = Some(ScopeConfig {
            header: "x-tenant".into(),
            field: "tenant".into(),
        });
        config.security.oauth = Some(OAuthConfig {
            issuer: issuer.url(),
            resource: RESOURCE.into(),
            ..OAuthConfig::default()
        });
        let proxy = start_proxy(config).await.expect("proxy");
        Self {
            base: format!("http://{}", proxy.api_addr),
            http: reqwest::Client::new(),
            issuer,
            _proxy: proxy,
            _data: data,
        }
    }

    fn claims(&self, tenant: &str) -> Value {
        json!({"iss": self.issuer.url(), "aud": RESOURCE, "sub": tenant, "tenant": tenant,
               "iat": now(), "exp": now() + 600})
    }

    async fn create(&self, token: &str, content: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/memories", self.base))
            .bearer_auth(token)
            .json(&json!({"content": content, "type": "semantic"}))
            .send()
            .await
            .expect("create")
    }

    /// Every memory `token`'s tenant has (the test config's threshold is 0: a search finds all).
    async fn contents(&self, token: &str) -> Vec<String> {
        let mut contents =
            memgate_testkit::search_field(&self.base, Some(token), "written", "content").await;
        contents.sort();
        contents
    }
}

fn with(mut claims: Value, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    if let Value::Object(map) = &mut claims {
        change(map);
    }
    claims
}

#[tokio::test]
async fn jwts_are_checked_as_a_resource_server_checks_them() {
    let env = Env::start().await;
    let key = Key::new("key-1");
    env.issuer.publish(&key);
    let stranger = Key::new("key-unpublished");
    let alice = env.claims("alice");

    let metadata: Value = env
        .http
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            env.base
        ))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("JSON");
    assert_eq!(metadata["resource"], RESOURCE);
    assert_eq!(metadata["authorization_servers"], json!([env.issuer.url()]));

    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(alice.to_string())
    );
    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("valid", key.sign(&alice), StatusCode::ACCEPTED),
        (
            "expired 10 s ago, within the leeway",
            key.sign(&with(alice.clone(), |c| {
                c.insert("exp".into(), json!(now() - 10));
            })),
            StatusCode::ACCEPTED,
        ),
        (
            "expired an hour ago",
            key.sign(&with(alice.clone(), |c| {
                c.insert("exp".into(), json!(now() - 3600));
            })),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "not yet valid",
            key.sign(&with(alice.clone(), |c| {
                c.insert("nbf".into(), json!(now() + 3600));
            })),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong audience",
            key.sign(&with(alice.clone(), |c| {
                c.insert("aud".into(), json!("http://other.test/mcp"));
            })),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong issuer",
            key.sign(&with(alice.clone(), |c| {
                c.insert("iss".into(), json!("http://evil.test"));
            })),
            StatusCode::UNAUTHORIZED,
        ),
        ("alg none", none, StatusCode::UNAUTHORIZED),
        (
            "unknown kid",
            stranger.sign(&alice),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a published kid, signed by another key",
            stranger.sign_as("key-1", &alice),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no tenant claim",
            key.sign(&with(alice.clone(), |c| {
                c.remove("tenant");
            })),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no exp",
            key.sign(&with(alice.clone(), |c| {
                c.remove("exp");
            })),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (name, token, status) in &cases {
        let response = env.create(token, &format!("written with {name}")).await;
        assert_eq!(response.status(), *status, "{name}");
        if *status == StatusCode::UNAUTHORIZED {
            let challenge = response.headers()["www-authenticate"]
                .to_str()
                .expect("ascii")
                .to_string();
            assert!(
                challenge.contains("error=\"invalid_token\"")
                    && challenge.contains(
                        "resource_metadata=\"http://memgate.test/.well-known/oauth-protected-resource/mcp\""
                    ),
                "{name}: {challenge}"
            );
        }
    }
    let missing = env
        .http
        .get(format!("{}/memories/search", env.base))
        .send()
        .await
        .expect("no token");
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);

    // The key is rotated: a token of the new key is accepted once the set is fetched again.
    let rotated = Key::new("key-2");
    env.issuer.publish(&rotated);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = env
        .create(&rotated.sign(&alice), "written with the rotated key")
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "rotated key");
    let alices_id = response.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = key.sign(&alice);
    assert_eq!(
        env.contents(&token).await,
        vec![
            "written with expired 10 s ago, within the leeway".to_string(),
            "written with the rotated key".to_string(),
            "written with valid".to_string(),
        ],
        "only the accepted tokens wrote"
    );

    // Bob's token on Alice's memory.
    let bob = key.sign(&env.claims("bob"));
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = env
            .http
            .request(method.clone(), format!("{}/memories/{alices_id}", env.base))
            .bearer_auth(&bob)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method}");
    }
    assert!(env.contents(&bob).await.is_empty());
    assert_eq!(env.contents(&token).await.len(), 3, "Alice's memories stay");

    // And over MCP, both transports.
    let sse = McpSseClient::connect_with_token(&env.base, &token)
        .await
        .expect("sse with a JWT");
    sse.initialize().await.expect("initialize");
    let got = sse
        .call_tool("get_memory", json!({"id": alices_id}))
        .await
        .expect("get");
    assert!(got.contains("written with the rotated key"), "{got}");
    let bob_mcp = McpHttpClient::connect_with_token(&env.base, &bob)
        .await
        .expect("streamable with a JWT");
    assert_eq!(
        bob_mcp
            .call_tool("get_memory", json!({"id": alices_id}))
            .await
            .expect("get"),
        "Memory not found"
    );
}
