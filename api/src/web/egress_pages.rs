//! Egress in the browser: the reviewer's queue, a request's page (files with sizes and pinned
//! versions, previews of text and CSV from the staging copy, the history from the log,
//! approve/reject, download), and the researcher's submit and withdraw. Each action is the
//! API's own operation (`Api::egress_*`), so the same Cedar decisions are made and logged.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use tregov_engine::egress::{Egress, EgressRequest, Status};

use super::page::{csrf, paged, pager, respond, size, WebResult};
use super::session::Session;
use super::{Posted, Viewer};
use crate::client::form_urlencoded;
use crate::{Api, ApiError};

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/web/egress", get(list))
        .route("/web/egress/new", get(new_form).post(submit))
        .route("/web/egress/{id}", get(show))
        .route("/web/egress/{id}/preview", get(preview))
        .route("/web/egress/{id}/review", post(review))
        .route("/web/egress/{id}/withdraw", post(withdraw))
        .route("/web/egress/{id}/download", post(download))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    view: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

/// The lists a person sees: what waits for their review, what they asked for, everything
/// they may see.
const VIEWS: [(&str, &str); 3] = [
    ("queue", "For you to review"),
    ("mine", "Your requests"),
    ("all", "All you may see"),
];

async fn list(
    State(api): State<Arc<Api>>,
    Viewer(viewer): Viewer,
    Query(q): Query<ListQuery>,
) -> WebResult<Response> {
    let view = ["mine", "all"]
        .into_iter()
        .find(|v| q.view.as_deref() == Some(*v))
        .unwrap_or("queue");
    let all = api.egress_list(viewer.user.clone(), None, None).await?;
    let user = viewer.user.clone();
    let roles = api
        .blocking(move |_, engine| Ok(super::roles_of(engine, &user)))
        .await?;
    let mut shown: Vec<EgressRequest> = all
        .into_iter()
        .filter(|r| match view {
            "queue" => r
                .current_role()
                .is_some_and(|role| roles.iter().any(|held| held == role)),
            "mine" => r.requester == viewer.user || r.submitted_by == viewer.user,
            _ => true,
        })
        .collect();
    shown.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
    let page = paged(&shown, q.page, api.web_page_size());
    let base = format!("/web/egress?view={view}&");
    let markup = html! {
        nav.tabs aria-label="Lists" {
            @for (key, label) in VIEWS {
                @if key == view {
                    a href={ "/web/egress?view=" (key) } aria-current="page" { (label) }
                } @else {
                    a href={ "/web/egress?view=" (key) } { (label) }
                }
            }
            a.button href="/web/egress/new" { "Submit results for egress" }
        }
        @if page.items.is_empty() {
            p { "Nothing here." }
        } @else {
            table {
                caption { (shown.len()) " request(s)" }
                thead { tr { th scope="col" { "Request" } th scope="col" { "Status" } th scope="col" { "Workspace" } th scope="col" { "Requester" } th scope="col" { "Files" } th scope="col" { "Updated" } } }
                tbody {
                    @for r in page.items {
                        tr {
                            td { a href={ "/web/egress/" (r.id) } { (r.id) } }
                            td { (status_text(r)) }
                            td { (r.workspace) }
                            td { (r.requester) }
                            td { (r.objects.len()) }
                            td { (r.updated_at) }
                        }
                    }
                }
            }
            (pager(&page, &base))
        }
    };
    Ok(respond(
        StatusCode::OK,
        super::page::page("Egress requests", Some(&viewer), "/web/egress", markup),
    ))
}

/// `IN_REVIEW, step 2 of 2 (ResearchIT)`.
fn status_text(r: &EgressRequest) -> String {
    match r.current_role() {
        Some(role) => format!(
            "{}, step {} of {} ({role})",
            r.status.as_str(),
            r.current_step,
            r.steps.len()
        ),
        None => r.status.as_str().to_string(),
    }
}

async fn show(
    State(api): State<Arc<Api>>,
    Viewer(viewer): Viewer,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<DoneQuery>,
) -> WebResult<Response> {
    let (request, history) = api.egress_history(viewer.user.clone(), id).await?;
    let user = viewer.user.clone();
    let roles = api
        .blocking(move |_, engine| Ok(super::roles_of(engine, &user)))
        .await?;
    let markup = request_page(&viewer, &request, &history, &roles, q.done.as_deref());
    let title = format!("Egress request {}", request.id);
    Ok(respond(
        StatusCode::OK,
        super::page::page(&title, Some(&viewer), "/web/egress", markup),
    ))
}

