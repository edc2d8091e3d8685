//! `/ui/agents`: the live agents, and containing one (lock or revoke) after a
//! confirmation step.

use super::*;
use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response as HttpResponse;
use leash_types::{ExposeSecret, Operation, SecretString};
use serde_json::{Map, Value};

/// Whether the session's policies give `sudo` (and `update`) on `sys/containment/lock`:
/// asked of the core (`sys/capabilities-self`), so the page shows the button exactly
/// when the lock call would pass the ACL. The lock call is checked again when made.
pub(super) async fn may_contain(ui: &Ui, peer: SocketAddr, token: &SecretString) -> bool {
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
pub(super) fn posted_selector(f: &HashMap<String, String>) -> Option<(&'static str, String)> {
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

pub(super) fn dom_id(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

pub(super) async fn agents_page(
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
pub(super) async fn agents_confirm(
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
pub(super) async fn agents_contain(
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
