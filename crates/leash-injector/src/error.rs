//! [`InjectorError`]: why a request cannot be answered or the server cannot run.

/// The injector's errors. A pod refused because of its annotations is not an error but
/// an answer ([`crate::Denial`] inside an `AdmissionReview`).
#[derive(Debug, thiserror::Error)]
pub enum InjectorError {
    /// The request body is not an `admission.k8s.io/v1` AdmissionReview (HTTP 400).
    #[error("not an AdmissionReview: {0}")]
    BadReview(String),
    /// Certificate or key unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// A setting of the injector itself is wrong.
    #[error("{0}")]
    Settings(String),
    /// Socket or file error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
