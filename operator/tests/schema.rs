//! Sample MemoryStores against the generated CRD: the valid ones pass its OpenAPI schema and
//! its CEL rules, each invalid one is refused by the schema or by a CEL rule, as the API
//! server would refuse it.

use std::path::{Path, PathBuf};

use memgate_operator::crd::MemoryStore;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("readable");
    serde_yaml::from_str(&text).expect("YAML")
}

/// The CRD's `openAPIV3Schema`, from the committed file.
fn schema() -> jsonschema::Validator {
    let crd = yaml_file(&root().join("crds/memorystore.yaml"));
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    jsonschema::validator_for(schema).expect("a JSON schema")
}

fn samples(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("dir")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no samples in {dir}");
    files
}

fn valid_samples() -> Vec<PathBuf> {
    let mut files = samples("operator/tests/fixtures");
    files.push(root().join("examples/memorystore.yaml"));
    files
}

fn store(path: &Path) -> MemoryStore {
    serde_json::from_value(yaml_file(path)).expect("a MemoryStore")
}

#[test]
fn valid_samples_pass_the_schema_and_the_cel_rules() {
    let schema = schema();
    for path in valid_samples() {
        let value = yaml_file(&path);
        let errors: Vec<String> = schema.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        store(&path)
            .validate_cel()
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    }
}

#[test]
fn schema_violations_are_refused_by_the_schema() {
    let schema = schema();
    for path in samples("operator/tests/fixtures/invalid/schema") {
        assert!(
            !schema.is_valid(&yaml_file(&path)),
            "{} passed the schema",
            path.display()
        );
    }
}

/// What a CEL fixture's first line says it is refused with (`# refused: <message>`).
pub fn expected_refusal(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("readable");
    text.lines()
        .next()
        .and_then(|line| line.strip_prefix("# refused: "))
        .unwrap_or_else(|| panic!("{}: no `# refused:` line", path.display()))
        .to_string()
}

#[test]
fn cel_rules_refuse_what_the_schema_lets_through() {
    let schema = schema();
    for path in samples("operator/tests/fixtures/invalid/cel") {
        assert!(
            schema.is_valid(&yaml_file(&path)),
            "{}: the schema alone lets it through",
            path.display()
        );
        let errors = store(&path)
            .validate_cel()
            .expect_err("a CEL rule refuses it");
        let text = format!("{errors:?}");
        let expected = expected_refusal(&path);
        assert!(text.contains(&expected), "{}: {text}", path.display());
    }
}

#[test]
fn immutable_fields_cannot_change() {
    let old = store(&root().join("operator/tests/fixtures/managed.yaml"));
    let mut same = old.clone();
    same.spec.rollout.percent = 80;
    same.validate_cel_update(&old)
        .expect("mutable fields change");

    let mut collection = old.clone();
    collection.spec.qdrant.collection = "other".into();
    let errors = collection
        .validate_cel_update(&old)
        .expect_err("collection is immutable");
    assert!(format!("{errors:?}").contains("collection is immutable"));

    let mut dimensions = old.clone();
    dimensions.spec.embeddings.dimensions = 3072;
    let errors = dimensions
        .validate_cel_update(&old)
        .expect_err("dimensions is immutable");
    assert!(format!("{errors:?}").contains("dimensions is immutable"));
}
