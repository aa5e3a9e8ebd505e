//! Break-glass: the trust policy of each project's break-glass role admits the AWS principal
//! of every auditor whose grant the policies allow now (`breakGlass`, asked with that grant
//! in its context, as the API asks it), one statement per grant that AWS itself stops
//! honouring at the grant's end. Every statement tregov did not write stays as the admins
//! wrote it; one with tregov's `Sid` prefix that no open grant explains goes. Opening and
//! closing are announced once each, when the role as read back from IAM shows them; a grant
//! once closed stays closed (the auditor asks again).

use std::sync::Arc;

use cedar_policy::EntityUid;
use serde_json::{json, Value};

use super::attrs::attr_string;
use super::decider::{item, materialize, Decider, Verdict};
use super::{Change, Inputs, PlanItem};
use crate::breakglass::{grants, is_admissible_principal, Grant};
use crate::entities::uid_from_parts;

/// The `Sid` prefix of the statements tregov writes (IAM allows only letters and digits).
pub const STATEMENT_PREFIX: &str = "TregovBreakGlass";

/// One grant of a project with what the policies say of it now.
struct Decided {
    grant: Grant,
    verdict: Arc<Verdict>,
    /// The auditor's AWS principal, from the identity source, when it is one IAM can admit.
    principal: Option<String>,
    /// Announced closed before: it never opens again.
    closed: bool,
}

impl Decided {
    fn opens(&self) -> bool {
        self.verdict.allows() && self.principal.is_some() && !self.closed
    }
}

/// Plans every project's break-glass trust policy and the alerts; returns how many grants
/// the roles admit as last read from IAM.
pub(super) fn plan_break_glass(
    inputs: &Inputs,
    decider: &mut Decider,
    items: &mut Vec<PlanItem>,
) -> u64 {
    let roles = &inputs.settings.breakglass_roles;
    let all = if roles.is_empty() {
        Vec::new()
    } else {
        grants(inputs.graph)
    };
    let mut admitted = 0;
    for (project_id, role_arn) in roles {
        let Ok(project) = uid_from_parts("Tre::Project", project_id) else {
            continue;
        };
        let decided: Vec<Decided> = all
            .iter()
            .filter(|(_, g)| g.project == *project_id)
            .map(|(uid, g)| decide(inputs, decider, &project, uid, g))
            .collect();
        warn_unopenable(&decided, &mut decider.warnings);
        let role = inputs.actual.role(role_arn);
        let had = role
            .map(|r| statements(&r["trustPolicy"]))
            .unwrap_or_default();
        admitted += had.iter().filter(|s| is_ours(s)).count() as u64;
        match role {
            Some(role) => items.extend(trust_change(role_arn, role, &had, &decided)),
            None if decided.iter().any(Decided::opens) => decider.warnings.push(format!(
                "break-glass role `{role_arn}` of `{project_id}` was not seen: nothing is opened"
            )),
            None => {}
        }
        plan_alerts(inputs, &decided, &had, &mut decider.warnings, items);
    }
    admitted
}

fn warn_unopenable(decided: &[Decided], warnings: &mut Vec<String>) {
    for d in decided.iter().filter(|d| d.verdict.allows() && !d.closed) {
        if d.principal.is_none() {
            warnings.push(format!(
                "break-glass grant `{}` is allowed but `{}` has no `awsPrincipal` that names an IAM user or role: nothing is opened",
                d.grant.id, d.grant.user
            ));
        }
    }
}

fn decide(
    inputs: &Inputs,
    decider: &mut Decider,
    project: &EntityUid,
    uid: &EntityUid,
    grant: &Grant,
) -> Decided {
    let user = uid_from_parts("Tre::User", &grant.user).ok();
    let verdict = match &user {
        Some(user) => decider.decide_with_fact(user, "breakGlass", project, "grant", uid),
        // A user id that is no uid: asked as nobody, which nothing allows.
        None => decider.decide_with_fact(project, "breakGlass", project, "grant", uid),
    };
    let principal = user
        .and_then(|u| inputs.graph.entity(&u))
        .and_then(|e| attr_string(&e, "awsPrincipal"))
        .filter(|p| is_admissible_principal(p));
    Decided {
        closed: inputs.actual.marks.contains(&mark(&grant.id, "closed")),
        grant: grant.clone(),
        verdict,
        principal,
    }
}

/// The statement admitting a grant's principal until its end.
fn statement(grant: &Grant, principal: &str) -> Value {
    json!({
        "Sid": statement_id(&grant.id),
        "Effect": "Allow",
        "Principal": {"AWS": principal},
        "Action": "sts:AssumeRole",
        "Condition": {"DateLessThan": {"aws:CurrentTime": grant.expires_at}},
    })
}

fn statement_id(grant: &str) -> String {
    format!(
        "{STATEMENT_PREFIX}{}",
        &crate::log::sha256_hex(grant.as_bytes())[..16]
    )
}

