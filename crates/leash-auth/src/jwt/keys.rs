//! Remote keys of the `jwt` method: a JWKS fetched from `jwks_url`, or from the
//! `jwks_uri` that OIDC discovery names, cached per mount.
//!
//! * Fetched with [`crate::verify::http_client`]: only the configured CA is trusted when
//!   one is set, no redirects, a 10 s bound, answers of at most 1 MiB.
//! * Cached for [`MAX_AGE`]; a token naming an unknown `kid` (the issuer rotated its
//!   keys) triggers a refetch, but at most one per [`MIN_REFETCH`] seconds, so tokens
//!   with made-up key ids cannot turn leash into a flood against the issuer.
//! * Fetches are serialised (one at a time per mount): a burst of logins on a cold cache
//!   fetches once.
//! * Discovery checks that the document's `issuer` is the discovery URL (OpenID
//!   Connect Discovery §4.3); that issuer is then required of tokens unless
//!   `bound_issuer` says otherwise.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::verify::{self, FetchError, PublicKey};

/// Seconds a fetched key set is used before it is fetched again.
pub(crate) const MAX_AGE: i64 = 600;
/// Seconds between refetches triggered by unknown key ids.
pub(crate) const MIN_REFETCH: i64 = 5;
/// Bound of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS or discovery document accepted.
const MAX_DOCUMENT: usize = 1024 * 1024;

/// Keys and, for discovery, the issuer they belong to.
#[derive(Clone)]
pub(crate) struct KeySet {
    pub(crate) keys: Arc<Vec<PublicKey>>,
    pub(crate) issuer: Option<String>,
}

struct Entry {
    /// Which configuration the entry belongs to (discovery flag, URL, CA).
    id: String,
    set: KeySet,
    fetched_at: i64,
}

/// A mount's cache of remote keys.
#[derive(Default)]
pub(crate) struct KeyCache {
    entry: tokio::sync::Mutex<Option<Entry>>,
}

/// The remote source of a configuration.
pub(crate) struct Remote<'a> {
    /// `true` for OIDC discovery, `false` for a JWKS URL.
    pub(crate) discovery: bool,
    pub(crate) url: &'a str,
    pub(crate) ca_pem: &'a str,
}

impl Remote<'_> {
    fn id(&self) -> String {
        format!("{}\n{}\n{}", self.discovery, self.url, self.ca_pem)
    }

    async fn fetch(&self) -> Result<KeySet, FetchError> {
        let ca = (!self.ca_pem.is_empty()).then_some(self.ca_pem);
        let client = verify::http_client(ca, FETCH_TIMEOUT)?;
        if !self.discovery {
            let keys = get_jwks(&client, self.url).await?;
            return Ok(KeySet {
                keys: Arc::new(keys),
                issuer: None,
            });
        }
        let base = self.url.trim_end_matches('/');
        let doc_url = format!("{base}/.well-known/openid-configuration");
        let doc: Value = serde_json::from_slice(&get(&client, &doc_url).await?)
            .map_err(|_| FetchError::Discovery("the discovery document is not JSON"))?;
        let issuer = doc
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or(FetchError::Discovery(
                "the discovery document has no issuer",
            ))?;
        if issuer.trim_end_matches('/') != base {
            return Err(FetchError::Discovery(
                "the discovery document's issuer is not oidc_discovery_url (OpenID Connect Discovery requires them to match)",
            ));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or(FetchError::Discovery(
                "the discovery document has no jwks_uri",
            ))?;
        let keys = get_jwks(&client, jwks_uri).await?;
        Ok(KeySet {
            keys: Arc::new(keys),
            issuer: Some(issuer.to_owned()),
        })
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FetchError> {
    let resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(FetchError::Http)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    verify::read_body(resp, MAX_DOCUMENT).await
}

async fn get_jwks(client: &reqwest::Client, url: &str) -> Result<Vec<PublicKey>, FetchError> {
    Ok(verify::public_keys_from_jwks(&get(client, url).await?)?)
}

impl KeyCache {
    /// The keys for `remote`: cached unless absent, from another configuration, or
    /// older than [`MAX_AGE`].
    pub(crate) async fn current(
        &self,
        remote: &Remote<'_>,
        now: i64,
    ) -> Result<KeySet, FetchError> {
        let mut guard = self.entry.lock().await;
        let id = remote.id();
        if let Some(e) = guard.as_ref()
            && e.id == id
            && now.saturating_sub(e.fetched_at) < MAX_AGE
        {
            return Ok(e.set.clone());
        }
        let set = remote.fetch().await?;
        *guard = Some(Entry {
            id,
            set: set.clone(),
            fetched_at: now,
        });
        Ok(set)
    }

    /// Fetches again because a token named an unknown key id; `None` if the last fetch
    /// was less than [`MIN_REFETCH`] seconds ago.
    pub(crate) async fn refetch(
        &self,
        remote: &Remote<'_>,
        now: i64,
    ) -> Result<Option<KeySet>, FetchError> {
        let mut guard = self.entry.lock().await;
        let id = remote.id();
        if let Some(e) = guard.as_ref()
            && e.id == id
            && now.saturating_sub(e.fetched_at) < MIN_REFETCH
        {
            return Ok(None);
        }
        let set = remote.fetch().await?;
        *guard = Some(Entry {
            id,
            set: set.clone(),
            fetched_at: now,
        });
        Ok(Some(set))
    }

    /// Fetches now (a configuration write checks its URL), replacing the cache.
    pub(crate) async fn prime(&self, remote: &Remote<'_>, now: i64) -> Result<(), FetchError> {
        let mut guard = self.entry.lock().await;
        let set = remote.fetch().await?;
        *guard = Some(Entry {
            id: remote.id(),
            set,
            fetched_at: now,
        });
        Ok(())
    }

    /// Forgets the cached keys.
    pub(crate) async fn clear(&self) {
        *self.entry.lock().await = None;
    }
}
