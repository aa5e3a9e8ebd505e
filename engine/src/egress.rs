//! Data egress: the ordered multi-party review of results leaving the TRE, as a durable state
//! machine in the store.
//!
//! Every transition is a Cedar decision (`submitEgress`, `reviewEgress`, `downloadEgress`)
//! over the request as it stands, made and recorded inside the same store transaction that
//! changes the request, so two reviewers racing for one step, or a hundred downloads racing
//! for a limit of three, are decided one at a time against what is really there.
//!
//! S3 work (staging, publishing, clean-up) is not done here. A transition that needs it leaves
//! a `pending` effect on the request, written in the same transaction; whoever does the S3
//! work clears it afterwards with `complete_effect`. A crash between the two leaves the effect
//! pending, and since each effect is idempotent, doing it again on restart is safe.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::decide::{DecisionOutcome, Engine, RequestSpec};
use crate::entities::uid_from_parts;
use crate::error::{EngineError, Result};
use crate::store::Store;
use crate::workflow::{denied, WorkflowError};

mod attempts;
mod history;
mod lease;
pub mod notices;
mod outbox;

pub use attempts::Resolution;
pub(crate) use history::SCHEMA as HISTORY_SCHEMA;
pub use lease::Lease;
pub(crate) use lease::SCHEMA as LEASE_SCHEMA;
pub(crate) use notices::SCHEMA as NOTICES_SCHEMA;
pub(crate) use outbox::SCHEMA as OUTBOX_SCHEMA;

/// The workflow as an admin configured it (`[egress]` in `tregov.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSettings {
    /// `Tre::Role` ids of the review steps, in order.
    pub steps: Vec<String>,
    pub download_role: String,
    pub download_limit: i64,
    /// Failed attempts at a request's S3 work before it becomes `FAILED`.
    pub max_attempts: u32,
}

impl Default for EgressSettings {
    fn default() -> Self {
        Self {
            steps: vec!["InformationGovernance".into(), "ResearchIT".into()],
            download_role: "InformationGovernance".into(),
            download_limit: 1,
            max_attempts: 5,
        }
    }
}

/// One file as it was when the request was submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedObject {
    /// The key in the egress-store bucket (`<workspace>/...`).
    pub key: String,
    #[serde(rename = "versionId")]
    pub version_id: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    InReview,
    Approved,
    Rejected,
    /// Taken back by the requester (or an admin) before the last step decided.
    Withdrawn,
    /// Its S3 work failed `max_attempts` times: an IT admin retries or closes it (and the
    /// requester may still withdraw it). `failedFrom` says what it was doing.
    Failed,
    /// Ended by an IT admin after a failure; the workspace may submit again.
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InReview => "IN_REVIEW",
            Status::Approved => "APPROVED",
            Status::Rejected => "REJECTED",
            Status::Withdrawn => "WITHDRAWN",
            Status::Failed => "FAILED",
            Status::Closed => "CLOSED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "IN_REVIEW" => Some(Status::InReview),
            "APPROVED" => Some(Status::Approved),
            "REJECTED" => Some(Status::Rejected),
            "WITHDRAWN" => Some(Status::Withdrawn),
            "FAILED" => Some(Status::Failed),
            "CLOSED" => Some(Status::Closed),
            _ => None,
        }
    }
}

/// S3 work a transition left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Copy the pinned versions to the staging bucket; tell step 1's reviewers.
    Stage,
    /// Tell the next step's reviewers (the files are already staged).
    NotifyStep,
    /// Copy the staged files to `approved_egress/`; tell the requester.
    Publish,
    /// Delete the staged copies; tell the requester.
    Unstage,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Stage => "stage",
            Effect::NotifyStep => "notify-step",
            Effect::Publish => "publish",
            Effect::Unstage => "unstage",
        }
    }
}

/// One reviewer's decision at one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub step: u32,
    pub role: String,
    pub reviewer: String,
    /// `approve` or `reject`.
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: String,
    /// The Cedar decision that allowed it, in the decision log.
    #[serde(rename = "logSeq", default, skip_serializing_if = "Option::is_none")]
    pub log_seq: Option<u64>,
}

/// One request, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRequest {
    pub id: String,
    /// 1 for a workspace's first request; each resubmission after a rejection is the next.
    pub version: i64,
    pub workspace: String,
    pub project: String,
    /// The workspace owner the request is for.
    pub requester: String,
    /// Who submitted it (the requester, or an admin on their behalf).
    #[serde(rename = "submittedBy")]
    pub submitted_by: String,
    pub status: Status,
    /// 1-based index into `steps` of the step reviewing now (the last step once approved).
    #[serde(rename = "currentStep")]
    pub current_step: u32,
    /// The review roles at submission: a configuration change never re-routes a request in
    /// flight.
    pub steps: Vec<String>,
    #[serde(rename = "downloadRole")]
    pub download_role: String,
    #[serde(rename = "downloadLimit")]
    pub download_limit: i64,
    #[serde(rename = "downloadCount")]
    pub download_count: i64,
    pub objects: Vec<PinnedObject>,
    pub reviews: Vec<Review>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Effect>,
    /// Failed attempts at `pending` so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Why the last attempt at `pending` failed.
    #[serde(rename = "lastError", default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// While `FAILED`: the status it failed in, which a retry returns it to.
    #[serde(
        rename = "failedFrom",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub failed_from: Option<Status>,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
}

impl EgressRequest {
    /// The role reviewing now, while in review.
    pub fn current_role(&self) -> Option<&str> {
        (self.status == Status::InReview)
            .then(|| self.steps.get(self.current_step as usize - 1))
            .flatten()
            .map(String::as_str)
    }

