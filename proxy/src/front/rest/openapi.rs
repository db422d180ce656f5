//! The Memory API as an OpenAPI 3.1 document, served at `/openapi.json`. Schemas come from the
//! Rust types (`utoipa`), so the document cannot drift from what the sidecar parses.

use serde::Serialize;
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{
    Content, HttpMethod, OpenApi as Document, PathsBuilder, Ref, Required, ResponseBuilder,
};
use utoipa::{OpenApi, ToSchema};

use crate::memory::{
    DateStrings, DetailLevel, Memory, MemoryStatus, MemoryType, SearchRequest, StoreContext,
    StoreRequest, UpdateRequest, ValenceRange,
};

/// `{"error": {"code", "message"}}`
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_id`, `invalid_limit`, `body_too_large`, ...
    pub code: String,
    pub message: String,
}

/// `POST /memories/search` answer: memories (or compact rows) with `score`, best first.
#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    pub memories: Vec<SearchRow>,
}

/// One search result: the whole memory, or (`detailLevel: compact`) a compact row.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SearchRow {
    Full(Memory),
    Compact(CompactRow),
}

/// A compact search row: these fields of the memory, those it lacks left out, and `score`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompactRow {
    pub id: uuid::Uuid,
    pub summary: Option<String>,
    #[serde(rename = "type")]
    pub memory_type: Option<MemoryType>,
    pub timestamp: Option<String>,
    pub importance: Option<f64>,
    pub emotional_valence: Option<f64>,
    pub tags: Option<Vec<String>>,
    pub project: Option<String>,
    pub score: Option<f64>,
}

/// `202` answer of a write: the memory's id and where it is in the write pipeline.
#[derive(Serialize, ToSchema)]
pub struct AcceptedWrite {
    pub id: uuid::Uuid,
    /// `processing`, or `deleting`.
    pub status: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "memgate Memory API",
        description = "The memory service's API as the memgate sidecar serves it. Every response \
                       carries `x-memgate-path: fast|legacy` and `x-memgate-cache: hit|miss|bypass`; \
                       `x-memgate-route: fast|legacy` forces a path."
    ),
    components(schemas(
        Memory,
        MemoryType,
        MemoryStatus,
        SearchRequest,
        ValenceRange,
        DateStrings,
        DetailLevel,
        StoreRequest,
        StoreContext,
        UpdateRequest,
        AcceptedWrite,
        SearchResponse,
        SearchRow,
        CompactRow,
        ErrorBody,
        ErrorDetail
    ))
)]
struct MemoryApi;

fn json_ref(name: &str) -> Content {
    Content::new(Some(Ref::from_schema_name(name)))
}

fn response(description: &str, schema: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json_ref(schema))
        .build()
}

fn error(description: &str) -> utoipa::openapi::Response {
    response(description, "ErrorBody")
}

/// The `503` of a write.
fn write_unavailable() -> utoipa::openapi::Response {
    error("The write queue (Redis) is unavailable, or did not confirm the write")
}

fn too_large() -> utoipa::openapi::Response {
    error("The body exceeds limits.maxBodyBytes")
}

/// What the security gate answers (see `security`), on every operation: a foreign page or
/// host name (`403`), a missing or invalid token (`401`, when tokens are on); with a body,
/// one that is not JSON (`415`); on a write, the tenant's write limit (`429`).
fn guarded(operation: OperationBuilder, has_body: bool, writes: bool) -> OperationBuilder {
    let mut operation = operation
        .response(
            "401",
            error("A bearer token is required (security.tokens) and none, or an invalid one, was sent"),
        )
        .response(
            "403",
            error("A web page of a foreign origin, or a host name that is not allowed (security.allowedOrigins, security.allowedHosts)"),
        );
    if has_body {
        operation = operation.response("415", error("The body is not JSON"));
    }
    if writes {
        operation = operation.response(
            "429",
            error(
                "This tenant writes faster than limits.writesPerSecondPerTenant (see Retry-After)",
            ),
        );
    }
    operation
}

fn json_body(schema: &str) -> Option<utoipa::openapi::request_body::RequestBody> {
    Some(
        RequestBodyBuilder::new()
            .required(Some(Required::True))
            .content("application/json", json_ref(schema))
            .build(),
    )
}

/// The whole document.
pub fn document() -> Document {
    let id = ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The memory's UUID"))
        .schema(Some(
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Uuid,
                ))),
        ))
        .build();
    let get = OperationBuilder::new()
        .operation_id(Some("getMemory"))
        .summary(Some("Fetch one memory"))
        .parameter(id.clone())
        .response("200", response("The memory", "Memory"))
        .response(
            "400",
            error("The id is not a UUID, or the scope header is missing"),
        )
        .response("404", error("No such memory (for this tenant)"))
        .response(
            "503",
            error(
                "The vector store is unavailable, or the cache is and the vector store does \
                 not have the memory (it may be a create not yet applied)",
            ),
        );
    let search = OperationBuilder::new()
        .operation_id(Some("searchMemories"))
        .summary(Some("Semantic search with filters"))
        .request_body(json_body("SearchRequest"))
        .response(
            "200",
            response("Matching memories, best first", "SearchResponse"),
        )
        .response(
            "400",
            error("Malformed JSON, unknown field, or a value out of range"),
        )
        .response("413", too_large())
        .response(
            "503",
            error("The embedding provider or vector store is unavailable"),
        );
    let create = OperationBuilder::new()
        .operation_id(Some("createMemory"))
        .summary(Some("Store a memory"))
        .request_body(json_body("StoreRequest"))
        .response(
            "202",
            response(
                "Accepted: stored at once as `processing`, enriched and embedded by a worker",
                "AcceptedWrite",
            ),
        )
        .response(
            "400",
            error("Malformed JSON, unknown field, or a value out of range"),
        )
        .response("413", too_large())
        .response("503", write_unavailable());
    let update = OperationBuilder::new()
        .operation_id(Some("updateMemory"))
        .summary(Some("Change a memory"))
        .description(Some(
            "Readers see the change at once (`status: processing`); a worker applies it to the \
             vector store after every earlier write of the memory. Fields not given are kept.",
        ))
        .parameter(id.clone())
        .request_body(json_body("UpdateRequest"))
        .response(
            "202",
            response(
                "Accepted: readable at once, applied by a worker",
                "AcceptedWrite",
            ),
        )
        .response(
            "400",
            error("Malformed JSON, unknown field, no field to change, or a value out of range"),
        )
        .response("404", error("No such memory (for this tenant)"))
        .response(
            "409",
            error("The memory kept changing while the update was made; retry"),
        )
        .response("413", too_large())
        .response("503", write_unavailable());
    let delete = OperationBuilder::new()
        .operation_id(Some("deleteMemory"))
        .summary(Some("Delete a memory"))
        .description(Some(
            "Gone from reads and searches at once; a worker removes it from the vector store. \
             Final: no earlier write brings it back.",
        ))
        .parameter(id.clone())
        .response(
            "202",
            response("Accepted: `status: deleting`", "AcceptedWrite"),
        )
        .response(
            "400",
            error("The id is not a UUID, or the scope header is missing"),
        )
        .response("404", error("No such memory (for this tenant)"))
        .response("503", write_unavailable());
    let get = guarded(get, false, false);
    let search = guarded(search, true, false);
    let create = guarded(create, true, true);
    let update = guarded(update, true, true);
    let delete = guarded(delete, false, true);
    let mut by_id = PathItem::new(HttpMethod::Get, get);
    by_id.patch = Some(update.build());
    by_id.delete = Some(delete.build());
    let paths = PathsBuilder::new()
        .path("/memories/{id}", by_id)
        .path("/memories/search", PathItem::new(HttpMethod::Post, search))
        .path("/memories", PathItem::new(HttpMethod::Post, create))
        .build();
    let mut document = MemoryApi::openapi();
    document.paths = paths;
    // A PATCH must name a field (`{}` is `400 empty_update`); utoipa has no attribute for it.
    if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(update))) =
        document
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("UpdateRequest"))
    {
        update.min_properties = Some(1);
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_fast_path_operation_and_resolves_its_refs() {
        let json = serde_json::to_value(document()).expect("serializes");
        for path in ["/memories/{id}", "/memories/search", "/memories"] {
            assert!(json["paths"][path].is_object(), "missing {path}");
        }
        let text = json.to_string();
        for name in [
            "Memory",
            "SearchRequest",
            "StoreRequest",
            "SearchResponse",
            "ErrorBody",
        ] {
            assert!(
                text.contains(&format!("#/components/schemas/{name}")),
                "{name} unused"
            );
            assert!(
                json["components"]["schemas"][name].is_object(),
                "{name} undefined"
            );
        }
        let search = &json["components"]["schemas"]["SearchRequest"]["properties"];
        assert!(search["similarityThreshold"].is_object());
        let by_id = &json["paths"]["/memories/{id}"];
        assert!(by_id["patch"]["responses"]["202"].is_object());
        assert!(by_id["delete"]["responses"]["202"].is_object());
        let content = &json["components"]["schemas"]["StoreRequest"]["properties"]["content"];
        assert_eq!(content["minLength"], 1, "{content}");
    }
}
