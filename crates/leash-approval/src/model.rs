//! The access request and its state machine.
//!
//! ```text
//!            approve (quorum reached) / rule          window ends, complete
//!  pending ───────────────────────────────▶ approved ─────────────────────▶ completed
//!     │ deny                                    (uses run out: stays approved
//!     ├──────▶ denied                            but grants nothing more)
//!     │ pending lifetime passes
//!     └──────▶ expired
//! ```
//!
//! Every transition takes `now` (unix seconds) and checks the state first, so a request
//! that expired a moment ago cannot be approved even if the sweeper has not marked it
//! yet. Approvals count distinct entities per factor; every factor must reach its count.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use leash_types::rfc3339;

use crate::ApprovalError;

/// Where a request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for approvers.
    Pending,
    /// Approved: the grant window is open (until `window_ends_at`).
    Approved,
    /// Denied by an approver.
    Denied,
    /// Nobody decided within the pending lifetime.
    Expired,
    /// The grant window closed (ended, or completed early by the requester).
    Completed,
}

impl Status {
    /// Its name in answers (`pending`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Completed => "completed",
        }
    }
}

/// Who asked.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Requester {
    /// The token's entity id (empty for a token without an identity).
    pub entity_id: String,
    /// The token's accessor.
    pub accessor: String,
    /// The token's display name (e.g. `approle-agent` or `userpass-alice`).
    pub display_name: String,
    /// Hex of the keyed hash of the token: the grant is bound to this token.
    pub token_hash: String,
    /// The agent's readable name: login role or user name, else the display name
    /// (empty for requests stored before it; then the display name stands in).
    #[serde(default)]
    pub name: String,
}

impl Requester {
    /// The agent's readable name (see `name`).
    pub fn agent_name(&self) -> &str {
        if self.name.is_empty() {
            &self.display_name
        } else {
            &self.name
        }
    }
}

/// One approver's decision.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Approval {
    /// The approver's entity id.
    pub entity_id: String,
    /// The approver's display name.
    pub name: String,
    /// Their comment.
    pub comment: String,
    /// Unix seconds.
    pub at: i64,
}

/// What the approver presents (the core resolves the identity groups).
#[derive(Clone, Debug)]
pub struct Approver {
    /// Entity id of the approver's token (must not be empty).
    pub entity_id: String,
    /// The token's accessor (a token never approves the request it made).
    pub accessor: String,
    /// Display name for the record.
    pub name: String,
    /// Names of the identity groups the entity belongs to.
    pub groups: Vec<String>,
}

/// One factor of the control group: `approvals` distinct members of `group_names`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Factor {
    /// The factor's label in the policy.
    pub name: String,
    /// Approvers must belong to one of these identity groups.
    pub group_names: Vec<String>,
    /// Approvals needed.
    pub approvals_needed: u32,
    /// Approvals given so far.
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

impl Factor {
    fn satisfied(&self) -> bool {
        self.approvals.len() >= self.approvals_needed as usize
    }
    fn eligible(&self, a: &Approver) -> bool {
        self.group_names.iter().any(|g| a.groups.contains(g))
    }
}

/// How a request was decided (denial, or the approval that completed the quorum, or a
/// rule).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decision {
    /// `approved`, `denied` or `auto-approved`.
    pub outcome: String,
    /// Entity id of the deciding approver (empty for a rule).
    pub entity_id: String,
    /// Approver name, or `rule:<name>`.
    pub by: String,
    /// Comment.
    pub comment: String,
    /// Unix seconds.
    pub at: i64,
}

