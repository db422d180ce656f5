//! One reconcile against a mocked API server (`tower-test`, as kube-rs's controller-rs does):
//! the test plays the API server, checking each request's method, path and body in the order
//! the operator must send them, and fails when an expected call never comes.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use memgate_operator::crd::MemoryStore;
use memgate_operator::metrics::Metrics;
use memgate_operator::reconcile::{reconcile_store, Context};
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn fixture(name: &str) -> MemoryStore {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("store")
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: StatusCode, body: Value) {
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("response");
    send.send_response(response);
}

/// The next request: its method, path and query, and JSON body (`Null` when empty).
async fn next(
    handle: &mut Handle,
) -> (
    Method,
    String,
    Value,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the operator sent the next request in time")
        .expect("a request");
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (method, uri, body, send)
}

fn secret(name: &str, key: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": "team-b"},
           "data": {key: "c2VjcmV0"}})
}

fn list(api_version: &str, kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": {}, "items": items})
}

/// Plays the API server through one reconcile of `external.yaml`, in order.
async fn api_server(mut handle: Handle) -> Vec<String> {
    let mut seen = Vec::new();
    let mut applied_worker = Value::Null;
    let mut applied_config = Value::Null;

    // 1–2: the referenced Secrets are read (their digest rolls the workers).
    for (name, key) in [("redis-creds", "password"), ("qdrant-creds", "api-key")] {
        let (method, uri, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::GET);
        assert_eq!(uri, format!("/api/v1/namespaces/team-b/secrets/{name}"));
        respond(send, StatusCode::OK, secret(name, key));
        seen.push(format!("GET secret {name}"));
    }
    // 3: whether KEDA's API is served (for workers.autoscale): not here.
    let (method, uri, _, send) = next(&mut handle).await;
    assert_eq!(method, Method::GET);
    assert_eq!(uri, "/apis/keda.sh/v1alpha1");
    respond(
        send,
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    );
    seen.push("GET keda.sh discovery".into());
    // 4: the ConfigMap before the workloads, by server-side apply.
    let (method, uri, body, send) = next(&mut handle).await;
    assert_eq!(method, Method::PATCH);
    assert!(
        uri.starts_with("/api/v1/namespaces/team-b/configmaps/shared-proxy-config?"),
        "{uri}"
    );
    assert!(
        uri.contains("fieldManager=memgate-operator") && uri.contains("force=true"),
        "{uri}"
    );
    assert_eq!(body["kind"], "ConfigMap");
    assert!(body["data"]["config.yaml"]
        .as_str()
        .expect("config")
        .contains("rediss://redis.example.internal:6380"));
    applied_config.clone_from(&body);
    respond(send, StatusCode::OK, body);
    seen.push("APPLY configmap".into());
    // 5: the workers.
    let (method, uri, body, send) = next(&mut handle).await;
    assert_eq!(method, Method::PATCH);
    assert!(
        uri.starts_with("/apis/apps/v1/namespaces/team-b/deployments/shared-worker?"),
        "{uri}"
    );
    assert_eq!(body["spec"]["replicas"], 1);
    assert_eq!(
        body["metadata"]["ownerReferences"][0]["kind"], "MemoryStore",
        "owned by the store"
    );
    applied_worker.clone_from(&body);
    respond(send, StatusCode::OK, body);
    seen.push("APPLY deployment".into());
    // 6–12: orphans: everything labelled for the store but not applied is deleted; nothing is
    // (KEDA's objects are not looked for where KEDA is not served).
    for (path, api_version, kind, items) in [
        (
            "/apis/apps/v1/namespaces/team-b/statefulsets",
            "apps/v1",
            "StatefulSet",
            vec![],
        ),
        (
            "/api/v1/namespaces/team-b/services",
            "v1",
            "Service",
            vec![],
        ),
        (
            "/apis/networking.k8s.io/v1/namespaces/team-b/networkpolicies",
            "networking.k8s.io/v1",
            "NetworkPolicy",
            vec![],
        ),
        (
            "/apis/policy/v1/namespaces/team-b/poddisruptionbudgets",
            "policy/v1",
            "PodDisruptionBudget",
            vec![],
        ),
        (
            "/apis/apps/v1/namespaces/team-b/deployments",
            "apps/v1",
            "Deployment",
            vec![applied_worker.clone()],
        ),
        (
            "/api/v1/namespaces/team-b/configmaps",
            "v1",
            "ConfigMap",
            vec![applied_config.clone()],
        ),
        (
            "/apis/autoscaling/v2/namespaces/team-b/horizontalpodautoscalers",
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            vec![],
        ),
    ] {
        let (method, uri, _, send) = next(&mut handle).await;
        assert_eq!(method, Method::GET);
        assert!(
            uri.starts_with(&format!("{path}?")),
            "{uri} (wanted {path})"
        );
        assert!(uri.contains("labelSelector="), "{uri}");
        respond(send, StatusCode::OK, list(api_version, kind, items));
        seen.push(format!("LIST {kind}"));
    }
    // 13: an Event says a new generation was applied.
    let (method, uri, body, send) = next(&mut handle).await;
    assert_eq!(method, Method::POST);
    assert_eq!(uri, "/apis/events.k8s.io/v1/namespaces/team-b/events?");
    assert_eq!(body["reason"], "Applied");
    respond(send, StatusCode::CREATED, body);
    seen.push("POST event".into());
    // 14: status last.
    let (method, uri, body, send) = next(&mut handle).await;
    assert_eq!(method, Method::PATCH);
    assert!(
        uri.starts_with("/apis/memgate.dev/v1alpha1/namespaces/team-b/memorystores/shared/status?"),
        "{uri}"
    );
    let status = &body["status"];
    assert_eq!(status["observedGeneration"], 1);
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, vec!["Available", "Progressing", "Degraded"]);
    assert_eq!(status["redis"]["ready"], "external");
    let store = json!({"apiVersion": "memgate.dev/v1alpha1", "kind": "MemoryStore",
        "metadata": {"name": "shared", "namespace": "team-b"}, "spec": fixture_spec(), "status": status});
    respond(send, StatusCode::OK, store);
    seen.push("PATCH status".into());
    seen
}

