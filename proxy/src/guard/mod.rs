//! What every call to a dependency passes: a timeout, a circuit breaker ([`breaker`]) and
//! metrics, put together in [`dependency`].

pub mod breaker;
pub mod dependency;
