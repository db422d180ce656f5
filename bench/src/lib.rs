//! memgate's benchmark: the fast path against a reference legacy memory service, side by
//! side, with direct calls as baselines. `memgate-bench --help` for the options; the README's
//! Performance section shows a run.
//!
//! [`environment`] starts what a run talks to, [`dataset`] seeds the memories, [`scenarios`]
//! drives them through [`driver`] (open loop, HDR histograms), [`report`] and [`plot`] write
//! the results. [`legacy_service`] is the reference legacy service.

pub mod dataset;
pub mod driver;
pub mod environment;
pub mod http_calls;
pub mod legacy_service;
pub mod machine;
pub mod plot;
pub mod progress;
pub mod report;
pub mod scenarios;