    /// Everyone who approved any step.
    pub fn approvers(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .reviews
            .iter()
            .filter(|r| r.decision == "approve")
            .map(|r| r.reviewer.as_str())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The request as Cedar sees it, with `status` as given (`DRAFT` while being submitted),
    /// plus the entity of its current step.
    pub fn cedar_entities(&self, status: &str) -> Vec<Value> {
        let step_id = format!("{}#{}", self.id, self.current_step);
        let role = self
            .steps
            .get(self.current_step.saturating_sub(1) as usize)
            .cloned()
            .unwrap_or_default();
        let user = |id: &str| json!({"__entity": {"type": "Tre::User", "id": id}});
        let approvals: Vec<Value> = self
            .reviews
            .iter()
            .map(|r| json!({"step": r.step, "reviewer": user(&r.reviewer), "decision": r.decision}))
            .collect();
        let approvers: Vec<Value> = self.approvers().into_iter().map(user).collect();
        vec![
            json!({
                "uid": {"type": "Tre::EgressRequest", "id": self.id},
                "attrs": {
                    "requester": user(&self.requester),
                    "submitter": user(&self.submitted_by),
                    "workspace": {"__entity": {"type": "Tre::Workspace", "id": self.workspace}},
                    "project": {"__entity": {"type": "Tre::Project", "id": self.project}},
                    "status": status,
                    "currentStep": {"__entity": {"type": "Tre::EgressStep", "id": step_id}},
                    "approvals": approvals,
                    "approvers": approvers,
                    "downloadRole": {"__entity": {"type": "Tre::Role", "id": self.download_role}},
                    "reviewRoles": self.steps.iter().map(|r| json!({"__entity": {"type": "Tre::Role", "id": r}})).collect::<Vec<_>>(),
                    "downloadCount": self.download_count,
                    "downloadLimit": self.download_limit,
                    "version": self.version,
                },
                "parents": [],
            }),
            json!({
                "uid": {"type": "Tre::EgressStep", "id": step_id},
                "attrs": {
                    "index": self.current_step,
                    "role": {"__entity": {"type": "Tre::Role", "id": role}},
                },
                "parents": [],
            }),
        ]
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The origin of the workflow's decisions in the log: what a request's history shows.
const EGRESS_ORIGIN: &str = "egress";

/// A workflow event, as written to the decision log next to the decision that allowed it.
fn event_record(
    request: &EgressRequest,
    event: &str,
    actor: &str,
    decision_seq: Option<u64>,
    extra: Value,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), Value::from("egress"));
    m.insert("request".into(), Value::from(request.id.clone()));
    m.insert("event".into(), Value::from(event));
    m.insert("actor".into(), Value::from(actor));
    m.insert("status".into(), Value::from(request.status.as_str()));
    m.insert("step".into(), Value::from(request.current_step));
    if let Some(seq) = decision_seq {
        m.insert("decisionSeq".into(), Value::from(seq));
    }
    if let Value::Object(extra) = extra {
        m.extend(extra);
    }
    m
}

/// The egress table, created with the rest of the store (`Store::open`).
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS egress_requests (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    status TEXT NOT NULL,
    pending TEXT,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS egress_workspace ON egress_requests(workspace);
CREATE INDEX IF NOT EXISTS egress_pending ON egress_requests(pending) WHERE pending IS NOT NULL;";

fn store_err(store: &Store, e: rusqlite::Error) -> EngineError {
    EngineError::Store {
        path: store.path().display().to_string(),
        message: e.to_string(),
    }
}

fn read_row(body: &str) -> Result<EgressRequest> {
    serde_json::from_str(body).map_err(|e| EngineError::Store {
        path: "egress_requests".into(),
        message: format!("unreadable egress request: {e}"),
    })
}

/// The egress workflow over one engine (policies, entity graph, decision log, store).
pub struct Egress<'a> {
    engine: &'a Engine,
    store: &'a Store,
    settings: &'a EgressSettings,
}

/// What a submission pins, and who the request is for.
pub struct Submission {
    pub workspace: String,
    pub objects: Vec<PinnedObject>,
    pub note: Option<String>,
}

impl<'a> Egress<'a> {
    pub fn new(engine: &'a Engine, settings: &'a EgressSettings) -> Result<Self> {
        let store = engine
            .store()
            .ok_or_else(|| EngineError::Request("egress needs the entity store".into()))?;
        Ok(Self {
            engine,
            store,
            settings,
        })
    }

    /// The store the workflow keeps its requests, outboxes and leases in.
    pub fn store(&self) -> &'a Store {
        self.store
    }

    /// The engine the workflow decides with.
    pub fn engine(&self) -> &Engine {
        self.engine
    }

    /// The owner and project of a workspace, from the entity store.
    pub fn workspace_facts(&self, workspace: &str) -> Result<(String, String), WorkflowError> {
        let uid = uid_from_parts("Tre::Workspace", workspace)?;
        let entity = self
            .engine
            .graph()
            .entity(&uid)
            .ok_or_else(|| WorkflowError::NotFound(format!("workspace `{workspace}`")))?;
        let json = entity.to_json_value().map_err(|e| {
            WorkflowError::Invalid(format!("workspace `{workspace}` is unreadable: {e}"))
        })?;
        let attr_id = |name: &str| {
            json.pointer(&format!("/attrs/{name}"))
                .and_then(crate::entities::uid_from_json)
                .map(|u| u.id().unescaped().to_string())
        };
        match (attr_id("owner"), attr_id("project")) {
            (Some(owner), Some(project)) => Ok((owner, project)),
            _ => Err(WorkflowError::Invalid(format!(
                "workspace `{workspace}` has no owner or project"
            ))),
        }
    }

