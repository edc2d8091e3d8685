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
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
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

/// The one stylesheet of the `/ui/` pages, served at `/ui/style.css` (same origin: the
/// CSP's `style-src 'self'`). No JavaScript anywhere. Fluid: below 44rem the tables turn
/// into one card per row, each cell labelled by its column (`data-label`).
const STYLE: &str = include_str!("ui.css");

fn nav(current: &str) -> String {
    let link = |href: &str, id: &str, label: &str| {
        if label == current {
            format!("<a id=\"nav-{id}\" href=\"{href}\" aria-current=\"page\">{label}</a>")
        } else {
            format!("<a id=\"nav-{id}\" href=\"{href}\">{label}</a>")
        }
    };
    format!(
        "<nav><span class=\"brand\">leash</span>{}{}</nav>",
        link("/ui/approvals", "approvals", "Approvals"),
        link("/ui/agents", "agents", "Agents")
    )
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} — leash</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
<body><header>{}</header><main><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        nav(title),
        esc(title)
    )
}

/// Which page a sign-in returns to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Page {
    Approvals,
    Agents,
}

impl Page {
    fn of(s: &str) -> Page {
        if s == "agents" {
            Page::Agents
        } else {
            Page::Approvals
        }
    }
    fn title(self) -> &'static str {
        match self {
            Page::Approvals => "Approvals",
            Page::Agents => "Agents",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Page::Approvals => "approvals",
            Page::Agents => "agents",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Page::Approvals => "/ui/approvals",
            Page::Agents => "/ui/agents",
        }
    }
}

fn login_page(message: Option<&str>) -> String {
    login_page_for(Page::Approvals, message)
}

fn login_page_for(page: Page, message: Option<&str>) -> String {
    let flash = message
        .map(|m| format!("<p id=\"flash\" class=\"flash err\">{}</p>", esc(m)))
        .unwrap_or_default();
    let what = match page {
        Page::Approvals => "review just-in-time access requests",
        Page::Agents => "see the live agents and contain one",
    };
    layout(
        page.title(),
        &format!(
            "{flash}<p id=\"signin\">Sign in to {what}.</p>\
<form class=\"card\" method=\"post\" action=\"/ui/login\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<p><label>Auth mount <input id=\"mount\" name=\"mount\" value=\"userpass\" required></label></p>\
<p><label>Username <input id=\"username\" name=\"username\" autocomplete=\"username\" required></label></p>\
<p><label>Password <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
<p><button id=\"login\" type=\"submit\">Sign in</button></p></form>",
            page.name()
        ),
    )
}

