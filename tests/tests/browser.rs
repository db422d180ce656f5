//! A real browser against `memgate serve` on loopback: a page from another origin
//! (`http://127.0.0.2:…`) tries every write and read a web page can send, and a page whose
//! host name was rebound to 127.0.0.1 tries to read; none of it stores or reads anything. The
//! same page from an allowed origin (`http://localhost:…`) succeeds: the control.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use memgate_testkit::browser::{dump_dom, Browser};
use memgate_testkit::{start_proxy, test_config, McpHttpClient, McpSseClient, TestServer};
use serde_json::{json, Value};

/// What the page posts back: one entry per attempt.
type Reports = Arc<Mutex<Vec<Value>>>;

/// The page: every attempt in turn, each outcome posted to `/report` on its own origin.
fn attack_page(memgate: &str, sse_endpoint: &str, mcp_session: &str) -> String {
    let store = |content: &str| json!({"content": content, "type": "semantic"}).to_string();
    let tool = |content: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "store_memory", "arguments": {"content": content, "type": "semantic"}}})
        .to_string()
    };
    format!(
        r#"<!doctype html><html><body><iframe name="sink"></iframe><script>
const memgate = {memgate:?};
const results = [];
async function attempt(name, run) {{
  try {{
    const response = await run();
    results.push({{name, outcome: "answered", type: response.type, status: response.status,
                   body: response.type === "opaque" ? null : await response.text()}});
  }} catch (error) {{
    results.push({{name, outcome: "blocked", error: String(error)}});
  }}
}}
(async () => {{
  await attempt("rest text/plain no-cors", () => fetch(memgate + "/memories", {{
    method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
    body: {rest_plain:?}}}));
  await attempt("rest json cors", () => fetch(memgate + "/memories", {{
    method: "POST", headers: {{"Content-Type": "application/json"}},
    body: {rest_json:?}}}));
  await attempt("sse message text/plain no-cors", () => fetch({sse_endpoint:?}, {{
    method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
    body: {sse_message:?}}}));
  await attempt("sse message json cors", () => fetch({sse_endpoint:?}, {{
    method: "POST", headers: {{"Content-Type": "application/json"}},
    body: {sse_message_json:?}}}));
  await attempt("mcp text/plain no-cors", () => fetch(memgate + "/mcp", {{
    method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
    body: {mcp_message:?}}}));
  await attempt("mcp json cors with session", () => fetch(memgate + "/mcp", {{
    method: "POST",
    headers: {{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Mcp-Session-Id": {mcp_session:?}}},
    body: {mcp_message:?}}}));
  await attempt("search read cors", () => fetch(memgate + "/memories/search", {{
    method: "POST", headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{query: "garden", limit: 50}})}}));
  await attempt("form post", () => new Promise((resolve) => {{
    const form = document.createElement("form");
    form.method = "POST"; form.action = memgate + "/memories";
    form.enctype = "text/plain"; form.target = "sink";
    const input = document.createElement("input");
    input.name = '{{"content":"planted by a form","type":"semantic","x":"';
    input.value = '"}}';
    form.appendChild(input); document.body.appendChild(form);
    document.querySelector("iframe").onload = () => resolve({{type: "form", status: 0, text: async () => ""}});
    form.submit();
    setTimeout(() => resolve({{type: "form-timeout", status: 0, text: async () => ""}}), 3000);
  }}));
  await fetch("/report", {{method: "POST", body: JSON.stringify(results)}});
}})();
</script></body></html>"#,
        rest_plain = store("planted by a text/plain fetch"),
        rest_json = store("planted by a JSON fetch"),
        sse_message = tool("planted through the SSE session"),
        sse_message_json = tool("planted through the SSE session as JSON"),
        mcp_message = tool("planted through Streamable HTTP"),
    )
}

/// Serves `page` at `/` and collects what is posted to `/report`.
async fn page_server(addr: &str, page: String, reports: Reports) -> TestServer {
    TestServer::start_on(addr.parse().expect("addr"), move |request, _| {
        let (page, reports) = (page.clone(), reports.clone());
        async move {
            if request.uri().path() == "/report" {
                if let Ok(Value::Array(items)) = serde_json::from_slice(request.body()) {
                    reports.lock().expect("reports").extend(items);
                }
                return hyper::Response::new(Full::new(Bytes::new()));
            }
            let mut response = hyper::Response::new(Full::new(Bytes::from(page)));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/html"),
            );
            response
        }
    })
    .await
    .expect("page server")
}

