//! Identity providers' keys published at a URL (`jwks_url`): fetched before the first login
//! and again every so often, so that a provider rotating its keys needs no restart.

use crate::oidc::{IdentityProviders, OidcError, ProviderConfig};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How providers' keys are fetched: over https only (a plain-http switch exists in test builds
/// alone), within a time limit, and no bigger than a bound.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchRules {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub max_bytes: usize,
    /// Test builds only: accept `http://` JWKS URLs (the fake providers of the tests).
    #[cfg(feature = "test-support")]
    #[serde(default)]
    pub allow_http: bool,
}

impl Default for FetchRules {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
            #[cfg(feature = "test-support")]
            allow_http: false,
        }
    }
}

impl FetchRules {
    fn https_only(&self) -> bool {
        #[cfg(feature = "test-support")]
        return !self.allow_http;
        #[cfg(not(feature = "test-support"))]
        true
    }
}

/// The providers as they stand now; swapped whole when fetched keys change.
pub type Current = Arc<RwLock<Arc<IdentityProviders>>>;

fn client(rules: &FetchRules) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(rules.timeout)
        .https_only(rules.https_only())
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// `configs` with every `jwks_url` fetched into `jwks`.
pub async fn fetch(
    configs: &[ProviderConfig],
    rules: &FetchRules,
) -> Result<Vec<ProviderConfig>, OidcError> {
    let client = client(rules).map_err(|e| OidcError::Config {
        provider: String::new(),
        reason: format!("no HTTP client: {e}"),
    })?;
    let mut out = Vec::with_capacity(configs.len());
    for config in configs {
        let mut config = config.clone();
        if let Some(url) = &config.jwks_url {
            let fail = |reason: String| OidcError::Config { provider: config.name.clone(), reason };
            let mut response = client
                .get(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| fail(format!("cannot fetch jwks_url {url}: {e}")))?;
            let too_big = || fail(format!("jwks_url {url}: larger than {} bytes", rules.max_bytes));
            if response.content_length().is_some_and(|n| n > rules.max_bytes as u64) {
                return Err(too_big());
            }
            // Read in chunks and stop at the bound: a declared length may be absent or a lie.
            let mut body = Vec::new();
            while let Some(chunk) =
                response.chunk().await.map_err(|e| fail(format!("jwks_url {url}: {e}")))?
            {
                if body.len() + chunk.len() > rules.max_bytes {
                    return Err(too_big());
                }
                body.extend_from_slice(&chunk);
            }
            let body =
                String::from_utf8(body).map_err(|_| fail(format!("jwks_url {url}: not UTF-8")))?;
            config.jwks = Some(body);
        }
        out.push(config);
    }
    Ok(out)
}

/// Builds the providers, fetching the keys published at URLs.
pub async fn load(configs: &[ProviderConfig], rules: &FetchRules) -> Result<Current, OidcError> {
    let providers = IdentityProviders::new(&fetch(configs, rules).await?)?;
    Ok(Arc::new(RwLock::new(Arc::new(providers))))
}

/// Re-fetches the keys every `every`; a failed fetch keeps the keys already known.
pub async fn refresh(
    configs: Vec<ProviderConfig>,
    rules: FetchRules,
    current: Current,
    every: Duration,
    shutdown: CancellationToken,
) {
    if configs.iter().all(|c| c.jwks_url.is_none()) {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match fetch(&configs, &rules).await.and_then(|c| IdentityProviders::new(&c)) {
            Ok(fresh) => {
                if let Ok(mut slot) = current.write() {
                    *slot = Arc::new(fresh);
                }
            }
            Err(e) => tracing::warn!(error = %e, "identity provider keys not refreshed"),
        }
    }
}
