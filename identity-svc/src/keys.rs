//! The key session tokens are signed with: Ed25519, generated into the data directory on first
//! run (or read from a configured file, so that several identity-svc replicas share it), never
//! printed. Its public half is published as a JWKS document for the gateway and the services.

use base64::Engine;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Signs session tokens.
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    kid: String,
    jwks: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads the key at `path`, generating it (readable by the owner only) when absent.
    pub fn load_or_generate(path: &Path) -> anyhow::Result<Self> {
        Self::from_pkcs8(&sportello_platform::service_identity::load_or_generate_key(path)?)
    }

    fn from_pkcs8(der: &[u8]) -> anyhow::Result<Self> {
        let signing = SigningKey::from_pkcs8_der(der)?;
        let public = signing.verifying_key().to_bytes();
        let kid: String =
            Sha256::digest(public).iter().take(8).map(|b| format!("{b:02x}")).collect();
        let key = EncodingKey::from_ed_der(der);
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
        let jwks = serde_json::json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"
        }]})
        .to_string();
        Ok(Self { key, kid, jwks })
    }

    /// A signed EdDSA JWT of `claims`.
    pub fn sign<T: serde::Serialize>(
        &self,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
    }

    /// A one-minute token for this service's own calls to other Sportello services.
    pub fn service_token(&self, service: &str) -> Result<String, jsonwebtoken::errors::Error> {
        use sportello_platform::auth::{Amr, Claims, Level, Role, ISSUER};
        let now = sportello_platform::now_millis() / 1000;
        self.sign(&Claims {
            iss: ISSUER.into(),
            sub: service.into(),
            role: Role::Service,
            level: Level::Dispositive,
            amr: Amr::Service,
            sid: format!("service:{service}"),
            iat: now,
            exp: now + 60,
            acr: None,
        })
    }

    /// The public key, as a JWKS document.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_and_reused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys/session.der");
        let first = Signer::load_or_generate(&path).expect("generated");
        let second = Signer::load_or_generate(&path).expect("loaded");
        assert_eq!(first.kid, second.kid);
        assert!(first.jwks().contains("\"kty\":\"OKP\""), "{}", first.jwks());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "private key readable by its owner only");
        }
    }

    /// A citizen's PIN session `sid`, valid for a minute.
    fn citizen_session(sid: &str) -> sportello_platform::auth::Claims {
        let now = chrono::Utc::now().timestamp();
        sportello_platform::auth::Claims {
            iss: sportello_platform::auth::ISSUER.into(),
            sub: "RSSMRA85T10A562S".into(),
            role: sportello_platform::auth::Role::Citizen,
            level: sportello_platform::auth::Level::Ordinary,
            amr: sportello_platform::auth::Amr::Pin,
            sid: sid.into(),
            iat: now,
            exp: now + 60,
            acr: None,
        }
    }

    #[test]
    fn tokens_signed_verify_with_the_published_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let signer = Signer::load_or_generate(&dir.path().join("k.der")).expect("key");
        let verifier = sportello_platform::auth::Verifier::default();
        verifier.set_jwks(signer.jwks()).expect("jwks");
        let claims = citizen_session("s1");
        let token = signer.sign(&claims).expect("signed");
        assert_eq!(verifier.verify(&token).expect("valid"), claims);
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(verifier.verify(&tampered).is_err());
    }

    #[test]
    fn a_process_that_has_no_signing_keys_yet_asks_to_retry_rather_than_refusing_a_valid_token() {
        // As a claims-svc or gateway just restarted answers before its first GetSigningKeys.
        let dir = tempfile::tempdir().expect("dir");
        let signer = Signer::load_or_generate(&dir.path().join("k.der")).expect("key");
        let claims = citizen_session("s2");
        let token = signer.sign(&claims).expect("signed");
        let verifier = sportello_platform::auth::Verifier::default();
        let refusal = verifier.verify(&token).expect_err("no keys to check it with");
        assert_eq!(refusal, sportello_platform::auth::AuthError::KeysUnknown);
        let status = tonic::Status::from(refusal);
        assert_eq!(status.code(), tonic::Code::Unavailable, "a retry, not a new login");
        // Once the keys are known, the same token is valid; a token under another key is not.
        verifier.set_jwks(signer.jwks()).expect("jwks");
        assert_eq!(verifier.verify(&token).expect("valid"), claims);
        let other = Signer::load_or_generate(&dir.path().join("other.der")).expect("key");
        let forged = other.sign(&claims).expect("signed");
        assert_eq!(verifier.verify(&forged), Err(sportello_platform::auth::AuthError::Invalid));
    }
}