    /// Submits a request in the caller's name. The caller has already pinned the files;
    /// the request enters review at step 1 with staging pending.
    pub fn submit(
        &self,
        caller: &str,
        submission: Submission,
    ) -> Result<EgressRequest, WorkflowError> {
        check_text("note", submission.note.as_deref())?;
        if submission.objects.is_empty() {
            return Err(WorkflowError::Invalid(format!(
                "workspace `{}` has no files in its egress store",
                submission.workspace
            )));
        }
        let (owner, project) = self.workspace_facts(&submission.workspace)?;
        self.transaction(|tx| {
            let open: Option<String> = tx
                .query_row(
                    "SELECT id FROM egress_requests WHERE workspace = ?1
                       AND (status = 'IN_REVIEW' OR pending IS NOT NULL) LIMIT 1",
                    params![submission.workspace],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(open) = open {
                return Ok(Err(WorkflowError::Conflict(format!(
                    "workspace `{}` already has request `{open}` in review: it must be decided first",
                    submission.workspace
                ))));
            }
            let earlier: i64 = tx.query_row(
                "SELECT COUNT(*) FROM egress_requests WHERE workspace = ?1",
                params![submission.workspace],
                |r| r.get(0),
            )?;
            let now = crate::log::now_rfc3339();
            let id = new_request_id(&submission.workspace, caller, &now, earlier);
            let mut request = self.draft(id, &submission.workspace, project.clone(), owner.clone(), caller);
            request.version = earlier + 1;
            request.objects = submission.objects.clone();
            request.note = submission.note.clone();
            request.pending = Some(Effect::Stage);
            let outcome = match self.permitted(caller, "submitEgress", &request, "DRAFT", || {
                format!("`{caller}` may not submit egress for workspace `{}`", request.workspace)
            }) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            };
            let objects: Vec<Value> = request
                .objects
                .iter()
                .map(|o| json!({"key": o.key, "versionId": o.version_id}))
                .collect();
            self.log_event(
                tx,
                &request,
                "submitted",
                caller,
                outcome.log_seq,
                json!({"version": request.version, "objects": objects, "requester": request.requester}),
            )?;
            insert(tx, &request)?;
            Ok(Ok(request))
        })
    }

    /// A request entering review at step 1 under the configured settings, with no files yet.
    fn draft(
        &self,
        id: String,
        workspace: &str,
        project: String,
        owner: String,
        caller: &str,
    ) -> EgressRequest {
        let now = crate::log::now_rfc3339();
        EgressRequest {
            id,
            version: 1,
            workspace: workspace.to_string(),
            project,
            requester: owner,
            submitted_by: caller.to_string(),
            status: Status::InReview,
            current_step: 1,
            steps: self.settings.steps.clone(),
            download_role: self.settings.download_role.clone(),
            download_limit: self.settings.download_limit,
            download_count: 0,
            objects: Vec::new(),
            reviews: Vec::new(),
            note: None,
            pending: None,
            attempts: 0,
            last_error: None,
            failed_from: None,
            created_at: now.clone(),
            updated_at: now,
        }
    }

    /// Whether `caller` may submit for `workspace` at all, decided (unlogged) before anything
    /// is read from the workspace's egress store: nobody learns what another workspace holds.
    pub fn may_submit(&self, caller: &str, workspace: &str) -> Result<(), WorkflowError> {
        let (owner, project) = self.workspace_facts(workspace)?;
        let draft = self.draft("eg-precheck".into(), workspace, project, owner, caller);
        let outcome = self.decide_as(caller, "submitEgress", &draft, "DRAFT", None)?;
        if !outcome.allows() {
            // The logged decision, for the record.
            let outcome = self.decide(caller, "submitEgress", &draft, "DRAFT")?;
            return Err(denied(
                &format!("`{caller}` may not submit egress for workspace `{workspace}`"),
                outcome,
            ));
        }
        Ok(())
    }

