//! Session tokens: what they claim, and how every service checks them. identity-svc signs them
//! (EdDSA); the gateway and the services verify them with identity's public keys, which they
//! fetch from identity-svc and keep fresh. Services still enforce ownership themselves: a valid
//! token only says who is calling, not what they may touch.

pub use crate::revocation::Revoked;
use crate::service_identity::{self, ServiceKey};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

/// The `iss` of every session token.
pub const ISSUER: &str = "sportello-identity";

/// Who a principal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Citizen,
    Operator,
    Patronato,
    Backoffice,
    Service,
}

/// How strongly a principal proved it (DOMAIN.md §3); ordered, so `level >= Ordinary` reads as
/// the rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Simplified,
    Ordinary,
    Dispositive,
}

/// How a principal logged in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Amr {
    Pin,
    Spid,
    Cie,
    Cns,
    Password,
    /// A Sportello service calling another, with a token identity-svc minted for it.
    Service,
}

/// The claims of a session token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// Fiscal code of a citizen, or the username of a staff member.
    pub sub: String,
    pub role: Role,
    pub level: Level,
    pub amr: Amr,
    /// Session id: logout revokes it.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    /// The assurance level an identity provider asserted ("SPID L2", "SPID L3", "CIE").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

// A fiscal code is personal data: logs get the role and session, never `sub`.
impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("role", &self.role)
            .field("level", &self.level)
            .field("amr", &self.amr)
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

impl Claims {
    /// Whether this principal is the citizen with fiscal code `cf`.
    pub fn is_citizen(&self, cf: &str) -> bool {
        self.role == Role::Citizen && self.sub == cf
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no session token")]
    Missing,
    #[error("session token not valid")]
    Invalid,
    #[error("session token expired")]
    Expired,
    /// This process has not yet learnt identity-svc's signing keys, or the sessions it ended
    /// (it has just started, or identity-svc has not answered yet): the token may well be
    /// valid, so the caller is to try again shortly, not to log in again.
    #[error("sessions cannot be checked yet; retry shortly")]
    KeysUnknown,
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        if e == AuthError::KeysUnknown {
            return crate::error::retry_later(
                tonic::Code::Unavailable,
                e.to_string(),
                "SIGNING_KEYS_UNKNOWN",
                "auth.sportello",
                std::time::Duration::from_millis(500),
            );
        }
        crate::error::with_reason(
            tonic::Code::Unauthenticated,
            e.to_string(),
            match e {
                AuthError::Missing => "TOKEN_MISSING",
                AuthError::Invalid => "TOKEN_INVALID",
                AuthError::Expired => "TOKEN_EXPIRED",
                AuthError::KeysUnknown => "SIGNING_KEYS_UNKNOWN",
            },
            "auth.sportello",
        )
    }
}

/// Verifies session tokens against identity-svc's current public keys, refusing sessions that
/// have ended ([`Revoked`]); and, where configured, tokens that named services sign with their
/// own keys ([`crate::service_identity`]).
#[derive(Clone, Default)]
pub struct Verifier {
    keys: Arc<RwLock<HashMap<String, DecodingKey>>>,
    services: Arc<RwLock<HashMap<String, DecodingKey>>>,
    revoked: Revoked,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<String> =
            self.keys.read().map(|k| k.keys().cloned().collect()).unwrap_or_default();
        f.debug_struct("Verifier").field("kids", &kids).finish()
    }
}