#[derive(Deserialize)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

fn request_page(
    viewer: &Session,
    r: &EgressRequest,
    history: &[Value],
    roles: &[String],
    done: Option<&str>,
) -> Markup {
    let reviewer = r.steps.iter().any(|s| roles.contains(s));
    let requester = r.requester == viewer.user || r.submitted_by == viewer.user;
    let downloader = roles.contains(&r.download_role);
    let staged = r.pending.is_none();
    html! {
        @if let Some(done) = done {
            p.notice role="status" { (done_text(done)) }
        }
        dl.facts {
            dt { "Status" } dd #status { (status_text(r)) }
            dt { "Workspace" } dd { (r.workspace) " (project " (r.project) ")" }
            dt { "Requester" } dd { (r.requester) @if r.submitted_by != r.requester { " (submitted by " (r.submitted_by) ")" } }
            dt { "Review steps" } dd { (r.steps.join(" → ")) }
            dt { "Downloads" } dd { (r.download_count) " of " (r.download_limit) " by " (r.download_role) }
            @if let Some(note) = &r.note { dt { "Note" } dd { (note) } }
            dt { "Submitted" } dd { (r.created_at) }
            @if let Some(error) = &r.last_error { dt { "Last error" } dd { (error) } }
        }
        h2 { "Files" }
        table {
            thead { tr { th scope="col" { "File" } th scope="col" { "Size" } th scope="col" { "Pinned version" } th scope="col" { "Preview" } } }
            tbody {
                @for o in &r.objects {
                    tr {
                        td { (o.key) }
                        td { (size(o.size)) }
                        td { code { (o.version_id) } }
                        td {
                            @if staged && previewable(&o.key) {
                                a href={ "/web/egress/" (r.id) "/preview?" (form_urlencoded(&[("file", &o.key)])) } { "Preview " span.visually-hidden { (o.key) } }
                            } @else if !staged { "being staged" } @else { "—" }
                        }
                    }
                }
            }
        }
        @if r.status == Status::InReview && reviewer {
            h2 { "Review step " (r.current_step) " (" (r.current_role().unwrap_or("-")) ")" }
            form.review method="post" action={ "/web/egress/" (r.id) "/review" } {
                (csrf(viewer))
                label for="reason" { "Reason (kept in the record)" }
                textarea #reason name="reason" rows="2" {}
                div.actions {
                    button #approve type="submit" name="decision" value="approve" { "Approve" }
                    button #reject type="submit" name="decision" value="reject" { "Reject" }
                }
            }
        }
        @if r.status == Status::Approved && downloader {
            h2 { "Download" }
            form method="post" action={ "/web/egress/" (r.id) "/download" } {
                (csrf(viewer))
                p { "Each download is counted; " (r.download_limit - r.download_count) " left." }
                button #download type="submit" { "Download the approved files" }
            }
        }
        @if requester && matches!(r.status, Status::InReview | Status::Failed) {
            h2 { "Withdraw" }
            form method="post" action={ "/web/egress/" (r.id) "/withdraw" } {
                (csrf(viewer))
                label for="withdraw-reason" { "Reason" }
                input #withdraw-reason type="text" name="reason";
                button #withdraw type="submit" { "Withdraw this request" }
            }
        }
        h2 { "Reviews" }
        @if r.reviews.is_empty() { p { "None yet." } }
        @else {
            table {
                thead { tr { th scope="col" { "Step" } th scope="col" { "Reviewer" } th scope="col" { "Decision" } th scope="col" { "Reason" } th scope="col" { "When" } th scope="col" { "Decision record" } } }
                tbody {
                    @for v in &r.reviews {
                        tr {
                            td { (v.step) " (" (v.role) ")" }
                            td { (v.reviewer) }
                            td { (v.decision) }
                            td { (v.reason.as_deref().unwrap_or("")) }
                            td { (v.at) }
                            td { @if let Some(seq) = v.log_seq { a href={ "/web/why?seq=" (seq) } { "#" (seq) } } }
                        }
                    }
                }
            }
        }
        h2 { "History (from the decision log)" }
        (history_table(history))
    }
}

fn done_text(done: &str) -> &'static str {
    match done {
        "submitted" => "Submitted for review.",
        "approve" => "Approved.",
        "reject" => "Rejected.",
        "withdrawn" => "Withdrawn.",
        _ => "Done.",
    }
}

