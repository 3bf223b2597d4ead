//! The gateway as the guard of the suite: for every call, the policy table's rule, the session
//! token (signature, expiry, not logged out), and the rate limits per client address and per
//! principal. A refusal is immediate and says why in a rich status; nothing queues.

use crate::config::{Limits, RateLimit};
use crate::policy::{self, Access};
use crate::stack::{client_address, Gate};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sportello_platform::auth::{AuthError, Claims, Level, Revoked, Role, Verifier};
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

/// What the gates of the guard share: the token verifier, the sessions ended by logout, and
/// the rate limiters (with their one clock, built once: building a clock calibrates it).
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
}

/// Checks `key` against `limiter`, saying how long to wait when it is over.
fn check_rate<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    whose: &str,
) -> Result<(), Status> {
    limiter.check_key(key).map_err(|not_until| {
        metrics::counter!("sportello_gateway_refused_total", "reason" => "RATE_LIMITED")
            .increment(1);
        retry_later(
            Code::ResourceExhausted,
            format!("too many requests from this {whose}; retry later"),
            "RATE_LIMITED",
            DOMAIN,
            not_until.wait_time_from(limiter.clock().now()).max(Duration::from_millis(1)),
        )
    })
}

/// Calls per client address (all calls, public ones included).
#[derive(Clone)]
pub struct RateLimitByAddress(Arc<DefaultKeyedRateLimiter<IpAddr>>);

impl RateLimitByAddress {
    pub fn new(guard: &Guard) -> Self {
        Self(guard.by_address.clone())
    }
}

impl Gate for RateLimitByAddress {
    type Held = ();

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        client_address(req).map_or(Ok(()), |ip| check_rate(&self.0, &ip, "address"))
    }
}

/// Calls per logged-in principal, after [`Authenticate`] has said who it is.
#[derive(Clone)]
pub struct RateLimitByPrincipal(Arc<DefaultKeyedRateLimiter<String>>);

impl RateLimitByPrincipal {
    pub fn new(guard: &Guard) -> Self {
        Self(guard.by_principal.clone())
    }
}

impl Gate for RateLimitByPrincipal {
    type Held = ();

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        req.extensions()
            .get::<Claims>()
            .map_or(Ok(()), |c| check_rate(&self.0, &c.sub, "principal"))
    }
}

/// The session a method's [`Access`] asks for: a valid token of a session not ended by logout,
/// of an allowed role, at the level asked or above. Its claims go on with the request.
#[derive(Clone)]
pub struct Authenticate {
    verifier: Verifier,
    revoked: Revoked,
}

impl Authenticate {
    pub fn new(guard: &Guard) -> Self {
        Self { verifier: guard.verifier.clone(), revoked: guard.revoked.clone() }
    }

    fn session(
        &self,
        headers: &http::HeaderMap,
        roles: &[Role],
        min_level: Level,
    ) -> Result<Claims, Status> {
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
        Ok(claims)
    }
}

impl Gate for Authenticate {
    type Held = ();

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        // The policy layer above always says; a request it did not see is treated as internal.
        match req.extensions().get::<Access>().copied().unwrap_or(Access::Internal) {
            Access::Public => Ok(()),
            Access::Internal => Err(policy::internal_method()),
            Access::Session { roles, min_level } => {
                let claims = self.session(req.headers(), roles, min_level)?;
                req.extensions_mut().insert(claims);
                Ok(())
            }
        }
    }
}
