//! The gateway as the guard of the suite: for every call, the calling system it comes through
//! (a portal backend, by its client credential or certificate), the policy table's rule, the
//! session token (signature, expiry, not logged out), and the rate limits per client address and
//! per principal. A refusal is immediate and says why in a rich status; nothing queues.

use crate::config::{Caller, Config, RateLimit};
use crate::policy::{self, Access};
use crate::stack::{client_address, Gate};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use sportello_platform::auth::{AuthError, Claims, Level, Revoked, Role, Verifier};
use sportello_platform::error::{retry_later, with_reason};
use std::collections::HashMap;
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

/// What the gates of the guard share: the token verifier, the sessions ended by logout, the
/// calling systems it knows, and the rate limiters (with their one clock, built once: building a
/// clock calibrates it).
#[derive(Clone)]
pub struct Guard {
    pub verifier: Verifier,
    pub revoked: Revoked,
    callers: Arc<Callers>,
    by_address: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    by_principal: Arc<DefaultKeyedRateLimiter<String>>,
}

impl Guard {
    /// Fails on a calling system configured with a digest that is not 64 hex digits.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let verifier = Verifier::default();
        let limits = &config.limits;
        Ok(Self {
            revoked: verifier.revoked(),
            verifier,
            callers: Arc::new(Callers::new(&config.callers, limits.max_in_flight_per_caller)?),
            by_address: Arc::new(limiter(&limits.per_address)),
            by_principal: Arc::new(limiter(&limits.per_principal)),
        })
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

/// The header a calling system sends its credential in, as `<name>:<secret>`. Under the
/// internal prefix, so that it is stripped before the call goes on to a backend.
pub const CALLER_HEADER: &str = "x-sportello-caller";

/// A calling system the gateway recognised; goes on with the request as an extension, for the
/// bounds below to count its calls as its own rather than its address's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownCaller {
    pub name: Arc<str>,
    pub max_in_flight: usize,
}

/// The configured calling systems, by name (with the digest of their secret) and by the
/// fingerprint of their certificate.
#[derive(Debug, Default)]
struct Callers {
    by_name: HashMap<String, ([u8; 32], KnownCaller)>,
    by_certificate: HashMap<[u8; 32], KnownCaller>,
}

fn sha256_hex(what: &str, hex: &str) -> anyhow::Result<[u8; 32]> {
    let hex = hex.trim();
    let mut digest = [0u8; 32];
    anyhow::ensure!(hex.len() == 64 && hex.is_ascii(), "{what} is not 64 hex digits");
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair)?;
        *byte = u8::from_str_radix(pair, 16)
            .map_err(|_| anyhow::anyhow!("{what} is not 64 hex digits"))?;
    }
    Ok(digest)
}

impl Callers {
    fn new(
        configured: &std::collections::BTreeMap<String, Caller>,
        default_max: usize,
    ) -> anyhow::Result<Self> {
        let mut callers = Self::default();
        for (name, caller) in configured {
            let known = KnownCaller {
                name: name.as_str().into(),
                max_in_flight: caller.max_in_flight.unwrap_or(default_max).max(1),
            };
            if let Some(hex) = &caller.secret_sha256 {
                let what = format!("gateway.callers.{name}.secret_sha256");
                callers.by_name.insert(name.clone(), (sha256_hex(&what, hex)?, known.clone()));
            }
            if let Some(hex) = &caller.certificate_sha256 {
                let what = format!("gateway.callers.{name}.certificate_sha256");
                callers.by_certificate.insert(sha256_hex(&what, hex)?, known);
            }
        }
        Ok(callers)
    }

