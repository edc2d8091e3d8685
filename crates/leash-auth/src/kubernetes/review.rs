//! The Kubernetes TokenReview API, as a client: `POST
//! {kubernetes_host}/apis/authentication.k8s.io/v1/tokenreviews` with the reviewer's
//! bearer token, TLS trusting only the cluster CA when one is configured, bounded by
//! [`TIMEOUT`], at most [`MAX_ANSWER`] bytes read.
//!
//! Answers understood: a `TokenReview` whose `status` says `authenticated` with a
//! `system:serviceaccount:<ns>:<name>` user (and its `uid`, and the `audiences` it was
//! accepted for), a `TokenReview` saying not authenticated (with `status.error`), and
//! the API server's refusals (401/403 and others, with a `Status` object). Messages from
//! the server are shortened and have both tokens removed before they are shown.

use std::time::Duration;

use leash_types::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::claims::parse_username;
use crate::verify;

/// Bound of one TokenReview call.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: usize = 1024 * 1024;
/// Longest server message shown.
const MAX_MESSAGE: usize = 200;

/// What a successful review established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reviewed {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    /// Audiences the API server accepted the token for.
    pub(crate) audiences: Vec<String>,
}

/// Why a review did not establish an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReviewError {
    /// The call failed (network, TLS, timeout, refusal, nonsense answer).
    #[error("TokenReview request failed: {0}")]
    Failed(String),
    /// The API server looked at the token and did not accept it.
    #[error("TokenReview: not authenticated{0}")]
    NotAuthenticated(String),
    /// The token is valid but not a service account's.
    #[error("TokenReview: the token does not belong to a service account")]
    NotServiceAccount,
}

/// A server-supplied message, made safe to show: no token, printable, short.
fn scrub(msg: &str, secrets: &[&str]) -> String {
    let m = leash_types::secret::scrub(msg, secrets);
    let mut out: String = m
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    if m.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

/// Reviews `jwt` with `client` at `host`, authenticating as `bearer`; asks for
/// `audience` when given.
pub(crate) async fn review(
    client: &reqwest::Client,
    host: &str,
    bearer: &SecretString,
    jwt: &str,
    audience: Option<&str>,
) -> Result<Reviewed, ReviewError> {
    let mut spec = json!({ "token": jwt });
    if let Some(a) = audience {
        spec["audiences"] = json!([a]);
    }
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": spec,
    });
    let secrets = [jwt, bearer.expose_secret()];
    let url = format!("{host}/apis/authentication.k8s.io/v1/tokenreviews");
    let resp = client
        .post(&url)
        .bearer_auth(bearer.expose_secret())
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&body)
        .send()
        .await
        .map_err(|e| ReviewError::Failed(scrub(&verify::describe_http_error(&e), &secrets)))?;
    let status = resp.status().as_u16();
    let bytes = verify::read_body(resp, MAX_ANSWER)
        .await
        .map_err(|e| ReviewError::Failed(scrub(&e.to_string(), &secrets)))?;
    let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
    if !(200..300).contains(&status) {
        // A Kubernetes `Status` object: {"kind":"Status","status":"Failure",
        // "message":…,"reason":"Unauthorized"|"Forbidden",…,"code":401}.
        let field = |k: &str| {
            answer
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .map(|m| scrub(m, &secrets))
        };
        let what = match status {
            401 => {
                "the API server refused the reviewer's credentials (401 Unauthorized)".to_owned()
            }
            403 => "the reviewer may not create TokenReviews (403 Forbidden)".to_owned(),
            s => format!("the API server answered HTTP {s}"),
        };
        return Err(ReviewError::Failed(
            match field("message").or_else(|| field("reason")) {
                Some(m) if !m.is_empty() => format!("{what}: {m}"),
                _ => what,
            },
        ));
    }
    let Some(answer) = answer else {
        return Err(ReviewError::Failed("the answer is not JSON".to_owned()));
    };
    if answer.get("kind").and_then(Value::as_str) != Some("TokenReview") {
        return Err(ReviewError::Failed(
            "the answer is not a TokenReview".to_owned(),
        ));
    }
    let st = answer.get("status").cloned().unwrap_or(Value::Null);
    let error = st
        .get("error")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .map(|e| scrub(e, &secrets));
    if st.get("authenticated").and_then(Value::as_bool) != Some(true) || error.is_some() {
        return Err(ReviewError::NotAuthenticated(
            error.map(|e| format!(": {e}")).unwrap_or_default(),
        ));
    }
    let user = st.get("user").cloned().unwrap_or(Value::Null);
    let username = user.get("username").and_then(Value::as_str).unwrap_or("");
    let Some((namespace, name)) = parse_username(username) else {
        return Err(ReviewError::NotServiceAccount);
    };
    let uid = user
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let audiences = st
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(Reviewed {
        namespace,
        name,
        uid,
        audiences,
    })
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn server_messages_lose_tokens_and_length() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.payload.signature";
        let m = scrub(
            &format!("token {jwt} is invalid\n"),
            &[jwt, "reviewer-secret"],
        );
        assert_eq!(m, "token [redacted] is invalid ");
        let long = "x".repeat(1000);
        assert!(scrub(&long, &[]).chars().count() <= 201);
    }
}