/// Files shown as text: by name, since the bytes are the researcher's.
fn previewable(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    [
        ".txt", ".csv", ".tsv", ".md", ".json", ".log", ".tex", ".r", ".py", ".sql", ".yaml",
        ".yml",
    ]
    .iter()
    .any(|ext| lower.ends_with(ext))
}

pub(crate) fn history_table(history: &[Value]) -> Markup {
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    html! {
        table.history {
            thead { tr { th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "What" } th scope="col" { "Who" } th scope="col" { "Outcome" } } }
            tbody {
                @for h in history {
                    @let seq = h["seq"].as_u64().unwrap_or(0);
                    tr {
                        td { a href={ "/web/why?seq=" (seq) } { (seq) } }
                        td { (s(h, "/time")) }
                        @if h["kind"] == "decision" {
                            td { "decision " (s(h, "/request/action")) }
                            td { (s(h, "/request/principal")) }
                            td { (s(h, "/decision")) " (" (reasons_text(h)) ")" }
                        } @else {
                            td { (s(h, "/event")) }
                            td { (s(h, "/actor")) }
                            td { (s(h, "/status")) @if let Some(r) = h["reason"].as_str() { ": " (r) } }
                        }
                    }
                }
            }
        }
    }
}

fn reasons_text(h: &Value) -> String {
    let reasons: Vec<&str> = h["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match reasons.is_empty() {
        true => "no policy permits it".into(),
        false => reasons.join(", "),
    }
}

#[derive(Deserialize)]
struct PreviewQuery {
    file: String,
}

async fn preview(
    State(api): State<Arc<Api>>,
    Viewer(viewer): Viewer,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PreviewQuery>,
) -> WebResult<Response> {
    let request = api.egress_visible(viewer.user.clone(), id).await?;
    let object = request
        .objects
        .iter()
        .find(|o| o.key == q.file)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no file `{}` in request `{}`", q.file, request.id),
            )
        })?;
    if request.pending.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the files are still being staged; try again shortly",
        )
        .into());
    }
    let limit = api
        .web
        .as_ref()
        .map_or(64 * 1024, |w| w.config.preview_bytes);
    let (bytes, more) = api
        .effects()?
        .store()
        .preview(&request, object, limit)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let csv = {
        let lower = object.key.to_ascii_lowercase();
        lower.ends_with(".csv") || lower.ends_with(".tsv")
    };
    let markup = html! {
        p { "Request " a href={ "/web/egress/" (request.id) } { (request.id) } ", version " code { (object.version_id) } ", " (size(object.size)) ", from the staging copy." }
        @if more { p.notice { "The first " (size(bytes.len() as i64)) " only." } }
        @if csv { (csv_table(&text, object.key.to_ascii_lowercase().ends_with(".tsv"))) }
        @else { pre.preview { (text) } }
    };
    let title = format!("Preview of {}", object.key);
    Ok(respond(
        StatusCode::OK,
        super::page::page(&title, Some(&viewer), "/web/egress", markup),
    ))
}

/// A CSV (or TSV) preview as a table; quoted fields may hold separators and quotes.
fn csv_table(text: &str, tabs: bool) -> Markup {
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(|line| split_csv_line(line, if tabs { '\t' } else { ',' }))
        .collect();
    html! {
        table.preview {
            @if let Some((head, body)) = rows.split_first() {
                thead { tr { @for cell in head { th scope="col" { (cell) } } } }
                tbody { @for row in body { tr { @for cell in row { td { (cell) } } } } }
            }
        }
    }
}

fn split_csv_line(line: &str, separator: char) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (c, false) if c == separator => cells.push(std::mem::take(&mut cell)),
            (c, _) => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

#[derive(Deserialize)]
struct NewQuery {
    #[serde(default)]
    workspace: Option<String>,
}