/// The statements of a trust policy as a list (IAM accepts a single object too).
fn statements(document: &Value) -> Vec<Value> {
    match document.get("Statement") {
        Some(Value::Array(list)) => list.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(one) => vec![one.clone()],
    }
}

fn is_ours(statement: &Value) -> bool {
    statement["Sid"]
        .as_str()
        .is_some_and(|sid| sid.starts_with(STATEMENT_PREFIX))
}

fn admits(had: &[Value], grant: &Grant) -> bool {
    let sid = statement_id(&grant.id);
    had.iter().any(|s| s["Sid"] == sid.as_str())
}

/// The trust policy the role should have, if it differs from what it has: the admins'
/// statements, then one per open grant.
fn trust_change(
    role_arn: &str,
    role: &Value,
    had: &[Value],
    decided: &[Decided],
) -> Option<PlanItem> {
    let current = &role["trustPolicy"];
    let Value::Object(_) = current else {
        return None;
    };
    let mut want: Vec<Value> = had.iter().filter(|s| !is_ours(s)).cloned().collect();
    want.extend(
        decided
            .iter()
            .filter(|d| d.opens())
            .filter_map(|d| Some(statement(&d.grant, d.principal.as_deref()?))),
    );
    if want == had {
        return None;
    }
    let version = current["Version"].as_str().unwrap_or("2012-10-17");
    let ours = |list: &[Value]| list.iter().filter(|s| is_ours(s)).count();
    let reason = format!(
        "break-glass: {} grant(s) open where {} were admitted",
        ours(&want),
        ours(had)
    );
    let changed: Vec<&Decided> = decided
        .iter()
        .filter(|d| admits(had, &d.grant) != d.opens())
        .collect();
    let users: Vec<EntityUid> = changed
        .iter()
        .map(|d| d.verdict.principal().clone())
        .collect();
    Some(
        item(
            Change::UpdateTrustPolicy {
                account: super::role_parts(role_arn)
                    .map(|(account, _)| account.to_string())
                    .unwrap_or_default(),
                role_arn: role_arn.to_string(),
                document: json!({"Version": version, "Statement": want}),
            },
            reason,
            materialize(changed.iter().map(|d| &d.verdict)),
        )
        .affecting(&users),
    )
}

/// One alert when IAM first shows a grant's statement and one when it no longer does, each
/// sent once (remembered under its mark); a grant never admitted is never announced.
fn plan_alerts(
    inputs: &Inputs,
    decided: &[Decided],
    had: &[Value],
    warnings: &mut Vec<String>,
    items: &mut Vec<PlanItem>,
) {
    let marks = &inputs.actual.marks;
    let pending: Vec<(&Decided, &str)> = decided
        .iter()
        .filter_map(|d| {
            let opened = marks.contains(&mark(&d.grant.id, "opened"));
            match (admits(had, &d.grant), opened, d.closed) {
                (true, false, _) => Some((d, "opened")),
                (false, true, false) => Some((d, "closed")),
                _ => None,
            }
        })
        .collect();
    if pending.is_empty() {
        return;
    }
    let Some(topic) = &inputs.settings.breakglass_topic else {
        warnings.push(format!(
            "{} break-glass opening(s) or closing(s) go unannounced: no `[breakglass] alert_topic_arn` or `[safety] alert_topic_arn`",
            pending.len()
        ));
        return;
    };
    let account = topic.split(':').nth(4).unwrap_or_default().to_string();
    for (d, what) in pending {
        let g = &d.grant;
        let message = format!(
            "Break-glass grant `{}`: {} into project {}, approved by {} for: {}. Ends {}{}. Now {what}; the decision is in tregov's log.",
            g.id,
            g.user,
            g.project,
            g.approved_by,
            g.reason,
            g.expires_at,
            g.revoked_by
                .as_ref()
                .map(|by| format!(" (revoked by {by})"))
                .unwrap_or_default(),
        );
        items.push(item(
            Change::Notify {
                account: account.clone(),
                topic_arn: topic.clone(),
                subject: subject(what, &g.user, &g.project),
                message,
                mark: mark(&g.id, what),
            },
            format!("break-glass grant `{}` {what}", g.id),
            materialize([&d.verdict]),
        ));
    }
}

/// An SNS subject: ASCII, under 100 characters (SNS refuses anything else); the ids are in
/// the message whole.
fn subject(what: &str, user: &str, project: &str) -> String {
    let text = format!("TRE break-glass {what}: {user} into {project}");
    let ascii: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let upper = match what {
        "opened" => ascii.replacen("break-glass opened", "BREAK-GLASS OPENED", 1),
        _ => ascii,
    };
    upper.chars().take(99).collect()
}

/// The mark a break-glass alert is remembered under.
pub(crate) fn mark(grant: &str, what: &str) -> String {
    format!("{MARK_PREFIX}{grant}/{what}")
}

/// What every break-glass alert's mark starts with.
pub(crate) const MARK_PREFIX: &str = "breakglass/";
