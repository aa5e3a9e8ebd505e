//! The record in the browser: access reports (who can reach a dataset and why, what a user can
//! reach), review campaigns (a reviewer's items, keep or revoke), break-glass requests and
//! grants, the decision explorer (`why`), out-of-band changes and their reverts, and the
//! log's verification. Reading the record is itself a Cedar decision (`viewAudit`, logged);
//! acting (attest, approve, revoke) is the engine's own workflow, as through the API.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use tregov_engine::entities::uid_from_parts;
use tregov_engine::events::{EventFilter, EventStore};
use tregov_engine::log::DecisionLog;
use tregov_engine::plan::{access_report_now, AccessReport, Scope};
use tregov_engine::workflow::WorkflowError;
use tregov_engine::{Engine, RequestSpec};

use super::page::{csrf, page, paged, pager, respond, WebResult};
use super::{Posted, Viewer};
use crate::client::form_urlencoded;
use crate::{Api, ApiError, ApiResult};

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/web/access", get(access))
        .route("/web/reviews", get(reviews))
        .route("/web/reviews/attest", post(attest))
        .route("/web/reviews/start", post(start_review))
        .route("/web/breakglass", get(breakglass))
        .route("/web/breakglass/request", post(breakglass_request))
        .route("/web/breakglass/approve", post(breakglass_approve))
        .route("/web/breakglass/revoke", post(breakglass_revoke))
        .route("/web/why", get(why))
        .route("/web/drift", get(drift))
        .route("/web/log", get(log_status))
}

/// tregov itself: the resource of the TRE-wide record.
const TREGOV: (&str, &str) = ("Tre::Service", "tregov");

impl Api {
    /// The `viewAudit` decision (logged) for `user` reading the record of `resource`; a
    /// refusal names its policies.
    fn may_view_audit(&self, engine: &Engine, user: &str, resource: (&str, &str)) -> ApiResult<()> {
        let principal = uid_from_parts("Tre::User", user)?;
        let target = uid_from_parts(resource.0, resource.1)?;
        let spec = RequestSpec {
            principal: principal.to_string(),
            action: r#"Tre::Action::"viewAudit""#.to_string(),
            resource: target.to_string(),
            context: serde_json::json!({}),
        };
        let request = engine.parse(spec)?;
        let outcome = engine.decide_logged(&request, "web")?.fail_closed();
        if outcome.allows() {
            return Ok(());
        }
        Err(WorkflowError::Denied {
            message: format!("`{user}` may not read the record of `{target}`"),
            outcome: Box::new(outcome),
        }
        .into())
    }
}

