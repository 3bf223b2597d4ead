//! Verification of the OpenID Connect ID token that a SPID or CIE identity provider issues after
//! a citizen logs in, and its mapping to the citizen (fiscal code) and assurance level.
//!
//! [`IdentityProviders`] is built once at start-up from the configured providers (their JWKS is
//! loaded and checked then, so a broken key set stops the service instead of failing logins).
//! [`IdentityProviders::verify`] then checks one ID token:
//!
//! 1. Shape: a compact JWS of at most [`MAX_TOKEN_LEN`] bytes; header and payload are base64url
//!    JSON objects. A `crit` header is refused (we implement no JWS extension).
//! 2. Algorithm: only `RS256`, `ES256` and `EdDSA` (Ed25519). `none`, `HS*` and everything else
//!    are refused as [`OidcError::BadSignature`] before any key is looked at.
//! 3. Provider: chosen by the (still unverified) `iss`, compared exactly with the configured
//!    issuer; no match is [`OidcError::UnknownIssuer`].
//! 4. Key: the provider's key whose `kid` equals the header's `kid`; a token without `kid` is
//!    accepted only when the provider has exactly one key. The key's algorithm (implied by its
//!    JWK key type) must equal the header's `alg`. Then the signature is verified.
//! 5. Claims (only after the signature verified): `iss` equal to the issuer; `aud` (string or
//!    array) containing the configured audience, and `azp`, if present, equal to it (required
//!    when `aud` lists several audiences); `exp` required and in the future, `iat` required and
//!    `nbf` optional and not in the future, each with a leeway of [`LEEWAY_SECS`] against the
//!    `now_unix` passed in; `sub` present.
//! 6. Level (`acr`): see [`AssuranceLevel::from_acr`].
//! 7. Fiscal code: see [`FISCAL_NUMBER_CLAIMS`].
//!
//! Error messages never contain the token, any claim value or the fiscal code; `Debug` of an
//! [`Assertion`] masks the fiscal code. Replay protection (`nonce`, single use of the
//! authorization code) is the caller's job: this module checks only the token itself.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// Longest ID token accepted, in bytes (real ones are 1–3 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest JWKS accepted, in bytes.
const MAX_JWKS_LEN: usize = 1024 * 1024;

/// `acr` of SPID level 1 (username and password): never enough here.
pub const ACR_SPID_L1: &str = "https://www.spid.gov.it/SpidL1";
/// `acr` of SPID level 2 (second factor).
pub const ACR_SPID_L2: &str = "https://www.spid.gov.it/SpidL2";
/// `acr` of SPID level 3 (hardware device); also what the CIE id provider sends for CIE 3.0.
pub const ACR_SPID_L3: &str = "https://www.spid.gov.it/SpidL3";
/// `acr` values accepted from a CIE provider, all meaning CIE 3.0 at level 3. The SPID/CIE
/// OpenID Connect rules use the SPID URI for CIE too; the other two are tolerated spellings.
pub const CIE_ACCEPTED_ACR: [&str; 3] = [ACR_SPID_L3, "https://cie.gov.it/L3", "L3"];

/// Claim names that may carry the fiscal number, all equivalent: the SPID attribute name, its
/// snake-case spelling, and the claim of the SPID/CIE OpenID Connect rules. The value is
/// `TINIT-` followed by the 16-character codice fiscale; the prefix (any case) is stripped, the
/// rest upper-cased and required to be 16 ASCII letters or digits (the full check-digit
/// validation happens elsewhere). A bare 16-character value is accepted as well; any other
/// prefix (another country's `TIN..-`) is not. If several of these claims are present they must
/// agree.
pub const FISCAL_NUMBER_CLAIMS: [&str; 3] =
    ["fiscalNumber", "fiscal_number", "https://attributes.eid.gov.it/fiscal_number"];

/// Why an ID token was refused, or why the providers could not be configured.
///
/// Messages never include the token, claim values or the fiscal code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// The token's `iss` is not one of the configured providers.
    #[error("ID token issuer is not a configured identity provider")]
    UnknownIssuer,
    /// The signature does not verify, no configured key matches the token's `kid`, the algorithm
    /// is not accepted (`none`, `HS*`, …) or does not match the key's type.
    #[error("ID token signature is invalid or was not made with an accepted key and algorithm")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("ID token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("ID token is not yet valid")]
    NotYetValid,
    /// `aud` does not contain our client id (or `azp` names another client).
    #[error("ID token was not issued for this service (audience)")]
    WrongAudience,
    /// `acr` is missing, unknown or too low for this kind of provider.
    #[error("ID token authentication level (acr) is missing or insufficient")]
    InsufficientLevel,
    /// No fiscal number claim, or one that is not a 16-character fiscal code.
    #[error("ID token carries no well-formed fiscal number")]
    MissingFiscalNumber,
    /// The token is not a well-formed ID token; the text says which part (never its content).
    #[error("malformed ID token: {0}")]
    Malformed(&'static str),
    /// A provider's configuration or key set is unusable.
    #[error("identity provider {provider:?}: {reason}")]
    Config {
        /// The provider's configured `name`.
        provider: String,
        /// What is wrong.
        reason: String,
    },
}

/// Which national credential system a provider belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Sistema Pubblico di Identità Digitale.
    Spid,
    /// Carta d'Identità Elettronica (CIE 3.0).
    Cie,
}

/// One configured identity provider, e.g. from `[[identity.identity_providers]]` in TOML.
/// Exactly one of `jwks_file`, `jwks_url` and `jwks` must be set; a `jwks_url` is fetched (and
/// kept fresh) by identity-svc, which hands the document to [`IdentityProviders::new`] as `jwks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name used in logs and errors, e.g. `"spid-test"`; unique.
    pub name: String,
    /// SPID or CIE (`"spid"` / `"cie"`).
    pub kind: ProviderKind,
    /// Expected `iss`, compared exactly; unique among providers.
    pub issuer: String,
    /// Expected `aud`: our client id at this provider.
    pub audience: String,
    /// The provider's public keys as a JWKS JSON file (relative paths: to the working directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Or the provider's JWKS endpoint (`https://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Or the JWKS JSON inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
}

/// How strongly the citizen was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AssuranceLevel {
    /// SPID level 2.
    SpidL2,
    /// SPID level 3.
    SpidL3,
    /// CIE 3.0 (level 3).
    CieL3,
}

impl AssuranceLevel {
    /// Text shown to the citizen: `"SPID L2"`, `"SPID L3"` or `"CIE"`.
    pub fn label(self) -> &'static str {
        match self {
            Self::SpidL2 => "SPID L2",
            Self::SpidL3 => "SPID L3",
            Self::CieL3 => "CIE",
        }
    }

    /// The level a provider of `kind` asserts with this `acr`, if it is accepted:
    /// SPID: [`ACR_SPID_L2`] or [`ACR_SPID_L3`] (level 1 and anything else refused);
    /// CIE: one of [`CIE_ACCEPTED_ACR`] (a CIE login at level 1 or 2 is refused: only CIE 3.0
    /// is a credential here). Values are compared exactly.
    pub fn from_acr(kind: ProviderKind, acr: &str) -> Option<Self> {
        match kind {
            ProviderKind::Spid if acr == ACR_SPID_L2 => Some(Self::SpidL2),
            ProviderKind::Spid if acr == ACR_SPID_L3 => Some(Self::SpidL3),
            ProviderKind::Cie if CIE_ACCEPTED_ACR.contains(&acr) => Some(Self::CieL3),
            _ => None,
        }
    }
}