/// A just-in-time access request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessRequest {
    /// Its id (UUID).
    pub id: String,
    /// Where it is.
    pub status: Status,
    /// The agent id the agent gave (informational; identity comes from the token).
    pub agent_id: String,
    /// Who asked.
    pub requester: Requester,
    /// The operation as the agent stated it: its intent (`read`, `update`, or free text
    /// such as `production write`), shown to approvers, in webhooks and in audit.
    pub operation: String,
    /// The Vault operations the grant is bound to: the stated one when the policy
    /// allows it on the target, else those the policy puts behind the control group
    /// there. Empty for requests stored before this field: then `operation`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_operations: Vec<String>,
    /// The leash path asked for (`database/creds/agent-readwrite`).
    pub target_resource: String,
    /// Why, in the agent's words.
    pub justification: String,
    /// Minutes asked for.
    pub requested_duration_minutes: u64,
    /// Length of the grant window once approved: the request capped by the control
    /// group's `ttl`.
    pub window_seconds: u64,
    /// The timestamp the agent sent, as sent.
    #[serde(default)]
    pub client_timestamp: Option<String>,
    /// Unix seconds of creation.
    pub created_at: i64,
    /// A pending request expires at this unix time.
    pub pending_until: i64,
    /// Factors to satisfy (empty for a rule-approved request).
    pub factors: Vec<Factor>,
    /// `self_auth_allowed` of the policy, recorded; leash never lets the requester
    /// decide its own request whatever it says.
    #[serde(default)]
    pub self_auth_allowed: bool,
    /// The deciding event.
    #[serde(default)]
    pub decision: Option<Decision>,
    /// Unix seconds at which the window opened.
    #[serde(default)]
    pub approved_at: Option<i64>,
    /// Unix seconds at which the window closes.
    #[serde(default)]
    pub window_ends_at: Option<i64>,
    /// Uses of the grant left (`None`: unlimited within the window).
    #[serde(default)]
    pub uses_left: Option<u32>,
    /// Uses granted at approval (`None`: unlimited), for display.
    #[serde(default)]
    pub uses_granted: Option<u32>,
    /// The pre-approval rule that approved it.
    #[serde(default)]
    pub rule: Option<String>,
    /// Leases issued under the grant.
    #[serde(default)]
    pub leases: Vec<String>,
    /// Trace id of the creating request.
    #[serde(default)]
    pub trace_id: String,
    /// Whether the escalation webhook was sent.
    #[serde(default)]
    pub escalated: bool,
    /// Unix seconds at which it reached a final state.
    #[serde(default)]
    pub closed_at: Option<i64>,
    /// Why it was completed (`window ended`, `completed by requester`).
    #[serde(default)]
    pub closed_reason: Option<String>,
}

/// The result of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApproveOutcome {
    /// Counted; more approvals are needed (given, needed).
    Counted(u32, u32),
    /// The quorum is reached: the window is open.
    Approved,
}

/// Checks a target path as agents write it and returns it in the form request paths
/// have: `database/creds/x`. The one accepted variation is a leading `/v1/` (the HTTP
/// spelling, stripped). Anything no request could match is refused rather than stored
/// as a grant nobody can use (or that reads as something else in a notification): a
/// leading `/`, empty segments (`//`), a trailing `/`, `.` and `..` segments, query
/// strings and fragments (`?`, `#`), percent-encoding (`%61`), backslashes, control
/// characters and whitespace. Errors name the field and the rule, never the value.
pub fn normalise_path(p: &str) -> Result<String, ApprovalError> {
    let bad = |why: &str| {
        ApprovalError::invalid(format!(
            "target_resource is not a valid request path: {why}"
        ))
    };
    let t = p.strip_prefix("/v1/").unwrap_or(p);
    if t.is_empty() {
        return Err(ApprovalError::invalid(
            "target_resource must name a leash path, e.g. \"database/creds/agent-readwrite\"",
        ));
    }
    if t.len() > 512 {
        return Err(bad("longer than 512 bytes"));
    }
    if let Some(c) = t.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(if c.is_control() {
            "it contains a control character"
        } else {
            "it contains whitespace"
        }));
    }
    if t.contains(['?', '#']) {
        return Err(bad("no query string or fragment ('?', '#') is allowed"));
    }
    if t.contains('%') {
        return Err(bad(
            "no percent-encoding ('%') is allowed; write the path as it is",
        ));
    }
    if t.contains('\\') {
        return Err(bad("no backslash is allowed"));
    }
    if t.starts_with('/') {
        return Err(bad(
            "it must not start with '/' (write database/creds/x or /v1/database/creds/x)",
        ));
    }
    if t.ends_with('/') {
        return Err(bad("it must not end with '/'"));
    }
    if t.split('/').any(str::is_empty) {
        return Err(bad("empty segments ('//') are not allowed"));
    }
    if t.split('/').any(|s| s == ".." || s == ".") {
        return Err(bad("'.' and '..' segments are not allowed"));
    }
    Ok(t.to_owned())
}

impl AccessRequest {
    /// Approvals given so far (over all factors) and needed in all.
    pub fn tally(&self) -> (u32, u32) {
        let have = self
            .factors
            .iter()
            .map(|f| (f.approvals.len() as u32).min(f.approvals_needed))
            .sum();
        let need = self.factors.iter().map(|f| f.approvals_needed).sum();
        (have, need)
    }

