//! The fronts: each speaks one protocol to clients and says the core's values and errors in
//! it, in one place.
//!
//! A request enters at [`server`] (accept, overload), passes the [`security`] gate, and is
//! classified and routed (fast or legacy, [`routing`]) by the REST front ([`rest`]), which also
//! hands MCP's endpoints to [`mcp`]. [`http`] and [`error`] are what the HTTP fronts share;
//! [`admin`] serves metrics and health on its own port.

pub mod admin;
pub mod body;
pub mod error;
pub mod http;
pub mod mcp;
pub mod rest;
pub mod routing;
pub mod security;
pub mod server;