impl fmt::Display for AssuranceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A verified login: who the citizen is and how they authenticated.
#[derive(Clone, PartialEq, Eq)]
pub struct Assertion {
    /// The citizen's fiscal code: 16 upper-case ASCII letters/digits, `TINIT-` stripped.
    pub fiscal_code: String,
    /// The kind of provider that authenticated the citizen.
    pub kind: ProviderKind,
    /// The level asserted.
    pub level: AssuranceLevel,
    /// The configured `name` of the provider.
    pub provider: String,
    /// What makes this ID token single-use: its issuer with its `jti`, else its `nonce`, else
    /// a digest of the whole token.
    pub replay_key: String,
    /// Until when (seconds since the epoch, leeway included) the token could be presented.
    pub usable_until: u64,
}

impl Assertion {
    /// The fiscal code masked for logs: first 3 and last 2 characters, `*` between.
    pub fn masked_fiscal_code(&self) -> String {
        sportello_platform::mask::fiscal_code(&self.fiscal_code)
    }
}

impl fmt::Debug for Assertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assertion")
            .field(
                "fiscal_code",
                &format_args!("{}", sportello_platform::mask::fiscal_code(&self.fiscal_code)),
            )
            .field("kind", &self.kind)
            .field("level", &self.level)
            .field("provider", &self.provider)
            .finish()
    }
}

/// One public key of a provider, usable with exactly one algorithm.
#[derive(Debug)]
struct VerificationKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Debug)]
struct Provider {
    name: String,
    kind: ProviderKind,
    issuer: String,
    audience: String,
    keys: Vec<VerificationKey>,
}

impl Provider {
    fn key_for(&self, kid: Option<&str>) -> Option<&VerificationKey> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

/// The configured identity providers and their keys; built once at start-up.
#[derive(Debug)]
pub struct IdentityProviders {
    by_issuer: HashMap<String, Provider>,
}

impl IdentityProviders {
    /// Checks every configuration and loads and parses every JWKS. The error names the first
    /// provider that is unusable: empty name/issuer/audience, duplicate name or issuer, neither
    /// or both of `jwks_file`/`jwks`, unreadable file, invalid JWKS, a JWKS with a symmetric or
    /// private key or a malformed key, or without any usable signing key.
    ///
    /// Keys a provider publishes for other uses are skipped, not refused: `use` other than `sig`,
    /// a JWK `alg` other than RS256/ES256/EdDSA, curves other than P-256 and Ed25519, unknown
    /// key types. RSA keys must be 2048–4096 bits. With several usable keys each needs a `kid`,
    /// all different.
    pub fn new(configs: &[ProviderConfig]) -> Result<Self, OidcError> {
        let mut names = HashSet::new();
        let mut by_issuer: HashMap<String, Provider> = HashMap::new();
        for config in configs {
            let fail = |reason: String| OidcError::Config { provider: config.name.clone(), reason };
            if config.name.trim().is_empty() {
                return Err(fail("name is empty".into()));
            }
            if !names.insert(config.name.as_str()) {
                return Err(fail("another provider has the same name".into()));
            }
            if config.issuer.trim().is_empty() {
                return Err(fail("issuer is empty".into()));
            }
            if config.audience.trim().is_empty() {
                return Err(fail("audience is empty".into()));
            }
            if let Some(other) = by_issuer.get(&config.issuer) {
                return Err(fail(format!(
                    "issuer {:?} is already used by provider {:?}",
                    config.issuer, other.name
                )));
            }
            if config.jwks_url.is_some() && config.jwks.is_none() {
                return Err(fail("jwks_url was not fetched".into()));
            }
            let jwks = match (&config.jwks_file, &config.jwks) {
                (Some(_), Some(_)) => {
                    return Err(fail("set either jwks_file or jwks, not both".into()));
                }
                (None, None) => return Err(fail("no keys: set jwks_file or jwks".into())),
                (None, Some(inline)) => inline.clone(),
                (Some(path), None) => std::fs::read_to_string(path)
                    .map_err(|e| fail(format!("cannot read jwks_file {}: {e}", path.display())))?,
            };
            let keys = parse_jwks(&jwks).map_err(fail)?;
            by_issuer.insert(
                config.issuer.clone(),
                Provider {
                    name: config.name.clone(),
                    kind: config.kind,
                    issuer: config.issuer.clone(),
                    audience: config.audience.clone(),
                    keys,
                },
            );
        }
        Ok(Self { by_issuer })
    }

    /// Names of the configured providers (for start-up logs), in no particular order.
    pub fn provider_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.by_issuer.values().map(|p| p.name.as_str())
    }

    /// Verifies an ID token strictly (see the module documentation for every rule) at time
    /// `now_unix` (seconds since the Unix epoch) and maps it to the citizen.
    pub fn verify(&self, id_token: &str, now_unix: u64) -> Result<Assertion, OidcError> {
        if id_token.len() > MAX_TOKEN_LEN {
            return Err(OidcError::Malformed("token is too long"));
        }
        let mut parts = id_token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OidcError::Malformed("not a compact JWS (three dot-separated parts)"));
        };
        let header = decode_json_object(header)
            .ok_or(OidcError::Malformed("header is not a base64url JSON object"))?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => match alg.as_str() {
                "RS256" => Algorithm::RS256,
                "ES256" => Algorithm::ES256,
                "EdDSA" => Algorithm::EdDSA,
                _ => return Err(OidcError::BadSignature),
            },
            _ => return Err(OidcError::Malformed("header has no alg")),
        };
        if header.contains_key("crit") {
            return Err(OidcError::Malformed("critical header extensions are not supported"));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(OidcError::Malformed("kid is not a string")),
        };
        let unverified = decode_json_object(payload)
            .ok_or(OidcError::Malformed("payload is not a base64url JSON object"))?;
        let Some(Value::String(iss)) = unverified.get("iss") else {
            return Err(OidcError::Malformed("iss is missing or not a string"));
        };
        let provider = self.by_issuer.get(iss).ok_or(OidcError::UnknownIssuer)?;
        let key = provider.key_for(kid).ok_or(OidcError::BadSignature)?;
        if key.alg != alg {
            return Err(OidcError::BadSignature);
        }

        // jsonwebtoken checks signature, iss and aud; it cannot take an explicit "now", so its
        // clock checks are off and exp/nbf/iat are checked below against `now_unix`.
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&provider.issuer]);
        validation.set_audience(&[&provider.audience]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(id_token, &key.key, &validation)
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims;

        check_times(&claims, now_unix)?;
        check_azp(&claims, &provider.audience)?;
        match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => {}
            _ => return Err(OidcError::Malformed("sub is missing or not a string")),
        }
        let level = match claims.get("acr") {
            None => return Err(OidcError::InsufficientLevel),
            Some(Value::String(acr)) => {
                AssuranceLevel::from_acr(provider.kind, acr).ok_or(OidcError::InsufficientLevel)?
            }
            Some(_) => return Err(OidcError::Malformed("acr is not a string")),
        };
        let fiscal_code = fiscal_code(&claims)?;
        let once = |name: &str| match claims.get(name) {
            Some(Value::String(v)) if !v.is_empty() => Some(format!("{iss}|{name}:{v}")),
            _ => None,
        };
        let replay_key = once("jti").or_else(|| once("nonce")).unwrap_or_else(|| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(id_token.as_bytes());
            format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
        });
        let usable_until =
            numeric_date(&claims, "exp")?.unwrap_or(now_unix).saturating_add(LEEWAY_SECS);
        Ok(Assertion {
            fiscal_code,
            kind: provider.kind,
            level,
            provider: provider.name.clone(),
            replay_key,
            usable_until,
        })
    }
}

