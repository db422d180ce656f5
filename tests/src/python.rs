//! The official Python MCP SDK (PyPI `mcp`), installed by `scripts/test.sh` into
//! `target/python-tools`, driving memgate through `tests/mcp/sdk_check.py`.

use std::path::PathBuf;

use serde_json::Value;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// `target/python-tools/bin/python`; panics, saying how to get it, when it is missing.
pub fn python() -> PathBuf {
    let python = workspace().join("target/python-tools/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh installs the Python MCP SDK there",
        python.display()
    );
    python
}

/// Runs `sdk_check.py` with `args`; its observations, one JSON value per line.
pub async fn sdk_check(args: &[&str]) -> Vec<Value> {
    let script = workspace().join("tests/mcp/sdk_check.py");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new(python())
            .arg(&script)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("sdk_check.py finished within two minutes")
    .expect("sdk_check.py ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sdk_check.py {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON line: {line}")))
        .collect()
}

/// The observation of `step`.
pub fn step<'a>(observations: &'a [Value], step: &str) -> &'a Value {
    observations
        .iter()
        .find(|o| o["step"] == step)
        .unwrap_or_else(|| panic!("no {step} in {observations:?}"))
}

/// The observations of `sdk_check.py sessions … count`: every session read back its own
/// memory, with its own metadata.
pub fn check_sessions(sessions: &[Value], count: usize) {
    assert_eq!(sessions.len(), count);
    for session in sessions {
        assert_eq!(session["id"], session["got_id"], "{session}");
        assert_eq!(session["user"], format!("u{}", session["n"]), "{session}");
    }
}
