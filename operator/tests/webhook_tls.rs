//! The webhook answering over real TLS in-process: a certificate from the operator's own CA, a
//! client that trusts only that CA, an AdmissionReview of an annotated pod in, a JSON Patch out.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use memgate_operator::certs::{generate, service_dns_names};
use memgate_operator::crd::MemoryStore;
use memgate_operator::webhook::stores::{Lookup, StoreLookup};
use memgate_operator::webhook::{serve, ReloadableCert};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

struct OneStore(MemoryStore);

impl StoreLookup for OneStore {
    fn store<'a>(&'a self, namespace: &'a str, name: &'a str) -> Lookup<'a> {
        let found = (self.0.metadata.namespace.as_deref() == Some(namespace)
            && self.0.metadata.name.as_deref() == Some(name))
        .then(|| self.0.clone());
        Box::pin(async move { found })
    }
}

fn store() -> MemoryStore {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/managed.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("store")
}

fn review(annotations: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0d6ad1f2-1c1b-4c1e-9d58-2f1a3a1b0c11",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "agent-", "namespace": "team-a", "annotations": annotations},
                "spec": {"containers": [{"name": "agent", "image": "example/agent:1"}]}}
        }
    })
}

async fn post(addr: std::net::SocketAddr, ca_pem: &str, body: Value) -> Value {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("memgate-webhook.memgate-system.svc").expect("name");
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with our CA");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http");
    tokio::spawn(connection);
    let request = http::Request::post("/mutate")
        .header("host", "memgate-webhook.memgate-system.svc")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("request");
    let response = sender.send_request(request).await.expect("answer");
    assert_eq!(response.status(), 200);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("an AdmissionReview")
}

/// A certificate for the webhook Service's names, from a CA of its own.
fn certificate() -> memgate_operator::certs::ServingCertificate {
    generate(
        service_dns_names("memgate-webhook", "memgate-system"),
        time::Duration::days(1),
    )
    .expect("certificates")
}

/// The webhook serving `serving` on a free port; send `true` to stop it.
async fn start(
    serving: Arc<ReloadableCert>,
) -> (
    std::net::SocketAddr,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let tls = serving.server_config().expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(listener, tls, Arc::new(OneStore(store())), stopped));
    (addr, stop, server)
}

fn serving(certificate: &memgate_operator::certs::ServingCertificate) -> Arc<ReloadableCert> {
    Arc::new(ReloadableCert::new(&certificate.cert_pem, &certificate.key_pem).expect("certificate"))
}

#[tokio::test]
async fn the_webhook_answers_over_tls_with_a_patch() {
    let certificate = certificate();
    let (addr, stop, server) = start(serving(&certificate)).await;

    let answer = post(
        addr,
        &certificate.ca_pem,
        review(json!({"memgate.dev/inject": "notes"})),
    )
    .await;
    let response = &answer["response"];
    assert_eq!(response["uid"], "0d6ad1f2-1c1b-4c1e-9d58-2f1a3a1b0c11");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    // kube serializes the patch bytes as a JSON array of numbers, which the API server's
    // decoder takes for `[]byte` as well as base64.
    let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).expect("patch bytes");
    let patch: Vec<Value> = serde_json::from_slice(&bytes).expect("a JSON Patch");
    let paths: Vec<&str> = patch.iter().filter_map(|op| op["path"].as_str()).collect();
    assert!(paths.contains(&"/spec/initContainers"), "{paths:?}");
    assert!(
        paths.contains(&"/metadata/annotations/memgate.dev~1injected"),
        "{paths:?}"
    );

    let answer = post(
        addr,
        &certificate.ca_pem,
        review(json!({"memgate.dev/inject": "other"})),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none_or(Value::is_null));
    assert!(answer["response"]["warnings"][0]
        .as_str()
        .is_some_and(|w| w.contains("\"other\"")));

    let _ = stop.send(true);
    server.await.expect("stopped");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_cannot_connect() {
    let other = generate(vec!["elsewhere.svc".into()], time::Duration::days(1)).expect("other CA");
    let (addr, _stop, _server) = start(serving(&certificate())).await;
    let outcome = tokio::spawn(async move {
        post(addr, &other.ca_pem, review(json!({}))).await;
    })
    .await;
    assert!(outcome.is_err(), "the handshake fails");
}

#[tokio::test]
async fn a_replaced_certificate_is_served_from_the_next_connection() {
    let (first, second) = (certificate(), certificate());
    let certificate = serving(&first);
    let (addr, _stop, _server) = start(certificate.clone()).await;

    let answer = post(addr, &first.ca_pem, review(json!({}))).await;
    assert_eq!(answer["response"]["allowed"], true);
    certificate
        .replace(&second.cert_pem, &second.key_pem)
        .expect("replaced");
    let answer = post(addr, &second.ca_pem, review(json!({}))).await;
    assert_eq!(
        answer["response"]["allowed"], true,
        "served with the new certificate"
    );
    let old_ca = first.ca_pem.clone();
    let outcome = tokio::spawn(async move { post(addr, &old_ca, review(json!({}))).await }).await;
    assert!(outcome.is_err(), "the old CA no longer matches");
}