    /// Whether the request counts as pending at `now` (a pending request past its
    /// lifetime is expired even before the sweeper marks it).
    pub fn is_pending(&self, now: i64) -> bool {
        self.status == Status::Pending && now < self.pending_until
    }

    /// Whether the grant window is open at `now` (approved, not ended).
    pub fn window_open(&self, now: i64) -> bool {
        self.status == Status::Approved && self.window_ends_at.is_some_and(|e| now < e)
    }

    fn check_decidable(&self, now: i64) -> Result<(), ApprovalError> {
        match self.status {
            Status::Pending if now < self.pending_until => Ok(()),
            Status::Pending | Status::Expired => Err(ApprovalError::invalid(format!(
                "access request {} expired without a decision",
                self.id
            ))),
            s => Err(ApprovalError::invalid(format!(
                "access request {} is already {}",
                self.id,
                s.as_str()
            ))),
        }
    }

    fn check_not_self(&self, a: &Approver) -> Result<(), ApprovalError> {
        // Never, whatever `self_auth_allowed` says: an agent (or a person) holding an
        // approver identity must not be able to approve its own escalation.
        let same_entity =
            !self.requester.entity_id.is_empty() && self.requester.entity_id == a.entity_id;
        let same_token = !a.accessor.is_empty() && self.requester.accessor == a.accessor;
        if same_token || same_entity {
            return Err(ApprovalError::forbidden(
                "you cannot decide your own access request",
            ));
        }
        Ok(())
    }

    fn eligible_factors(&self, a: &Approver) -> Result<Vec<usize>, ApprovalError> {
        if a.entity_id.is_empty() {
            return Err(ApprovalError::forbidden(
                "deciding an access request needs an identity: log in through an auth method (e.g. userpass) whose entity is a member of an approver group",
            ));
        }
        let eligible: Vec<usize> = self
            .factors
            .iter()
            .enumerate()
            .filter(|(_, f)| f.eligible(a))
            .map(|(i, _)| i)
            .collect();
        if eligible.is_empty() {
            let groups: Vec<&str> = self
                .factors
                .iter()
                .flat_map(|f| f.group_names.iter().map(String::as_str))
                .collect();
            return Err(ApprovalError::forbidden(format!(
                "you are not in an approver group of this request (needs a member of: {})",
                groups.join(", ")
            )));
        }
        Ok(eligible)
    }

    /// Records `a`'s approval. Opens the window (`window_seconds` from `now`, with
    /// `uses` uses) when every factor has its count.
    pub fn approve(
        &mut self,
        a: &Approver,
        comment: &str,
        uses: Option<u32>,
        now: i64,
    ) -> Result<ApproveOutcome, ApprovalError> {
        self.check_decidable(now)?;
        self.check_not_self(a)?;
        let eligible = self.eligible_factors(a)?;
        let mut counted = false;
        for i in eligible {
            let f = &mut self.factors[i];
            if f.satisfied() || f.approvals.iter().any(|x| x.entity_id == a.entity_id) {
                continue;
            }
            f.approvals.push(Approval {
                entity_id: a.entity_id.clone(),
                name: a.name.clone(),
                comment: comment.to_owned(),
                at: now,
            });
            counted = true;
        }
        if !counted {
            return Err(ApprovalError::invalid(
                "your approval is already counted for every factor you can approve",
            ));
        }
        if self.factors.iter().all(Factor::satisfied) {
            self.open_window(
                Decision {
                    outcome: "approved".to_owned(),
                    entity_id: a.entity_id.clone(),
                    by: a.name.clone(),
                    comment: comment.to_owned(),
                    at: now,
                },
                uses,
                now,
            );
            Ok(ApproveOutcome::Approved)
        } else {
            let (have, need) = self.tally();
            Ok(ApproveOutcome::Counted(have, need))
        }
    }

    /// Approves at once by pre-approval rule `rule`.
    pub fn auto_approve(&mut self, rule: &str, uses: Option<u32>, now: i64) {
        self.rule = Some(rule.to_owned());
        self.open_window(
            Decision {
                outcome: "auto-approved".to_owned(),
                entity_id: String::new(),
                by: format!("rule:{rule}"),
                comment: String::new(),
                at: now,
            },
            uses,
            now,
        );
    }

    fn open_window(&mut self, d: Decision, uses: Option<u32>, now: i64) {
        self.status = Status::Approved;
        self.decision = Some(d);
        self.approved_at = Some(now);
        let len = i64::try_from(self.window_seconds).unwrap_or(i64::MAX);
        self.window_ends_at = Some(now.saturating_add(len));
        self.uses_left = uses;
        self.uses_granted = uses;
    }

