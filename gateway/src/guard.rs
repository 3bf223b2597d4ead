//! The gateway as the guard of the suite: for every call, the policy table's rule, the session
//! token (signature, expiry, not logged out), and the rate limits per client address and per
//! principal. A refusal is immediate and says why in a rich status; nothing queues.

use crate::config::{Limits, RateLimit};
use crate::policy::{self, Access};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sportello_platform::auth::{AuthError, Claims, Revoked, Verifier};
use sportello_platform::error::{retry_later, with_reason};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

const DOMAIN: &str = "gateway.sportello";

fn limiter<K: std::hash::Hash + Eq + Clone>(rate: &RateLimit) -> DefaultKeyedRateLimiter<K> {
    let per_second = NonZeroU32::new(rate.per_second.max(1)).expect("at least one");
    let burst = NonZeroU32::new(rate.burst.max(1)).expect("at least one");
    RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
}

/// Decides whether a call may pass.
#[derive(Clone)]
pub struct Guard {
    pub verifier: Verifier,
    pub revoked: Revoked,
    by_address: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    by_principal: Arc<DefaultKeyedRateLimiter<String>>,
}

impl Guard {
    pub fn new(limits: &Limits) -> Self {
        let verifier = Verifier::default();
        Self {
            revoked: verifier.revoked(),
            verifier,
            by_address: Arc::new(limiter(&limits.per_address)),
            by_principal: Arc::new(limiter(&limits.per_principal)),
        }
    }

    /// Forgets the rate-limit state of clients that went quiet, so memory stays bounded.
    pub async fn tidy(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {
                    self.by_address.retain_recent();
                    self.by_principal.retain_recent();
                }
            }
        }
    }

    fn over_limit(wait: Duration, whose: &str) -> Status {
        retry_later(
            Code::ResourceExhausted,
            format!("too many requests from this {whose}; retry later"),
            "RATE_LIMITED",
            DOMAIN,
            wait.max(Duration::from_millis(1)),
        )
    }

    /// Admits or refuses a call to `path` with these headers from `peer`; returns the caller's
    /// claims when the call carries a session.
    pub fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Option<Claims>, Status> {
        let clock = DefaultClock::default();
        if let Some(ip) = peer {
            if let Err(not_until) = self.by_address.check_key(&ip) {
                return Err(Self::over_limit(not_until.wait_time_from(clock.now()), "address"));
            }
        }
        let access = policy::access(path);
        let (roles, min_level) = match access {
            Access::Public => return Ok(None),
            Access::Internal => {
                return Err(with_reason(
                    Code::PermissionDenied,
                    "not callable from outside",
                    "INTERNAL_METHOD",
                    DOMAIN,
                ))
            }
            Access::Session { roles, min_level } => (roles, min_level),
        };
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AuthError::Missing)?;
        let claims = self.verifier.verify(token.trim())?;
        if self.revoked.contains(&claims.sid) {
            return Err(AuthError::Invalid.into());
        }
        if !roles.contains(&claims.role) {
            return Err(with_reason(
                Code::PermissionDenied,
                "not allowed for this role",
                "ROLE_NOT_ALLOWED",
                DOMAIN,
            ));
        }
        if claims.level < min_level {
            return Err(with_reason(
                Code::PermissionDenied,
                "this needs a stronger credential than the one used to log in",
                "INSUFFICIENT_CREDENTIAL_LEVEL",
                DOMAIN,
            ));
        }
        if let Err(not_until) = self.by_principal.check_key(&claims.sub) {
            return Err(Self::over_limit(not_until.wait_time_from(clock.now()), "principal"));
        }
        Ok(Some(claims))
    }
}
