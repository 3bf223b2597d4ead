//! Service identity: each Sportello service holds an Ed25519 key of its own (generated under its
//! data directory on first run, readable by its owner only, never printed) and proves who it is
//! to identity-svc with one-minute tokens signed by it. identity-svc trusts the public keys of
//! named services it is configured with (`sportello up` and the tests wire them), so its internal
//! RPCs answer services only, and the gateway can vouch for a CNS certificate with a signed
//! assertion instead of a shared secret.

use crate::auth::{Amr, Claims, Level, Role};
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::path::{Path, PathBuf};

/// The `kid` prefix of a token signed by a service's own key: `service:<name>`.
pub const KID_PREFIX: &str = "service:";

/// The `iss` of a token signed by service `name`'s own key.
pub fn issuer(name: &str) -> String {
    format!("sportello-{name}")
}

/// Where service `name` keeps its key under `data_dir` (services may share a data directory).
pub fn key_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!("keys/{name}-service-ed25519.der"))
}

/// Reads the PKCS#8 Ed25519 key at `path`, generating it (mode 0600) when absent.
pub fn load_or_generate_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(der) => Ok(der),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand_core::OsRng);
            let der = key.to_pkcs8_der()?.as_bytes().to_vec();
            write_private(path, &der)?;
            tracing::info!(path = %path.display(), "generated a new Ed25519 key");
            Ok(der)
        }
        Err(e) => Err(e.into()),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::files::create_dir(dir)?;
    }
    use std::io::Write;
    match crate::files::options().write(true).create_new(true).open(path) {
        Ok(mut file) => file.write_all(bytes),
        // Another process sharing the data directory generated it first: theirs stands.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A service's own signing key.
#[derive(Clone)]
pub struct ServiceKey {
    name: String,
    key: EncodingKey,
    public: [u8; 32],
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKey").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ServiceKey {
    /// The key of service `name` under `data_dir`, generated when absent.
    pub fn load_or_generate(data_dir: &Path, name: &str) -> anyhow::Result<Self> {
        let path = key_path(data_dir, name);
        let der = load_or_generate_key(&path)?;
        // Re-read: with several processes racing, the file is the one that won.
        let der = std::fs::read(&path).unwrap_or(der);
        let signing = SigningKey::from_pkcs8_der(&der)?;
        Ok(Self {
            name: name.to_owned(),
            key: EncodingKey::from_ed_der(&der),
            public: signing.verifying_key().to_bytes(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key, base64url without padding: what identity-svc is configured to trust.
    pub fn public_key(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public)
    }

    /// Signs `claims` as this service (`kid` = `service:<name>`).
    pub fn sign<T: serde::Serialize>(
        &self,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(format!("{KID_PREFIX}{}", self.name));
        jsonwebtoken::encode(&header, claims, &self.key)
    }

    /// A one-minute token for this service's own calls to identity-svc.
    pub fn token(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let now = crate::now_millis() / 1000;
        self.sign(&Claims {
            iss: issuer(&self.name),
            sub: self.name.clone(),
            role: Role::Service,
            level: Level::Dispositive,
            amr: Amr::Service,
            sid: format!("{KID_PREFIX}{}", self.name),
            iat: now,
            exp: now + 60,
            acr: None,
        })
    }

    /// `message` as a request carrying a fresh token of this service.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        match self.token().ok().and_then(|t| format!("Bearer {t}").parse().ok()) {
            Some(value) => {
                request.metadata_mut().insert("authorization", value);
            }
            None => tracing::warn!(service = %self.name, "could not sign a service token"),
        }
        request
    }
}

/// Set by the gateway only (it strips `x-sportello-*` from what clients send): its signed
/// [`CnsAssertion`], and the card's certificate (DER, base64url) the assertion is bound to.
pub const CNS_ASSERTION_HEADER: &str = "x-sportello-cns-assertion";
pub const CNS_CERTIFICATE_HEADER: &str = "x-sportello-cns-certificate";
/// The `aud` of a CNS assertion: good for a CNS login at identity-svc, nothing else.
pub const CNS_AUDIENCE: &str = "sportello-identity/cns-login";
/// The longest life a CNS assertion may have.
pub const CNS_ASSERTION_TTL_SECS: i64 = 60;

/// What the gateway asserts about a CNS card it verified in the TLS handshake: the fiscal code
/// in its subject, bound to the certificate's SHA-256 fingerprint, for one minute.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CnsAssertion {
    pub iss: String,
    /// The fiscal code the certificate names.
    pub sub: String,
    pub aud: String,
    /// SHA-256 of the certificate's DER, base64url (RFC 8705's `x5t#S256`).
    #[serde(rename = "x5t#S256")]
    pub cert_sha256: String,
    pub iat: i64,
    pub exp: i64,
}

/// The SHA-256 fingerprint of a certificate's DER, base64url without padding.
pub fn fingerprint(cert_der: &[u8]) -> String {
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(cert_der))
}

impl CnsAssertion {
    /// The assertion `service` makes, now, that `cert_der` names `fiscal_code`.
    pub fn new(service: &str, fiscal_code: &str, cert_der: &[u8]) -> Self {
        let now = crate::now_millis() / 1000;
        Self {
            iss: issuer(service),
            sub: fiscal_code.to_owned(),
            aud: CNS_AUDIENCE.to_owned(),
            cert_sha256: fingerprint(cert_der),
            iat: now,
            exp: now + CNS_ASSERTION_TTL_SECS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;

    #[test]
    fn a_service_key_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().expect("dir");
        let first = ServiceKey::load_or_generate(dir.path(), "gateway").expect("generated");
        let second = ServiceKey::load_or_generate(dir.path(), "gateway").expect("loaded");
        assert_eq!(first.public_key(), second.public_key());
        assert_ne!(
            first.public_key(),
            ServiceKey::load_or_generate(dir.path(), "notify").expect("other").public_key()
        );
        assert!(!format!("{first:?}").contains(&first.public_key()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = key_path(dir.path(), "gateway");
            let mode = std::fs::metadata(path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "private key readable by its owner only");
        }
    }

    #[test]
    fn a_service_token_is_accepted_only_with_the_trusted_key_of_that_service() {
        let dir = tempfile::tempdir().expect("dir");
        let gateway = ServiceKey::load_or_generate(dir.path(), "gateway").expect("key");
        let impostor = ServiceKey::load_or_generate(dir.path(), "notify").expect("key");
        let verifier = Verifier::default();
        assert!(verifier.verify(&gateway.token().expect("token")).is_err(), "not trusted yet");
        verifier.trust_service("gateway", &gateway.public_key()).expect("trusted");
        let claims = verifier.verify(&gateway.token().expect("token")).expect("valid");
        assert_eq!((claims.role, claims.sub.as_str()), (Role::Service, "gateway"));
        assert!(verifier.verify(&impostor.token().expect("token")).is_err());
        // A trusted service key cannot speak for a citizen.
        let now = crate::now_millis() / 1000;
        let forged = gateway
            .sign(&Claims {
                iss: issuer("gateway"),
                sub: "RSSMRA85T10A562S".into(),
                role: Role::Citizen,
                level: Level::Dispositive,
                amr: Amr::Pin,
                sid: "x".into(),
                iat: now,
                exp: now + 60,
                acr: None,
            })
            .expect("signed");
        assert!(verifier.verify(&forged).is_err());
    }
}