async fn new_form(
    State(api): State<Arc<Api>>,
    Viewer(viewer): Viewer,
    Query(q): Query<NewQuery>,
) -> WebResult<Response> {
    let user = viewer.user.clone();
    let workspaces = api
        .blocking(move |api, engine| {
            let flow = Egress::new(engine, &api.settings)?;
            Ok(owned_workspaces(&flow, &user))
        })
        .await?;
    let chosen = q
        .workspace
        .filter(|w| workspaces.contains(w))
        .or_else(|| (workspaces.len() == 1).then(|| workspaces[0].clone()));
    let files = match &chosen {
        Some(ws) => api
            .effects()?
            .store()
            .pin(ws, None)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e))?,
        None => Vec::new(),
    };
    let markup = html! {
        @if workspaces.is_empty() {
            p { "You own no workspace, so there is nothing to submit." }
        } @else {
            form method="get" action="/web/egress/new" {
                label for="workspace" { "Workspace" }
                select #workspace name="workspace" {
                    @for w in &workspaces {
                        option value=(w) selected[chosen.as_deref() == Some(w.as_str())] { (w) }
                    }
                }
                button type="submit" { "Show its egress store" }
            }
        }
        @if let Some(ws) = &chosen {
            h2 { "Files in the egress store of " (ws) }
            @if files.is_empty() {
                p { "The egress store holds no files for this workspace." }
            } @else {
                form #submit-form method="post" action="/web/egress/new" {
                    (csrf(&viewer))
                    input type="hidden" name="workspace" value=(ws);
                    fieldset {
                        legend { "Choose the files to send out (their current versions are pinned)" }
                        p { label { input #select-all type="checkbox" data-selects="file"; " All files" } }
                        @for (i, f) in files.iter().enumerate() {
                            div.choice {
                                input type="checkbox" name="file" value=(f.key) id={ "file-" (i) } checked;
                                label for={ "file-" (i) } { (f.key) " (" (size(f.size)) ")" }
                            }
                        }
                    }
                    label for="note" { "Note for the reviewers" }
                    textarea #note name="note" rows="3" {}
                    button #submit type="submit" { "Submit for review" }
                }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        super::page::page(
            "Submit results for egress",
            Some(&viewer),
            "/web/egress",
            markup,
        ),
    ))
}

/// The workspaces `user` owns, by id.
fn owned_workspaces(flow: &Egress<'_>, user: &str) -> Vec<String> {
    let mut out: Vec<String> = flow
        .engine()
        .graph()
        .uids()
        .filter(|u| u.type_name().to_string() == "Tre::Workspace")
        .map(|u| u.id().unescaped().to_string())
        .filter(|w| {
            flow.workspace_facts(w)
                .is_ok_and(|(owner, _)| owner == user)
        })
        .collect();
    out.sort();
    out
}

async fn submit(State(api): State<Arc<Api>>, posted: Posted) -> WebResult<Response> {
    let workspace = posted
        .text("workspace")
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "choose a workspace"))?;
    let files = posted.all("file");
    if files.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "choose at least one file").into());
    }
    let request = api
        .egress_submit(
            posted.viewer.user.clone(),
            workspace,
            Some(files),
            posted.text("note"),
        )
        .await?;
    Ok(Redirect::to(&format!("/web/egress/{}?done=submitted", request.id)).into_response())
}

async fn review(
    State(api): State<Arc<Api>>,
    UrlPath(id): UrlPath<String>,
    posted: Posted,
) -> WebResult<Response> {
    let approve = match posted.get("decision") {
        Some("approve") => true,
        Some("reject") => false,
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, "choose approve or reject").into()),
    };
    let request = api
        .egress_review(
            posted.viewer.user.clone(),
            id,
            approve,
            posted.text("reason"),
        )
        .await?;
    let done = if approve { "approve" } else { "reject" };
    Ok(Redirect::to(&format!("/web/egress/{}?done={done}", request.id)).into_response())
}

async fn withdraw(
    State(api): State<Arc<Api>>,
    UrlPath(id): UrlPath<String>,
    posted: Posted,
) -> WebResult<Response> {
    let request = api
        .egress_withdraw(posted.viewer.user.clone(), id, posted.text("reason"))
        .await?;
    Ok(Redirect::to(&format!("/web/egress/{}?done=withdrawn", request.id)).into_response())
}

async fn download(
    State(api): State<Arc<Api>>,
    UrlPath(id): UrlPath<String>,
    posted: Posted,
) -> WebResult<Response> {
    let viewer = posted.viewer.clone();
    let (request, downloads) = api.egress_download(viewer.user.clone(), id).await?;
    let expiry = api.effects()?.store().config().url_expiry_seconds;
    let markup = html! {
        p { "Download " (request.download_count) " of " (request.download_limit) " of request "
            a href={ "/web/egress/" (request.id) } { (request.id) } ". The links work for " (expiry) " seconds." }
        ul.downloads {
            @for d in &downloads {
                li { a href=(d.url) download { (d.key) } " (" (size(d.size)) ")" }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        super::page::page("Download", Some(&viewer), "/web/egress", markup),
    ))
}