    /// The calling system of a request: by its certificate, else by its credential; none for a
    /// caller that presents neither. A credential that is present but names no calling system
    /// or has the wrong secret is refused rather than taken as anonymous: a calling system
    /// whose secret was rotated wrongly then learns it at its first call, instead of its whole
    /// population being throttled by its address without anyone knowing why.
    fn identify<B>(&self, req: &http::Request<B>) -> Result<Option<KnownCaller>, Status> {
        if let Some(known) = client_certificate(req)
            .and_then(|der| self.by_certificate.get(&<[u8; 32]>::from(Sha256::digest(der))))
        {
            return Ok(Some(known.clone()));
        }
        let Some(credential) = req.headers().get(CALLER_HEADER) else { return Ok(None) };
        let unknown = || {
            metrics::counter!("sportello_gateway_refused_total", "reason" => "UNKNOWN_CALLER")
                .increment(1);
            with_reason(
                Code::Unauthenticated,
                "the calling system's credential is not valid",
                "UNKNOWN_CALLER",
                DOMAIN,
            )
        };
        let (name, secret) =
            credential.to_str().ok().and_then(|c| c.split_once(':')).ok_or_else(unknown)?;
        let (expected, known) = self.by_name.get(name).ok_or_else(unknown)?;
        let given: [u8; 32] = Sha256::digest(secret.trim().as_bytes()).into();
        // In constant time: how much of a guess matches must not show in how long it takes.
        if bool::from(subtle::ConstantTimeEq::ct_eq(&given[..], &expected[..])) {
            Ok(Some(known.clone()))
        } else {
            Err(unknown())
        }
    }
}

/// The client certificate of a TLS connection that presented one (a calling system's, or a
/// CNS card's).
fn client_certificate<B>(req: &http::Request<B>) -> Option<Vec<u8>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|tls| tls.peer_certs())
        .and_then(|certs| certs.first().map(|c| c.to_vec()))
}

/// Recognises the calling system a call comes through (see [`KnownCaller`]).
#[derive(Clone)]
pub struct IdentifyCaller(Arc<Callers>);

impl IdentifyCaller {
    pub fn new(guard: &Guard) -> Self {
        Self(guard.callers.clone())
    }
}

impl Gate for IdentifyCaller {
    type Held = ();

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        if let Some(known) = self.0.identify(req)? {
            req.extensions_mut().insert(known);
        }
        Ok(())
    }
}

/// Calls per client address (all calls of callers that are not a known calling system, public
/// ones included: a portal's calls are its citizens', bounded per citizen and per caller).
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
        if req.extensions().get::<KnownCaller>().is_some() {
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn callers() -> Callers {
        let configured = BTreeMap::from([("portal".to_owned(), Caller::with_secret(SECRET))]);
        Callers::new(&configured, 4096).expect("valid configuration")
    }

    fn with_credential(value: &str) -> http::Request<()> {
        let mut req = http::Request::new(());
        req.headers_mut().insert(CALLER_HEADER, value.parse().expect("header"));
        req
    }

    #[test]
    fn a_calling_system_with_its_secret_is_known_by_name_with_its_bound() {
        let known = callers().identify(&with_credential(&format!("portal:{SECRET}"))).expect("ok");
        assert_eq!(known, Some(KnownCaller { name: "portal".into(), max_in_flight: 4096 }));
    }

    #[test]
    fn a_caller_without_a_credential_is_anonymous() {
        assert_eq!(callers().identify(&http::Request::new(())).expect("ok"), None);
    }

    #[test]
    fn a_wrong_secret_an_unknown_name_or_a_malformed_credential_is_unauthenticated() {
        let wrong_secret = format!("portal:{}", SECRET.replace('0', "1"));
        let unknown_name = format!("other:{SECRET}");
        for credential in [wrong_secret.as_str(), &unknown_name, "portal", SECRET, "portal:"] {
            let refused = callers().identify(&with_credential(credential)).expect_err(credential);
            assert_eq!(refused.code(), Code::Unauthenticated, "{credential}");
        }
    }

    #[test]
    fn a_digest_that_is_not_sha256_hex_stops_the_gateway_at_start() {
        let configured = BTreeMap::from([(
            "portal".to_owned(),
            Caller { secret_sha256: Some("not hex".into()), ..Caller::default() },
        )]);
        let error = Callers::new(&configured, 1).expect_err("refused");
        assert!(error.to_string().contains("gateway.callers.portal.secret_sha256"), "{error}");
    }
}
