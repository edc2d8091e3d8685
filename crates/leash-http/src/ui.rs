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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response as HttpResponse;
use axum::routing::{get, post};
use leash_core::{Core, Request};
use leash_types::{ExposeSecret, Operation, SecretString};
use serde_json::{Map, Value};

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
        .route("/ui/approvals", get(page))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/approvals/{id}/decide", post(decide))
        .with_state(ui)
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html(status: StatusCode, body: String, cookie: Option<String>) -> HttpResponse {
    let mut r = HttpResponse::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under no-referrer browsers send `Origin: null`
    // with the page's own form posts, which the Origin check must refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        h.insert(header::SET_COOKIE, v);
    }
    r
}

fn redirect(to: &'static str, cookie: Option<String>) -> HttpResponse {
    let mut r = html(StatusCode::SEE_OTHER, String::new(), cookie);
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4rem;vertical-align:top;text-align:left}th{background:#f4f4f4}.flash{padding:.5rem;background:#eef;border:1px solid #99c;margin-bottom:1rem}.err{background:#fee;border-color:#c99}textarea{width:100%;min-height:3rem}form.inline{display:inline}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} — leash</title><style>{STYLE}</style></head><body><h1>{}</h1>{body}</body></html>",
        esc(title),
        esc(title)
    )
}