#[derive(Deserialize)]
struct AccessQuery {
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

async fn access(
    State(api): State<Arc<Api>>,
    Viewer(viewer): Viewer,
    Query(q): Query<AccessQuery>,
) -> WebResult<Response> {
    let dataset = q.dataset.clone().filter(|d| !d.trim().is_empty());
    let user = q.user.clone().filter(|u| !u.trim().is_empty());
    let asked = match (&dataset, &user) {
        (Some(d), _) => Some(("Tre::Dataset", d.clone(), format!("Who can reach {d}"))),
        (None, Some(u)) => Some(("Tre::User", u.clone(), format!("What {u} can reach"))),
        (None, None) => None,
    };
    let report = match &asked {
        Some((type_name, id, _)) => {
            let (type_name, id, who) = (*type_name, id.clone(), viewer.user.clone());
            Some(
                api.blocking(move |api, engine| {
                    api.may_view_audit(engine, &who, (type_name, &id))?;
                    access_of(api, engine, type_name, &id)
                })
                .await?,
            )
        }
        None => None,
    };
    if let (Some(report), Some("csv")) = (&report, q.format.as_deref()) {
        let mut response = tregov_render::access::access_csv(report).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(response);
    }
    let title = asked.as_ref().map_or("Access".to_string(), |a| a.2.clone());
    let query = form_urlencoded(&[
        ("dataset", dataset.as_deref().unwrap_or("")),
        ("user", user.as_deref().unwrap_or("")),
    ]);
    let markup = html! {
        form.inline method="get" action="/web/access" {
            label for="dataset" { "Dataset" }
            input #dataset type="text" name="dataset" value=(dataset.as_deref().unwrap_or(""));
            label for="user" { "or user" }
            input #user type="text" name="user" value=(user.as_deref().unwrap_or(""));
            button type="submit" { "Show" }
        }
        @if let Some(report) = &report {
            (access_table(report, q.page, api.web_page_size(), &format!("/web/access?{query}&")))
            p { a href={ "/web/access?" (query) "&format=csv" } { "Download as CSV" } }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page(&title, Some(&viewer), "/web/access", markup),
    ))
}

/// The access report for a dataset or a user, as `tregov access who|of` makes it.
fn access_of(api: &Api, engine: &Engine, type_name: &str, id: &str) -> ApiResult<AccessReport> {
    let uid = uid_from_parts(type_name, id)?;
    let scope = match type_name {
        "Tre::Dataset" => Scope::Dataset(uid),
        _ => Scope::User(uid),
    };
    let settings = api
        .web
        .as_ref()
        .map(|w| w.plan_settings.clone())
        .unwrap_or_default();
    Ok(access_report_now(engine, settings, &scope)?)
}

fn access_table(report: &AccessReport, page_no: Option<usize>, size: usize, base: &str) -> Markup {
    let rows = paged(&report.rows, page_no, size);
    html! {
        p { "At the governance clock " (report.at) "." }
        @if report.rows.is_empty() { p #no-access { "Nobody: no policy allows any access." } }
        @else {
            table #access {
                caption { (report.rows.len()) " access(es)" }
                thead { tr { th scope="col" { "Holder" } th scope="col" { "For" } th scope="col" { "Dataset" } th scope="col" { "Action" } th scope="col" { "Allowed by" } th scope="col" { "Ends" } } }
                tbody {
                    @for row in rows.items {
                        tr {
                            td.holder { (row.holder_kind) " " (row.holder) }
                            td { (row.owners.join(", ")) }
                            td { (row.dataset) }
                            td.action { (row.action) }
                            td { @for p in &row.policies { code { (p) } " " } }
                            td { @match &row.ends {
                                Some(end) => { (end.at) ": " (end.because.join(", ")) },
                                None => "no date in view ends it",
                            } }
                        }
                    }
                }
            }
            (pager(&rows, base))
        }
        @for warning in &report.warnings { p.notice { "Warning: " (warning) } }
    }
}

async fn reviews(
    State(api): State<Arc<Api>>,
    Viewer(viewer): Viewer,
    Query(q): Query<PageQuery>,
) -> WebResult<Response> {
    let user = viewer.user.clone();
    let (campaigns, items, roles) = api
        .blocking(move |_, engine| {
            let graph = engine.graph();
            Ok((
                tregov_engine::reviews::campaigns(graph),
                tregov_engine::reviews::all_items(graph),
                super::roles_of(engine, &user),
            ))
        })
        .await?;
    // The newest campaign first; its items a page at a time.
    let mine: Vec<_> = campaigns
        .iter()
        .rev()
        .filter(|c| roles.contains(&c.reviewers))
        .collect();
    let size = api.web_page_size();
    let markup = html! {
        details {
            summary { "Start a review campaign" }
            form.stacked method="post" action="/web/reviews/start" {
                (csrf(&viewer))
                label for="scope" { "Scope " span.hint { "dataset:<id> or project:<id>" } }
                input #scope type="text" name="scope" required;
                label for="reviewers" { "Reviewers (a role)" }
                input #reviewers type="text" name="reviewers" value="InformationGovernance" required;
                label for="due" { "Due" }
                input #due type="date" name="due" required;
                label for="default-verdict" { "An item still open at the due date becomes" }
                select #default-verdict name="default_verdict" {
                    option value="keep" { "keep" }
                    option value="revoke" { "revoke" }
                }
                button #start type="submit" { "Start" }
            }
        }
        @if mine.is_empty() { p { "No review campaign asks your roles to attest." } }
        @for c in mine {
            @let of_campaign: Vec<_> = items.iter().filter(|i| i.campaign == c.id).collect();
            @let shown = paged(&of_campaign, q.page, size);
            section {
                h2 { "Campaign " (c.id) }
                p { "Scope " (c.scope) "; reviewers: " (c.reviewers) "; due " (c.due) "; an item still open then becomes " strong { (c.default_verdict) } "." }
                table {
                    thead { tr { th scope="col" { "User" } th scope="col" { "Dataset" } th scope="col" { "Actions" } th scope="col" { "Verdict" } th scope="col" { "Attest" } } }
                    tbody {
                        @for item in shown.items {
                            tr {
                                td { (item.user) }
                                td { (item.dataset) }
                                td { (item.actions.join(", ")) }
                                td { (item.verdict) @if let Some(by) = &item.attested_by { " (" (by) ")" } }
                                td {
                                    form.inline method="post" action="/web/reviews/attest" {
                                        (csrf(&viewer))
                                        input type="hidden" name="item" value=(item.id);
                                        button type="submit" name="verdict" value="keep" { "Keep" span.visually-hidden { " " (item.user) " on " (item.dataset) } }
                                        button type="submit" name="verdict" value="revoke" { "Revoke" span.visually-hidden { " " (item.user) " on " (item.dataset) } }
                                    }
                                }
                            }
                        }
                    }
                }
                (pager(&shown, "/web/reviews?"))
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Access reviews", Some(&viewer), "/web/reviews", markup),
    ))
}

async fn start_review(State(api): State<Arc<Api>>, posted: Posted) -> WebResult<Response> {
    let new = tregov_engine::reviews::NewCampaign {
        scope: posted.text("scope").unwrap_or_default(),
        reviewers: posted.text("reviewers").unwrap_or_default(),
        due: posted.text("due").unwrap_or_default(),
        default_verdict: posted.text("default_verdict"),
    };
    let user = posted.viewer.user.clone();
    api.blocking(move |_, engine| Ok(tregov_engine::reviews::start(engine, &user, &new)?))
        .await?;
    Ok(Redirect::to("/web/reviews").into_response())
}

async fn attest(State(api): State<Arc<Api>>, posted: Posted) -> WebResult<Response> {
    let (item, verdict) = match (posted.text("item"), posted.text("verdict")) {
        (Some(i), Some(v)) => (i, v),
        _ => {
            return Err(
                ApiError::new(StatusCode::BAD_REQUEST, "choose an item and keep or revoke").into(),
            )
        }
    };
    let user = posted.viewer.user.clone();
    api.blocking(move |_, engine| {
        Ok(tregov_engine::reviews::attest(
            engine, &user, &item, &verdict,
        )?)
    })
    .await?;
    Ok(Redirect::to("/web/reviews").into_response())
}

async fn breakglass(
    State(api): State<Arc<Api>>,
    Viewer(viewer): Viewer,
    Query(q): Query<PageQuery>,
) -> WebResult<Response> {
    let (requests, grants) = api
        .blocking(move |_, engine| {
            let graph = engine.graph();
            let grants: Vec<_> = tregov_engine::breakglass::grants(graph)
                .into_iter()
                .map(|(_, g)| g)
                .collect();
            Ok((tregov_engine::breakglass::requests(graph), grants))
        })
        .await?;
    let size = api.web_page_size();
    // Newest first; one page number pages both lists.
    let (mut requests, mut grants) = (requests, grants);
    requests.reverse();
    grants.reverse();
    let requests = paged(&requests, q.page, size);
    let grants = paged(&grants, q.page, size);
    let markup = html! {
        h2 { "Requests" }
        @if requests.items.is_empty() { p { "None." } }
        @else {
            table {
                thead { tr { th scope="col" { "Request" } th scope="col" { "By" } th scope="col" { "Project" } th scope="col" { "Reason" } th scope="col" { "For" } th scope="col" { "Asked" } th scope="col" { "Approve" } } }
                tbody {
                    @for r in requests.items {
                        tr {
                            td { (r.id) } td { (r.user) } td { (r.project) } td { (r.reason) }
                            td { (r.seconds) " s" } td { (r.requested_at) }
                            td { form.inline method="post" action="/web/breakglass/approve" {
                                (csrf(&viewer))
                                input type="hidden" name="request" value=(r.id);
                                button type="submit" { "Approve" span.visually-hidden { " " (r.id) } }
                            } }
                        }
                    }
                }
            }
        }
        (pager(&requests, "/web/breakglass?"))
        h2 { "Grants" }
        @if grants.items.is_empty() { p { "None." } }
        @else {
            table {
                thead { tr { th scope="col" { "Grant" } th scope="col" { "Holder" } th scope="col" { "Project" } th scope="col" { "Approved by" } th scope="col" { "Until" } th scope="col" { "Ended" } } }
                tbody {
                    @for g in grants.items {
                        tr {
                            td { (g.id) } td { (g.user) } td { (g.project) } td { (g.approved_by) } td { (g.expires_at) }
                            td { @match (&g.revoked_by, &g.revoked_at) {
                                (Some(by), Some(at)) => { "revoked by " (by) " at " (at) },
                                _ => { form.inline method="post" action="/web/breakglass/revoke" {
                                    (csrf(&viewer))
                                    input type="hidden" name="grant" value=(g.id);
                                    button type="submit" { "Revoke" span.visually-hidden { " " (g.id) } }
                                } },
                            } }
                        }
                    }
                }
            }
        }
        (pager(&grants, "/web/breakglass?"))
        h2 { "Ask for break-glass access" }
        form method="post" action="/web/breakglass/request" {
            (csrf(&viewer))
            label for="bg-project" { "Project" }
            input #bg-project type="text" name="project" required;
            label for="bg-reason" { "Reason" }
            input #bg-reason type="text" name="reason" required;
            label for="bg-seconds" { "For how many seconds" }
            input #bg-seconds type="number" name="seconds" min="1" value="3600" required;
            button type="submit" { "Ask" }
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Break-glass", Some(&viewer), "/web/breakglass", markup),
    ))
}

async fn breakglass_request(State(api): State<Arc<Api>>, posted: Posted) -> WebResult<Response> {
    let settings = crate::breakglass::configured(&api)?;
    let seconds = posted
        .text("seconds")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "`seconds` must be a whole number")
        })?;
    let new = tregov_engine::breakglass::NewRequest {
        project: posted.text("project").unwrap_or_default(),
        reason: posted.text("reason").unwrap_or_default(),
        seconds,
    };
    let user = posted.viewer.user.clone();
    api.blocking(move |_, engine| {
        Ok(tregov_engine::breakglass::request(
            engine, &settings, &user, &new,
        )?)
    })
    .await?;
    Ok(Redirect::to("/web/breakglass").into_response())
}

