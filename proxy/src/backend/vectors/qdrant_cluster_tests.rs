//! What the Qdrant backend sends a Qdrant cluster, on the wire: a gRPC stand-in (HTTP/2, the
//! gRPC framing, qdrant-client's own protobuf messages) records every request, so the
//! collection's shard parameters and the reads' consistency are checked as Qdrant would
//! receive them. (No Qdrant server can run here; with `QDRANT_URL` the contract tests run on a
//! real one.)

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use qdrant_client::qdrant::{
    read_consistency, CollectionExists, CollectionExistsResponse, CollectionOperationResponse,
    CreateCollection, DeletePoints, GetPoints, GetResponse, PointsOperationResponse,
    ReadConsistencyType, SearchPoints, SearchResponse, UpdateResult, WriteOrderingType,
};
use uuid::Uuid;

use super::qdrant::QdrantStore;
use super::{CollectionSpec, PayloadFilter, ShardSpec, VectorQuery, VectorStore};
use crate::config::{DistanceMetric, QdrantClusterConfig, ReadConsistency, WriteOrdering};

type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// The answer to one gRPC method, encoded.
fn answer(path: &str) -> Option<Vec<u8>> {
    Some(match path {
        "/qdrant.Collections/CollectionExists" => CollectionExistsResponse {
            result: Some(CollectionExists { exists: false }),
            time: 0.0,
        }
        .encode_to_vec(),
        "/qdrant.Collections/Create" => CollectionOperationResponse {
            result: true,
            time: 0.0,
        }
        .encode_to_vec(),
        "/qdrant.Points/CreateFieldIndex" | "/qdrant.Points/Delete" => PointsOperationResponse {
            result: Some(UpdateResult {
                operation_id: Some(1),
                status: 2,
            }),
            ..Default::default()
        }
        .encode_to_vec(),
        "/qdrant.Points/Get" => GetResponse::default().encode_to_vec(),
        "/qdrant.Points/Search" => SearchResponse::default().encode_to_vec(),
        _ => return None,
    })
}

type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

/// Records one call and answers it with its gRPC status in the trailers.
async fn serve(
    request: Request<Incoming>,
    received: Received,
) -> Result<Response<StreamBody<Frames>>, Infallible> {
    let path = request.uri().path().to_string();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    // gRPC's framing: a compression flag and a 4-byte length before the message.
    received
        .lock()
        .expect("received")
        .push((path.clone(), body.slice(5.min(body.len())..)));
    let mut trailers = http::HeaderMap::new();
    let mut frames = Vec::new();
    match answer(&path) {
        Some(message) => {
            let mut framed = BytesMut::with_capacity(message.len() + 5);
            framed.put_u8(0);
            framed.put_u32(message.len() as u32);
            framed.put_slice(&message);
            frames.push(Ok(Frame::data(framed.freeze())));
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        }
        None => {
            trailers.insert("grpc-status", http::HeaderValue::from_static("12"));
        }
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let response = Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)))
        .expect("response");
    Ok(response)
}

/// A gRPC stand-in on a free port: its URL and what it received (method path, message).
async fn stand_in() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let received: Received = Arc::default();
    let recorded = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request| serve(request, recorded.clone()));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, received)
}

fn request<M: Message + Default>(received: &Received, path: &str) -> M {
    let received = received.lock().expect("received");
    let (_, body) = received
        .iter()
        .find(|(method, _)| method == path)
        .unwrap_or_else(|| {
            panic!(
                "no {path} among {:?}",
                received.iter().map(|(m, _)| m).collect::<Vec<_>>()
            )
        });
    M::decode(body.clone()).expect("a protobuf message")
}

#[tokio::test]
async fn a_cluster_collection_and_its_reads_and_writes_carry_the_cluster_settings() {
    let (url, received) = stand_in().await;
    let cluster = QdrantClusterConfig {
        shard_number: 6,
        replication_factor: 3,
        write_consistency_factor: 2,
        read_consistency: ReadConsistency::Majority,
        write_ordering: WriteOrdering::Strong,
    };
    let store = QdrantStore::connect(
        &url,
        "http://127.0.0.1:9",
        None,
        "human_memories",
        Duration::from_secs(5),
        Some(&cluster),
    )
    .expect("client");
    let spec = CollectionSpec {
        name: "human_memories".into(),
        dimensions: 8,
        distance: DistanceMetric::Cosine,
        scope_field: None,
        indexes: Vec::new(),
        shards: Some(ShardSpec {
            shard_number: 6,
            replication_factor: 3,
            write_consistency_factor: 2,
        }),
    };
    store.ensure_collection(&spec).await.expect("created");
    let created: CreateCollection = request(&received, "/qdrant.Collections/Create");
    assert_eq!(created.collection_name, "human_memories");
    assert_eq!(created.shard_number, Some(6));
    assert_eq!(created.replication_factor, Some(3));
    assert_eq!(created.write_consistency_factor, Some(2));

    store.retrieve(Uuid::from_u128(7)).await.expect("get");
    let get: GetPoints = request(&received, "/qdrant.Points/Get");
    let majority = Some(read_consistency::Value::Type(
        ReadConsistencyType::Majority as i32,
    ));
    assert_eq!(get.read_consistency.and_then(|c| c.value), majority);

    store
        .search(VectorQuery {
            vector: vec![0.1; 8],
            filter: PayloadFilter::all(Vec::new()),
            limit: 3,
            score_threshold: None,
            ef: None,
            exact: false,
        })
        .await
        .expect("search");
    let search: SearchPoints = request(&received, "/qdrant.Points/Search");
    assert_eq!(search.read_consistency.and_then(|c| c.value), majority);

    store.delete(&[Uuid::from_u128(7)]).await.expect("delete");
    let delete: DeletePoints = request(&received, "/qdrant.Points/Delete");
    assert_eq!(
        delete.ordering.map(|o| o.r#type),
        Some(WriteOrderingType::Strong as i32)
    );
}

#[tokio::test]
async fn without_cluster_settings_qdrants_defaults_are_left_alone() {
    let (url, received) = stand_in().await;
    let store = QdrantStore::connect(
        &url,
        "http://127.0.0.1:9",
        None,
        "human_memories",
        Duration::from_secs(5),
        None,
    )
    .expect("client");
    let spec = CollectionSpec {
        name: "human_memories".into(),
        dimensions: 8,
        distance: DistanceMetric::Cosine,
        scope_field: None,
        indexes: Vec::new(),
        shards: None,
    };
    store.ensure_collection(&spec).await.expect("created");
    let created: CreateCollection = request(&received, "/qdrant.Collections/Create");
    assert_eq!(
        (
            created.shard_number,
            created.replication_factor,
            created.write_consistency_factor
        ),
        (None, None, None)
    );
    store.retrieve(Uuid::from_u128(7)).await.expect("get");
    let get: GetPoints = request(&received, "/qdrant.Points/Get");
    assert_eq!(get.read_consistency, None);
}