fn signed_in(page: Page, name: &str, csrf: &str) -> String {
    format!(
        "<div class=\"who\"><p>Signed in as <strong id=\"who\">{}</strong>.</p>\
<form class=\"inline\" method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"next\" value=\"{}\"><button id=\"logout\" class=\"secondary\" type=\"submit\">Sign out</button></form></div>",
        esc(name),
        esc(csrf),
        page.name()
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
            "<tr id=\"req-{id_e}\"><td data-label=\"Agent\">{}</td><td data-label=\"Target\"><code>{}</code></td><td data-label=\"Operation\">{}</td><td data-label=\"Duration\">{} min</td><td data-label=\"Justification\">{}</td><td data-label=\"Age\">{}m {:02}s</td><td data-label=\"Approvals\">{}/{}</td>\
<td data-label=\"Decision\"><form method=\"post\" action=\"/ui/approvals/{id_e}/decide\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<textarea id=\"comment-{id_e}\" name=\"comment\" aria-label=\"comment\" placeholder=\"comment (required to deny)\"></textarea>\
<div class=\"actions\"><button id=\"approve-{id_e}\" name=\"action\" value=\"approve\" type=\"submit\">Approve</button>\
<button id=\"deny-{id_e}\" name=\"action\" value=\"deny\" type=\"submit\">Deny</button></div></form></td></tr>",
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
        "{flash}{}<h2>Pending requests</h2>{table}",
        signed_in(Page::Approvals, &name, &csrf)
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

async fn stylesheet() -> HttpResponse {
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

/// What a page needs of its session.
struct Current {
    sid: String,
    token: SecretString,
    csrf: String,
    name: String,
    flash: Option<String>,
}

/// The signed-in session of the request, or the sign-in page to answer with.
fn current(ui: &Ui, headers: &HeaderMap, page: Page) -> Result<Current, Box<HttpResponse>> {
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

/// Whether the session's policies give `sudo` (and `update`) on `sys/containment/lock`:
/// asked of the core (`sys/capabilities-self`), so the page shows the button exactly
/// when the lock call would pass the ACL. The lock call is checked again when made.
async fn may_contain(ui: &Ui, peer: SocketAddr, token: &SecretString) -> bool {
    const LOCK: &str = "sys/containment/lock";
    let mut data = Map::new();
    data.insert("paths".into(), serde_json::json!([LOCK]));
    let Ok(r) = ui
        .call(
            peer,
            Some(SecretString::from(token.expose_secret().to_owned())),
            Operation::Update,
            "sys/capabilities-self".to_owned(),
            data,
        )
        .await
    else {
        return false;
    };
    let caps: Vec<String> = r
        .data
        .and_then(|d| d.get(LOCK).cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let has = |c: &str| caps.iter().any(|x| x == c);
    has("root") || (has("sudo") && has("update"))
}

/// A selector posted by the agents page: `entity_id` (locks) or `accessor` (a token
/// tree without an entity, only revoked).
fn posted_selector(f: &HashMap<String, String>) -> Option<(&'static str, String)> {
    let kind = match f.get("kind").map(String::as_str) {
        Some("entity_id") => "entity_id",
        Some("accessor") => "accessor",
        _ => return None,
    };
    let value = f.get("value")?.trim().to_owned();
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then_some((kind, value))
}

fn dom_id(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

async fn agents_page(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> HttpResponse {
    let cur = match current(&ui, &headers, Page::Agents) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let flash = cur
        .flash
        .as_deref()
        .map(|m| format!("<p id=\"flash\" class=\"flash\">{}</p>", esc(m)))
        .unwrap_or_default();
    let head = format!("{flash}{}", signed_in(Page::Agents, &cur.name, &cur.csrf));
    let listed = ui
        .call(
            peer,
            Some(SecretString::from(cur.token.expose_secret().to_owned())),
            Operation::List,
            "sys/containment/agents".to_owned(),
            Map::new(),
        )
        .await;
    let data = match listed {
        Ok(r) => r.data.unwrap_or(Value::Null),
        Err(e @ leash_core::CoreError::InvalidToken { .. }) => {
            ui.end(&cur.sid);
            return html(
                StatusCode::OK,
                login_page_for(
                    Page::Agents,
                    Some(&format!("{}; sign in again.", message_of(&e))),
                ),
                None,
            );
        }
        Err(leash_core::CoreError::PermissionDenied) => {
            return html(
                StatusCode::OK,
                layout(
                    "Agents",
                    &format!(
                        "{head}<p id=\"denied\" class=\"warn\">Your policies do not let you see the agents (this page needs <code>read</code> on <code>sys/containment/agents</code>).</p>"
                    ),
                ),
                None,
            );
        }
        Err(e) => {
            return html(
                StatusCode::OK,
                layout(
                    "Agents",
                    &format!(
                        "{head}<p id=\"flash\" class=\"flash err\">{}</p>",
                        esc(&message_of(&e))
                    ),
                ),
                None,
            );
        }
    };
    let may = may_contain(&ui, peer, &cur.token).await;
    let keys: Vec<String> = data["keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut rows = String::new();
    for key in &keys {
        let v = &data["key_info"][key];
        let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        // At most `max` items of a list (the API has them all).
        let list = |k: &str, empty: &str, max: usize| {
            let all: Vec<&str> = v[k]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if all.is_empty() {
                return format!("<span class=\"muted\">{empty}</span>");
            }
            let mut items: String = all
                .iter()
                .take(max)
                .map(|x| format!("<li><code>{}</code></li>", esc(x)))
                .collect();
            if all.len() > max {
                items.push_str(&format!(
                    "<li class=\"muted\">and {} more</li>",
                    all.len() - max
                ));
            }
            format!("<ul class=\"plain\">{items}</ul>")
        };
        let id = dom_id(key);
        let entity = s("entity_id");
        let identity = if entity.is_empty() {
            format!(
                "<strong>{}</strong><br><span class=\"muted\">token tree, no entity</span>",
                esc(&s("name"))
            )
        } else {
            format!(
                "<strong>{}</strong><br><code class=\"muted\">{}</code>",
                esc(&s("name")),
                esc(&entity)
            )
        };
        let leases_n = v["leases"].as_array().map_or(0, Vec::len);
        let (kind, value) = if entity.is_empty() {
            ("accessor", v["selector"]["accessor"].as_str().unwrap_or(""))
        } else {
            ("entity_id", entity.as_str())
        };
        let action = if v["you"].as_bool() == Some(true) {
            "<span class=\"muted\">(you)</span>".to_owned()
        } else if may {
            let label = if kind == "entity_id" {
                "Revoke everything and lock"
            } else {
                "Revoke everything"
            };
            format!(
                "<form method=\"post\" action=\"/ui/agents/confirm\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"kind\" value=\"{kind}\"><input type=\"hidden\" name=\"value\" value=\"{}\">\
<button id=\"contain-{id}\" class=\"danger\" type=\"submit\">{label}</button></form>",
                esc(&cur.csrf),
                esc(value)
            )
        } else {
            "<span class=\"muted\">—</span>".to_owned()
        };
        rows.push_str(&format!(
            "<tr id=\"agent-{id}\"><td data-label=\"Identity\">{identity}</td><td data-label=\"Role\">{}</td>\
<td data-label=\"Tokens\" class=\"tokens\">{}</td><td data-label=\"Leases\" class=\"leases\"><span class=\"count\">{leases_n}</span>{}</td>\
<td data-label=\"Last use\">{}</td><td data-label=\"Trace ids (last hour)\">{}</td><td data-label=\"Action\">{action}</td></tr>",
            list("roles", "—", 4),
            v["tokens"].as_u64().unwrap_or(0),
            list("leases", "", 20),
            v["last_use"]
                .as_str()
                .map_or_else(|| "<span class=\"muted\">not since start</span>".to_owned(), esc),
            list("trace_ids", "none", 3),
        ));
    }
    let table = if rows.is_empty() {
        "<p id=\"empty\">No live agents.</p>".to_owned()
    } else {
        format!(
            "<table id=\"agents\"><thead><tr><th>Identity</th><th>Role</th><th>Tokens</th><th>Leases</th><th>Last use</th><th>Trace ids (last hour)</th><th>Action</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    let note = if may {
        ""
    } else {
        "<p id=\"no-contain\" class=\"muted\">Containing an agent needs <code>sudo</code> on <code>sys/containment/lock</code>; your policies do not give it.</p>"
    };
    html(
        StatusCode::OK,
        layout(
            "Agents",
            &format!("{head}<h2>Live agents</h2>{note}{table}"),
        ),
        None,
    )
}

/// The confirmation step: names what will end and asks for the reason.
async fn agents_confirm(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let Some(f) = form(body).await else {
        return html(
            StatusCode::BAD_REQUEST,
            login_page_for(Page::Agents, Some("The form could not be read.")),
            None,
        );
    };
    let sid = match checked(&ui, &headers, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some((kind, value)) = posted_selector(&f) else {
        ui.session(&sid, |s| s.flash = Some("No such agent.".to_owned()));
        return redirect("/ui/agents", None);
    };
    let cur = match current(&ui, &headers, Page::Agents) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if !may_contain(&ui, peer, &cur.token).await {
        ui.session(&sid, |s| {
            s.flash = Some(
                "Containing an agent needs sudo on sys/containment/lock; your policies do not give it."
                    .to_owned(),
            );
        });
        return redirect("/ui/agents", None);
    }
    let what = if kind == "entity_id" {
        "every token it holds (with the tokens they created), every lease issued to them \
(database users dropped, their sessions ended) and its pending or approved access requests \
end now, and the identity is <strong>locked</strong>: its logins are refused until an \
operator unlocks it (<code>leash contain --unlock</code>)."
    } else {
        "this token tree (with the tokens it created) and every lease issued to it end now. \
It has no identity to lock."
    };
    let button = if kind == "entity_id" {
        "Yes, revoke everything and lock"
    } else {
        "Yes, revoke everything"
    };
    let body = format!(
        "{}<div class=\"card\"><p class=\"warn\">Contain <code id=\"target\">{}</code> ({}): {what}</p>\
<form method=\"post\" action=\"/ui/agents/contain\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"kind\" value=\"{kind}\"><input type=\"hidden\" name=\"value\" value=\"{}\">\
<input type=\"hidden\" name=\"confirm\" value=\"yes\">\
<p><label>Reason (shown to the agent at login) <textarea id=\"reason\" name=\"reason\" required maxlength=\"1024\"></textarea></label></p>\
<div class=\"actions\"><button id=\"confirm-contain\" class=\"danger\" type=\"submit\">{button}</button></div></form>\
<p><a id=\"cancel\" href=\"/ui/agents\">Cancel</a></p></div>",
        signed_in(Page::Agents, &cur.name, &cur.csrf),
        esc(&value),
        if kind == "entity_id" {
            "entity"
        } else {
            "token tree"
        },
        esc(&cur.csrf),
        esc(&value),
    );
    html(StatusCode::OK, layout("Agents", &body), None)
}

/// The lock itself: an ordinary `PUT sys/containment/lock` made with the session's token,
/// so the pipeline checks `sudo` again and audits it.
async fn agents_contain(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let Some(f) = form(body).await else {
        return html(
            StatusCode::BAD_REQUEST,
            login_page_for(Page::Agents, Some("The form could not be read.")),
            None,
        );
    };
    let sid = match checked(&ui, &headers, &f) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let flash = |m: String| {
        ui.session(&sid, |s| s.flash = Some(m));
        redirect("/ui/agents", None)
    };
    let Some((kind, value)) = posted_selector(&f) else {
        return flash("No such agent.".to_owned());
    };
    if f.get("confirm").map(String::as_str) != Some("yes") {
        return flash("Confirm first: nothing was revoked.".to_owned());
    }
    let reason = f
        .get("reason")
        .map(|r| r.trim().to_owned())
        .unwrap_or_default();
    if reason.is_empty() {
        return flash("Give a reason: nothing was revoked.".to_owned());
    }
    let Some(token) = ui.session(&sid, |s| {
        SecretString::from(s.token.expose_secret().to_owned())
    }) else {
        return html(
            StatusCode::FORBIDDEN,
            login_page_for(Page::Agents, Some("Your session ended; sign in again.")),
            None,
        );
    };
    let mut data = Map::new();
    data.insert(kind.into(), Value::String(value.clone()));
    data.insert("reason".into(), Value::String(reason));
    let r = ui
        .call(
            peer,
            Some(token),
            Operation::Update,
            "sys/containment/lock".to_owned(),
            data,
        )
        .await;
    match r {
        Ok(resp) => {
            let d = resp.data.unwrap_or(Value::Null);
            let n = |k: &str| d["revoked"][k].as_u64().unwrap_or(0);
            let locked = if d["locked"].as_bool() == Some(true) {
                " The identity is locked."
            } else {
                ""
            };
            let retrying = d["leases_retrying"].as_u64().unwrap_or(0);
            let retrying = if retrying > 0 {
                format!(" {retrying} lease revocations failed and are being retried.")
            } else {
                String::new()
            };
            flash(format!(
                "Contained {value}: {} tokens, {} leases and {} access requests revoked.{locked}{retrying}",
                n("tokens"),
                n("leases"),
                n("approvals")
            ))
        }
        Err(e) => {
            tracing::info!(kind, "agents page: containment refused");
            flash(format!("Could not contain {value}: {}", message_of(&e)))
        }
    }
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
