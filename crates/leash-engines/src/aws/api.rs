//! The AWS calls of the `aws` secrets engine: IAM and STS over the query protocol
//! (form-encoded `Action=…&Version=…` POSTs, XML answers), signed with SigV4 by the
//! `aws-sigv4` crate.
//!
//! Errors carry AWS's error code and message (`NoSuchEntity: The user with name … cannot
//! be found`), never a request body, a secret key or a signature. Throttling and 5xx
//! answers are retried `max_retries` times with a growing pause.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use leash_types::{Clock as _, ExposeSecret, SecretString, SystemClock};

use super::xml;
use crate::https::{self, ApiError};

/// How long one API call may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(15);

/// Which API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Iam,
    Sts,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Iam => "iam",
            Service::Sts => "sts",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Service::Iam => "2010-05-08",
            Service::Sts => "2011-06-15",
        }
    }
}

/// Credentials and endpoints to call AWS with. No `Debug`: it holds the secret key.
pub(crate) struct Aws {
    pub(crate) access_key: String,
    pub(crate) secret_key: SecretString,
    pub(crate) region: String,
    pub(crate) iam_endpoint: String,
    pub(crate) sts_endpoint: String,
    pub(crate) max_retries: u32,
    pub(crate) client: reqwest::Client,
}

/// An AWS error answer: its code and message.
fn aws_error(status: u16, body: &str) -> ApiError {
    let code = xml::first(body, "Code").ok().flatten().unwrap_or_default();
    let message = xml::first(body, "Message")
        .ok()
        .flatten()
        .unwrap_or_default();
    ApiError::Status {
        status,
        reason: if code.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("{code}: {message}")
        },
    }
}

/// Whether an AWS error says the thing is not there (revocation counts that as done).
pub(crate) fn is_no_such_entity(e: &ApiError) -> bool {
    matches!(e, ApiError::Status { status: 404, .. })
        || matches!(e, ApiError::Status { reason, .. } if reason.starts_with("NoSuchEntity"))
}

fn form(params: &[(&str, String)], service: Service, action: &str) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    s.append_pair("Action", action);
    s.append_pair("Version", service.version());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

impl Aws {
    /// Calls `action` of `service` with `params`; the answer's XML.
    pub(crate) async fn call(
        &self,
        service: Service,
        action: &str,
        params: &[(&str, String)],
    ) -> Result<String, ApiError> {
        let body = form(params, service, action);
        let (endpoint, region) = match service {
            // IAM is global: signed for us-east-1 wherever it is called.
            Service::Iam => (&self.iam_endpoint, "us-east-1"),
            Service::Sts => (&self.sts_endpoint, self.region.as_str()),
        };
        let url = format!("{}/", endpoint.trim_end_matches('/'));
        let mut attempt = 0u32;
        loop {
            let (status, answer) = self.send(service, region, &url, &body).await?;
            let text = String::from_utf8_lossy(&answer).into_owned();
            if (200..300).contains(&status) {
                return Ok(text);
            }
            let err = aws_error(status, &text);
            let retryable = status >= 500
                || matches!(&err, ApiError::Status { reason, .. } if reason.starts_with("Throttling") || reason.starts_with("RequestLimitExceeded"));
            if !retryable || attempt >= self.max_retries {
                return Err(err);
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
        }
    }

    async fn send(
        &self,
        service: Service,
        region: &str,
        url: &str,
        body: &str,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let identity = Credentials::new(
            self.access_key.clone(),
            self.secret_key.expose_secret().to_owned(),
            None,
            None,
            "leash",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service.name())
            .time(SystemClock.now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ApiError::Setup(format!("cannot sign the request: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            [("content-type", content_type)].into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| ApiError::Setup(format!("cannot sign the request: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| ApiError::Setup(format!("cannot sign the request: {e}")))?
            .into_parts();
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_owned());
        for (name, value) in instructions.headers() {
            req = req.header(name, value);
        }
        https::send(req).await
    }
}