fn login_page(message: Option<&str>) -> String {
    let flash = message
        .map(|m| format!("<p id=\"flash\" class=\"flash err\">{}</p>", esc(m)))
        .unwrap_or_default();
    layout(
        "Approvals",
        &format!(
            "{flash}<p>Sign in to review just-in-time access requests.</p>\
<form method=\"post\" action=\"/ui/login\">\
<p><label>Auth mount <input id=\"mount\" name=\"mount\" value=\"userpass\" required></label></p>\
<p><label>Username <input id=\"username\" name=\"username\" autocomplete=\"username\" required></label></p>\
<p><label>Password <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
<p><button id=\"login\" type=\"submit\">Sign in</button></p></form>"
        ),
    )
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
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
fn same_origin(headers: &HeaderMap) -> bool {
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

async fn form(body: Body) -> Option<HashMap<String, String>> {
    let bytes = to_bytes(body, MAX_FORM).await.ok()?;
    Some(
        form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

impl Ui {
    /// The live session of a cookie (expired ones are removed).
    fn session<T>(&self, id: &str, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        let mut s = self.sessions.lock().ok()?;
        let expired = s.get(id).is_some_and(|x| x.created.elapsed() > SESSION_TTL);
        if expired {
            s.remove(id);
            return None;
        }
        s.get_mut(id).map(f)
    }

    fn end(&self, id: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(id);
        }
    }

    async fn call(
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

fn message_of(e: &leash_core::CoreError) -> String {
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

async fn index() -> HttpResponse {
    redirect("/ui/approvals", None)
}

async fn page(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> HttpResponse {
    let Some(sid) = cookie_of(&headers) else {
        return html(StatusCode::OK, login_page(None), None);
    };
    let Some((token, csrf, name, flash)) = ui.session(&sid, |s| {
        (
            SecretString::from(s.token.expose_secret().to_owned()),
            s.csrf.clone(),
            s.name.clone(),
            s.flash.take(),
        )
    }) else {
        return html(
            StatusCode::OK,
            login_page(Some("Your session ended; sign in again.")),
            None,
        );
    };
    let listed = ui
        .call(
            peer,
            Some(token),
            Operation::List,
            "sys/control-group/request/".to_owned(),
            Map::new(),
        )
        .await;
    let info = match listed {
        Ok(r) => r
            .data
            .and_then(|d| d.get("key_info").cloned())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default(),
        Err(leash_core::CoreError::NotFound) => Map::new(),
        Err(
            e @ (leash_core::CoreError::PermissionDenied
            | leash_core::CoreError::InvalidToken { .. }),
        ) => {
            ui.end(&sid);
            return html(
                StatusCode::OK,
                login_page(Some(&format!("{}; sign in again.", message_of(&e)))),
                None,
            );
        }
        Err(e) => {
            return html(
                StatusCode::OK,
                layout(
                    "Approvals",
                    &format!(
                        "<p id=\"flash\" class=\"flash err\">{}</p>",
                        esc(&message_of(&e))
                    ),
                ),
                None,
            );
        }
    };
    let mut rows = String::new();
    let mut ordered: Vec<(&String, &Value)> = info.iter().collect();
    ordered.sort_by_key(|(_, v)| std::cmp::Reverse(v["age_seconds"].as_i64().unwrap_or(0)));
    for (id, v) in ordered {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        let n = |k: &str| v[k].as_i64().unwrap_or(0);
        let age = n("age_seconds");
        let id_e = esc(id);
        rows.push_str(&format!(
            "<tr id=\"req-{id_e}\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{} min</td><td>{}</td><td>{}m {:02}s</td><td>{}/{}</td>\
<td><form method=\"post\" action=\"/ui/approvals/{id_e}/decide\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<textarea id=\"comment-{id_e}\" name=\"comment\" placeholder=\"comment (required to deny)\"></textarea>\
<button id=\"approve-{id_e}\" name=\"action\" value=\"approve\" type=\"submit\">Approve</button> \
<button id=\"deny-{id_e}\" name=\"action\" value=\"deny\" type=\"submit\">Deny</button></form></td></tr>",
            esc(&s("agent_id")),
            esc(&s("target_resource")),
            esc(&s("operation")),
            v["grant_duration_seconds"].as_u64().unwrap_or(0) / 60,
            esc(&s("justification")),
            age / 60,
            age % 60,
            n("approvals"),
            n("approvals_needed"),
            esc(&csrf),
        ));
    }
    let table = if rows.is_empty() {
        "<p id=\"empty\">No pending requests you can decide.</p>".to_owned()
    } else {
        format!(
            "<table id=\"pending\"><thead><tr><th>Agent</th><th>Target</th><th>Operation</th><th>Duration</th><th>Justification</th><th>Age</th><th>Approvals</th><th>Decision</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    let flash = flash
        .map(|m| format!("<p id=\"flash\" class=\"flash\">{}</p>", esc(&m)))
        .unwrap_or_default();
    let body = format!(
        "{flash}<p>Signed in as <strong id=\"who\">{}</strong>. \
<form class=\"inline\" method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"logout\" type=\"submit\">Sign out</button></form></p>\
<h2>Pending requests</h2>{table}",
        esc(&name),
        esc(&csrf)
    );
    html(StatusCode::OK, layout("Approvals", &body), None)
}

async fn login(
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
        "/ui/approvals",
        Some(format!(
            "{COOKIE}={sid}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_TTL.as_secs()
        )),
    )
}

/// Checks the session and CSRF token of a form post; returns the session id.
fn checked(
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

async fn logout(State(ui): State<Ui>, headers: HeaderMap, body: Body) -> HttpResponse {
    let f = form(body).await.unwrap_or_default();
    match checked(&ui, &headers, &f) {
        Ok(sid) => {
            ui.end(&sid);
            redirect(
                "/ui/approvals",
                Some(format!(
                    "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
                )),
            )
        }
        Err(r) => *r,
    }
}

async fn decide(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let Some(f) = form(body).await else {
        return html(
            StatusCode::BAD_REQUEST,
            login_page(Some("The form could not be read.")),
            None,
        );
    };
    let sid = match checked(&ui, &headers, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let action = match f.get("action").map(String::as_str) {
        Some("approve") => "approve",
        Some("deny") => "deny",
        _ => {
            ui.session(&sid, |s| {
                s.flash = Some("Choose approve or deny.".to_owned())
            });
            return redirect("/ui/approvals", None);
        }
    };
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        ui.session(&sid, |s| s.flash = Some("No such request.".to_owned()));
        return redirect("/ui/approvals", None);
    }
    let Some(token) = ui.session(&sid, |s| {
        SecretString::from(s.token.expose_secret().to_owned())
    }) else {
        return html(
            StatusCode::FORBIDDEN,
            login_page(Some("Your session ended; sign in again.")),
            None,
        );
    };
    let mut data = Map::new();
    data.insert(
        "comment".into(),
        Value::String(f.get("comment").cloned().unwrap_or_default()),
    );
    let r = ui
        .call(
            peer,
            Some(token),
            Operation::Update,
            format!("sys/control-group/request/{id}/{action}"),
            data,
        )
        .await;
    let flash = match r {
        Ok(resp) => {
            let d = resp.data.unwrap_or(Value::Null);
            let status = d["status"].as_str().unwrap_or("");
            match (action, status) {
                ("deny", _) => format!("Denied request {id}."),
                (_, "approved") => format!("Approved request {id}: the grant window is open."),
                _ => format!(
                    "Approval recorded for request {id} ({}/{} approvals).",
                    d["approvals"], d["approvals_needed"]
                ),
            }
        }
        Err(e) => format!("Could not {action} request {id}: {}", message_of(&e)),
    };
    ui.session(&sid, |s| s.flash = Some(flash));
    redirect("/ui/approvals", None)
}

#[cfg(test)]
mod tests {
    use super::*;

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