fn fixture_spec() -> Value {
    serde_json::to_value(fixture("external.yaml").spec).expect("spec")
}

#[tokio::test]
async fn a_reconcile_sends_its_requests_in_order() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let server = tokio::spawn(api_server(handle));
    let reporter = Reporter {
        controller: "memgate-operator".into(),
        instance: None,
    };
    let context = Context::new(
        client.clone(),
        Recorder::new(client, reporter),
        Metrics::new(),
    );
    reconcile_store(&fixture("external.yaml"), &context)
        .await
        .expect("reconciled");
    let seen = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the API server finished")
        .expect("its checks passed");
    assert_eq!(seen.len(), 14, "{seen:?}");
}

#[tokio::test]
async fn a_malformed_store_gets_an_event_and_waits_for_a_change() {
    use kube::core::DeserializeGuard;
    use memgate_operator::reconcile::reconcile;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let reporter = Reporter {
        controller: "memgate-operator".into(),
        instance: None,
    };
    let context = std::sync::Arc::new(Context::new(
        client.clone(),
        Recorder::new(client, reporter),
        Metrics::new(),
    ));
    // What the watcher hands over for an object whose spec does not parse.
    let malformed = json!({"apiVersion": "memgate.dev/v1alpha1", "kind": "MemoryStore",
        "metadata": {"name": "broken", "namespace": "team-c", "uid": "u-1"},
        "spec": {"redis": "not an object"}});
    let guard: DeserializeGuard<MemoryStore> = serde_json::from_value(malformed).expect("guarded");
    assert!(guard.0.is_err());
    let server = tokio::spawn(async move {
        let (method, uri, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::POST);
        assert_eq!(uri, "/apis/events.k8s.io/v1/namespaces/team-c/events?");
        assert_eq!(body["reason"], "InvalidObject");
        assert_eq!(body["type"], "Warning");
        respond(send, StatusCode::CREATED, body);
    });
    let action = reconcile(std::sync::Arc::new(guard), context.clone())
        .await
        .expect("handled");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    server.await.expect("the API server saw the event");
    assert_eq!(
        context
            .metrics
            .reconciles
            .with_label_values(&["invalid_object"])
            .get(),
        1
    );
}