/// Opens `url` until the page reported, at most 60 s.
async fn run_page(url: &str, reports: &Reports) -> Vec<Value> {
    let browser = Browser::open(url, None).expect("chromium");
    for _ in 0..600 {
        if !reports.lock().expect("reports").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.close().await;
    reports.lock().expect("reports").clone()
}

fn outcome<'a>(reports: &'a [Value], name: &str) -> &'a Value {
    reports
        .iter()
        .find(|report| report["name"] == name)
        .unwrap_or_else(|| panic!("no report of {name:?}: {reports:?}"))
}

/// Every memory of the store (the test config's threshold is 0: a search finds all).
async fn stored_contents(base: &str) -> Vec<String> {
    memgate_testkit::search_field(base, None, "planted", "content").await
}

#[tokio::test]
async fn a_web_page_of_another_origin_cannot_write_or_read_and_an_allowed_one_can() {
    let data = tempfile::tempdir().expect("dir");
    let proxy = start_proxy(test_config(data.path(), None, None, None))
        .await
        .expect("proxy");
    let base = format!("http://{}", proxy.api_addr);
    let secret = reqwest::Client::new()
        .post(format!("{base}/memories"))
        .json(&json!({"content": "the garden gate code is 4711", "type": "semantic"}))
        .send()
        .await
        .expect("create");
    let secret: Value = secret.json().await.expect("JSON");
    let secret_id = secret["id"].as_str().expect("id").to_string();
    // Sessions the page knows the ids of (the worst case: it guessed them).
    let sse = McpSseClient::connect(&base, None).await.expect("sse");
    sse.initialize().await.expect("initialize");
    let streamable = McpHttpClient::connect(&base).await.expect("streamable");

    let reports: Reports = Arc::default();
    let page = attack_page(&base, sse.endpoint(), streamable.session_id());
    let attacker = page_server("127.0.0.2:0", page.clone(), reports.clone()).await;
    let seen = run_page(&format!("http://{}/", attacker.addr), &reports).await;
    assert_eq!(seen.len(), 8, "every attempt reported: {seen:?}");
    for cors in [
        "rest json cors",
        "sse message json cors",
        "mcp json cors with session",
        "search read cors",
    ] {
        assert_eq!(
            outcome(&seen, cors)["outcome"],
            "blocked",
            "{cors}: the preflight is refused: {seen:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = stored_contents(&base).await;
    assert_eq!(
        stored,
        vec!["the garden gate code is 4711".to_string()],
        "nothing the page sent was stored"
    );

    // DNS rebinding: a page of `rebind.test`, now resolving to 127.0.0.1, reads memgate as
    // its own origin.
    let port = proxy.api_addr.port();
    let rebound = dump_dom(
        &format!("http://rebind.test:{port}/memories/{secret_id}"),
        Some("MAP rebind.test 127.0.0.1"),
    )
    .await
    .expect("dump");
    assert!(
        rebound.contains("forbidden_host") && !rebound.contains("4711"),
        "the rebound page read: {rebound}"
    );

    // The control: the same writes from an allowed origin.
    let allowed_reports: Reports = Arc::default();
    let allowed = page_server("127.0.0.1:0", page, allowed_reports.clone()).await;
    let seen = run_page(
        &format!("http://localhost:{}/", allowed.addr.port()),
        &allowed_reports,
    )
    .await;
    let json_write = outcome(&seen, "rest json cors");
    assert_eq!(
        json_write["status"], 202,
        "the allowed page writes: {seen:?}"
    );
    let read = outcome(&seen, "search read cors");
    assert_eq!(read["status"], 200, "and reads: {seen:?}");
    assert!(
        read["body"].as_str().unwrap_or_default().contains("4711"),
        "{read}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = stored_contents(&base).await;
    assert!(
        stored.contains(&"planted by a JSON fetch".to_string()),
        "the allowed page's write is stored: {stored:?}"
    );
}