fn map_jwt_error(kind: &ErrorKind) -> OidcError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => OidcError::BadSignature,
        ErrorKind::InvalidIssuer => OidcError::UnknownIssuer,
        ErrorKind::InvalidAudience => OidcError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => OidcError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => {
            OidcError::Malformed("exp is missing or not a non-negative number")
        }
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::ImmatureSignature => OidcError::NotYetValid,
        ErrorKind::InvalidClaimFormat(_) => OidcError::Malformed("a claim has an invalid format"),
        _ => OidcError::Malformed("token cannot be decoded"),
    }
}

fn decode_json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A NumericDate claim as whole seconds; `Ok(None)` if absent.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, OidcError> {
    const BAD: OidcError = OidcError::Malformed("exp, iat and nbf must be non-negative numbers");
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Ok(Some(secs)),
            (None, Some(secs)) if secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64 => {
                Ok(Some(secs.floor() as u64))
            }
            _ => Err(BAD),
        },
        Some(_) => Err(BAD),
    }
}

fn check_times(claims: &Map<String, Value>, now: u64) -> Result<(), OidcError> {
    let exp = numeric_date(claims, "exp")?.ok_or(OidcError::Malformed("exp is missing"))?;
    let iat = numeric_date(claims, "iat")?.ok_or(OidcError::Malformed("iat is missing"))?;
    let nbf = numeric_date(claims, "nbf")?;
    if now >= exp.saturating_add(LEEWAY_SECS) {
        return Err(OidcError::Expired);
    }
    let latest_start = now.saturating_add(LEEWAY_SECS);
    if iat > latest_start || nbf.is_some_and(|nbf| nbf > latest_start) {
        return Err(OidcError::NotYetValid);
    }
    Ok(())
}

/// OpenID Connect Core 3.1.3.7: with several audiences an `azp` naming us is required; if
/// present it must name us.
fn check_azp(claims: &Map<String, Value>, audience: &str) -> Result<(), OidcError> {
    let several = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == audience => Ok(()),
        Some(_) => Err(OidcError::WrongAudience),
        None if several => Err(OidcError::WrongAudience),
        None => Ok(()),
    }
}

fn fiscal_code(claims: &Map<String, Value>) -> Result<String, OidcError> {
    let mut found: Option<String> = None;
    for name in FISCAL_NUMBER_CLAIMS {
        let Some(value) = claims.get(name) else { continue };
        let code = value
            .as_str()
            .and_then(normalize_fiscal_number)
            .ok_or(OidcError::MissingFiscalNumber)?;
        match &found {
            Some(previous) if *previous != code => {
                return Err(OidcError::Malformed("fiscal number claims disagree"));
            }
            _ => found = Some(code),
        }
    }
    found.ok_or(OidcError::MissingFiscalNumber)
}

fn normalize_fiscal_number(raw: &str) -> Option<String> {
    let code = match raw.get(..6) {
        Some(prefix) if prefix.eq_ignore_ascii_case("TINIT-") => &raw[6..],
        _ => raw,
    };
    (code.len() == 16 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| code.to_ascii_uppercase())
}

fn parse_jwks(json: &str) -> Result<Vec<VerificationKey>, String> {
    if json.len() > MAX_JWKS_LEN {
        return Err(format!("JWKS is larger than {MAX_JWKS_LEN} bytes"));
    }
    let doc: Value =
        serde_json::from_str(json).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
    let jwks = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "JWKS has no \"keys\" array".to_string())?;
    let mut keys: Vec<VerificationKey> = Vec::new();
    for (index, jwk) in jwks.iter().enumerate() {
        let jwk = jwk.as_object().ok_or_else(|| format!("key #{index} is not a JSON object"))?;
        if let Some(key) = parse_jwk(jwk).map_err(|reason| format!("key #{index}: {reason}"))? {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err("JWKS holds no usable signing key (RS256, ES256 or EdDSA)".into());
    }
    if keys.len() > 1 {
        let mut kids = HashSet::new();
        for key in &keys {
            let kid = key.kid.as_deref().ok_or("with several keys every key needs a kid")?;
            if !kids.insert(kid) {
                return Err(format!("duplicate kid {kid:?}"));
            }
        }
    }
    Ok(keys)
}

/// Optional string member of a JWK.
fn jwk_str<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

/// Required base64url member of a JWK, decoded.
fn jwk_bytes(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = jwk_str(jwk, name)?.ok_or_else(|| format!("\"{name}\" is missing"))?;
    URL_SAFE_NO_PAD.decode(text).map_err(|_| format!("\"{name}\" is not base64url"))
}

/// A usable key, `Ok(None)` for a key published for something we do not accept.
fn parse_jwk(jwk: &Map<String, Value>) -> Result<Option<VerificationKey>, String> {
    let kty = jwk_str(jwk, "kty")?.ok_or("\"kty\" is missing")?;
    let kid = jwk_str(jwk, "kid")?.map(str::to_owned);
    if kty == "oct" {
        return Err("symmetric (oct) keys are not accepted".into());
    }
    if jwk.contains_key("d") {
        return Err("contains private key material (\"d\")".into());
    }
    if jwk_str(jwk, "use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = match kty {
        "RSA" => Algorithm::RS256,
        "EC" if jwk_str(jwk, "crv")? == Some("P-256") => Algorithm::ES256,
        "OKP" if jwk_str(jwk, "crv")? == Some("Ed25519") => Algorithm::EdDSA,
        _ => return Ok(None),
    };
    let implied = match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => "EdDSA",
    };
    if jwk_str(jwk, "alg")?.is_some_and(|a| a != implied) {
        return Ok(None);
    }
    let key = match alg {
        Algorithm::RS256 => {
            let n = jwk_bytes(jwk, "n")?;
            let e = jwk_bytes(jwk, "e")?;
            let n_bits = significant_bits(&n);
            if !(2048..=4096).contains(&n_bits) {
                return Err(format!("RSA modulus has {n_bits} bits, not 2048-4096"));
            }
            let e_value = e
                .iter()
                .skip_while(|b| **b == 0)
                .try_fold(0u64, |acc, b| (acc < (1 << 32)).then(|| (acc << 8) | u64::from(*b)));
            if !e_value.is_some_and(|e| e >= 3 && e % 2 == 1 && e < (1 << 33)) {
                return Err("RSA exponent is not valid".into());
            }
            DecodingKey::from_rsa_raw_components(&n, &e)
        }
        Algorithm::ES256 => {
            let x = jwk_bytes(jwk, "x")?;
            let y = jwk_bytes(jwk, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes each".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            // For EC keys jsonwebtoken's "DER" is the SEC1 point, as from_ec_components builds.
            DecodingKey::from_ec_der(&point)
        }
        _ => {
            let x = jwk_bytes(jwk, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 public key must be 32 bytes".into());
            }
            // For Ed25519 jsonwebtoken's "DER" is the raw key, as from_ed_components builds.
            DecodingKey::from_ed_der(&x)
        }
    };
    // Build a verifier once so that a point not on the curve fails now, not at login. A
    // bad signature gives Ok(false); only an unusable key gives Err.
    if jsonwebtoken::crypto::verify("AAAA", b"probe", &key, alg).is_err() {
        return Err(format!("{kty} public key is not valid"));
    }
    Ok(Some(VerificationKey { kid, alg, key }))
}

fn significant_bits(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        None => 0,
        Some(i) => (be.len() - i - 1) * 8 + (8 - be[i].leading_zeros() as usize),
    }
}