async fn breakglass_approve(State(api): State<Arc<Api>>, posted: Posted) -> WebResult<Response> {
    let settings = crate::breakglass::configured(&api)?;
    let (user, request) = (
        posted.viewer.user.clone(),
        posted.text("request").unwrap_or_default(),
    );
    api.blocking(move |_, engine| {
        Ok(tregov_engine::breakglass::approve(
            engine, &settings, &user, &request,
        )?)
    })
    .await?;
    Ok(Redirect::to("/web/breakglass").into_response())
}

async fn breakglass_revoke(State(api): State<Arc<Api>>, posted: Posted) -> WebResult<Response> {
    let (user, grant) = (
        posted.viewer.user.clone(),
        posted.text("grant").unwrap_or_default(),
    );
    api.blocking(move |_, engine| Ok(tregov_engine::breakglass::revoke(engine, &user, &grant)?))
        .await?;
    Ok(Redirect::to("/web/breakglass").into_response())
}

#[derive(Deserialize)]
struct WhyQuery {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Option<String>,
}

/// The explorer's answer: a logged decision replayed, or a request decided and explained.
enum Explained {
    Replayed(String),
    Decided { decision: String, text: String },
}

async fn why(
    State(api): State<Arc<Api>>,
    Viewer(viewer): Viewer,
    Query(q): Query<WhyQuery>,
) -> WebResult<Response> {
    let field = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let (principal, action, resource) = (field(&q.principal), field(&q.action), field(&q.resource));
    let context = field(&q.context);
    let user = viewer.user.clone();
    let asked = match (q.seq, &principal, &action, &resource) {
        (Some(seq), ..) => Some(Ok(seq)),
        (None, Some(p), Some(a), Some(r)) => {
            Some(Err((p.clone(), a.clone(), r.clone(), context.clone())))
        }
        _ => None,
    };
    let explained = match asked {
        None => None,
        Some(asked) => Some(
            api.blocking(move |api, engine| match asked {
                // Anyone may see why a decision about themselves went as it did.
                Ok(seq) if decided_about(engine, seq, &user) => replayed(engine, seq),
                Ok(seq) => {
                    api.may_view_audit(engine, &user, TREGOV)?;
                    replayed(engine, seq)
                }
                Err((p, a, r, c)) => {
                    api.may_view_audit(engine, &user, TREGOV)?;
                    decided(engine, p, a, r, c)
                }
            })
            .await?,
        ),
    };
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let markup = html! {
        form.stacked method="get" action="/web/why" {
            label for="principal" { "Principal " span.hint { "e.g. Tre::User::\"alice\"" } }
            input #principal type="text" name="principal" value=(value(&principal));
            label for="action" { "Action " span.hint { "e.g. Tre::Action::\"read\"" } }
            input #action type="text" name="action" value=(value(&action));
            label for="resource" { "Resource " span.hint { "e.g. Tre::Dataset::\"gwas-2024\"" } }
            input #resource type="text" name="resource" value=(value(&resource));
            label for="context" { "Context (JSON, optional)" }
            textarea #context name="context" rows="2" { (value(&context)) }
            button type="submit" { "Explain" }
        }
        form.inline method="get" action="/web/why" {
            label for="seq" { "or a logged decision #" }
            input #seq type="number" name="seq" min="0" value=(q.seq.map(|s| s.to_string()).unwrap_or_default());
            button type="submit" { "Replay" }
        }
        @match &explained {
            Some(Explained::Decided { decision, text }) => {
                p #decision.decision { "Decision: " strong { (decision) } }
                pre #explanation { (text) }
            },
            Some(Explained::Replayed(text)) => { pre #explanation { (text) } },
            None => {},
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Decision explorer", Some(&viewer), "/web/why", markup),
    ))
}

/// Whether logged decision `seq` was about `user` (they were its principal).
fn decided_about(engine: &Engine, seq: u64, user: &str) -> bool {
    let Some(record) = engine.log().and_then(|log| log.record(seq).ok()) else {
        return false;
    };
    let Ok(uid) = uid_from_parts("Tre::User", user) else {
        return false;
    };
    record["kind"] == "decision"
        && record["request"]["principal"].as_str() == Some(uid.to_string().as_str())
}

fn replayed(engine: &Engine, seq: u64) -> ApiResult<Explained> {
    let log = engine
        .log()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "there is no decision log"))?;
    let replay = tregov_engine::replay::replay(log, seq, Some(engine.bundle()))
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(Explained::Replayed(tregov_render::log::replay_text(
        &replay,
    )))
}

