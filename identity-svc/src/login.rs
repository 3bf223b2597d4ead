//! Logins (DOMAIN.md §3): PIN at its three levels, SPID and CIE assertions, staff passwords.
//! Each ends in a session; each failure is the same UNAUTHENTICATED answer whatever its cause.

use crate::domain::pin::PinHash;
use crate::error::IdentityError;
use crate::oidc::ProviderKind;
use crate::pins::{parse_fiscal_code, Pins};
use crate::sessions::{Issued, Sessions};
use crate::store::{Credential, PinStage};
use sportello_platform::auth::{parse_name, Amr, Level, Role, Verifier};

/// The service whose CNS assertions identity-svc accepts.
const GATEWAY: &str = "gateway";

/// What a PIN of a given length unlocks for a credential in a given stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PinUse {
    /// The first half of a first PIN: a simplified session.
    Simplified,
    /// The citizen's own PIN: an ordinary (or dispositive) session.
    Own,
    /// The 16-character initial PIN: right, but it must be replaced first.
    Initial,
}

fn pin_use(c: &Credential, pin_len: usize) -> Option<(PinUse, &PinHash)> {
    match (c.stage, pin_len) {
        (PinStage::SimplifiedOnly, 8) => {
            c.simplified_hash.as_ref().map(|h| (PinUse::Simplified, h))
        }
        (PinStage::Active, 8) => Some((PinUse::Own, &c.pin_hash)),
        (stage, 16) if stage.awaits_first_access() => Some((PinUse::Initial, &c.pin_hash)),
        _ => None,
    }
}

#[derive(Clone, Debug)]
pub struct Logins {
    pub pins: Pins,
    pub sessions: Sessions,
    pub providers: crate::provider_keys::Current,
    /// Checks the gateway's CNS assertions (its key is among the trusted services').
    pub verifier: Verifier,
    /// How long the first lockout of a staff account lasts; each next one twice as long.
    pub staff_lockout: std::time::Duration,
}

impl Logins {
    /// A PIN login of a caller with `deadline` left (see `Pins::verify`).
    pub async fn with_pin(
        &self,
        cf_raw: &str,
        pin: &str,
        deadline: Option<std::time::Duration>,
    ) -> Result<Issued, IdentityError> {
        let cf = parse_fiscal_code(cf_raw)?.canonical();
        let pin = pin.trim().to_ascii_uppercase();
        let len = pin.len();
        let credential = self
            .pins
            .verify("LoginWithPin", &cf, &pin, deadline, move |c| pin_use(c, len).map(|(_, h)| h))
            .await?;
        let level = match pin_use(&credential, pin.len()).map(|(u, _)| u) {
            Some(PinUse::Simplified) => Level::Simplified,
            Some(PinUse::Own) if credential.dispositive => Level::Dispositive,
            Some(PinUse::Own) => Level::Ordinary,
            Some(PinUse::Initial) | None => {
                return Err(IdentityError::Precondition {
                    reason: "PIN_CHANGE_REQUIRED",
                    message:
                        "primo accesso: scelga il suo PIN di 8 caratteri (CompleteFirstAccess)",
                })
            }
        };
        self.sessions.open(&cf, Role::Citizen, level, Amr::Pin, None).await
    }

    pub async fn with_identity_provider(&self, id_token: &str) -> Result<Issued, IdentityError> {
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
        let providers =
            self.providers.read().map(|p| p.clone()).map_err(|_| {
                IdentityError::Internal("identity provider keys unavailable".into())
            })?;
        let assertion = providers.verify(id_token.trim(), now).map_err(|e| {
            tracing::info!(error = %e, "identity provider assertion refused");
            IdentityError::BadCredentials
        })?;
        let cf = parse_fiscal_code(&assertion.fiscal_code)
            .map_err(|_| IdentityError::BadCredentials)?
            .canonical();
        let until = i64::try_from(assertion.usable_until).unwrap_or(i64::MAX).saturating_mul(1000);
        if !self.pins.store.spend_id_token(&assertion.replay_key, until).await? {
            tracing::info!("identity provider assertion refused: already used");
            return Err(IdentityError::BadCredentials);
        }
        let amr = match assertion.kind {
            ProviderKind::Spid => Amr::Spid,
            ProviderKind::Cie => Amr::Cie,
        };
        let acr = Some(assertion.level.label().to_owned());
        self.sessions.open(&cf, Role::Citizen, Level::Dispositive, amr, acr).await
    }

    /// A CNS login: the gateway verified the smart card's certificate in the TLS handshake and
    /// vouches for the fiscal code in its subject with an assertion signed by its own key, bound
    /// to the certificate (sent along, base64url DER) and a minute long.
    pub async fn with_certificate(
        &self,
        assertion: Option<&str>,
        certificate: Option<&str>,
    ) -> Result<Issued, IdentityError> {
        use base64::Engine;
        let cert = certificate
            .and_then(|c| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c.trim()).ok());
        let vouched = match (assertion, cert) {
            (Some(assertion), Some(cert)) => {
                self.verifier.verify_cns_assertion(GATEWAY, assertion.trim(), &cert).ok()
            }
            _ => None,
        };
        let Some(cf) = vouched else {
            tracing::info!("CNS login refused: no certificate vouched for by the gateway");
            return Err(IdentityError::BadCredentials);
        };
        let cf = parse_fiscal_code(&cf).map_err(|_| IdentityError::BadCredentials)?.canonical();
        self.sessions
            .open(&cf, Role::Citizen, Level::Dispositive, Amr::Cns, Some("CNS".into()))
            .await
    }

    /// A staff login. The username is canonical (trimmed, lower-case) before anything counts,
    /// so `"OP.TWO "` and `op.two` share one allowance of attempts.
    pub async fn staff(&self, username: &str, password: &str) -> Result<Issued, IdentityError> {
        let username = username.trim().to_ascii_lowercase();
        let max = i64::from(self.pins.rules.max_failed_attempts);
        let hasher = &self.pins.hasher;
        let store = &self.pins.store;
        let Some(account) = store.reserve_staff_attempt(&username, max).await? else {
            hasher.verify(password.to_owned(), &self.pins.decoy).await?;
            tracing::info!("staff login refused: unknown, disabled or locked account");
            return Err(IdentityError::BadCredentials);
        };
        if !hasher.verify(password.to_owned(), &account.password_hash).await? {
            if store.staff_attempt_failed(&username, max, &account, self.staff_lockout).await? {
                tracing::warn!(lockouts = account.lockouts + 1, "staff account locked for a while");
            }
            tracing::info!("staff login refused: wrong password");
            return Err(IdentityError::BadCredentials);
        }
        store.staff_attempt_succeeded(&username).await?;
        let role = parse_name::<Role>(&account.role)
            .filter(|r| *r != Role::Citizen)
            .ok_or_else(|| IdentityError::Internal("a staff account with a citizen role".into()))?;
        self.sessions.open(&username, role, Level::Ordinary, Amr::Password, None).await
    }
}
