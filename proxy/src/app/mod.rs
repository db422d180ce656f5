//! Wires the parts together from a [`Config`](crate::config::Config): picks each concern's
//! implementation ([`backends`]), builds the core and the fronts and starts the API and admin
//! servers and the background tasks ([`proxy`]), or the workers ([`worker`]), and stops them.

mod backends;
pub mod data_dir;
mod proxy;
pub mod stdio_launch;
mod worker;

pub use backends::{collection_spec, spawn_vector_optimizer, vector_store, Backends};
pub use proxy::{mcp_upstream, start, start_in, start_with, RunningProxy};
pub use worker::{build_workers, consumer_name, start_worker, start_worker_with, RunningWorker};
