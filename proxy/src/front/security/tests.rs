//! The gate, end to end on requests built in memory.

use super::*;

fn gate_with(configure: impl FnOnce(&mut Config)) -> Gate {
    let mut config = Config::default();
    configure(&mut config);
    Gate::from_config(&config).expect("gate")
}

fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut request = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).expect("request").into_parts().0
}

fn status(result: Result<Admitted, Refusal>) -> StatusCode {
    match result {
        Ok(_) => StatusCode::OK,
        Err(refusal) => refusal.into_response().status(),
    }
}

#[tokio::test]
async fn the_curl_of_the_issue_is_refused() {
    let gate = gate_with(|_| {});
    let mut request = parts(
        Method::POST,
        "/memories",
        &[
            ("host", "localhost:8080"),
            ("origin", "http://evil.example"),
            ("content-type", "text/plain"),
            ("content-length", "20"),
        ],
    );
    assert_eq!(
        status(gate.admit(&mut request).await),
        StatusCode::FORBIDDEN
    );
    let mut without_origin = parts(
        Method::POST,
        "/memories",
        &[("content-type", "text/plain"), ("content-length", "20")],
    );
    assert_eq!(
        status(gate.admit(&mut without_origin).await),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[tokio::test]
async fn clients_without_origin_and_local_pages_pass() {
    let gate = gate_with(|_| {});
    let json = [
        ("content-type", "application/json"),
        ("content-length", "2"),
    ];
    let mut cli = parts(Method::POST, "/memories", &json);
    assert_eq!(status(gate.admit(&mut cli).await), StatusCode::OK);
    let mut page = parts(
        Method::POST,
        "/memories",
        &[
            json[0],
            json[1],
            ("origin", "http://localhost:5173"),
            ("host", "127.0.0.1:8080"),
        ],
    );
    let admitted = gate.admit(&mut page).await.expect("admitted");
    let mut response = crate::front::http::empty_response(StatusCode::ACCEPTED);
    admitted.decorate(&mut response);
    assert_eq!(
        response.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://localhost:5173"
    );
}

#[tokio::test]
async fn rebound_host_names_and_nameless_cross_site_requests_are_refused() {
    let gate = gate_with(|_| {});
    let mut rebound = parts(Method::GET, "/memories/x", &[("host", "evil.example:8080")]);
    assert_eq!(
        status(gate.admit(&mut rebound).await),
        StatusCode::FORBIDDEN
    );
    let mut image = parts(
        Method::GET,
        "/memories/x",
        &[("sec-fetch-site", "cross-site")],
    );
    assert_eq!(status(gate.admit(&mut image).await), StatusCode::FORBIDDEN);
    let open = gate_with(|config| config.listen = "0.0.0.0:8080".parse().expect("addr"));
    let mut named = parts(Method::GET, "/memories/x", &[("host", "memgate.svc:8080")]);
    assert_eq!(status(open.admit(&mut named).await), StatusCode::OK);
}

#[tokio::test]
async fn preflights_are_answered_for_allowed_origins_only() {
    let gate = gate_with(|_| {});
    let preflight = |origin| {
        parts(
            Method::OPTIONS,
            "/mcp",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
            ],
        )
    };
    match gate.admit(&mut preflight("http://localhost:3000")).await {
        Err(Refusal::Answered(response)) => {
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
            assert!(response.headers()[ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .expect("ascii")
                .contains("mcp-session-id"));
        }
        other => panic!("not a preflight answer: {other:?}"),
    }
    assert_eq!(
        status(gate.admit(&mut preflight("http://evil.example")).await),
        StatusCode::FORBIDDEN
    );
}

#[test]
fn json_content_types() {
    for json in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ] {
        assert!(is_json(json), "{json}");
    }
    for other in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "",
    ] {
        assert!(!is_json(other), "{other}");
    }
}

#[tokio::test]
async fn a_token_sets_the_tenant_and_is_not_passed_on() {
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(
        file.path(),
        "tokens:\n  - token: alice-0123456789abcdef\n    tenant: alice\n",
    )
    .expect("write");
    let gate = gate_with(|config| {
        config.scope = Some(crate::config::ScopeConfig {
            header: "x-tenant".into(),
            field: "tenant".into(),
        });
        config.security.tokens = Some(crate::config::TokensConfig {
            path: file.path().to_path_buf(),
        });
    });
    let mut spoofed = parts(
        Method::GET,
        "/memories/x",
        &[
            ("authorization", "Bearer alice-0123456789abcdef"),
            ("x-tenant", "bob"),
        ],
    );
    gate.admit(&mut spoofed).await.expect("admitted");
    assert_eq!(spoofed.headers["x-tenant"], "alice");
    assert!(!spoofed.headers.contains_key(AUTHORIZATION));

    let mut missing = parts(Method::GET, "/memories/x", &[]);
    let response = gate
        .admit(&mut missing)
        .await
        .expect_err("no token")
        .into_response();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key(WWW_AUTHENTICATE));
    let mut wrong = parts(
        Method::GET,
        "/memories/x",
        &[("authorization", "Bearer alice-0123456789abcdeX")],
    );
    assert_eq!(
        status(gate.admit(&mut wrong).await),
        StatusCode::UNAUTHORIZED
    );
}