/// A fake identity provider for tests: signs ID tokens with a freshly generated Ed25519 key.
#[cfg(any(test, feature = "test-support"))]
pub mod fake {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    use ed25519_dalek::SigningKey;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{json, Value};

    use super::{ProviderConfig, ProviderKind};

    /// An identity provider with its own Ed25519 key pair, for tests.
    #[derive(Debug)]
    pub struct FakeIdp {
        issuer: String,
        audience: String,
        kid: String,
        public_x: String,
        signing_key: EncodingKey,
    }

    impl FakeIdp {
        /// A provider issuing tokens as `issuer` for the client `audience`, with a new key.
        pub fn new(issuer: &str, audience: &str) -> Self {
            let key = SigningKey::generate(&mut rand_core::OsRng);
            let der = key.to_pkcs8_der().expect("an Ed25519 key encodes as PKCS#8");
            let public_x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
            let kid = format!("fake-{}", &public_x[..16]);
            Self {
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                kid,
                public_x,
                signing_key: EncodingKey::from_ed_der(der.as_bytes()),
            }
        }

        /// The `iss` of its tokens.
        pub fn issuer(&self) -> &str {
            &self.issuer
        }

        /// The `aud` of its tokens.
        pub fn audience(&self) -> &str {
            &self.audience
        }

        /// The `kid` of its key.
        pub fn kid(&self) -> &str {
            &self.kid
        }

