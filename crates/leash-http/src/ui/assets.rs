//! Static assets: the one stylesheet.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response as HttpResponse;

/// The one stylesheet of the `/ui/` pages, served at `/ui/style.css` (same origin: the
/// CSP's `style-src 'self'`). No JavaScript anywhere. Fluid: below 44rem the tables turn
/// into one card per row, each cell labelled by its column (`data-label`).
pub(super) const STYLE: &str = include_str!("ui.css");

pub(super) async fn stylesheet() -> HttpResponse {
    let mut r = HttpResponse::new(Body::from(STYLE));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}