fn decided(
    engine: &Engine,
    principal: String,
    action: String,
    resource: String,
    context: Option<String>,
) -> ApiResult<Explained> {
    let context: Value = match context {
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the context is not JSON: {e}"),
            )
        })?,
        None => serde_json::json!({}),
    };
    let spec = engine.at_the_clock(RequestSpec {
        principal,
        action,
        resource,
        context,
    });
    let request = engine
        .parse(spec)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let outcome = engine.decide_logged(&request, "web-why")?;
    let entities = engine.entities_of(&request)?;
    let explanation =
        tregov_engine::explain::explain(&outcome, &request.request, &entities, engine.bundle());
    Ok(Explained::Decided {
        decision: format!("{:?}", outcome.decision),
        text: tregov_render::decision::explanation_text(&outcome, &explanation),
    })
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: Option<usize>,
}

/// One line of the timeline: a change seen in the trail, or one tregov applied.
struct Moment {
    time: String,
    what: String,
    who: String,
    detail: String,
    kind: &'static str,
}

async fn drift(
    State(api): State<Arc<Api>>,
    Viewer(viewer): Viewer,
    Query(q): Query<PageQuery>,
) -> WebResult<Response> {
    let user = viewer.user.clone();
    let moments = api
        .blocking(move |api, engine| {
            api.may_view_audit(engine, &user, TREGOV)?;
            timeline(api, engine)
        })
        .await?;
    let shown = paged(&moments, q.page, api.web_page_size());
    let markup = html! {
        p { "Changes made outside tregov, as CloudTrail recorded them, and what tregov applied, newest first." }
        @if moments.is_empty() { p { "Nothing yet." } }
        @else {
            table #timeline {
                thead { tr { th scope="col" { "Time" } th scope="col" { "" } th scope="col" { "What" } th scope="col" { "Who" } th scope="col" { "Detail" } } }
                tbody {
                    @for m in shown.items {
                        tr class=(m.kind) {
                            td { (m.time) }
                            td { @if m.kind == "change" { "out of band" } @else { "tregov" } }
                            td { (m.what) }
                            td { (m.who) }
                            td { (m.detail) }
                        }
                    }
                }
            }
            (pager(&shown, "/web/drift?"))
        }
    };
    Ok(respond(
        StatusCode::OK,
        page("Out-of-band changes", Some(&viewer), "/web/drift", markup),
    ))
}

