//! `/ui/approvals`: pending just-in-time requests, approved or denied with a comment.

use super::*;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response as HttpResponse;
use leash_types::{ExposeSecret, Operation, SecretString};
use serde_json::{Map, Value};

pub(super) async fn index() -> HttpResponse {
    redirect("/ui/approvals", None)
}

pub(super) async fn page(
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

pub(super) async fn decide(
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