        /// A JWKS holding its public key (`kty` OKP, `crv` Ed25519, `kid`).
        pub fn jwks(&self) -> String {
            json!({ "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "use": "sig",
                "alg": "EdDSA",
                "kid": self.kid,
                "x": self.public_x,
            }]})
            .to_string()
        }

        /// A provider configuration trusting it, with the JWKS inline.
        pub fn config(&self, name: &str, kind: ProviderKind) -> ProviderConfig {
            ProviderConfig {
                name: name.to_owned(),
                kind,
                issuer: self.issuer.clone(),
                audience: self.audience.clone(),
                jwks_file: None,
                jwks_url: None,
                jwks: Some(self.jwks()),
            }
        }

        /// The claims of a normal ID token: `iss`, `aud`, `sub`, `iat` = `now_unix`,
        /// `exp` = `now_unix + lifetime_secs` (negative lifetimes give expired tokens), `acr`,
        /// and `fiscalNumber` = `TINIT-<fiscal_code>` (the prefix is not doubled).
        pub fn claims(
            &self,
            fiscal_code: &str,
            acr: &str,
            lifetime_secs: i64,
            now_unix: u64,
        ) -> Value {
            let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
            let exp = now.saturating_add(lifetime_secs).max(0);
            let fiscal_number = if fiscal_code.starts_with("TINIT-") {
                fiscal_code.to_owned()
            } else {
                format!("TINIT-{fiscal_code}")
            };
            json!({
                "iss": self.issuer,
                "aud": self.audience,
                "sub": "fake-subject-0001",
                "iat": now_unix,
                "exp": exp,
                "acr": acr,
                "fiscalNumber": fiscal_number,
                "jti": uuid::Uuid::new_v4().to_string(),
            })
        }

        /// A signed (EdDSA, with `kid`) ID token with [`claims`](Self::claims).
        pub fn id_token(
            &self,
            fiscal_code: &str,
            acr: &str,
            lifetime_secs: i64,
            now_unix: u64,
        ) -> String {
            self.sign(&self.claims(fiscal_code, acr, lifetime_secs, now_unix))
        }

        /// Signs arbitrary claims (EdDSA, header with its `kid`), for negative tests.
        pub fn sign(&self, claims: &Value) -> String {
            self.sign_with_kid(Some(&self.kid), claims)
        }

        /// Signs arbitrary claims with any `kid` in the header, or none.
        pub fn sign_with_kid(&self, kid: Option<&str>, claims: &Value) -> String {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&header, claims, &self.signing_key)
                .expect("signing with a valid Ed25519 key cannot fail")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeIdp;
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const CF: &str = "RSSMRA85T10A562S";
    const SPID_ISS: &str = "https://spid.example.it";
    const CIE_ISS: &str = "https://cie.example.it";
    const CLIENT: &str = "https://sportello.example.it/oidc/rp";

    fn spid() -> (FakeIdp, IdentityProviders) {
        let idp = FakeIdp::new(SPID_ISS, CLIENT);
        let providers = IdentityProviders::new(&[idp.config("spid-test", ProviderKind::Spid)])
            .expect("valid provider");
        (idp, providers)
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn config_error(configs: &[ProviderConfig]) -> (String, String) {
        match IdentityProviders::new(configs) {
            Err(OidcError::Config { provider, reason }) => (provider, reason),
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn valid_spid_l2_token_maps_to_the_citizen() {
        let (idp, providers) = spid();
        let token = idp.id_token(CF, ACR_SPID_L2, 300, NOW);
        let assertion = providers.verify(&token, NOW).expect("valid token");
        assert_eq!(assertion.fiscal_code, CF);
        assert_eq!(assertion.kind, ProviderKind::Spid);
        assert_eq!(assertion.level, AssuranceLevel::SpidL2);
        assert_eq!(assertion.provider, "spid-test");
        assert_eq!(assertion.level.label(), "SPID L2");
    }

    #[test]
    fn valid_spid_l3_token_maps_to_spid_l3() {
        let (idp, providers) = spid();
        let assertion = providers.verify(&idp.id_token(CF, ACR_SPID_L3, 300, NOW), NOW).unwrap();
        assert_eq!(assertion.level, AssuranceLevel::SpidL3);
        assert_eq!(assertion.level.label(), "SPID L3");
    }

    #[test]
    fn valid_cie_token_maps_to_cie_l3_for_every_accepted_acr() {
        let idp = FakeIdp::new(CIE_ISS, CLIENT);
        let providers = IdentityProviders::new(&[idp.config("cie", ProviderKind::Cie)]).unwrap();
        for acr in CIE_ACCEPTED_ACR {
            let assertion = providers.verify(&idp.id_token(CF, acr, 300, NOW), NOW).unwrap();
            assert_eq!(assertion.kind, ProviderKind::Cie, "{acr}");
            assert_eq!(assertion.level, AssuranceLevel::CieL3, "{acr}");
            assert_eq!(assertion.level.label(), "CIE");
            assert_eq!(assertion.provider, "cie");
        }
    }

    #[test]
    fn cie_below_level_3_is_refused() {
        let idp = FakeIdp::new(CIE_ISS, CLIENT);
        let providers = IdentityProviders::new(&[idp.config("cie", ProviderKind::Cie)]).unwrap();
        for acr in [ACR_SPID_L1, ACR_SPID_L2, "L2", "https://cie.gov.it/L2"] {
            let err = providers.verify(&idp.id_token(CF, acr, 300, NOW), NOW).unwrap_err();
            assert_eq!(err, OidcError::InsufficientLevel, "{acr}");
        }
    }

    #[test]
    fn spid_l1_is_refused() {
        let (idp, providers) = spid();
        let err = providers.verify(&idp.id_token(CF, ACR_SPID_L1, 300, NOW), NOW).unwrap_err();
        assert_eq!(err, OidcError::InsufficientLevel);
    }

    #[test]
    fn unknown_or_missing_acr_is_refused() {
        let (idp, providers) = spid();
        // CIE-only spellings, case variants and other strings are not SPID levels.
        for acr in ["L3", "https://cie.gov.it/L3", "https://www.spid.gov.it/spidl2", "", "SpidL2"] {
            let err = providers.verify(&idp.id_token(CF, acr, 300, NOW), NOW).unwrap_err();
            assert_eq!(err, OidcError::InsufficientLevel, "{acr:?}");
        }
        let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        claims.as_object_mut().unwrap().remove("acr");
        assert_eq!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::InsufficientLevel));
        claims["acr"] = json!(["https://www.spid.gov.it/SpidL2"]);
        assert!(matches!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::Malformed(_))));
    }

    #[test]
    fn expired_token_is_refused() {
        let (idp, providers) = spid();
        let token = idp.id_token(CF, ACR_SPID_L2, 300, NOW);
        assert_eq!(providers.verify(&token, NOW + 300 + LEEWAY_SECS), Err(OidcError::Expired));
        assert_eq!(providers.verify(&token, NOW + 10_000), Err(OidcError::Expired));
        let stale = idp.id_token(CF, ACR_SPID_L2, -61, NOW);
        assert_eq!(providers.verify(&stale, NOW), Err(OidcError::Expired));
    }

    #[test]
    fn expired_within_leeway_is_accepted() {
        let (idp, providers) = spid();
        let token = idp.id_token(CF, ACR_SPID_L2, 300, NOW);
        assert!(providers.verify(&token, NOW + 300).is_ok());
        assert!(providers.verify(&token, NOW + 300 + LEEWAY_SECS - 1).is_ok());
        assert!(providers.verify(&idp.id_token(CF, ACR_SPID_L2, -30, NOW), NOW).is_ok());
    }

    #[test]
    fn not_yet_valid_token_is_refused() {
        let (idp, providers) = spid();
        // Issued 10 minutes in the future.
        let token = idp.id_token(CF, ACR_SPID_L2, 300, NOW + 600);
        assert_eq!(providers.verify(&token, NOW), Err(OidcError::NotYetValid));
        // nbf in the future.
        let mut claims = idp.claims(CF, ACR_SPID_L2, 900, NOW);
        claims["nbf"] = json!(NOW + 120);
        assert_eq!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::NotYetValid));
        // Within the leeway both are fine.
        claims["nbf"] = json!(NOW + LEEWAY_SECS);
        claims["iat"] = json!(NOW + LEEWAY_SECS);
        assert!(providers.verify(&idp.sign(&claims), NOW).is_ok());
    }

    #[test]
    fn missing_or_non_numeric_times_are_malformed() {
        let (idp, providers) = spid();
        for (claim, value) in
            [("exp", Value::Null), ("iat", Value::Null), ("exp", json!("soon")), ("nbf", json!(-5))]
        {
            let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(claim);
            } else {
                claims[claim] = value;
            }
            let err = providers.verify(&idp.sign(&claims), NOW).unwrap_err();
            assert!(matches!(err, OidcError::Malformed(_)), "{claim}: {err:?}");
        }
        // Fractional NumericDates are allowed.
        let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        claims["exp"] = json!(NOW as f64 + 299.5);
        assert!(providers.verify(&idp.sign(&claims), NOW).is_ok());
    }

    #[test]
    fn wrong_audience_is_refused() {
        let (idp, providers) = spid();
        let other = FakeIdp::new(SPID_ISS, "https://someone-else.example.it");
        // Signed with the right key but for another client.
        let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        claims["aud"] = json!(other.audience());
        assert_eq!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::WrongAudience));
        claims["aud"] = json!([]);
        assert_eq!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::WrongAudience));
        claims.as_object_mut().unwrap().remove("aud");
        assert_eq!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::WrongAudience));
        // azp naming another client.
        let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        claims["azp"] = json!("https://someone-else.example.it");
        assert_eq!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::WrongAudience));
        // Several audiences without azp.
        claims["aud"] = json!([CLIENT, "https://someone-else.example.it"]);
        claims.as_object_mut().unwrap().remove("azp");
        assert_eq!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::WrongAudience));
    }

    #[test]
    fn audience_array_containing_ours_is_accepted() {
        let (idp, providers) = spid();
        let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        claims["aud"] = json!([CLIENT]);
        assert!(providers.verify(&idp.sign(&claims), NOW).is_ok());
        claims["aud"] = json!(["https://someone-else.example.it", CLIENT]);
        claims["azp"] = json!(CLIENT);
        assert!(providers.verify(&idp.sign(&claims), NOW).is_ok());
    }

    #[test]
    fn unknown_issuer_is_refused() {
        let (_idp, providers) = spid();
        let stranger = FakeIdp::new("https://evil.example.com", CLIENT);
        let token = stranger.id_token(CF, ACR_SPID_L2, 300, NOW);
        assert_eq!(providers.verify(&token, NOW), Err(OidcError::UnknownIssuer));
        // Issuers are compared exactly.
        let near = FakeIdp::new(&format!("{SPID_ISS}/"), CLIENT);
        let token = near.id_token(CF, ACR_SPID_L2, 300, NOW);
        assert_eq!(providers.verify(&token, NOW), Err(OidcError::UnknownIssuer));
    }

    #[test]
    fn token_signed_by_another_key_is_refused() {
        let (idp, providers) = spid();
        let impostor = FakeIdp::new(SPID_ISS, CLIENT);
        let claims = impostor.claims(CF, ACR_SPID_L2, 300, NOW);
        // With its own kid: no such key at the provider.
        assert_eq!(providers.verify(&impostor.sign(&claims), NOW), Err(OidcError::BadSignature));
        // Claiming the genuine key's kid: the signature does not verify.
        let forged = impostor.sign_with_kid(Some(idp.kid()), &claims);
        assert_eq!(providers.verify(&forged, NOW), Err(OidcError::BadSignature));
        // Without kid (the provider has a single key, which is then used).
        let forged = impostor.sign_with_kid(None, &claims);
        assert_eq!(providers.verify(&forged, NOW), Err(OidcError::BadSignature));
    }

    #[test]
    fn token_without_kid_uses_the_single_key() {
        let (idp, providers) = spid();
        let token = idp.sign_with_kid(None, &idp.claims(CF, ACR_SPID_L2, 300, NOW));
        assert_eq!(providers.verify(&token, NOW).unwrap().fiscal_code, CF);
    }

    #[test]
    fn token_without_kid_is_refused_when_the_provider_has_several_keys() {
        let idp = FakeIdp::new(SPID_ISS, CLIENT);
        let next = FakeIdp::new(SPID_ISS, CLIENT);
        let mut jwks: Value = serde_json::from_str(&idp.jwks()).unwrap();
        let next_jwks: Value = serde_json::from_str(&next.jwks()).unwrap();
        jwks["keys"].as_array_mut().unwrap().push(next_jwks["keys"][0].clone());
        let mut config = idp.config("spid", ProviderKind::Spid);
        config.jwks = Some(jwks.to_string());
        let providers = IdentityProviders::new(&[config]).unwrap();
        let claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        // Either key verifies a token naming it (key rotation).
        assert!(providers.verify(&idp.sign(&claims), NOW).is_ok());
        assert!(providers.verify(&next.sign(&claims), NOW).is_ok());
        let token = idp.sign_with_kid(None, &claims);
        assert_eq!(providers.verify(&token, NOW), Err(OidcError::BadSignature));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let (idp, providers) = spid();
        let token = idp.id_token(CF, ACR_SPID_L2, 300, NOW);
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims = idp.claims("BNCGNN80A01H501U", ACR_SPID_L2, 300, NOW);
        let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
        assert_eq!(providers.verify(&tampered, NOW), Err(OidcError::BadSignature));
        // Raising the level.
        claims = idp.claims(CF, ACR_SPID_L3, 300, NOW);
        let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
        assert_eq!(providers.verify(&tampered, NOW), Err(OidcError::BadSignature));
        // Truncated signature.
        let truncated = &token[..token.len() - 4];
        assert!(providers.verify(truncated, NOW).is_err());
    }

    #[test]
    fn alg_none_token_is_refused() {
        let (idp, providers) = spid();
        let claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        for alg in ["none", "None", "NONE"] {
            let header = json!({ "alg": alg, "typ": "JWT", "kid": idp.kid() });
            let unsigned = format!("{}.{}.", b64(&header), b64(&claims));
            assert_eq!(providers.verify(&unsigned, NOW), Err(OidcError::BadSignature), "{alg}");
            // Even with the genuine signature attached.
            let genuine = idp.sign(&claims);
            let signature = genuine.rsplit('.').next().unwrap();
            let relabelled = format!("{}.{}.{signature}", b64(&header), b64(&claims));
            assert_eq!(providers.verify(&relabelled, NOW), Err(OidcError::BadSignature));
        }
    }

    #[test]
    fn hs256_token_is_refused() {
        let (idp, providers) = spid();
        let claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        // Algorithm confusion: the public key (as published and as raw bytes) used as HMAC secret.
        let jwks: Value = serde_json::from_str(&idp.jwks()).unwrap();
        let x = jwks["keys"][0]["x"].as_str().unwrap();
        let secrets = [x.as_bytes().to_vec(), URL_SAFE_NO_PAD.decode(x).unwrap()];
        for secret in secrets {
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                let mut header = Header::new(alg);
                header.kid = Some(idp.kid().to_owned());
                let key = EncodingKey::from_secret(&secret);
                let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
                assert_eq!(providers.verify(&token, NOW), Err(OidcError::BadSignature));
            }
        }
    }

    #[test]
    fn missing_fiscal_number_is_refused() {
        let (idp, providers) = spid();
        let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        claims.as_object_mut().unwrap().remove("fiscalNumber");
        assert_eq!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::MissingFiscalNumber));
    }

    #[test]
    fn malformed_fiscal_number_is_refused() {
        let (idp, providers) = spid();
        for bad in [
            json!("TINIT-RSSMRA85T10A562"),   // 15 characters
            json!("TINIT-RSSMRA85T10A562SX"), // 17
            json!("TINIT-RSSMRA85T10A56-S"),  // not alphanumeric
            json!("TINIT-RSSMRA85T10A562È"),  // not ASCII
            json!("TINFR-RSSMRA85T10A562S"),  // another country
            json!("TINIT-"),
            json!(""),
            json!(null),
            json!(12345),
            json!(["TINIT-RSSMRA85T10A562S"]),
        ] {
            let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
            claims["fiscalNumber"] = bad.clone();
            let err = providers.verify(&idp.sign(&claims), NOW).unwrap_err();
            assert_eq!(err, OidcError::MissingFiscalNumber, "{bad}");
        }
    }

    #[test]
    fn fiscal_number_is_normalised_and_read_from_every_claim_name() {
        let (idp, providers) = spid();
        for name in FISCAL_NUMBER_CLAIMS {
            for value in ["TINIT-RSSMRA85T10A562S", "tinit-rssmra85t10a562s", "RSSMRA85T10A562S"] {
                let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
                claims.as_object_mut().unwrap().remove("fiscalNumber");
                claims[name] = json!(value);
                let assertion = providers.verify(&idp.sign(&claims), NOW).unwrap();
                assert_eq!(assertion.fiscal_code, CF, "{name}={value}");
            }
        }
        // Two claims that agree are fine, two that disagree are not.
        let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        claims["fiscal_number"] = json!(CF);
        assert!(providers.verify(&idp.sign(&claims), NOW).is_ok());
        claims["fiscal_number"] = json!("TINIT-BNCGNN80A01H501U");
        assert!(matches!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::Malformed(_))));
    }

    #[test]
    fn missing_sub_is_malformed() {
        let (idp, providers) = spid();
        let mut claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        claims.as_object_mut().unwrap().remove("sub");
        assert!(matches!(providers.verify(&idp.sign(&claims), NOW), Err(OidcError::Malformed(_))));
    }

    #[test]
    fn garbage_tokens_are_malformed() {
        let (idp, providers) = spid();
        let claims = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        let good = idp.sign(&claims);
        let parts: Vec<&str> = good.split('.').collect();
        let crit = json!({ "alg": "EdDSA", "kid": idp.kid(), "crit": ["exp"] });
        let no_iss = {
            let mut c = claims.clone();
            c.as_object_mut().unwrap().remove("iss");
            c
        };
        let cases = [
            String::new(),
            "not-a-token".into(),
            "a.b".into(),
            format!("{good}.extra"),
            format!("!!!.{}.{}", parts[1], parts[2]),
            format!("{}.!!!.{}", parts[0], parts[2]),
            format!("{}.{}.{}", b64(&json!("just a string")), parts[1], parts[2]),
            format!("{}.{}.{}", b64(&json!({ "kid": idp.kid() })), parts[1], parts[2]),
            format!("{}.{}.{}", b64(&crit), parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], b64(&no_iss), parts[2]),
            format!("{}.{}.{}", parts[0], parts[1], "x".repeat(MAX_TOKEN_LEN)),
        ];
        for token in cases {
            let err = providers.verify(&token, NOW).unwrap_err();
            assert!(matches!(err, OidcError::Malformed(_)), "{err:?}");
        }
    }

    // TEST-ONLY keys, generated for these tests with openssl; they protect nothing.
    const TEST_RSA_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAtJqwXF7Q4w/WQ6/FdvEsidztlegkN7jDjWPjXfhuwSCS3y55
