//! Shared page chrome: HTML escaping, the secure response headers, the layout, the
//! nav and the sign-in form.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response as HttpResponse;

pub(super) fn esc(s: &str) -> String {
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

pub(super) fn html(status: StatusCode, body: String, cookie: Option<String>) -> HttpResponse {
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

pub(super) fn redirect(to: &'static str, cookie: Option<String>) -> HttpResponse {
    let mut r = html(StatusCode::SEE_OTHER, String::new(), cookie);
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

pub(super) fn nav(current: &str) -> String {
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

pub(super) fn layout(title: &str, body: &str) -> String {
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
pub(super) enum Page {
    Approvals,
    Agents,
}

impl Page {
    pub(super) fn of(s: &str) -> Page {
        if s == "agents" {
            Page::Agents
        } else {
            Page::Approvals
        }
    }
    pub(super) fn title(self) -> &'static str {
        match self {
            Page::Approvals => "Approvals",
            Page::Agents => "Agents",
        }
    }
    pub(super) fn name(self) -> &'static str {
        match self {
            Page::Approvals => "approvals",
            Page::Agents => "agents",
        }
    }
    pub(super) fn path(self) -> &'static str {
        match self {
            Page::Approvals => "/ui/approvals",
            Page::Agents => "/ui/agents",
        }
    }
}

pub(super) fn login_page(message: Option<&str>) -> String {
    login_page_for(Page::Approvals, message)
}

pub(super) fn login_page_for(page: Page, message: Option<&str>) -> String {
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

pub(super) fn signed_in(page: Page, name: &str, csrf: &str) -> String {
    format!(
        "<div class=\"who\"><p>Signed in as <strong id=\"who\">{}</strong>.</p>\
<form class=\"inline\" method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"next\" value=\"{}\"><button id=\"logout\" class=\"secondary\" type=\"submit\">Sign out</button></form></div>",
        esc(name),
        esc(csrf),
        page.name()
    )
}
