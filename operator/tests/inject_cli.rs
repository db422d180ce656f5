//! `memgate-operator inject` on a multi-document file, as a GitOps user runs it.

use std::process::Command;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn inject(file: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_memgate-operator"))
        .arg("inject")
        .arg("-f")
        .arg(file)
        .arg("-s")
        .arg(fixtures().join("managed.yaml"))
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| serde::Deserialize::deserialize(document).expect("yaml"))
        .collect()
}

#[test]
fn only_annotated_workloads_get_the_sidecar_and_a_second_pass_changes_nothing() {
    let input = fixtures().join("apps/agents.yaml");
    let original = documents(&std::fs::read_to_string(&input).expect("fixture"));
    let once = inject(&input);
    let injected = documents(&once);
    assert_eq!(injected.len(), 3, "every document is printed, in order");
    let template = &injected[0]["spec"]["template"];
    assert_eq!(
        template["spec"]["initContainers"][0]["name"],
        "memgate-proxy"
    );
    assert_eq!(
        template["spec"]["initContainers"][0]["restartPolicy"],
        "Always"
    );
    assert_eq!(
        template["metadata"]["annotations"]["memgate.dev/injected"],
        "notes"
    );
    assert_eq!(injected[1], original[1], "a Service is left alone");
    assert_eq!(
        injected[2], original[2],
        "an unannotated CronJob is left alone"
    );

    let dir = std::env::temp_dir().join(format!("memgate-inject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("once.yaml");
    std::fs::write(&path, &once).expect("write");
    assert_eq!(
        documents(&inject(&path)),
        injected,
        "injecting twice changes nothing"
    );
}

#[test]
fn an_unknown_store_is_an_error_naming_it() {
    let dir = std::env::temp_dir().join(format!("memgate-inject-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("pod.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {memgate.dev/inject: missing}}\nspec: {containers: [{name: c, image: i}]}\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_memgate-operator"))
        .args(["inject", "-f"])
        .arg(&path)
        .arg("-s")
        .arg(fixtures().join("managed.yaml"))
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"missing\""));
}
