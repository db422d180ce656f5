//! The REST front: the Memory API (`/memories…`) answered by the core on the fast path, and
//! everything else, and every request on the legacy path, forwarded to the legacy service.
//!
//! [`endpoint`] is memgate's endpoint table (what a method and path ask for), [`service`]
//! answers one request, [`legacy`] forwards one, [`openapi`] documents the API.

pub mod endpoint;
pub mod legacy;
pub mod openapi;
pub mod service;
