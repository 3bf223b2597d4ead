//! Sessions: the short-lived signed token a login yields, the refresh token that renews it
//! (once), logout, and what the profile shows of them.

use crate::error::IdentityError;
use crate::keys::Signer;
use crate::store::{PinStage, SessionRow, Store};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sportello_platform::auth::{name_of, parse_name, Amr, Claims, Level, Role, ISSUER};
use sportello_platform::now_millis;
use std::time::Duration;

/// Session lifetimes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRules {
    /// Lifetime of a session token; short, because services verify it without asking anyone.
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// Lifetime of a refresh token.
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    /// Absolute lifetime of a session from its login: refreshing never extends it.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// The Ed25519 signing key (PKCS#8 DER); default `<data_dir>/keys/session-ed25519.der`,
    /// generated when absent. Replicas of identity-svc must share it.
    pub signing_key_file: Option<std::path::PathBuf>,
}

impl Default for SessionRules {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(12 * 3600),
            max_lifetime: Duration::from_secs(12 * 3600),
            signing_key_file: None,
        }
    }
}

/// A session just opened or renewed.
#[derive(Clone)]
pub struct Issued {
    pub claims: Claims,
    pub access_token: String,
    pub access_expires_at: i64,
    pub refresh_token: String,
    pub refresh_expires_at: i64,
}

/// What the profile shows of the caller's session.
#[derive(Clone, Debug)]
pub struct Profile {
    pub claims: Claims,
    pub previous_access_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Sessions {
    pub store: Store,
    pub signer: Signer,
    pub rules: SessionRules,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn new_secret() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn expired() -> IdentityError {
    IdentityError::Precondition {
        reason: "SESSION_EXPIRED",
        message: "the session has ended: log in again",
    }
}

impl Sessions {
    fn token(&self, claims: &Claims) -> Result<String, IdentityError> {
        self.signer.sign(claims).map_err(|e| IdentityError::Internal(e.to_string()))
    }

    /// The claims of a session token, which expires with its session at the latest (`ends_at`,
    /// milliseconds).
    fn claims(
        &self,
        sub: &str,
        role: Role,
        level: Level,
        amr: Amr,
        sid: &str,
        ends_at: i64,
    ) -> Claims {
        let now = now_millis() / 1000;
        Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            role,
            level,
            amr,
            sid: sid.into(),
            iat: now,
            exp: (now + millis(self.rules.access_ttl) / 1000).min(ends_at / 1000),
            acr: None,
        }
    }

    /// Opens a session after a successful login; `acr` is what an identity provider asserted.
    pub async fn open(
        &self,
        sub: &str,
        role: Role,
        level: Level,
        amr: Amr,
        acr: Option<String>,
    ) -> Result<Issued, IdentityError> {
        let sid = uuid::Uuid::new_v4().to_string();
        let secret = new_secret();
        let now = now_millis();
        let ends_at = now.saturating_add(millis(self.rules.max_lifetime));
        let refresh_expires_at = now.saturating_add(millis(self.rules.refresh_ttl)).min(ends_at);
        self.store
            .create_session(&SessionRow {
                id: sid.clone(),
                subject: sub.into(),
                role: name_of(role),
                level: name_of(level),
                amr: name_of(amr),
                acr: acr.clone(),
                refresh_hash: digest(&secret),
                created_at: now,
                refresh_expires_at,
                previous_access_at: None,
                revoked_at: None,
            })
            .await?;
        let claims = Claims { acr, ..self.claims(sub, role, level, amr, &sid, ends_at) };
        Ok(Issued {
            access_token: self.token(&claims)?,
            access_expires_at: claims.exp * 1000,
            refresh_token: format!("{sid}.{secret}"),
            refresh_expires_at,
            claims,
        })
    }

    /// Whether what the session was built on still holds: the citizen's PIN neither revoked nor
    /// locked, the staff account still configured. (Revoking, locking, recovering or changing a
    /// PIN also ends its sessions outright; this guards any path that forgets to.)
    async fn still_entitled(
        &self,
        row: &SessionRow,
        role: Role,
        amr: Amr,
    ) -> Result<bool, IdentityError> {
        Ok(match (role, amr) {
            // A dispositive PIN session also needs the PIN to be dispositive still (a grant
            // revoked within its hold ends the level).
            (Role::Citizen, Amr::Pin) => {
                let dispositive = row.level == name_of(Level::Dispositive);
                self.store.credential(&row.subject).await?.is_some_and(|c| {
                    c.stage != PinStage::Revoked && !c.locked && (c.dispositive || !dispositive)
                })
            }
            (Role::Citizen | Role::Service, _) => true,
            (Role::Operator | Role::Patronato | Role::Backoffice, _) => {
                self.store.staff_enabled(&row.subject).await?
            }
        })
    }

    /// A new session token and refresh token for a valid refresh token, which is spent; never
    /// past the session's absolute lifetime, nor once its credential has gone.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Issued, IdentityError> {
        let (sid, secret) = refresh_token.trim().split_once('.').ok_or_else(expired)?;
        let row = self.store.session(sid).await?.ok_or_else(expired)?;
        let now = now_millis();
        let ends_at = row.created_at.saturating_add(millis(self.rules.max_lifetime));
        if now >= ends_at {
            return Err(expired());
        }
        let (Some(role), Some(level), Some(amr)) = (
            parse_name::<Role>(&row.role),
            parse_name::<Level>(&row.level),
            parse_name::<Amr>(&row.amr),
        ) else {
            return Err(IdentityError::Internal("a stored session has an unknown role".into()));
        };
        if !self.still_entitled(&row, role, amr).await? {
            self.store.revoke_session(sid).await?;
            return Err(expired());
        }
        let next = new_secret();
        let refresh_expires_at = now.saturating_add(millis(self.rules.refresh_ttl)).min(ends_at);
        if !self
            .store
            .rotate_refresh(sid, &digest(secret), &digest(&next), refresh_expires_at)
            .await?
        {
            return Err(expired());
        }
        let claims = Claims {
            acr: row.acr.clone(),
            ..self.claims(&row.subject, role, level, amr, sid, ends_at)
        };
        Ok(Issued {
            access_token: self.token(&claims)?,
            access_expires_at: claims.exp * 1000,
            refresh_token: format!("{sid}.{next}"),
            refresh_expires_at,
            claims,
        })
    }

