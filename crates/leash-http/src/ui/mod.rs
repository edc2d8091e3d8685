//! `/ui/approvals`: a small server-rendered page where approvers log in (userpass), see
//! pending just-in-time requests and approve or deny them with a comment.
//!
//! Thin like the API: every action is an ordinary core request made with the approver's
//! own token (login through `auth/<mount>/login/<user>`, `LIST sys/control-group/request`,
//! `POST sys/control-group/request/<id>/approve|deny`), so authorization, identity-group
//! checks, self-approval refusal and audit are the pipeline's, not this page's.
//!
//! Security:
//! * the token never reaches the browser: the cookie holds a random session id (HttpOnly,
//!   SameSite=Strict, Path=/ui); the server keeps the token (zeroized on drop) in memory
//!   for at most [`SESSION_TTL`];
//! * every state-changing form carries the session's CSRF token, compared in constant
//!   time; a POST whose `Origin` names another host is refused;
//! * every value on the page is HTML-escaped; a strict Content-Security-Policy allows no
//!   script at all; pages are `no-store`.

mod agents;
mod approvals;
mod assets;
mod layout;
mod session;

use agents::*;
use approvals::*;
use assets::*;
use layout::*;
use session::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use leash_core::Core;
use leash_types::SecretString;

/// How long a page session lives.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// Most sessions kept at once (the oldest is dropped beyond it).
const MAX_SESSIONS: usize = 10_000;
/// Largest form body.
const MAX_FORM: usize = 16 * 1024;
/// The session cookie's name.
const COOKIE: &str = "leash_ui_session";

struct Session {
    token: SecretString,
    csrf: String,
    name: String,
    flash: Option<String>,
    created: Instant,
}

#[derive(Clone)]
struct Ui {
    core: Core,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
}

/// The page's routes.
pub(crate) fn routes(core: Core) -> Router {
    let ui = Ui {
        core,
        sessions: Arc::new(Mutex::new(HashMap::new())),
    };
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/style.css", get(stylesheet))
        .route("/ui/approvals", get(page))
        .route("/ui/agents", get(agents_page))
        .route("/ui/agents/confirm", post(agents_confirm))
        .route("/ui/agents/contain", post(agents_contain))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/approvals/{id}/decide", post(decide))
        .with_state(ui)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn cross_site_posts_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8200"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8200"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; leash_ui_session=abc; b=2"),
        );
        assert_eq!(cookie_of(&h).as_deref(), Some("abc"));
    }
}
