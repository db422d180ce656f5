//! memgate's benchmark: the fast path against a reference legacy memory service, side by
//! side, with direct calls as baselines. `memgate-bench --help` for the options;
//! `docs/performance.md` shows runs.
//!
//! [`environment`] starts what a run talks to, [`dataset`] seeds the memories, [`scenarios`]
//! drives them through [`driver`] (open loop, HDR histograms; [`http_calls`] for memgate's REST
//! API, [`mcp_calls`] for the reference cldmemory over MCP), [`recall`] measures search recall
//! against exact search, [`report`] and [`plot`] write the results.

pub mod dataset;
pub mod driver;
pub mod environment;
pub mod http_calls;
pub mod machine;
pub mod mcp_calls;
pub mod placement;
pub mod plot;
pub mod progress;
pub mod recall;
pub mod report;
pub mod scenarios;