    /// Whether the session of these claims is still open (not logged out).
    pub async fn is_live(&self, claims: &Claims) -> Result<bool, IdentityError> {
        Ok(self.store.session(&claims.sid).await?.is_some_and(|s| s.revoked_at.is_none()))
    }

    pub async fn logout(&self, claims: &Claims) -> Result<(), IdentityError> {
        self.store.revoke_session(&claims.sid).await?;
        Ok(())
    }

    pub async fn profile(&self, claims: &Claims) -> Result<Profile, IdentityError> {
        let row = self.store.session(&claims.sid).await?.filter(|s| s.revoked_at.is_none());
        let row = row.ok_or(IdentityError::SessionEnded)?;
        Ok(Profile { claims: claims.clone(), previous_access_at: row.previous_access_at })
    }

    /// Sessions revoked since `since`, and the time the answer is complete up to.
    pub async fn revoked_since(&self, since: i64) -> Result<(Vec<String>, i64), IdentityError> {
        let as_of = now_millis();
        Ok((self.store.revoked_since(since).await?, as_of))
    }
}

/// How the portal describes a login (DOMAIN.md §3: "autenticato con PIN Non Dispositivo").
pub fn login_description(claims: &Claims) -> String {
    match (claims.amr, claims.level) {
        (Amr::Pin, Level::Simplified) => "autenticato con PIN semplificato".into(),
        (Amr::Pin, Level::Dispositive) => "autenticato con PIN Dispositivo".into(),
        (Amr::Pin, _) => "autenticato con PIN Non Dispositivo".into(),
        (Amr::Spid | Amr::Cie, _) => {
            format!("autenticato con {}", claims.acr.as_deref().unwrap_or("SPID"))
        }
        (Amr::Cns, _) => "autenticato con CNS".into(),
        (Amr::Password, _) => "autenticato con credenziali del personale".into(),
        (Amr::Service, _) => "servizio interno".into(),
    }
}
