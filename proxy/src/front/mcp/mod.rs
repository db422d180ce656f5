//! MCP: memgate as an MCP gateway for memory services.
//!
//! Clients connect over HTTP+SSE or Streamable HTTP ([`http_transports`]) or stdio
//! ([`stdio`]); each connection is a [`session::ClientSession`]. The [`front::McpFront`]
//! answers every message: the memory tools memgate covers
//! ([`crate::layout::cldmemory::tools`]) from the core,
//! with the legacy service's result texts; everything else over memgate's own session with
//! the legacy service ([`upstream::Upstream`]).

pub mod event_stream;
mod forwarding;
pub mod front;
pub mod http_transports;
pub mod jsonrpc;
#[cfg(unix)]
pub mod local_socket;
pub mod modern;
pub mod session;
pub mod shadow;
mod shadowing;
pub mod sse_events;
mod stateless;
pub mod stdio;
mod tasks;
pub mod upstream;

pub use front::{FrontSettings, McpFront};
pub use http_transports::HttpTransports;
pub use upstream::{Upstream, UpstreamSettings, UpstreamTarget};
