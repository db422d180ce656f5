//! memgate's own endpoints, in one table: the paths it has, the methods each takes and the
//! operation each method asks for. Classifying a request and answering `405` with `Allow`
//! both read it, so they cannot disagree.

use http::Method;

use crate::core::OperationKind;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<'a> {
    Get(&'a str),
    Search,
    Create,
    Update(&'a str),
    Delete(&'a str),
    OpenApi,
    /// `GET /sse`: an MCP session over HTTP+SSE.
    McpStream,
    /// `POST /messages`: a message of an HTTP+SSE session.
    McpMessage,
    /// `/mcp`: MCP over Streamable HTTP.
    Mcp,
    Other,
}

impl<'a> Operation<'a> {
    /// From memgate's endpoint table; `Other` for anything else (forwarded).
    pub fn classify(method: &Method, path: &'a str) -> Self {
        Endpoint::of(path)
            .and_then(|endpoint| endpoint.operation(method))
            .unwrap_or(Self::Other)
    }

    /// What the operation does to memories, for the rule of what may go to the legacy
    /// service.
    pub fn kind(&self) -> OperationKind {
        match self {
            Self::Create | Self::Update(_) | Self::Delete(_) => OperationKind::Write,
            _ => OperationKind::Read,
        }
    }

    /// The `op` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Get(_) => "get",
            Self::Search => "search",
            Self::Create => "create",
            Self::Update(_) => "update",
            Self::Delete(_) => "delete",
            Self::OpenApi => "openapi",
            Self::McpStream | Self::McpMessage | Self::Mcp => "mcp",
            Self::Other => "other",
        }
    }
}

/// One of memgate's own paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `/memories` (or `/memories/`).
    Memories,
    /// `/memories/search`: no memory is called `search`.
    Search,
    /// `/memories/{id}`.
    Memory(&'a str),
    /// `/openapi.json`.
    OpenApi,
    /// `/sse`: MCP over HTTP+SSE, the stream.
    Sse,
    /// `/messages`: MCP over HTTP+SSE, a session's messages.
    Messages,
    /// `/mcp`: MCP over Streamable HTTP.
    Mcp,
}

impl<'a> Endpoint<'a> {
    /// The endpoint at `path`, if memgate has one there.
    pub fn of(path: &'a str) -> Option<Self> {
        match path {
            "/memories" | "/memories/" => Some(Self::Memories),
            "/memories/search" => Some(Self::Search),
            "/openapi.json" => Some(Self::OpenApi),
            "/sse" => Some(Self::Sse),
            "/messages" => Some(Self::Messages),
            "/mcp" => Some(Self::Mcp),
            _ => path
                .strip_prefix("/memories/")
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(Self::Memory),
        }
    }

    /// What `method` asks of it; `None` when it does not take that method. `/mcp` hands every
    /// method to the MCP transport, which answers one it does not take itself (a JSON-RPC
    /// error with `405` and `Allow`, as MCP clients expect).
    pub fn operation(self, method: &Method) -> Option<Operation<'a>> {
        let operation = match (self, method) {
            (Self::Memories, &Method::POST) => Operation::Create,
            (Self::Search, &Method::POST) => Operation::Search,
            (Self::Memory(id), &Method::GET) => Operation::Get(id),
            (Self::Memory(id), &Method::PATCH) => Operation::Update(id),
            (Self::Memory(id), &Method::DELETE) => Operation::Delete(id),
            (Self::OpenApi, &Method::GET) => Operation::OpenApi,
            (Self::Sse, &Method::GET) => Operation::McpStream,
            (Self::Messages, &Method::POST) => Operation::McpMessage,
            (Self::Mcp, _) => Operation::Mcp,
            _ => return None,
        };
        Some(operation)
    }

    /// Its methods, as an `Allow` header says them.
    pub fn allow(self) -> &'static str {
        match self {
            Self::Memories | Self::Search | Self::Messages => "POST",
            Self::Memory(_) => "GET, PATCH, DELETE",
            Self::OpenApi | Self::Sse => "GET",
            Self::Mcp => "GET, POST, DELETE",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn operations_are_classified_by_method_and_path() {
        let id = "0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e";
        let path = format!("/memories/{id}");
        assert_eq!(Operation::classify(&Method::GET, &path), Operation::Get(id));
        assert_eq!(
            Operation::classify(&Method::PATCH, &path),
            Operation::Update(id)
        );
        assert_eq!(
            Operation::classify(&Method::DELETE, &path),
            Operation::Delete(id)
        );
        assert_eq!(
            Operation::classify(&Method::POST, "/memories"),
            Operation::Create
        );
        assert_eq!(
            Operation::classify(&Method::POST, "/memories/search"),
            Operation::Search
        );
        assert_eq!(
            Operation::classify(&Method::GET, "/memories"),
            Operation::Other
        );
        assert_eq!(
            Operation::classify(&Method::GET, "/memories/a/b"),
            Operation::Other
        );
        assert_eq!(
            Operation::classify(&Method::GET, "/memoriesx/1"),
            Operation::Other
        );
        assert_eq!(
            Operation::classify(&Method::GET, "/health"),
            Operation::Other
        );
        assert_eq!(
            Operation::classify(&Method::GET, "/openapi.json"),
            Operation::OpenApi
        );
    }

    use super::*;

    const ENDPOINTS: [Endpoint<'static>; 7] = [
        Endpoint::Memories,
        Endpoint::Search,
        Endpoint::Memory("0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e"),
        Endpoint::OpenApi,
        Endpoint::Sse,
        Endpoint::Messages,
        Endpoint::Mcp,
    ];

    #[test]
    fn allow_names_exactly_the_methods_with_an_operation() {
        let methods = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
        ];
        for endpoint in ENDPOINTS {
            let taken: Vec<&str> = methods
                .iter()
                .filter(|method| endpoint.operation(method).is_some())
                .map(Method::as_str)
                .collect();
            if endpoint == Endpoint::Mcp {
                // Every method reaches the transport; these are the ones it serves.
                assert_eq!(taken.len(), methods.len());
                assert_eq!(endpoint.allow(), "GET, POST, DELETE");
                continue;
            }
            let mut allowed: Vec<&str> = endpoint.allow().split(", ").collect();
            allowed.sort_by_key(|m| methods.iter().position(|known| known.as_str() == *m));
            assert_eq!(taken, allowed, "{endpoint:?}");
            assert!(endpoint.operation(&Method::PUT).is_none(), "{endpoint:?}");
        }
        assert_eq!(
            Endpoint::Mcp.operation(&Method::PUT),
            Some(Operation::Mcp),
            "the MCP transport answers its own 405"
        );
    }

    #[test]
    fn paths_map_to_endpoints() {
        assert_eq!(Endpoint::of("/memories/"), Some(Endpoint::Memories));
        assert_eq!(Endpoint::of("/memories/search"), Some(Endpoint::Search));
        assert_eq!(Endpoint::of("/memories/abc"), Some(Endpoint::Memory("abc")));
        assert_eq!(Endpoint::of("/memories/a/b"), None);
        assert_eq!(Endpoint::of("/memoriesx/1"), None);
        assert_eq!(Endpoint::of("/health"), None);
    }
}
