//! [`QdrantStore`](super::QdrantStore)'s payload writes over Qdrant's REST API.
//!
//! Qdrant's gRPC API carries a payload as a map without order, so a payload written over it is
//! stored (and shown by cldmemory, which reads over REST) in an arbitrary key order. REST
//! carries JSON, and Qdrant keeps its order: memgate writes points and payload fields here, in
//! the order the layout built them, as cldmemory does.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{MemoryPoint, VectorError};
use crate::memory::StoredMemory;

/// What a collection name may not carry as it is in a URL path segment.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

pub(super) struct RestWrites {
    http: reqwest::Client,
    /// `{base}/collections/{collection}`.
    collection_url: String,
    api_key: Option<String>,
    /// `&ordering=…` in a Qdrant cluster (`vectors.cluster.writeOrdering`), else empty.
    ordering: String,
}

/// Whether a `set_payload` answer says the point is gone (it is left alone then).
fn point_missing(status: reqwest::StatusCode, body: &str) -> bool {
    status == reqwest::StatusCode::NOT_FOUND && body.to_ascii_lowercase().contains("point")
}

impl RestWrites {
    pub(super) fn new(
        base: &str,
        api_key: Option<&str>,
        collection: &str,
        timeout: Duration,
        ordering: Option<&str>,
    ) -> Result<Self, VectorError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| VectorError::Rest(e.to_string()))?;
        let collection = utf8_percent_encode(collection, PATH_SEGMENT);
        Ok(Self {
            http,
            collection_url: format!("{}/collections/{collection}", base.trim_end_matches('/')),
            api_key: api_key.map(str::to_string),
            ordering: ordering
                .map(|ordering| format!("&ordering={ordering}"))
                .unwrap_or_default(),
        })
    }

    /// `PUT /collections/{c}/points?wait=true`: the points, payloads in their own key order.
    pub(super) async fn upsert(&self, points: Vec<MemoryPoint>) -> Result<(), VectorError> {
        let points: Vec<Value> = points
            .into_iter()
            .map(|point| {
                json!({
                    "id": point.id.to_string(),
                    "vector": point.vector,
                    "payload": Value::Object(point.memory),
                })
            })
            .collect();
        let url = format!("{}/points?wait=true{}", self.collection_url, self.ordering);
        let (status, body) = self
            .send(self.http.put(url), json!({ "points": points }))
            .await?;
        if status.is_success() {
            return Ok(());
        }
        Err(VectorError::Rest(format!(
            "upsert answered {status}: {body}"
        )))
    }

    /// `POST /collections/{c}/points/payload?wait=true`: these fields of one point, the others
    /// left as they are; a point that is gone is left alone.
    pub(super) async fn set_payload(
        &self,
        id: Uuid,
        fields: StoredMemory,
    ) -> Result<(), VectorError> {
        let url = format!(
            "{}/points/payload?wait=true{}",
            self.collection_url, self.ordering
        );
        let request = json!({ "payload": Value::Object(fields), "points": [id.to_string()] });
        let (status, body) = self.send(self.http.post(url), request).await?;
        if status.is_success() || point_missing(status, &body) {
            return Ok(());
        }
        Err(VectorError::Rest(format!(
            "set payload of {id} answered {status}: {body}"
        )))
    }

    /// Sends `body` as JSON (its key order kept); the status and the answer's text.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        body: Value,
    ) -> Result<(reqwest::StatusCode, String), VectorError> {
        let body = serde_json::to_vec(&body).map_err(|e| VectorError::Rest(e.to_string()))?;
        let mut request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.api_key {
            request = request.header("api-key", key);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                VectorError::Rest(format!("timed out: {e}"))
            } else {
                VectorError::Rest(e.to_string())
            }
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Ok((status, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// One request received by a stand-in Qdrant: its request line, headers and body.
    struct Received {
        head: String,
        body: String,
    }

    /// Answers one request with `status` and `answer`; what it received.
    async fn stand_in(
        status: &'static str,
        answer: &'static str,
    ) -> (String, tokio::task::JoinHandle<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut bytes = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let read = socket.read(&mut buffer).await.expect("read");
                bytes.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&bytes).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let head = text[..end].to_string();
                    let length = head
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if bytes.len() >= end + 4 + length || read == 0 {
                        let body = text[end + 4..].to_string();
                        let reply = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                            answer.len()
                        );
                        socket.write_all(reply.as_bytes()).await.expect("write");
                        return Received { head, body };
                    }
                }
            }
        });
        (url, task)
    }

    fn memory() -> StoredMemory {
        let Value::Object(memory) = json!({"id": "x", "summary": "s", "content": "c",
            "type": "semantic", "context": {"tags": ["a"], "location": "Paris"},
            "metadata": {"team": "core", "user": "ann"}, "accessCount": 0, "project": "h:/w"})
        else {
            unreachable!()
        };
        memory
    }

    #[tokio::test]
    async fn points_are_written_with_their_payload_keys_in_order() {
        let (url, received) = stand_in("200 OK", r#"{"result":{"status":"completed"}}"#).await;
        let writes = RestWrites::new(
            &url,
            Some("secret"),
            "human memories",
            Duration::from_secs(5),
            Some("strong"),
        )
        .expect("client");
        let id = Uuid::from_u128(9);
        writes
            .upsert(vec![MemoryPoint {
                id,
                vector: vec![0.5, -1.0],
                memory: memory(),
            }])
            .await
            .expect("written");
        let received = received.await.expect("received");
        assert!(
            received
                .head
                .starts_with("PUT /collections/human%20memories/points?wait=true&ordering=strong "),
            "{}",
            received.head
        );
        assert!(received
            .head
            .to_ascii_lowercase()
            .contains("api-key: secret"));
        assert_eq!(
            received.body,
            format!(
                r#"{{"points":[{{"id":"{id}","vector":[0.5,-1.0],"payload":{{"id":"x","summary":"s","content":"c","type":"semantic","context":{{"tags":["a"],"location":"Paris"}},"metadata":{{"team":"core","user":"ann"}},"accessCount":0,"project":"h:/w"}}}}]}}"#
            ),
            "the payload exactly as the layout ordered it"
        );
    }

    #[tokio::test]
    async fn fields_are_set_in_order_and_a_gone_point_is_left_alone() {
        let (url, received) = stand_in("200 OK", r#"{"result":{"status":"completed"}}"#).await;
        let writes = RestWrites::new(&url, None, "human_memories", Duration::from_secs(5), None)
            .expect("client");
        let Value::Object(fields) =
            json!({"associations": ["b"], "lastAccessed": "t", "accessCount": 2})
        else {
            unreachable!()
        };
        let id = Uuid::from_u128(9);
        writes.set_payload(id, fields.clone()).await.expect("set");
        let received = received.await.expect("received");
        assert!(received
            .head
            .starts_with("POST /collections/human_memories/points/payload?wait=true "));
        assert_eq!(
            received.body,
            format!(
                r#"{{"payload":{{"associations":["b"],"lastAccessed":"t","accessCount":2}},"points":["{id}"]}}"#
            )
        );

        let (url, _) = stand_in(
            "404 Not Found",
            r#"{"status":{"error":"Not found: No point with id 00000000-0000-0000-0000-000000000009 found"}}"#,
        )
        .await;
        let writes = RestWrites::new(&url, None, "human_memories", Duration::from_secs(5), None)
            .expect("client");
        writes
            .set_payload(id, fields.clone())
            .await
            .expect("a gone point is left alone");

        let (url, _) = stand_in(
            "404 Not Found",
            r#"{"status":{"error":"Not found: Collection `human_memories` doesn't exist!"}}"#,
        )
        .await;
        let writes = RestWrites::new(&url, None, "human_memories", Duration::from_secs(5), None)
            .expect("client");
        let error = writes
            .set_payload(id, fields)
            .await
            .expect_err("a missing collection is an error");
        assert!(error.to_string().contains("doesn't exist"), "{error}");
    }
}