    /// Records one reviewer's decision at the current step.
    pub fn review(
        &self,
        caller: &str,
        id: &str,
        approve: bool,
        reason: Option<String>,
    ) -> Result<EgressRequest, WorkflowError> {
        check_text("reason", reason.as_deref())?;
        if !approve && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(WorkflowError::Invalid(
                "a rejection needs a reason (`--reason`)".into(),
            ));
        }
        self.transaction(|tx| {
            let Some(mut request) = read(tx, id)? else {
                return Ok(Err(WorkflowError::NotFound(format!(
                    "egress request `{id}`"
                ))));
            };
            if request.status != Status::InReview {
                return Ok(Err(WorkflowError::Conflict(format!(
                    "request `{id}` is {}: there is nothing to review",
                    request.status.as_str()
                ))));
            }
            if request.pending == Some(Effect::Stage) {
                return Ok(Err(WorkflowError::Conflict(format!(
                    "request `{id}` is still being staged for review; try again shortly"
                ))));
            }
            let step = request.current_step;
            let role = request.current_role().unwrap_or_default().to_string();
            let outcome =
                match self.permitted(caller, "reviewEgress", &request, "IN_REVIEW", || {
                    format!("`{caller}` may not review request `{id}` at step {step} ({role})")
                }) {
                    Ok(o) => o,
                    Err(e) => return Ok(Err(e)),
                };
            let now = crate::log::now_rfc3339();
            request.reviews.push(Review {
                step,
                role: role.clone(),
                reviewer: caller.to_string(),
                decision: if approve { "approve" } else { "reject" }.into(),
                reason: reason.clone(),
                at: now.clone(),
                log_seq: outcome.log_seq,
            });
            let event = if !approve {
                request.status = Status::Rejected;
                request.pending = Some(Effect::Unstage);
                "rejected"
            } else if (step as usize) < request.steps.len() {
                request.current_step += 1;
                request.pending = Some(Effect::NotifyStep);
                "approved-step"
            } else {
                request.status = Status::Approved;
                request.pending = Some(Effect::Publish);
                "approved"
            };
            request.updated_at = now;
            self.log_event(
                tx,
                &request,
                event,
                caller,
                outcome.log_seq,
                json!({"reviewedStep": step, "role": role, "reason": reason}),
            )?;
            write(tx, &request)?;
            Ok(Ok(request))
        })
    }

    /// Withdraws a request in review (or one whose S3 work failed): its staged copies are removed (whatever staging had
    /// done, including staging that cannot finish) and the workspace is free again.
    pub fn withdraw(
        &self,
        caller: &str,
        id: &str,
        reason: Option<String>,
    ) -> Result<EgressRequest, WorkflowError> {
        check_text("reason", reason.as_deref())?;
        self.transaction(|tx| {
            let Some(mut request) = read(tx, id)? else {
                return Ok(Err(WorkflowError::NotFound(format!(
                    "egress request `{id}`"
                ))));
            };
            let status = request.status.as_str();
            let outcome = match self.permitted(caller, "withdrawEgress", &request, status, || {
                format!("`{caller}` may not withdraw request `{id}` ({status})")
            }) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            };
            request.status = Status::Withdrawn;
            request.pending = Some(Effect::Unstage);
            request.attempts = 0;
            request.last_error = None;
            request.failed_from = None;
            request.updated_at = crate::log::now_rfc3339();
            self.log_event(
                tx,
                &request,
                "withdrawn",
                caller,
                outcome.log_seq,
                json!({"reason": reason}),
            )?;
            write(tx, &request)?;
            Ok(Ok(request))
        })
    }

    /// Takes one download, atomically: the policy decides on the count as stored, and the
    /// count goes up in the same transaction, so concurrent callers are decided one by one.
    pub fn take_download(&self, caller: &str, id: &str) -> Result<EgressRequest, WorkflowError> {
        self.transaction(|tx| {
            let Some(mut request) = read(tx, id)? else {
                return Ok(Err(WorkflowError::NotFound(format!("egress request `{id}`"))));
            };
            if request.status == Status::Approved && request.pending.is_some() {
                return Ok(Err(WorkflowError::Conflict(format!(
                    "request `{id}` is approved but its files are still being published; try again shortly"
                ))));
            }
            let (used, limit) = (request.download_count, request.download_limit);
            let outcome = match self.permitted(caller, "downloadEgress", &request, request.status.as_str(), || {
                format!("`{caller}` may not download request `{id}` ({used} of {limit} downloads used)")
            }) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            };
            request.download_count += 1;
            request.updated_at = crate::log::now_rfc3339();
            self.log_event(
                tx,
                &request,
                "download",
                caller,
                outcome.log_seq,
                json!({"download": request.download_count, "limit": request.download_limit}),
            )?;
            write(tx, &request)?;
            Ok(Ok(request))
        })
    }

    /// Clears `effect` once its S3 work is done (a no-op if another worker got there first).
    pub fn complete_effect(
        &self,
        id: &str,
        effect: Effect,
        detail: Value,
    ) -> Result<bool, WorkflowError> {
        self.transaction(|tx| {
            let Some(mut request) = read(tx, id)? else {
                return Ok(Err(WorkflowError::NotFound(format!(
                    "egress request `{id}`"
                ))));
            };
            if request.pending != Some(effect) {
                return Ok(Ok(false));
            }
            request.pending = None;
            request.attempts = 0;
            request.last_error = None;
            request.updated_at = crate::log::now_rfc3339();
            self.log_event(tx, &request, effect.as_str(), "tregov", None, detail)?;
            for notice in notices::Notice::after(&request, effect) {
                notices::put(tx, &notice)?;
            }
            write(tx, &request)?;
            Ok(Ok(true))
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<EgressRequest>> {
        let body: Option<String> = self
            .store
            .with_conn(|c| {
                c.query_row(
                    "SELECT body FROM egress_requests WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
            })
            .map_err(|e| store_err(self.store, e))?;
        body.as_deref().map(read_row).transpose()
    }

    /// Requests, newest first, optionally of one status or workspace.
    pub fn list(
        &self,
        status: Option<Status>,
        workspace: Option<&str>,
    ) -> Result<Vec<EgressRequest>> {
        let bodies: Vec<String> = self
            .store
            .with_conn(|c| {
                let mut stmt = c.prepare(
                    "SELECT body FROM egress_requests
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workspace = ?2)
                     ORDER BY created_at DESC, id",
                )?;
                let rows =
                    stmt.query_map(params![status.map(Status::as_str), workspace], |r| r.get(0))?;
                rows.collect()
            })
            .map_err(|e| store_err(self.store, e))?;
        bodies.iter().map(|b| read_row(b)).collect()
    }

    /// Requests with S3 work left to do (after a crash, say), but not those that failed and
    /// wait for an admin.
    pub fn pending(&self) -> Result<Vec<EgressRequest>> {
        let bodies: Vec<String> = self
            .store
            .with_conn(|c| {
                let mut stmt = c.prepare(
                    "SELECT body FROM egress_requests WHERE pending IS NOT NULL AND status <> 'FAILED'
                     ORDER BY created_at",
                )?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect()
            })
            .map_err(|e| store_err(self.store, e))?;
        bodies.iter().map(|b| read_row(b)).collect()
    }

    /// The request's history from the decision log: its workflow events and the decisions
    /// about it, in log order. The entity slices the decisions read stay in the log (`tregov
    /// log show SEQ`, `why --replay SEQ`): they hold other people's attributes, which a
    /// requester or reviewer reading the history has no need to see.
    pub fn history(&self, id: &str) -> Result<Vec<Value>> {
        let Some(log) = self.engine.log() else {
            return Ok(Vec::new());
        };
        Ok(history::of(self.store, log, EGRESS_ORIGIN, id)?
            .into_iter()
            .map(|mut r| {
                if let Some(obj) = r.as_object_mut() {
                    obj.remove("slice");
                }
                r
            })
            .collect())
    }

    /// The requests `caller` may see (a `viewEgress` decision each, logged in one append):
    /// a request they may not see does not exist for them.
    pub fn visible(
        &self,
        caller: &str,
        requests: Vec<EgressRequest>,
    ) -> Result<Vec<EgressRequest>> {
        if requests.is_empty() {
            return Ok(requests);
        }
        let asks = requests
            .iter()
            .map(|r| {
                let status = r.status.as_str();
                Ok((
                    self.spec(caller, "viewEgress", r)?,
                    r.cedar_entities(status),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let outcomes = self.engine.decide_many_with(asks, "egress-view")?;
        Ok(requests
            .into_iter()
            .zip(outcomes)
            .filter(|(_, o)| o.allows())
            .map(|(r, _)| r)
            .collect())
    }

    /// The request `id`, if `caller` may see it.
    pub fn get_visible(&self, caller: &str, id: &str) -> Result<Option<EgressRequest>> {
        let Some(request) = self.get(id)? else {
            return Ok(None);
        };
        Ok(self.visible(caller, vec![request])?.pop())
    }

    /// The question, asked at the governance clock (a request of a project that has ended
    /// is parked by policy).
    fn spec(&self, caller: &str, action: &str, request: &EgressRequest) -> Result<RequestSpec> {
        Ok(self.engine.at_the_clock(RequestSpec {
            principal: uid_from_parts("Tre::User", caller)?.to_string(),
            action: uid_from_parts("Tre::Action", action)?.to_string(),
            resource: uid_from_parts("Tre::EgressRequest", &request.id)?.to_string(),
            context: Value::Object(Map::new()),
        }))
    }

    fn decide(
        &self,
        caller: &str,
        action: &str,
        request: &EgressRequest,
        status: &str,
    ) -> Result<DecisionOutcome> {
        self.decide_as(caller, action, request, status, Some(EGRESS_ORIGIN))
    }

    /// The logged decision, when it allows; otherwise the denial, explained by `refusal`.
    fn permitted(
        &self,
        caller: &str,
        action: &str,
        request: &EgressRequest,
        status: &str,
        refusal: impl FnOnce() -> String,
    ) -> Result<DecisionOutcome, WorkflowError> {
        let outcome = self.decide(caller, action, request, status)?;
        if outcome.allows() {
            Ok(outcome)
        } else {
            Err(denied(&refusal(), outcome))
        }
    }

    fn decide_as(
        &self,
        caller: &str,
        action: &str,
        request: &EgressRequest,
        status: &str,
        origin: Option<&str>,
    ) -> Result<DecisionOutcome> {
        let spec = self.spec(caller, action, request)?;
        let (_, outcome) =
            self.engine
                .decide_with(spec, &request.cedar_entities(status), origin)?;
        Ok(outcome)
    }

    /// Writes the workflow record of a transition into its transaction `tx`: it reaches the
    /// log once the transition commits (`outbox`), never before.
    fn log_event(
        &self,
        tx: &rusqlite::Transaction<'_>,
        request: &EgressRequest,
        event: &str,
        actor: &str,
        decision_seq: Option<u64>,
        extra: Value,
    ) -> Result<()> {
        let Some(log) = self.engine.log() else {
            return Ok(());
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        // Transitions of one request are serialised by the write lock: the clock tells
        // them apart.
        let uid = format!("{}:{event}:{nanos}", request.id);
        let record = event_record(request, event, actor, decision_seq, extra);
        outbox::put(tx, log, &uid, record)
    }

    /// Appends workflow records that committed transitions left waiting (a crash, a full
    /// disk): called after every transition, and by the API on start.
    pub fn flush_log(&self) -> Result<usize> {
        match self.engine.log() {
            Some(log) => outbox::flush(self.store, log),
            None => Ok(0),
        }
    }

    /// Runs `body` in an immediate (write-locked) transaction; commits only when it returns
    /// `Ok(Ok(_))`.
    fn transaction<T>(
        &self,
        body: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<Result<T, WorkflowError>, TxError>,
    ) -> Result<T, WorkflowError> {
        let outcome = self.store.with_conn_mut(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            match body(&tx) {
                Ok(Ok(v)) => {
                    tx.commit()?;
                    Ok(Ok(v))
                }
                Ok(Err(e)) => Ok(Err(e)),
                Err(TxError::Sql(e)) => Err(e),
                Err(TxError::Engine(e)) => Ok(Err(WorkflowError::Engine(e))),
            }
        });
        let committed = match outcome {
            Ok(r) => r,
            Err(e) => return Err(WorkflowError::Engine(store_err(self.store, e))),
        };
        if committed.is_ok() {
            // The transition stands; a record that cannot be appended now waits in the
            // outbox for the next flush, so the caller is not told it failed.
            if let Err(e) = self.flush_log() {
                tracing::error!(error = %e, "a workflow record waits to be logged");
            }
        }
        committed
    }
}

/// Errors inside a transaction body: SQL errors roll it back and surface as store errors.
pub enum TxError {
    Sql(rusqlite::Error),
    Engine(EngineError),
}

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        TxError::Sql(e)
    }
}

impl From<EngineError> for TxError {
    fn from(e: EngineError) -> Self {
        TxError::Engine(e)
    }
}

fn read(tx: &rusqlite::Transaction<'_>, id: &str) -> Result<Option<EgressRequest>, TxError> {
    let body: Option<String> = tx
        .query_row(
            "SELECT body FROM egress_requests WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(body.as_deref().map(read_row).transpose()?)
}

fn write(tx: &rusqlite::Transaction<'_>, request: &EgressRequest) -> Result<(), TxError> {
    save(tx, request, true)
}

/// A new request: never over an existing one, however unlikely an id clash.
fn insert(tx: &rusqlite::Transaction<'_>, request: &EgressRequest) -> Result<(), TxError> {
    save(tx, request, false)
}

fn save(
    tx: &rusqlite::Transaction<'_>,
    request: &EgressRequest,
    overwrite: bool,
) -> Result<(), TxError> {
    let body = serde_json::to_string(request)
        .map_err(|e| TxError::Engine(EngineError::Request(e.to_string())))?;
    let conflict = if overwrite {
        " ON CONFLICT(id) DO UPDATE SET status = excluded.status, pending = excluded.pending,
           body = excluded.body"
    } else {
        ""
    };
    tx.execute(
        &format!(
            "INSERT INTO egress_requests (id, workspace, status, pending, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6){conflict}"
        ),
        params![
            request.id,
            request.workspace,
            request.status.as_str(),
            request.pending.map(Effect::as_str),
            body,
            request.created_at
        ],
    )?;
    Ok(())
}

/// The longest note or reason a person may write, in characters: room for any explanation,
/// and every message carrying one stays far below SNS's 256 KB.
pub const MAX_TEXT_CHARS: usize = 4000;

fn check_text(field: &str, text: Option<&str>) -> Result<(), WorkflowError> {
    let chars = text.map_or(0, |t| t.chars().count());
    if chars > MAX_TEXT_CHARS {
        return Err(WorkflowError::Invalid(format!(
            "`{field}` is {chars} characters; at most {MAX_TEXT_CHARS} are kept"
        )));
    }
    Ok(())
}

/// `eg-` and 16 hex digits: unique per submission, safe in S3 keys and URLs.
fn new_request_id(workspace: &str, caller: &str, now: &str, earlier: i64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let digest = crate::log::sha256_hex(
        format!(
            "{workspace}\n{caller}\n{now}\n{earlier}\n{nanos}\n{}",
            std::process::id()
        )
        .as_bytes(),
    );
    format!("eg-{}", &digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> EgressRequest {
        EgressRequest {
            id: "eg-1".into(),
            version: 1,
            workspace: "ws-1".into(),
            project: "p1".into(),
            requester: "alice".into(),
            submitted_by: "alice".into(),
            status: Status::InReview,
            current_step: 2,
            steps: vec!["InformationGovernance".into(), "ResearchIT".into()],
            download_role: "InformationGovernance".into(),
            download_limit: 1,
            download_count: 0,
            objects: vec![],
            reviews: vec![Review {
                step: 1,
                role: "InformationGovernance".into(),
                reviewer: "irene".into(),
                decision: "approve".into(),
                reason: None,
                at: "t".into(),
                log_seq: None,
            }],
            note: None,
            pending: None,
            attempts: 0,
            last_error: None,
            failed_from: None,
            created_at: "t".into(),
            updated_at: "t".into(),
        }
    }

    #[test]
    fn the_current_role_is_the_step_reviewing_now_and_none_once_decided() {
        let mut r = request();
        assert_eq!(r.current_role(), Some("ResearchIT"));
        r.status = Status::Approved;
        assert_eq!(r.current_role(), None);
    }

    #[test]
    fn cedar_sees_the_approvers_and_the_current_steps_role() {
        let entities = request().cedar_entities("IN_REVIEW");
        assert_eq!(
            entities[0]["attrs"]["approvers"][0]["__entity"]["id"],
            "irene"
        );
        assert_eq!(
            entities[0]["attrs"]["currentStep"]["__entity"]["id"],
            "eg-1#2"
        );
        assert_eq!(entities[1]["attrs"]["role"]["__entity"]["id"], "ResearchIT");
        assert_eq!(entities[1]["attrs"]["index"], 2);
    }

    use crate::decide::tests::sample_engine;

    /// Runs `body` against the egress workflow over a fresh sample TRE.
    fn with_flow(settings: EgressSettings, body: impl FnOnce(&Egress<'_>)) {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = sample_engine(dir.path());
        let flow = Egress::new(&engine, &settings).expect("egress");
        body(&flow);
    }

    fn files() -> Vec<PinnedObject> {
        vec![PinnedObject {
            key: "ws-alice-ec2/results.csv".into(),
            version_id: "v1".into(),
            size: 10,
            etag: None,
        }]
    }

    fn submission() -> Submission {
        Submission {
            workspace: "ws-alice-ec2".into(),
            objects: files(),
            note: None,
        }
    }

    fn staged(flow: &Egress<'_>, id: &str) {
        flow.complete_effect(id, Effect::Stage, json!({}))
            .expect("staged");
    }

    fn is_denied(r: Result<EgressRequest, WorkflowError>) -> bool {
        matches!(r, Err(WorkflowError::Denied { .. }))
    }

    #[test]
    fn a_request_passes_both_steps_in_order_and_is_downloaded_once() {
        with_flow(EgressSettings::default(), |flow| {
            let r = flow.submit("alice", submission()).expect("submit");
            assert_eq!(
                (r.status, r.current_step, r.pending),
                (Status::InReview, 1, Some(Effect::Stage))
            );
            staged(flow, &r.id);
            // Research IT cannot jump the queue.
            assert!(is_denied(flow.review("dave", &r.id, true, None)));
            let r = flow
                .review("carol", &r.id, true, None)
                .expect("IG approves");
            assert_eq!((r.current_step, r.pending), (2, Some(Effect::NotifyStep)));
            flow.complete_effect(&r.id, Effect::NotifyStep, json!({}))
                .expect("notified");
            let r = flow
                .review("dave", &r.id, true, None)
                .expect("RIT approves");
            assert_eq!(
                (r.status, r.pending),
                (Status::Approved, Some(Effect::Publish))
            );
            assert!(matches!(
                flow.take_download("gina", &r.id),
                Err(WorkflowError::Conflict(_))
            ));
            flow.complete_effect(&r.id, Effect::Publish, json!({}))
                .expect("published");
            // Only the download role downloads; the limit is exact.
            assert!(is_denied(flow.take_download("alice", &r.id)));
            assert_eq!(
                flow.take_download("gina", &r.id)
                    .expect("first")
                    .download_count,
                1
            );
            assert!(is_denied(flow.take_download("gina", &r.id)));
            let history = flow.history(&r.id).expect("history");
            let events: Vec<&str> = history
                .iter()
                .filter_map(|h| h.get("event").and_then(Value::as_str))
                .collect();
            assert_eq!(
                events,
                [
                    "submitted",
                    "stage",
                    "approved-step",
                    "notify-step",
                    "approved",
                    "publish",
                    "download"
                ]
            );
        });
    }

    #[test]
    fn the_requester_never_reviews_and_one_person_never_approves_two_steps() {
        with_flow(EgressSettings::default(), |flow| {
            // rita holds both review roles.
            let r = flow.submit("alice", submission()).expect("submit");
            staged(flow, &r.id);
            flow.review("rita", &r.id, true, None)
                .expect("rita approves step 1");
            let second = flow.review("rita", &r.id, true, None);
            let Err(WorkflowError::Denied { outcome, .. }) = second else {
                panic!("rita approved twice: {second:?}");
            };
            assert_eq!(outcome.reasons, ["egress-one-person-one-step"]);
            assert!(outcome.log_seq.is_some(), "the denial is in the log");
        });
    }

    #[test]
    fn a_request_of_a_project_that_has_ended_is_parked_yet_can_be_withdrawn() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut engine = sample_engine(dir.path());
        let settings = EgressSettings::default();
        let id = {
            let flow = Egress::new(&engine, &settings).expect("egress");
            let r = flow.submit("alice", submission()).expect("submit");
            staged(&flow, &r.id);
            r.id
        };
        // The project ended yesterday.
        let schema = engine.bundle().schema.clone().expect("schema");
        let project = crate::entities::parse_entities_file(
            "sample",
            tregov_policies::SAMPLE_TRE_ENTITIES,
            Some(&schema),
        )
        .expect("sample")
        .into_iter()
        .find(|e| e.uid().to_string() == r#"Tre::Project::"proj-genomics""#)
        .expect("project");
        let mut json = project.to_json_value().expect("json");
        let yesterday = crate::clock::wall_ms(std::time::SystemTime::now()) - 86_400_000;
        json["attrs"]["endsAt"] = crate::clock::datetime_value(yesterday);
        let ended = cedar_policy::Entity::from_json_value(json, Some(&schema)).expect("ended");
        engine
            .apply(&crate::store::StoreBatch {
                upserts: vec![ended],
                partition: "sample".into(),
                ..Default::default()
            })
            .expect("the project ends");

        let flow = Egress::new(&engine, &settings).expect("egress");
        let review = flow.review("carol", &id, true, None);
        let Err(WorkflowError::Denied { outcome, .. }) = review else {
            panic!("reviewed after the project ended: {review:?}");
        };
        assert_eq!(outcome.reasons, ["egress-parked-when-the-project-ends"]);
        let withdrawn = flow.withdraw("alice", &id, None).expect("withdrawn");
        assert_eq!(withdrawn.status, Status::Withdrawn);
    }

    #[test]
    fn a_rejection_needs_a_reason_ends_the_request_and_lets_the_owner_resubmit() {
        with_flow(EgressSettings::default(), |flow| {
            let r = flow.submit("alice", submission()).expect("submit");
            assert!(matches!(
                flow.submit("alice", submission()),
                Err(WorkflowError::Conflict(_))
            ));
            staged(flow, &r.id);
            assert!(matches!(
                flow.review("carol", &r.id, false, None),
                Err(WorkflowError::Invalid(_))
            ));
            let r = flow
                .review("carol", &r.id, false, Some("identifiable data".into()))
                .expect("reject");
            assert_eq!(
                (r.status, r.pending),
                (Status::Rejected, Some(Effect::Unstage))
            );
            // Still cleaning up: no resubmission until the staged copies are gone.
            assert!(matches!(
                flow.submit("alice", submission()),
                Err(WorkflowError::Conflict(_))
            ));
            flow.complete_effect(&r.id, Effect::Unstage, json!({}))
                .expect("unstaged");
            let again = flow.submit("alice", submission()).expect("resubmit");
            assert_eq!(again.version, 2);
            assert_ne!(again.id, r.id);
        });
    }

    #[test]
    fn a_request_stuck_in_staging_can_be_withdrawn_by_its_requester_only() {
        with_flow(EgressSettings::default(), |flow| {
            let r = flow.submit("alice", submission()).expect("submit");
            assert!(is_denied(flow.withdraw("carol", &r.id, None)));
            let w = flow
                .withdraw("alice", &r.id, Some("wrong files".into()))
                .expect("withdraw");
            assert_eq!(
                (w.status, w.pending),
                (Status::Withdrawn, Some(Effect::Unstage))
            );
            // A late staging worker finds nothing to record.
            assert!(!flow
                .complete_effect(&r.id, Effect::Stage, json!({}))
                .expect("complete"));
            assert!(
                is_denied(flow.withdraw("alice", &r.id, None)),
                "withdrawn twice"
            );
            flow.complete_effect(&r.id, Effect::Unstage, json!({}))
                .expect("unstaged");
            assert_eq!(
                flow.submit("alice", submission()).expect("again").version,
                2
            );
        });
    }

    /// Fails the request's pending `effect` until it is `FAILED`.
    fn fail_for_good(flow: &Egress<'_>, id: &str, effect: Effect) -> EgressRequest {
        loop {
            let r = flow
                .effect_failed(
                    id,
                    effect,
                    "NoSuchBucket: the staging bucket does not exist",
                )
                .expect("recorded");
            if r.status == Status::Failed {
                return r;
            }
        }
    }

    #[test]
    fn s3_work_that_keeps_failing_makes_the_request_failed_until_an_admin_retries_or_closes_it() {
        let settings = EgressSettings {
            max_attempts: 3,
            ..Default::default()
        };
        with_flow(settings, |flow| {
            let r = flow.submit("alice", submission()).expect("submit");
            let once = flow
                .effect_failed(&r.id, Effect::Stage, "throttled")
                .expect("recorded");
            assert_eq!((once.status, once.attempts), (Status::InReview, 1));
            let failed = fail_for_good(flow, &r.id, Effect::Stage);
            assert_eq!(
                (failed.attempts, failed.failed_from),
                (3, Some(Status::InReview))
            );
            assert!(
                flow.pending().expect("pending").is_empty(),
                "it waits for an admin"
            );
            let alert = notices::claim_next(flow.store(), i64::MAX / 2)
                .expect("outbox")
                .expect("an alert");
            assert_eq!(alert.audience, "ITAdmin");
            assert!(alert.message.contains("NoSuchBucket"), "{}", alert.message);

            assert!(is_denied(flow.resolve_failed(
                "carol",
                &r.id,
                Resolution::Retry,
                None
            )));
            let retried = flow
                .resolve_failed("erin", &r.id, Resolution::Retry, None)
                .expect("retry");
            assert_eq!(
                (retried.status, retried.attempts, retried.pending),
                (Status::InReview, 0, Some(Effect::Stage))
            );
            fail_for_good(flow, &r.id, Effect::Stage);
            let closed = flow
                .resolve_failed("erin", &r.id, Resolution::Close, Some("bucket gone".into()))
                .expect("close");
            assert_eq!(
                (closed.status, closed.pending),
                (Status::Closed, Some(Effect::Unstage))
            );
            flow.complete_effect(&r.id, Effect::Unstage, json!({}))
                .expect("unstaged");
            assert_eq!(
                flow.submit("alice", submission()).expect("again").version,
                2
            );
        });
    }

    #[test]
    fn a_cleanup_that_fails_for_good_is_given_up_on_when_closed_and_a_requester_withdraws_a_failed_request(
    ) {
        let settings = EgressSettings {
            max_attempts: 1,
            ..Default::default()
        };
        with_flow(settings, |flow| {
            let r = flow.submit("alice", submission()).expect("submit");
            fail_for_good(flow, &r.id, Effect::Stage);
            let w = flow.withdraw("alice", &r.id, None).expect("withdraw");
            assert_eq!(
                (w.status, w.pending, w.attempts),
                (Status::Withdrawn, Some(Effect::Unstage), 0)
            );
            fail_for_good(flow, &r.id, Effect::Unstage);
            let closed = flow
                .resolve_failed("erin", &r.id, Resolution::Close, None)
                .expect("close");
            assert_eq!((closed.status, closed.pending), (Status::Closed, None));
        });
    }

    #[test]
    fn only_the_owner_or_an_admin_submits_and_always_for_the_owner() {
        with_flow(EgressSettings::default(), |flow| {
            assert!(is_denied(flow.submit("bob", submission())));
            let by_admin = flow.submit("erin", submission()).expect("admin submits");
            assert_eq!(
                (by_admin.requester.as_str(), by_admin.submitted_by.as_str()),
                ("alice", "erin")
            );
        });
    }

    #[test]
    fn concurrent_downloads_take_exactly_the_limit() {
        let settings = EgressSettings {
            download_limit: 3,
            ..Default::default()
        };
        with_flow(settings, |flow| {
            let r = flow.submit("alice", submission()).expect("submit");
            staged(flow, &r.id);
            flow.review("carol", &r.id, true, None).expect("IG");
            flow.review("dave", &r.id, true, None).expect("RIT");
            flow.complete_effect(&r.id, Effect::Publish, json!({}))
                .expect("published");
            let granted = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..50 {
                    s.spawn(|| {
                        if flow.take_download("gina", &r.id).is_ok() {
                            granted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    });
                }
            });
            assert_eq!(granted.into_inner(), 3);
            assert_eq!(
                flow.get(&r.id).expect("get").expect("some").download_count,
                3
            );
        });
    }

    #[test]
    fn statuses_read_back_in_any_case() {
        assert_eq!(Status::parse("in_review"), Some(Status::InReview));
        assert_eq!(Status::parse("APPROVED"), Some(Status::Approved));
        assert_eq!(Status::parse("done"), None);
    }
}