iT7Z+TAo2d5g1kdKNzWDc0qeoiBg7+GYkeY0ppaltDQ2W/4HNXQZYkjANDtqYoha
/F/2jDFnWo1yVtpS5TiPAY8WxrBweIfbhY8Cb6W4ADOGKyNyTGcS9DQq5nE8mlni
QGaqT5AHweeG4FEpQOSXJeq2a1rwDboHrocUAufWfP2+AQnHv7Jpy2AqzUI908Cl
x7PO3ESOjTzkyLGXUTErauBArYeUsWldFFVYRdqBAmmJV/IQYistD/47laLETNIl
PxP45l5GO2Y3Z9wgjdHTV3t5tW/+BrBtmCMqywIDAQABAoIBABKlAYiXqpLg+Kqw
2P7SyQP2eySFpu+FsyfD5HNis/Rba4N/exaFwYpDGYSHEOeDdpBFMFZ/oT7K1EG6
FWkXzd8AywcpI2TTJbqz9fGP4cptSSn2Olu21cSv+PkqhF+eVv5znKJ5kM1e5k2F
y6N5xF5ISmWNls/vRIZ0rEqU9B9+lppHWIYAirKgxbM9UHFQHoarFlDZuK6G0b1O
P2zsI2jnLzPuqoFmx+0Ejjje6WYnP2VF1mBwsWAis+KFNgIZUcQ50cSHofXYdHL4
ykpVFvmPUnGnhHB8sdqJ02C4V7neYCSO3yolFFD172o3YZGFWJepElG2wUDfuYVA
8d7dQ0ECgYEA6rmdK0myj7BoYO3inDYoz7qeYdHkG44gZJNCHE7152AAuulFyqH4
SKdrrxsvAvDWZHUTkbpK45NJyuErjUukJBZ0SiSV2u9JPDtclyQSullEXgvcz1Hl
t7ZNZc7H3PNZMLZzVebgUGsz6ccSloDWIvXkeiD4mhxRmkMt+5dARmECgYEAxPlL
yb5SgXJWN8xTLYnpMP7Noak8XYgmUQ03ux+Pv8mDUxs4xdl9LxZkMjCo8OE6PDVf
j7Jhn5Cd4jYvkSeWzroAxj61NV4x2QtJdKHlTyIdvE8nyJ3JXCs6mS9jeySsdawt
WnmAsRGgH9T/hca2gEX+wTmzDiC3/CA+6YdVKKsCgYA/C9oWXXYzuBthJaQ/dyCh
IywVdC4D5Ln4qcERH3hXTGcFzVBsq/KneSioYPHQpWXAl93Iv7QLym0ArFhpXE7b
TpivrYH+y1Ttc7hb9Fl/aii95gvKN+Iu5S2G0fLG+yoStn7mLNxFXXYVLd5lRHe/
7jIPR7nekwqsF61LLYYbIQKBgFFz+dgyYPHwsyCd2OOi/RBqveQVFMZkz9uCiMJT
ueEIVsseHasLVg4Lx2FN5/68VJWjSKImlOIkLnXmDGONKHrSRhG0ysCH9DsZxMV7
UVUY+YzuergmL6dypOfFxfCdaMe8bIDWb9ZJQJsJPKU4WC3RRBjpYFb+Rrb3Kqzt
btTDAoGBALBmsp5TxjWbTsl3CIM6d2nCpx3govmgGVggFJH/nEvVqrKKw1v0Q0kN
DDRcObppIMXLEYFAbJKl7P+ri4x0a4vM/vPZGpxAicTO4RdtnNL8Z2bOZCys5cm9
ZSJndLKG+e0/ehcQaHyGbhnDnWmLDCcyuwWlx4oVTmXYToyhpJoz
-----END RSA PRIVATE KEY-----
";
    const TEST_EC_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgiYhubSINE+0iWd9j
