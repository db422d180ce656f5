//! The mutating admission webhook's decision for one Pod: an `AdmissionReview` in, an answer
//! with a JSON Patch out when the pod asks for the sidecar (`memgate.dev/inject: <store>`).
//!
//! The pod is admitted unchanged without the annotation, already injected, or naming a store
//! that does not exist (then with a warning `kubectl` shows) — a typo must not stop an app from
//! deploying, and the webhook's `failurePolicy` is `Ignore` anyway. It is refused, with the
//! reason, only when it asks for the sidecar on a port it cannot have (`memgate.dev/port` not a
//! number, or one a container of the pod already declares).

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};

use crate::crd::MemoryStore;
use crate::inject::{inject, is_injected, SidecarPorts, INJECTED_ANNOTATION, INJECT_ANNOTATION};

/// The store a pod asks for, if it asks.
pub fn wanted_store(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(INJECT_ANNOTATION))
        .map(String::as_str)
}

/// The answer to one review; `store` is the MemoryStore the pod names, looked up in the pod's
/// namespace by the caller (`None` when it does not exist).
pub fn review(request: &AdmissionRequest<Pod>, store: Option<&MemoryStore>) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(request);
    let Some(pod) = request.object.as_ref() else {
        return response;
    };
    let Some(wanted) = wanted_store(pod) else {
        return response;
    };
    let Some(spec) = pod.spec.as_ref() else {
        return response;
    };
    if is_injected(spec) {
        return response;
    }
    let Some(store) = store else {
        response.warnings = Some(vec![format!(
            "memgate: MemoryStore {wanted:?} not found in this namespace; the pod runs without the sidecar"
        )]);
        return response;
    };
    let ports = match SidecarPorts::for_pod(pod.metadata.annotations.as_ref(), spec) {
        Ok(ports) => ports,
        // A clear refusal: the pod asked for the sidecar on a port it cannot have.
        Err(error) => return AdmissionResponse::invalid(format!("memgate: {error}")),
    };
    let mut mutated = pod.clone();
    if let Some(spec) = mutated.spec.as_mut() {
        inject(spec, store, ports);
    }
    mutated
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(INJECTED_ANNOTATION.into(), wanted.to_string());
    // What the store's NetworkPolicies let reach its Redis and Qdrant.
    mutated
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(
            crate::build::network::STORE_LABEL.into(),
            wanted.to_string(),
        );
    let (Ok(before), Ok(after)) = (serde_json::to_value(pod), serde_json::to_value(&mutated))
    else {
        return AdmissionResponse::invalid("the pod does not serialize");
    };
    let patch = json_patch::diff(&before, &after);
    match response.with_patch(patch) {
        Ok(response) => response,
        Err(error) => AdmissionResponse::invalid(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;
    use serde_json::{json, Value};

    fn store() -> MemoryStore {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/managed.yaml");
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("store")
    }

    /// An AdmissionReview as the API server sends it for a pod CREATE.
    fn review_of(pod: Value) -> AdmissionRequest<Pod> {
        let review: AdmissionReview<Pod> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "team-a",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": false
            }
        }))
        .expect("an AdmissionReview");
        review.try_into().expect("a request")
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "agent-", "namespace": "team-a", "annotations": annotations},
               "spec": {"containers": [{"name": "agent", "image": "example/agent:1"}]}})
    }

    fn patched(original: &Value, response: &AdmissionResponse) -> Value {
        let patch: json_patch::Patch =
            serde_json::from_slice(response.patch.as_ref().expect("a patch")).expect("JSON Patch");
        let mut document = original.clone();
        json_patch::patch(&mut document, &patch).expect("applies");
        document
    }

    #[test]
    fn an_annotated_pod_gets_a_patch_adding_the_sidecar() {
        let original = pod(json!({"memgate.dev/inject": "notes"}));
        let request = review_of(original.clone());
        let response = review(&request, Some(&store()));
        assert!(response.allowed);
        assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        let result = patched(&original, &response);
        assert_eq!(result["spec"]["initContainers"][0]["name"], "memgate-proxy");
        assert_eq!(
            result["spec"]["initContainers"][0]["restartPolicy"],
            "Always"
        );
        assert_eq!(
            result["metadata"]["annotations"]["memgate.dev/injected"],
            "notes"
        );
        assert_eq!(
            result["spec"]["containers"][0]["env"][0],
            json!({"name": "MEMGATE_URL", "value": "http://127.0.0.1:8080"})
        );
        // The patched pod is what a second review sees: nothing more to do.
        let again = review(&review_of(result), Some(&store()));
        assert!(again.allowed && again.patch.is_none());
    }

    #[test]
    fn pods_without_the_annotation_are_admitted_unchanged() {
        let response = review(&review_of(pod(json!({}))), Some(&store()));
        assert!(response.allowed);
        assert!(response.patch.is_none());
    }

    #[test]
    fn an_unknown_store_admits_the_pod_with_a_warning() {
        let response = review(&review_of(pod(json!({"memgate.dev/inject": "nope"}))), None);
        assert!(response.allowed);
        assert!(response.patch.is_none());
        let warnings = response.warnings.expect("a warning");
        assert!(warnings[0].contains("\"nope\""), "{warnings:?}");
    }

    #[test]
    fn an_app_on_8080_moves_the_sidecar_and_is_told_where() {
        let mut value = pod(json!({"memgate.dev/inject": "notes"}));
        value["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080}]);
        let response = review(&review_of(value.clone()), Some(&store()));
        assert!(response.allowed);
        let result = patched(&value, &response);
        let sidecar = &result["spec"]["initContainers"][0];
        let env = |container: &Value, name: &str| {
            container["env"]
                .as_array()
                .and_then(|all| all.iter().find(|e| e["name"] == name))
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            env(sidecar, "MEMGATE_LISTEN"),
            Some(json!("127.0.0.1:18080"))
        );
        assert_eq!(
            env(&result["spec"]["containers"][0], "MEMGATE_URL"),
            Some(json!("http://127.0.0.1:18080"))
        );
    }

    #[test]
    fn port_annotations_choose_the_ports_and_bad_ones_are_refused() {
        let value = pod(json!({
            "memgate.dev/inject": "notes",
            "memgate.dev/port": "7000",
            "memgate.dev/admin-port": "7001",
        }));
        let response = review(&review_of(value.clone()), Some(&store()));
        let result = patched(&value, &response);
        let sidecar = &result["spec"]["initContainers"][0];
        assert_eq!(sidecar["ports"][0]["containerPort"], json!(7001));

        for (annotations, reason) in [
            (
                json!({"memgate.dev/inject": "notes", "memgate.dev/port": "http"}),
                "not a port number",
            ),
            (
                json!({"memgate.dev/inject": "notes", "memgate.dev/port": "70000"}),
                "not a port number",
            ),
            (
                json!({"memgate.dev/inject": "notes", "memgate.dev/port": "7000", "memgate.dev/admin-port": "7000"}),
                "both 7000",
            ),
        ] {
            let response = review(&review_of(pod(annotations.clone())), Some(&store()));
            assert!(!response.allowed, "{annotations}");
            assert!(
                response.result.message.contains(reason),
                "{}",
                response.result.message
            );
        }
    }
}