    /// Records `a`'s denial: the request ends.
    pub fn deny(&mut self, a: &Approver, comment: &str, now: i64) -> Result<(), ApprovalError> {
        self.check_decidable(now)?;
        self.check_not_self(a)?;
        self.eligible_factors(a)?;
        self.status = Status::Denied;
        self.closed_at = Some(now);
        self.decision = Some(Decision {
            outcome: "denied".to_owned(),
            entity_id: a.entity_id.clone(),
            by: a.name.clone(),
            comment: comment.to_owned(),
            at: now,
        });
        Ok(())
    }

    /// Marks a pending request past its lifetime `expired`; returns whether it changed.
    pub fn expire(&mut self, now: i64) -> bool {
        if self.status == Status::Pending && now >= self.pending_until {
            self.status = Status::Expired;
            self.closed_at = Some(now);
            true
        } else {
            false
        }
    }

    /// Closes an approved request's window (`reason`); returns whether it changed.
    pub fn close(&mut self, reason: &str, now: i64) -> bool {
        if self.status == Status::Approved {
            self.status = Status::Completed;
            self.closed_at = Some(now);
            self.closed_reason = Some(reason.to_owned());
            if self.window_ends_at.is_some_and(|e| e > now) {
                self.window_ends_at = Some(now);
            }
            true
        } else {
            false
        }
    }

    /// The Vault operations the grant is bound to (see `granted_operations`).
    pub fn grant_operations(&self) -> Vec<String> {
        if self.granted_operations.is_empty() {
            vec![self.operation.clone()]
        } else {
            self.granted_operations.clone()
        }
    }

    /// Whether this grant covers `operation` on `path` (create and update are both a
    /// write: which one a POST becomes depends on whether the target exists).
    pub fn covers(&self, path: &str, operation: &str) -> bool {
        let write = |o: &str| o == "create" || o == "update";
        let bound = |o: &String| o == operation || (write(o) && write(operation));
        self.target_resource == path
            && if self.granted_operations.is_empty() {
                bound(&self.operation)
            } else {
                self.granted_operations.iter().any(bound)
            }
    }

    /// Spends one use of the grant at `now`.
    pub fn use_grant(&mut self, now: i64) -> Result<(), ApprovalError> {
        if !self.window_open(now) {
            return Err(ApprovalError::invalid(format!(
                "the grant of access request {} is not open",
                self.id
            )));
        }
        match self.uses_left {
            None => Ok(()),
            Some(0) => Err(ApprovalError::invalid(format!(
                "the grant of access request {} was already used",
                self.id
            ))),
            Some(n) => {
                self.uses_left = Some(n - 1);
                Ok(())
            }
        }
    }

    /// Seconds it has waited (pending) at `now`.
    pub fn age(&self, now: i64) -> i64 {
        (now - self.created_at).max(0)
    }