ekvS4FhsNnfu5QZaGs8c4lQIxrChRANCAAQiXbS9TMUHU5uvQseHbF+xMIaAE6iu
IZ/40BeOKINlT4NjFoTr18jneu6lVrFVCjovbudwIHwLA3+Zi4+4M12/
-----END PRIVATE KEY-----
";

    /// A provider with one RS256 key ("rsa-1") and one ES256 key ("ec-1").
    fn rsa_and_ec() -> (EncodingKey, EncodingKey, IdentityProviders) {
        let rsa = EncodingKey::from_rsa_pem(TEST_RSA_PEM.as_bytes()).unwrap();
        let ec = EncodingKey::from_ec_pem(TEST_EC_PEM.as_bytes()).unwrap();
        let mut rsa_jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
        rsa_jwk.common.key_id = Some("rsa-1".into());
        let mut ec_jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
        ec_jwk.common.key_id = Some("ec-1".into());
        let jwks = json!({ "keys": [rsa_jwk, ec_jwk] }).to_string();
        let config = ProviderConfig {
            name: "spid-rsa-ec".into(),
            kind: ProviderKind::Spid,
            issuer: SPID_ISS.into(),
            audience: CLIENT.into(),
            jwks_file: None,
            jwks_url: None,
            jwks: Some(jwks),
        };
        (rsa, ec, IdentityProviders::new(&[config]).unwrap())
    }

    fn standard_claims() -> Value {
        FakeIdp::new(SPID_ISS, CLIENT).claims(CF, ACR_SPID_L2, 300, NOW)
    }

    fn encode(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    #[test]
    fn rs256_and_es256_tokens_are_accepted() {
        let (rsa, ec, providers) = rsa_and_ec();
        let claims = standard_claims();
        let token = encode(Algorithm::RS256, "rsa-1", &rsa, &claims);
        assert_eq!(providers.verify(&token, NOW).unwrap().fiscal_code, CF);
        let token = encode(Algorithm::ES256, "ec-1", &ec, &claims);
        assert_eq!(providers.verify(&token, NOW).unwrap().fiscal_code, CF);
    }

    #[test]
    fn algorithm_must_match_the_key_type() {
        let (rsa, ec, providers) = rsa_and_ec();
        let claims = standard_claims();
        // Valid signatures, but the kid names a key of the other type.
        let token = encode(Algorithm::RS256, "ec-1", &rsa, &claims);
        assert_eq!(providers.verify(&token, NOW), Err(OidcError::BadSignature));
        let token = encode(Algorithm::ES256, "rsa-1", &ec, &claims);
        assert_eq!(providers.verify(&token, NOW), Err(OidcError::BadSignature));
        // Algorithms of the right family that are not accepted.
        for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
            let token = encode(alg, "rsa-1", &rsa, &claims);
            assert_eq!(providers.verify(&token, NOW), Err(OidcError::BadSignature), "{alg:?}");
        }
    }

    fn temp_path(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("oidc-test-{}-{tag}-{n}.json", std::process::id()))
    }

    #[test]
    fn jwks_file_is_loaded_from_disk() {
        let idp = FakeIdp::new(CIE_ISS, CLIENT);
        let path = temp_path("jwks");
        std::fs::write(&path, idp.jwks()).unwrap();
        let mut config = idp.config("cie-file", ProviderKind::Cie);
        config.jwks = None;
        config.jwks_file = Some(path.clone());
        let providers = IdentityProviders::new(&[config]);
        std::fs::remove_file(&path).unwrap();
        let assertion =
            providers.unwrap().verify(&idp.id_token(CF, ACR_SPID_L3, 300, NOW), NOW).unwrap();
        assert_eq!(assertion.provider, "cie-file");
        assert_eq!(assertion.level, AssuranceLevel::CieL3);
    }

    #[test]
    fn missing_jwks_file_fails_new_naming_the_provider() {
        let idp = FakeIdp::new(SPID_ISS, CLIENT);
        let mut config = idp.config("spid-missing-file", ProviderKind::Spid);
        config.jwks = None;
        config.jwks_file = Some(temp_path("does-not-exist"));
        let (provider, reason) = config_error(&[config]);
        assert_eq!(provider, "spid-missing-file");
        assert!(reason.contains("jwks_file"), "{reason}");
    }

    #[test]
    fn broken_jwks_fails_new_naming_the_provider() {
        let idp = FakeIdp::new(SPID_ISS, CLIENT);
        let good: Value = serde_json::from_str(&idp.jwks()).unwrap();
        let key = good["keys"][0].clone();
        let with = |field: &str, value: Value| {
            let mut k = key.clone();
            k[field] = value;
            json!({ "keys": [k] }).to_string()
        };
        let broken = [
            "not json".to_string(),
            "{}".into(),
            r#"{"keys": []}"#.into(),
            r#"{"keys": "nope"}"#.into(),
            r#"{"keys": [42]}"#.into(),
            with("x", json!("AAAA")),                        // too short
            with("x", json!("not base64url!")),
            with("x", json!(URL_SAFE_NO_PAD.encode([2u8; 32]))), // not a curve point
            with("kty", json!("oct")),
            with("d", json!(URL_SAFE_NO_PAD.encode([1u8; 32]))),
            with("kid", json!(7)),
            with("use", json!("enc")),                       // nothing usable left
            with("alg", json!("HS256")),                     // nothing usable left
            json!({ "keys": [key.clone(), key.clone()] }).to_string(), // duplicate kid
            json!({ "keys": [{ "kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB" }] })
                .to_string(), // RSA-1024
            json!({ "keys": [{ "kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "AA" }] })
                .to_string(), // bad exponent
            json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([1u8; 32]) }] })
                .to_string(), // not on the curve
            json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1u8; 31]), "y": URL_SAFE_NO_PAD.encode([1u8; 32]) }] })
                .to_string(), // short coordinate
        ];
        for jwks in broken {
            let mut config = idp.config("spid-broken", ProviderKind::Spid);
            config.jwks = Some(jwks.clone());
            let mut ok = idp.config("spid-ok", ProviderKind::Spid);
            ok.issuer = "https://other.example.it".into();
            let (provider, reason) = config_error(&[ok, config]);
            assert_eq!(provider, "spid-broken", "{jwks}");
            assert!(!reason.is_empty());
            let message = OidcError::Config { provider, reason }.to_string();
            assert!(message.contains("spid-broken"), "{message}");
        }
    }

    #[test]
    fn jwks_skips_keys_not_for_signing_with_accepted_algorithms() {
        let idp = FakeIdp::new(SPID_ISS, CLIENT);
        let mut jwks: Value = serde_json::from_str(&idp.jwks()).unwrap();
        let rsa = EncodingKey::from_rsa_pem(TEST_RSA_PEM.as_bytes()).unwrap();
        let mut enc =
            serde_json::to_value(Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap()).unwrap();
        enc["use"] = json!("enc");
        enc["alg"] = json!("RSA-OAEP");
        enc["kid"] = json!("enc-1");
        let mut ps = enc.clone();
        ps["use"] = json!("sig");
        ps["alg"] = json!("PS256");
        ps["kid"] = json!("ps-1");
        let keys = jwks["keys"].as_array_mut().unwrap();
        keys.push(enc);
        keys.push(ps);
        keys.push(json!({ "kty": "OKP", "crv": "X25519", "kid": "x-1", "x": "AAAA" }));
        keys.push(json!({ "kty": "EC", "crv": "P-384", "kid": "ec384", "x": "AA", "y": "AA" }));
        let mut config = idp.config("spid", ProviderKind::Spid);
        config.jwks = Some(jwks.to_string());
        let providers = IdentityProviders::new(&[config]).unwrap();
        // Only the Ed25519 key remains, so a token without kid still finds it.
        let token = idp.sign_with_kid(None, &idp.claims(CF, ACR_SPID_L2, 300, NOW));
        assert!(providers.verify(&token, NOW).is_ok());
    }

    #[test]
    fn invalid_provider_configs_fail_new_naming_the_provider() {
        let idp = FakeIdp::new(SPID_ISS, CLIENT);
        let base = idp.config("spid-a", ProviderKind::Spid);

        let mut both = base.clone();
        both.jwks_file = Some(temp_path("unused"));
        assert_eq!(config_error(&[both]).0, "spid-a");

        let mut neither = base.clone();
        neither.jwks = None;
        assert_eq!(config_error(&[neither]).0, "spid-a");

        let mut no_audience = base.clone();
        no_audience.audience = " ".into();
        assert_eq!(config_error(&[no_audience]).0, "spid-a");

        let mut no_issuer = base.clone();
        no_issuer.issuer = String::new();
        assert_eq!(config_error(&[no_issuer]).0, "spid-a");

        let same_issuer = idp.config("spid-b", ProviderKind::Spid);
        let (provider, reason) = config_error(&[base.clone(), same_issuer]);
        assert_eq!(provider, "spid-b");
        assert!(reason.contains("spid-a"), "{reason}");

        let same_name = FakeIdp::new(CIE_ISS, CLIENT).config("spid-a", ProviderKind::Cie);
        assert_eq!(config_error(&[base, same_name]).0, "spid-a");

        assert!(IdentityProviders::new(&[]).is_ok());
    }

    #[test]
    fn provider_config_deserializes_with_lowercase_kind() {
        let config: ProviderConfig = serde_json::from_value(json!({
            "name": "cie",
            "kind": "cie",
            "issuer": CIE_ISS,
            "audience": CLIENT,
            "jwks_file": "/etc/sportello/cie-jwks.json",
        }))
        .unwrap();
        assert_eq!(config.kind, ProviderKind::Cie);
        assert_eq!(config.jwks, None);
        assert_eq!(config.jwks_file, Some(PathBuf::from("/etc/sportello/cie-jwks.json")));
        assert_eq!(serde_json::to_value(ProviderKind::Spid).unwrap(), json!("spid"));
        let typo = serde_json::from_value::<ProviderConfig>(json!({
            "name": "x", "kind": "spid", "issuer": "i", "audience": "a", "jwks_path": "p",
        }));
        assert!(typo.is_err());
        assert!(serde_json::from_value::<ProviderKind>(json!("Spid")).is_err());
    }

    #[test]
    fn errors_and_debug_never_contain_the_fiscal_code() {
        let (idp, providers) = spid();
        let assertion = providers.verify(&idp.id_token(CF, ACR_SPID_L2, 300, NOW), NOW).unwrap();
        let debug = format!("{assertion:?}");
        assert!(!debug.contains(CF), "{debug}");
        assert!(debug.contains("RSS***********2S"), "{debug}");
        assert!(debug.contains("spid-test") && debug.contains("SpidL2"), "{debug}");
        assert_eq!(assertion.masked_fiscal_code(), "RSS***********2S");
        assert!(!format!("{:?}", providers).contains(CF));

        // Every refusal of a token carrying the fiscal code, in Display and Debug.
        let genuine = idp.id_token(CF, ACR_SPID_L2, 300, NOW);
        let impostor = FakeIdp::new(SPID_ISS, CLIENT);
        let stranger = FakeIdp::new("https://evil.example.com", CLIENT);
        let mut wrong_aud = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        wrong_aud["aud"] = json!("someone-else");
        let mut bad_cf = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        bad_cf["fiscalNumber"] = json!(format!("TINIT-{CF}X"));
        let mut no_sub = idp.claims(CF, ACR_SPID_L2, 300, NOW);
        no_sub.as_object_mut().unwrap().remove("sub");
        let cases = [
            (genuine.clone(), NOW + 3600),
            (idp.id_token(CF, ACR_SPID_L2, 300, NOW + 3600), NOW),
            (idp.id_token(CF, ACR_SPID_L1, 300, NOW), NOW),
            (impostor.id_token(CF, ACR_SPID_L2, 300, NOW), NOW),
            (stranger.id_token(CF, ACR_SPID_L2, 300, NOW), NOW),
            (idp.sign(&wrong_aud), NOW),
            (idp.sign(&bad_cf), NOW),
            (idp.sign(&no_sub), NOW),
            (format!("{genuine}x"), NOW),
        ];
        for (token, now) in cases {
            let err = providers.verify(&token, now).unwrap_err();
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains(CF), "{text}");
                assert!(!text.contains(&token), "{text}");
                assert!(!text.contains(&token[..20]), "{text}");
            }
        }
    }

    #[test]
    fn short_values_are_masked_entirely() {
        assert_eq!(sportello_platform::mask::fiscal_code("ABC"), "***");
        assert_eq!(sportello_platform::mask::fiscal_code("ABCDEFGH"), "ABC***GH");
    }

    #[test]
    fn level_labels() {
        assert_eq!(AssuranceLevel::SpidL2.label(), "SPID L2");
        assert_eq!(AssuranceLevel::SpidL3.label(), "SPID L3");
        assert_eq!(AssuranceLevel::CieL3.label(), "CIE");
        assert_eq!(AssuranceLevel::CieL3.to_string(), "CIE");
    }
}