/// The trail's governed changes and tregov's applies, newest first.
fn timeline(api: &Api, engine: &Engine) -> ApiResult<Vec<Moment>> {
    let mut moments = Vec::new();
    let events = EventStore::open(&api.data_dir)?;
    let filter = EventFilter {
        governed_only: true,
        ..Default::default()
    };
    for e in events.list(&filter, None)? {
        moments.push(Moment {
            time: e.event_time.clone(),
            what: format!(
                "{} ({})",
                e.event_name,
                e.observation.map(|o| o.as_str()).unwrap_or("-")
            ),
            who: e.principal.clone(),
            detail: format!(
                "account {}{}",
                e.account,
                e.target.map(|t| format!(", {t}")).unwrap_or_default()
            ),
            kind: "change",
        });
    }
    if let Some(log) = engine.log() {
        for r in log.records()?.iter().filter(|r| r["kind"] == "apply") {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            moments.push(Moment {
                time: s("time"),
                what: format!(
                    "{} ({})",
                    r["change"]["kind"].as_str().unwrap_or("change"),
                    s("result")
                ),
                who: format!("tregov {}", s("origin")),
                detail: s("reason"),
                kind: "apply",
            });
        }
    }
    moments.sort_by(|a, b| b.time.cmp(&a.time));
    Ok(moments)
}

async fn log_status(State(api): State<Arc<Api>>, Viewer(viewer): Viewer) -> WebResult<Response> {
    let user = viewer.user.clone();
    let report = api
        .blocking(move |api, engine| {
            api.may_view_audit(engine, &user, TREGOV)?;
            Ok(DecisionLog::open(&api.data_dir)?.verify()?)
        })
        .await?;
    let markup = log_markup(&report);
    Ok(respond(
        StatusCode::OK,
        page("Decision log", Some(&viewer), "/web/log", markup),
    ))
}

fn log_markup(report: &tregov_engine::log::VerifyReport) -> Markup {
    html! {
        @if report.ok {
            p #log-status.ok role="status" { "Intact: " (report.records) " records, every hash and link checked." }
        } @else {
            p #log-status.bad role="alert" { "Broken: the record does not verify." }
        }
        pre { (tregov_render::log::verify_text(report)) }
    }
}
