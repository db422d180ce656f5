//! The official TypeScript MCP SDK (npm `@modelcontextprotocol/sdk`), installed by
//! `scripts/test.sh` into `target/node-tools`, driving memgate through `tests/mcp/ts_check.mjs`
//! with the machine's Node.js.

use std::path::PathBuf;

use serde_json::Value;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// `target/node-tools`, where the SDK is installed; panics, saying how to get it, when it is
/// missing.
fn node_tools() -> PathBuf {
    let tools = workspace().join("target/node-tools");
    assert!(
        tools
            .join("node_modules/@modelcontextprotocol/sdk")
            .exists(),
        "{} has no @modelcontextprotocol/sdk: scripts/test.sh installs it there",
        tools.display()
    );
    tools
}

/// Runs `ts_check.mjs` with `args` (a copy beside the SDK, which Node's module resolution
/// finds from the script's directory); its observations, one JSON value per line.
pub async fn ts_check(args: &[&str]) -> Vec<Value> {
    let tools = node_tools();
    let script = tools.join("ts_check.mjs");
    std::fs::copy(workspace().join("tests/mcp/ts_check.mjs"), &script).expect("script copied");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(&script)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ts_check.mjs finished within two minutes")
    .expect("node ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ts_check.mjs {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON line: {line}")))
        .collect()
}
