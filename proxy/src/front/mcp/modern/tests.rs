//! The checks a 2026-07-28 request passes, with the specification's errors.

use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(*name, HeaderValue::from_str(value).expect("a header value"));
    }
    headers
}

fn call(name: &str, version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": name, "arguments": {"id": "x"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
            "progressToken": "p"
        }
    }})
}

fn modern_headers(method: &str, name: &str) -> HeaderMap {
    headers(&[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
        ("mcp-name", name),
    ])
}

fn code(refusal: &Refusal) -> i64 {
    refusal.body["error"]["code"].as_i64().expect("a code")
}

#[test]
fn the_era_is_read_from_the_version_header_or_the_body() {
    let body = call("get_memory", "2026-07-28");
    assert!(is_modern(
        &modern_headers("tools/call", "get_memory"),
        &body
    ));
    assert!(is_modern(&HeaderMap::new(), &body), "the body says so");
    let legacy = headers(&[("mcp-protocol-version", "2025-11-25")]);
    assert!(!is_modern(&legacy, &body), "a session revision's header");
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
    assert!(!is_modern(&HeaderMap::new(), &initialize));
    let unknown = headers(&[("mcp-protocol-version", "1900-01-01")]);
    assert!(
        is_modern(&unknown, &initialize),
        "answered as the modern era answers"
    );
}

#[test]
fn a_request_that_agrees_with_its_headers_passes_without_the_protocol_meta() {
    let checked = check(
        &modern_headers("tools/call", "get_memory"),
        call("get_memory", "2026-07-28"),
    )
    .expect("valid");
    let Message::Request { id, method, params } = checked.message else {
        panic!("a request");
    };
    assert_eq!((id, method.as_str()), (json!(7), "tools/call"));
    assert_eq!(
        params.expect("params")["_meta"],
        json!({"progressToken": "p"}),
        "only the protocol's own keys are dropped"
    );
    assert_eq!(
        checked.client_info,
        Some(json!({"name": "t", "version": "1"}))
    );
}

#[test]
fn headers_that_disagree_with_the_body_are_a_header_mismatch() {
    let cases = [
        (
            headers(&[("mcp-method", "tools/call"), ("mcp-name", "get_memory")]),
            "MCP-Protocol-Version header is required",
        ),
        (
            modern_headers("tools/list", "get_memory"),
            "Mcp-Method header value 'tools/list' does not match body value 'tools/call'",
        ),
        (
            modern_headers("tools/call", "delete_memory"),
            "Mcp-Name header value 'delete_memory' does not match body value 'get_memory'",
        ),
        (
            headers(&[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
            ]),
            "Mcp-Name header is required",
        ),
        (
            headers(&[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-name", "get_memory"),
            ]),
            "Mcp-Method header is required",
        ),
    ];
    for (headers, message) in cases {
        let refusal = check(&headers, call("get_memory", "2026-07-28")).expect_err("refused");
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        assert_eq!(code(&refusal), HEADER_MISMATCH);
        assert_eq!(refusal.body["id"], json!(7));
        let text = refusal.body["error"]["message"]
            .as_str()
            .expect("a message");
        assert!(text.contains(message), "{text}");
    }
    let other_version = check(
        &modern_headers("tools/call", "get_memory"),
        call("get_memory", "2025-11-25"),
    )
    .expect_err("refused");
    assert_eq!(code(&other_version), HEADER_MISMATCH);
}

#[test]
fn a_base64_name_is_decoded_before_it_is_compared() {
    let name = "mémoire";
    let encoded = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode(name)
    );
    let headers = headers(&[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", &encoded),
    ]);
    check(&headers, call(name, "2026-07-28")).expect("the decoded name matches");
}

#[test]
fn an_unknown_version_is_refused_with_the_versions_served() {
    let headers = headers(&[
        ("mcp-protocol-version", "1900-01-01"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "get_memory"),
    ]);
    let refusal = check(&headers, call("get_memory", "1900-01-01")).expect_err("refused");
    assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&refusal), UNSUPPORTED_PROTOCOL_VERSION);
    assert_eq!(refusal.body["error"]["data"]["requested"], "1900-01-01");
    assert_eq!(
        refusal.body["error"]["data"]["supported"][0], "2026-07-28",
        "newest first, the session revisions after it"
    );
}

#[test]
fn missing_required_meta_is_invalid_params() {
    let mut body = call("get_memory", "2026-07-28");
    body["params"]["_meta"]
        .as_object_mut()
        .expect("meta")
        .remove("io.modelcontextprotocol/clientCapabilities");
    let refusal = check(&modern_headers("tools/call", "get_memory"), body).expect_err("refused");
    assert_eq!(
        (refusal.status, code(&refusal)),
        (StatusCode::BAD_REQUEST, INVALID_PARAMS)
    );
    let mut bare = call("get_memory", "2026-07-28");
    bare["params"]
        .as_object_mut()
        .expect("params")
        .remove("_meta");
    let refusal = check(&modern_headers("tools/call", "get_memory"), bare).expect_err("refused");
    assert_eq!(code(&refusal), INVALID_PARAMS);
}

#[test]
fn a_batch_is_no_modern_message() {
    let refusal = check(
        &modern_headers("tools/call", "get_memory"),
        json!([call("get_memory", "2026-07-28")]),
    )
    .expect_err("refused");
    assert_eq!(code(&refusal), jsonrpc::INVALID_REQUEST);
}

#[test]
fn complete_results_carry_the_server_and_list_results_the_caching_hints() {
    let server = json!({"name": "memgate", "version": "1"});
    let listed = complete(json!({"tools": []}), &server, true);
    assert_eq!(listed["resultType"], "complete");
    assert_eq!(
        listed["_meta"]["io.modelcontextprotocol/serverInfo"],
        server
    );
    assert_eq!(
        (listed["ttlMs"].as_u64(), listed["cacheScope"].as_str()),
        (Some(LIST_TTL_MS), Some("public"))
    );
    let called = complete(json!({"content": []}), &server, false);
    assert!(called.get("ttlMs").is_none());
    assert_eq!(
        status_of_error(&jsonrpc::error(
            json!(1),
            jsonrpc::METHOD_NOT_FOUND,
            "Method not found"
        )),
        StatusCode::NOT_FOUND
    );
}