impl Verifier {
    /// Replaces the keys with those of a JWKS document.
    pub fn set_jwks(&self, jwks: &str) -> Result<usize, String> {
        let set: JwkSet = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone().ok_or("a key without kid")?;
            keys.insert(kid, DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?);
        }
        let n = keys.len();
        *self.keys.write().map_err(|_| "poisoned")? = keys;
        Ok(n)
    }

    /// Trusts tokens signed by service `name` with this Ed25519 public key (base64url), for
    /// that service's own calls only (role `service`, subject `name`).
    pub fn trust_service(&self, name: &str, public_key: &str) -> Result<(), String> {
        let key = DecodingKey::from_ed_components(public_key.trim()).map_err(|e| e.to_string())?;
        self.services.write().map_err(|_| "poisoned")?.insert(name.to_owned(), key);
        Ok(())
    }

    /// The fiscal code a CNS assertion of trusted service `service` vouches for, provided it
    /// is signed by that service, meant for a CNS login, unexpired, at most a minute long, and
    /// bound to `cert_der` (the certificate it came with).
    pub fn verify_cns_assertion(
        &self,
        service: &str,
        assertion: &str,
        cert_der: &[u8],
    ) -> Result<String, AuthError> {
        use service_identity::{CnsAssertion, CNS_ASSERTION_TTL_SECS, CNS_AUDIENCE};
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| AuthError::Invalid)?;
        let kid = format!("{}{service}", service_identity::KID_PREFIX);
        if header.alg != Algorithm::EdDSA || header.kid.as_deref() != Some(kid.as_str()) {
            return Err(AuthError::Invalid);
        }
        let services = self.services.read().map_err(|_| AuthError::Invalid)?;
        let key = services.get(service).ok_or(AuthError::Invalid)?;
        let claims: CnsAssertion = decode(assertion, key, &service_identity::issuer(service))?;
        let bound = claims.cert_sha256 == service_identity::fingerprint(cert_der);
        let short = claims.exp - claims.iat <= CNS_ASSERTION_TTL_SECS;
        (claims.aud == CNS_AUDIENCE && bound && short)
            .then_some(claims.sub)
            .ok_or(AuthError::Invalid)
    }

    /// The ended sessions this verifier refuses; follow them with [`Revoked::follow`].
    pub fn revoked(&self) -> Revoked {
        self.revoked.clone()
    }

    pub fn has_keys(&self) -> bool {
        self.keys.read().map(|k| !k.is_empty()).unwrap_or(false)
    }

    /// Whether it can tell a valid session token from another: it has identity-svc's keys and
    /// knows which sessions have ended. A service is ready to serve callers only then.
    pub fn is_ready(&self) -> bool {
        self.has_keys() && self.revoked.is_complete()
    }

    /// [`Verifier::is_ready`], as a readiness condition of the service that verifies with it.
    pub fn ready_condition(&self) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let verifier = self.clone();
        Arc::new(move || verifier.is_ready())
    }

    /// The claims of a valid token: EdDSA only, signed by a current key, issued by identity-svc
    /// (or by a trusted service, for itself), not expired, of a session not ended.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid);
        }
        let kid = header.kid.ok_or(AuthError::Invalid)?;
        if let Some(service) = kid.strip_prefix(service_identity::KID_PREFIX) {
            let services = self.services.read().map_err(|_| AuthError::Invalid)?;
            let key = services.get(service).ok_or(AuthError::Invalid)?;
            let claims: Claims = decode(token, key, &service_identity::issuer(service))?;
            let own =
                claims.role == Role::Service && claims.amr == Amr::Service && claims.sub == service;
            return own.then_some(claims).ok_or(AuthError::Invalid);
        }
        let keys = self.keys.read().map_err(|_| AuthError::Invalid)?;
        let Some(key) = keys.get(&kid) else {
            // Without any key yet, nothing can be told of the token (a process just restarted
            // must not send its callers to log in again); with keys, an unknown one is forged.
            return Err(if keys.is_empty() { AuthError::KeysUnknown } else { AuthError::Invalid });
        };
        let claims: Claims = decode(token, key, ISSUER)?;
        if !self.revoked.is_complete() {
            // Whether this session has ended is not known yet: as without keys, retry shortly.
            return Err(AuthError::KeysUnknown);
        }
        if self.revoked.contains(&claims.sid) {
            return Err(AuthError::Invalid);
        }
        Ok(claims)
    }

    /// Verifies the `authorization: Bearer …` token of a request, if it has one.
    pub fn from_metadata(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Claims, AuthError> {
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AuthError::Missing)?;
        self.verify(token.trim())
    }
}

