//! `limits.writesPerSecondPerTenant`: a token bucket per tenant, so one tenant cannot fill the
//! write queue for the others.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::keys::Scope;

/// The buckets; a tenant's fills at the rate, up to a second's worth.
#[derive(Debug)]
pub struct WriteLimit {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl WriteLimit {
    pub fn per_second(rate: NonZeroU32) -> Self {
        Self {
            buckets: RateLimiter::keyed(Quota::per_second(rate)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one write from the tenant's bucket; when it is empty, how long until it is not.
    pub fn take(&self, scope: &Scope) -> Result<(), Duration> {
        let tenant = scope.value().unwrap_or_default().to_string();
        self.buckets
            .check_key(&tenant)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets the buckets that are full again (run now and then: one entry per tenant seen).
    pub fn forget_idle(&self) {
        self.buckets.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_past_its_rate_waits_and_others_do_not() {
        let limit = WriteLimit::per_second(NonZeroU32::new(3).expect("non-zero"));
        let a = Scope::tenant("a");
        for _ in 0..3 {
            assert_eq!(limit.take(&a), Ok(()));
        }
        let wait = limit.take(&a).expect_err("the fourth write in a second");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(334),
            "{wait:?}"
        );
        assert_eq!(limit.take(&Scope::tenant("b")), Ok(()));
        assert_eq!(limit.take(&Scope::UNSCOPED), Ok(()));
    }
}