    /// The API view (`data` of `GET sys/control-group/request/:id`). Never holds a
    /// token or credential; lease ids are the requester's own.
    pub fn view(&self, now: i64) -> Value {
        let status = if self.status == Status::Pending && now >= self.pending_until {
            Status::Expired
        } else {
            self.status
        };
        let (have, need) = self.tally();
        let approved = status == Status::Approved && self.window_open(now);
        let approvers: Vec<Value> = self
            .factors
            .iter()
            .flat_map(|f| {
                f.approvals.iter().map(move |a| {
                    json!({
                        "factor": f.name,
                        "entity_id": a.entity_id,
                        "name": a.name,
                        "comment": a.comment,
                        "time": rfc3339(a.at),
                    })
                })
            })
            .collect();
        let factors: Vec<Value> = self
            .factors
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "group_names": f.group_names,
                    "approvals": f.approvals.len(),
                    "approvals_needed": f.approvals_needed,
                })
            })
            .collect();
        json!({
            "request_id": self.id,
            "id": self.id,
            "status": status.as_str(),
            "approved": approved,
            "agent_id": self.agent_id,
            "requester_entity_id": self.requester.entity_id,
            "requester_name": self.requester.display_name,
            "agent_name": self.requester.agent_name(),
            "operation": self.operation,
            "granted_operations": self.grant_operations(),
            "target_resource": self.target_resource,
            "justification": self.justification,
            "requested_duration_minutes": self.requested_duration_minutes,
            "grant_duration_seconds": self.window_seconds,
            "timestamp": self.client_timestamp,
            "created_at": rfc3339(self.created_at),
            "age_seconds": self.age(now),
            "pending_expires_at": rfc3339(self.pending_until),
            "approvals": have,
            "approvals_needed": need,
            "approvers": approvers,
            "factors": factors,
            "decided_by": self.decision.as_ref().map(|d| json!({
                "outcome": d.outcome,
                "entity_id": d.entity_id,
                "name": d.by,
                "comment": d.comment,
                "time": rfc3339(d.at),
            })),
            "rule": self.rule,
            "approved_at": self.approved_at.map(rfc3339),
            "grant_expires_at": self.window_ends_at.map(rfc3339),
            "uses_left": self.uses_left,
            "lease_ids": self.leases,
            "closed_reason": self.closed_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(factors: Vec<Factor>) -> AccessRequest {
        AccessRequest {
            id: "r1".into(),
            status: Status::Pending,
            agent_id: "agent-7".into(),
            requester: Requester {
                entity_id: "ent-agent".into(),
                accessor: "acc-agent".into(),
                display_name: "approle".into(),
                token_hash: "00".into(),
                name: String::new(),
            },
            operation: "read".into(),
            granted_operations: Vec::new(),
            target_resource: "database/creds/rw".into(),
            justification: "migrate".into(),
            requested_duration_minutes: 10,
            window_seconds: 600,
            client_timestamp: None,
            created_at: 1000,
            pending_until: 4600,
            factors,
            self_auth_allowed: false,
            decision: None,
            approved_at: None,
            window_ends_at: None,
            uses_left: None,
            uses_granted: None,
            rule: None,
            leases: vec![],
            trace_id: String::new(),
            escalated: false,
            closed_at: None,
            closed_reason: None,
        }
    }

    fn factor(groups: &[&str], n: u32) -> Factor {
        Factor {
            name: "f".into(),
            group_names: groups.iter().map(|s| (*s).to_owned()).collect(),
            approvals_needed: n,
            approvals: vec![],
        }
    }

    fn approver(entity: &str, groups: &[&str]) -> Approver {
        Approver {
            entity_id: entity.into(),
            accessor: format!("acc-{entity}"),
            name: entity.into(),
            groups: groups.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn two_of_n_needs_two_distinct_entities() {
        let mut r = request(vec![factor(&["dba"], 2)]);
        let alice = approver("alice", &["dba"]);
        assert_eq!(
            r.approve(&alice, "ok", Some(1), 1100).unwrap(),
            ApproveOutcome::Counted(1, 2)
        );
        // The same entity again does not count twice.
        assert!(matches!(
            r.approve(&alice, "again", Some(1), 1101),
            Err(ApprovalError::Invalid(_))
        ));
        assert!(!r.window_open(1102));
        let bob = approver("bob", &["dba"]);
        assert_eq!(
            r.approve(&bob, "ok", Some(1), 1200).unwrap(),
            ApproveOutcome::Approved
        );
        assert!(r.window_open(1200));
        assert_eq!(r.window_ends_at, Some(1800));
        assert!(!r.window_open(1800));
        assert_eq!(r.view(1201)["approved"], true);
        assert_eq!(r.view(1201)["approvals"], 2);
    }

    #[test]
    fn every_factor_must_be_satisfied() {
        let mut r = request(vec![factor(&["dba"], 1), factor(&["security"], 1)]);
        assert_eq!(
            r.approve(&approver("a", &["dba"]), "", None, 1100).unwrap(),
            ApproveOutcome::Counted(1, 2)
        );
        assert_eq!(
            r.approve(&approver("b", &["security"]), "", None, 1100)
                .unwrap(),
            ApproveOutcome::Approved
        );
    }

    #[test]
    fn the_requester_cannot_decide_and_outsiders_are_refused() {
        let mut r = request(vec![factor(&["dba"], 1)]);
        let me = approver("ent-agent", &["dba"]);
        let e = r.approve(&me, "", None, 1100).unwrap_err();
        assert!(matches!(e, ApprovalError::Forbidden(ref m) if m.contains("your own")));
        assert!(r.deny(&me, "", 1100).is_err());
        let outsider = approver("eve", &["dev"]);
        let e = r.approve(&outsider, "", None, 1100).unwrap_err();
        assert!(
            matches!(e, ApprovalError::Forbidden(ref m) if m.contains("dba")),
            "{e}"
        );
        let nobody = approver("", &["dba"]);
        assert!(matches!(
            r.approve(&nobody, "", None, 1100),
            Err(ApprovalError::Forbidden(_))
        ));
        assert_eq!(r.status, Status::Pending);
    }

    #[test]
    fn self_auth_allowed_does_not_let_the_requester_approve() {
        let mut r = request(vec![factor(&["dba"], 1)]);
        r.self_auth_allowed = true;
        let me = Approver {
            accessor: "another-token".into(),
            ..approver("ent-agent", &["dba"])
        };
        assert!(matches!(
            r.approve(&me, "", None, 1100),
            Err(ApprovalError::Forbidden(_))
        ));
    }

    #[test]
    fn a_denial_ends_the_request() {
        let mut r = request(vec![factor(&["dba"], 2)]);
        r.approve(&approver("a", &["dba"]), "", None, 1100).unwrap();
        r.deny(&approver("b", &["dba"]), "no", 1101).unwrap();
        assert_eq!(r.status, Status::Denied);
        assert!(r.approve(&approver("c", &["dba"]), "", None, 1102).is_err());
        assert_eq!(r.view(1103)["decided_by"]["comment"], "no");
    }

    #[test]
    fn pending_requests_expire_and_cannot_be_approved_late() {
        let mut r = request(vec![factor(&["dba"], 1)]);
        let e = r
            .approve(&approver("a", &["dba"]), "", None, 4600)
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        assert_eq!(r.view(4600)["status"], "expired");
        assert!(r.expire(4600));
        assert_eq!(r.status, Status::Expired);
        assert!(!r.expire(4601));
    }

    #[test]
    fn grants_are_single_use_when_asked_and_close() {
        let mut r = request(vec![factor(&["dba"], 1)]);
        r.approve(&approver("a", &["dba"]), "", Some(1), 1100)
            .unwrap();
        assert!(r.covers("database/creds/rw", "read"));
        assert!(!r.covers("database/creds/rw", "delete"));
        assert!(!r.covers("database/creds/other", "read"));
        r.use_grant(1101).unwrap();
        assert!(r.use_grant(1102).is_err());
        assert!(r.close("completed by requester", 1103));
        assert_eq!(r.status, Status::Completed);
        assert_eq!(r.window_ends_at, Some(1103));
        assert!(r.use_grant(1104).is_err());
    }

    #[test]
    fn writes_cover_create_and_update() {
        let mut r = request(vec![]);
        r.operation = "update".into();
        assert!(r.covers("database/creds/rw", "create"));
        assert!(!r.covers("database/creds/rw", "read"));
    }

    #[test]
    fn paths_are_normalised_and_checked() {
        assert_eq!(
            normalise_path("/v1/database/creds/x").unwrap(),
            "database/creds/x"
        );
        assert!(normalise_path("").is_err());
        assert_eq!(
            normalise_path("secret/data/a-b_c.d@e").unwrap(),
            "secret/data/a-b_c.d@e"
        );
        for bad in [
            "a/../b",
            "../a",
            "a/./b",
            "a b",
            " a/b",
            "a/b ",
            "a/b\n",
            "a/\u{7}b",
            "a\tb",
            "a//b",
            "/a/b",
            "//v1/a/b",
            "/v1//a/b",
            "/v1/",
            "a/b/",
            "secret/data/x?version=1",
            "secret/data/x#frag",
            "secret/dat%61/x",
            "a\\b",
            "v1/../sys/x",
        ] {
            let e = normalise_path(bad).expect_err(bad).to_string();
            assert!(e.starts_with("target_resource "), "{bad:?}: {e}");
            // The message names the field, never the value.
            assert!(!e.contains(bad.trim()), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_stated_intent_is_bound_to_the_granted_operations() {
        let mut r = request(Vec::new());
        r.operation = "production write".into();
        r.granted_operations = vec!["read".into()];
        assert!(r.covers("database/creds/rw", "read"));
        assert!(!r.covers("database/creds/rw", "update"));
        assert!(!r.covers("database/creds/other", "read"));
        assert_eq!(r.view(0)["operation"], "production write");
        assert_eq!(r.view(0)["granted_operations"], json!(["read"]));
        // Stored before the field existed: bound to `operation`.
        r.operation = "update".into();
        r.granted_operations = Vec::new();
        assert!(r.covers("database/creds/rw", "create"));
        assert!(!r.covers("database/creds/rw", "read"));
    }
}
