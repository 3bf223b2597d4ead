//! Identity providers' keys published at a URL (`jwks_url`): fetched before the first login
//! and again every so often, so that a provider rotating its keys needs no restart.

use crate::oidc::{IdentityProviders, OidcError, ProviderConfig};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The providers as they stand now; swapped whole when fetched keys change.
pub type Current = Arc<RwLock<Arc<IdentityProviders>>>;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .https_only(false)
        .build()
        .expect("a default HTTP client")
}

/// `configs` with every `jwks_url` fetched into `jwks`.
pub async fn fetch(configs: &[ProviderConfig]) -> Result<Vec<ProviderConfig>, OidcError> {
    let client = client();
    let mut out = Vec::with_capacity(configs.len());
    for config in configs {
        let mut config = config.clone();
        if let Some(url) = &config.jwks_url {
            let fail = |reason: String| OidcError::Config { provider: config.name.clone(), reason };
            let response = client
                .get(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| fail(format!("cannot fetch jwks_url {url}: {e}")))?;
            let body = response.text().await.map_err(|e| fail(format!("jwks_url {url}: {e}")))?;
            config.jwks = Some(body);
        }
        out.push(config);
    }
    Ok(out)
}

/// Builds the providers, fetching the keys published at URLs.
pub async fn load(configs: &[ProviderConfig]) -> Result<Current, OidcError> {
    let providers = IdentityProviders::new(&fetch(configs).await?)?;
    Ok(Arc::new(RwLock::new(Arc::new(providers))))
}

/// Re-fetches the keys every `every`; a failed fetch keeps the keys already known.
pub async fn refresh(
    configs: Vec<ProviderConfig>,
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
        match fetch(&configs).await.and_then(|c| IdentityProviders::new(&c)) {
            Ok(fresh) => {
                if let Ok(mut slot) = current.write() {
                    *slot = Arc::new(fresh);
                }
            }
            Err(e) => tracing::warn!(error = %e, "identity provider keys not refreshed"),
        }
    }
}