/// The claims of an EdDSA JWT signed with `key` by `issuer`, not expired (5 s leeway).
pub fn decode<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    issuer: &str,
) -> Result<T, AuthError> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation.validate_aud = false;
    validation.leeway = 5;
    jsonwebtoken::decode::<T>(token, key, &validation).map(|d| d.claims).map_err(|e| {
        match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        }
    })
}

/// A tonic interceptor that puts the verified [`Claims`] of a request (when it carries a valid
/// token) into its extensions, for handlers to read with [`principal`]. A request without a
/// valid token passes too: public RPCs need none, and [`principal`] tells the handlers that need
/// one what was wrong with it.
#[derive(Clone, Debug)]
pub struct Authenticate {
    pub verifier: Verifier,
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.verifier.from_metadata(request.metadata()) {
            Ok(claims) => {
                request.extensions_mut().insert(claims);
            }
            Err(e) => {
                request.extensions_mut().insert(e);
            }
        }
        Ok(request)
    }
}

/// Ok when the caller is a Sportello service (internal RPCs), else PERMISSION_DENIED.
pub fn require_service<T>(request: &Request<T>) -> Result<Claims, Status> {
    let claims = principal(request)?;
    if claims.role != Role::Service {
        return Err(Status::permission_denied("for Sportello's own services only"));
    }
    Ok(claims)
}

/// The caller's claims, or UNAUTHENTICATED.
pub fn principal<T>(request: &Request<T>) -> Result<Claims, Status> {
    if let Some(claims) = request.extensions().get::<Claims>() {
        return Ok(claims.clone());
    }
    let why = request.extensions().get::<AuthError>().cloned().unwrap_or(AuthError::Missing);
    Err(why.into())
}

/// Keeps `verifier` in step with identity-svc: its signing keys ([`follow_keys`]) and the
/// sessions it ended ([`Revoked::follow_identity`]), both asked as service `me`.
pub fn follow_identity(
    verifier: &Verifier,
    identity: tonic::transport::Channel,
    me: ServiceKey,
    shutdown: CancellationToken,
) {
    tokio::spawn(follow_keys(
        verifier.clone(),
        identity.clone(),
        me.clone(),
        Duration::from_secs(60),
        shutdown.clone(),
    ));
    verifier.revoked().await_follower();
    tokio::spawn(verifier.revoked().follow_identity(
        identity,
        me,
        crate::revocation::DEFAULT_POLL,
        shutdown,
    ));
}

/// Keeps `verifier` in step with identity-svc's signing keys (`GetSigningKeys`, asked as
/// service `me`), so that a key rotation reaches every service; retries quickly until the first
/// keys arrive.
pub async fn follow_keys(
    verifier: Verifier,
    identity: tonic::transport::Channel,
    me: ServiceKey,
    every: Duration,
    shutdown: CancellationToken,
) {
    use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
    use sportello_proto::identity::v1::GetSigningKeysRequest;
    // Until the first keys arrive the service is not ready, so ask again soon, backing off.
    let mut retry = Duration::from_millis(20);
    loop {
        let reply = IdentityServiceClient::new(identity.clone())
            .get_signing_keys(me.request(GetSigningKeysRequest {}))
            .await;
        match reply.map(|r| r.into_inner().jwks) {
            Ok(jwks) => {
                if let Err(e) = verifier.set_jwks(&jwks) {
                    tracing::warn!(error = %e, "identity-svc sent unusable signing keys");
                }
            }
            Err(status) => tracing::debug!(code = ?status.code(), "signing keys not available yet"),
        }
        let wait = if verifier.has_keys() {
            every
        } else {
            retry = (retry * 2).min(Duration::from_millis(200));
            retry / 2
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The wire name of a role, level or method (`"citizen"`, `"ordinary"`, `"spid"`), as stored.
pub fn name_of<T: Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The role, level or method a stored name stands for.
pub fn parse_name<T: serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}
