//! Sessions: cookie, CSRF and Origin checks, sign-in and sign-out, and the core calls
//! made with the session's token.

use super::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response as HttpResponse;
use leash_core::Request;
use leash_types::{ExposeSecret, Operation, SecretString};
use serde_json::{Map, Value};

pub(super) fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// A POST from another site (its `Origin` names a host other than ours) is refused.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let o = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && o == host
}

pub(super) async fn form(body: Body) -> Option<HashMap<String, String>> {
    let bytes = to_bytes(body, MAX_FORM).await.ok()?;
    Some(
        form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

impl Ui {
    /// The live session of a cookie (expired ones are removed).
    pub(super) fn session<T>(&self, id: &str, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        let mut s = self.sessions.lock().ok()?;
        let expired = s.get(id).is_some_and(|x| x.created.elapsed() > SESSION_TTL);
        if expired {
            s.remove(id);
            return None;
        }
        s.get_mut(id).map(f)
    }

    pub(super) fn end(&self, id: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(id);
        }
    }

    pub(super) async fn call(
        &self,
        peer: SocketAddr,
        token: Option<SecretString>,
        op: Operation,
        path: String,
        data: Map<String, Value>,
    ) -> Result<leash_core::Response, leash_core::CoreError> {
        let mut req = Request::new(op, path);
        req.data = data;
        req.token = token;
        req.remote_addr = Some(peer);
        self.core.handle(req).await
    }
}

pub(super) fn message_of(e: &leash_core::CoreError) -> String {
    match e {
        leash_core::CoreError::Forbidden(m)
        | leash_core::CoreError::InvalidRequest(m)
        | leash_core::CoreError::RateLimited(m) => m.clone(),
        leash_core::CoreError::PermissionDenied | leash_core::CoreError::InvalidToken { .. } => {
            "permission denied".to_owned()
        }
        leash_core::CoreError::NotFound => "no such request".to_owned(),
        _ => "the server could not do this; see its log".to_owned(),
    }
}

pub(super) async fn login(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    if !same_origin(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            login_page(Some("Cross-site request refused.")),
            None,
        );
    }
    let Some(f) = form(body).await else {
        return html(
            StatusCode::BAD_REQUEST,
            login_page(Some("The form could not be read.")),
            None,
        );
    };
    let get = |k: &str| f.get(k).map(|s| s.trim().to_owned()).unwrap_or_default();
    let (mount, user) = (get("mount"), get("username"));
    let next = Page::of(&get("next"));
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
    };
    if !valid(&mount) || !valid(&user) {
        return html(
            StatusCode::BAD_REQUEST,
            login_page(Some(
                "Give an auth mount and a user name (letters, digits, _ - . @).",
            )),
            None,
        );
    }
    let mut data = Map::new();
    data.insert(
        "password".into(),
        Value::String(f.get("password").cloned().unwrap_or_default()),
    );
    let r = ui
        .call(
            peer,
            None,
            Operation::Update,
            format!("auth/{mount}/login/{user}"),
            data,
        )
        .await;
    let auth = match r {
        Ok(resp) => resp.auth,
        Err(e) => {
            tracing::info!(user = %user, mount = %mount, "approval page login refused");
            let m = match e {
                leash_core::CoreError::RateLimited(m) => m,
                _ => "Sign-in failed: check the mount, user name and password.".to_owned(),
            };
            return html(StatusCode::FORBIDDEN, login_page(Some(&m)), None);
        }
    };
    let Some(auth) = auth else {
        return html(
            StatusCode::FORBIDDEN,
            login_page(Some("Sign-in failed.")),
            None,
        );
    };
    let sid = leash_types::random::base62(43);
    let csrf = leash_types::random::base62(32);
    if let Ok(mut s) = ui.sessions.lock() {
        s.retain(|_, x| x.created.elapsed() <= SESSION_TTL);
        if s.len() >= MAX_SESSIONS
            && let Some(oldest) = s
                .iter()
                .min_by_key(|(_, x)| x.created)
                .map(|(k, _)| k.clone())
        {
            s.remove(&oldest);
        }
        s.insert(
            sid.clone(),
            Session {
                token: SecretString::from(auth.client_token.expose_secret().to_owned()),
                csrf,
                name: format!("{user} ({mount})"),
                flash: None,
                created: Instant::now(),
            },
        );
    }
    redirect(
        next.path(),
        Some(format!(
            "{COOKIE}={sid}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_TTL.as_secs()
        )),
    )
}

/// Checks the session and CSRF token of a form post; returns the session id.
pub(super) fn checked(
    ui: &Ui,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> Result<String, Box<HttpResponse>> {
    let refuse = |m: &str| Box::new(html(StatusCode::FORBIDDEN, login_page(Some(m)), None));
    if !same_origin(headers) {
        return Err(refuse("Cross-site request refused."));
    }
    let Some(sid) = cookie_of(headers) else {
        return Err(refuse("Sign in first."));
    };
    let given = f.get("csrf").cloned().unwrap_or_default();
    let ok = ui.session(&sid, |s| {
        use subtle::ConstantTimeEq;
        bool::from(s.csrf.as_bytes().ct_eq(given.as_bytes()))
    });
    match ok {
        Some(true) => Ok(sid),
        Some(false) => Err(Box::new(html(
            StatusCode::FORBIDDEN,
            layout(
                "Approvals",
                "<p id=\"flash\" class=\"flash err\">The form's CSRF token is missing or wrong; reload the page.</p>",
            ),
            None,
        ))),
        None => Err(refuse("Your session ended; sign in again.")),
    }
}

pub(super) async fn logout(State(ui): State<Ui>, headers: HeaderMap, body: Body) -> HttpResponse {
    let f = form(body).await.unwrap_or_default();
    match checked(&ui, &headers, &f) {
        Ok(sid) => {
            ui.end(&sid);
            let next = Page::of(f.get("next").map(String::as_str).unwrap_or(""));
            redirect(
                next.path(),
                Some(format!(
                    "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
                )),
            )
        }
        Err(r) => *r,
    }
}

/// What a page needs of its session.
pub(super) struct Current {
    pub(super) sid: String,
    pub(super) token: SecretString,
    pub(super) csrf: String,
    pub(super) name: String,
    pub(super) flash: Option<String>,
}

/// The signed-in session of the request, or the sign-in page to answer with.
pub(super) fn current(
    ui: &Ui,
    headers: &HeaderMap,
    page: Page,
) -> Result<Current, Box<HttpResponse>> {
    let Some(sid) = cookie_of(headers) else {
        return Err(Box::new(html(
            StatusCode::OK,
            login_page_for(page, None),
            None,
        )));
    };
    ui.session(&sid, |s| Current {
        sid: sid.clone(),
        token: SecretString::from(s.token.expose_secret().to_owned()),
        csrf: s.csrf.clone(),
        name: s.name.clone(),
        flash: s.flash.take(),
    })
    .ok_or_else(|| {
        Box::new(html(
            StatusCode::OK,
            login_page_for(page, Some("Your session ended; sign in again.")),
            None,
        ))
    })
}
