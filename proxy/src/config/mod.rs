//! The proxy's configuration: one YAML file (the format the operator renders into the
//! `{name}-proxy-config` ConfigMap), overridden by `MEMGATE_*` environment variables and then by
//! command-line flags.
//!
//! The types and their validation are the `memgate-config` crate (the operator renders them
//! too). Loading is layered with `figment`: defaults → (embedded profile) → cldmemory's own
//! environment variables ([`cldmemory_env`]) → file → environment → flags. Type errors name the field (`rollout.percent`), and [`Config::validate`] checks what
//! types cannot with the same field names. A field this version does not know is named in a
//! warning and ignored.

mod cldmemory_env;
pub mod credentials;
mod load;
mod watch;

pub use load::{load, ConfigSources, CredentialFile, LOCAL_SERVER_ENV};
pub use memgate_config::*;
pub use watch::{watch_rollout, RolloutHandle, WatchGuard};
