//! The web app for egress reviewers, researchers, data managers and auditors, served by the
//! API on the same origin under `/web/` (with `[web]`).
//!
//! People sign in with the TRE's OpenID Provider (`oidc`); the session is server-side
//! (`session`). The signed-in user is the ID token's `sub`, as an API caller is the bearer
//! token's, and every action goes through the same engine paths and Cedar decisions as the
//! API's routes; a refusal shows the policies that refused. Pages are server-rendered HTML
//! (`page`); the only script (`web/app.js`) adds conveniences, never function.
//!
//! - `egress_pages`: the reviewer's queue, a request's page (files, previews, history,
//!   review, download), the researcher's submit and withdraw;
//! - `audit_pages`: access reports, review campaigns, break-glass, the decision explorer,
//!   out-of-band changes and their reverts, the log's verification.

mod audit_pages;
mod egress_pages;
mod oidc;
mod page;
mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use serde::Deserialize;
use tregov_config::WebConfig;

use crate::{Api, ApiError};
pub(crate) use page::{WebError, WebResult};
use session::{NoSession, Session, Sessions};

/// The web app's state inside the API.
pub(crate) struct Web {
    config: WebConfig,
    sessions: Sessions,
    sign_in: oidc::SignIn,
    /// Cookies carry `Secure` (and the session cookie the `__Host-` prefix) over TLS.
    secure: bool,
    /// The origin forms must come from (scheme, host and port of `public_url`).
    origin: String,
    /// The deployment facts the access reports are made with, as `tregov access` makes them.
    plan_settings: tregov_engine::plan::PlanSettings,
}

impl Web {
    pub(crate) fn build(
        config: &WebConfig,
        issuer: &str,
        secure: bool,
        plan_settings: tregov_engine::plan::PlanSettings,
    ) -> Result<Self, String> {
        let origin = url_origin(&config.public_url)
            .ok_or_else(|| format!("`[web] public_url` `{}` has no origin", config.public_url))?;
        Ok(Self {
            sessions: Sessions::new(
                Duration::from_secs(config.idle_timeout_seconds),
                Duration::from_secs(config.absolute_timeout_seconds),
                config.max_sessions,
            ),
            sign_in: oidc::SignIn::new(config, issuer)?,
            config: config.clone(),
            secure,
            origin,
            plan_settings,
        })
    }

    fn cookie_name(&self) -> &'static str {
        session::cookie_name(self.secure)
    }

    /// A `Set-Cookie` value: HttpOnly always, Secure over TLS.
    fn set_cookie(&self, name: &str, value: &str, same_site: &str, max_age: Option<u64>) -> String {
        let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}");
        if let Some(age) = max_age {
            cookie.push_str(&format!("; Max-Age={age}"));
        }
        if self.secure {
            cookie.push_str("; Secure");
        }
        cookie
    }
}

/// `scheme://host[:port]` of `url`.
fn url_origin(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    match parsed.origin() {
        url::Origin::Tuple(..) => Some(parsed.origin().ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/web", get(|| async { Redirect::to("/web/") }))
        .route("/web/", get(home))
        .route("/web/static/app.css", get(stylesheet))
        .route("/web/static/app.js", get(script))
        .route("/web/signin", get(signin))
        .route("/web/login", get(login))
        .route("/web/callback", get(callback))
        .route("/web/logout", post(logout))
        .merge(egress_pages::routes())
        .merge(audit_pages::routes())
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                page::secure_headers(r.headers_mut());
                r
            },
        ))
}

impl Api {
    /// Rows on one page of a list.
    fn web_page_size(&self) -> usize {
        self.web.as_ref().map_or(25, |w| w.config.page_size)
    }

    fn web(&self) -> Result<&Web, NotConfigured> {
        self.web.as_ref().ok_or(NotConfigured)
    }
}

/// The answer under `/web/` when the web app is not configured.
pub(crate) struct NotConfigured;

impl From<NotConfigured> for Response {
    fn from(_: NotConfigured) -> Response {
        (
            StatusCode::NOT_FOUND,
            "the web app is not configured (`[web]`)\n",
        )
            .into_response()
    }
}

/// The signed-in person a page is for. Without a live session the browser goes to the
/// sign-in page (which says when the session expired), and comes back here afterwards.
pub(crate) struct Viewer(pub Session);

impl FromRequestParts<Arc<Api>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Response> {
        let web = api.web()?;
        let cookie = session::cookie(&parts.headers, web.cookie_name());
        match web.sessions.touch(cookie) {
            Ok(viewer) => {
                api.guard
                    .admit(&viewer.user)
                    .map_err(|e| WebError(e).into_response())?;
                Ok(Viewer(viewer))
            }
            Err(why) => {
                // A form posted to an expired session goes back to the page it came from.
                let next = match parts.method == axum::http::Method::GET {
                    true => parts.uri.path_and_query().map_or("/web/", |p| p.as_str()),
                    false => "/web/",
                };
                let why = match why {
                    NoSession::Expired => "expired",
                    NoSession::Missing => "none",
                };
                let to = format!(
                    "/web/signin?{}",
                    crate::client::form_urlencoded(&[("next", next), ("why", why)])
                );
                Err(Redirect::to(&to).into_response())
            }
        }
    }
}

/// A form posted by the signed-in person: from this origin (`Origin`, when the browser
/// sends it) and carrying the session's CSRF token. Anything else is refused before the
/// form is read.
pub(crate) struct Posted {
    pub viewer: Session,
    pub fields: Vec<(String, String)>,
}

impl Posted {
    /// The first value of field `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of field `name` (checkboxes).
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Field `name`, trimmed, if not empty.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }
}

impl FromRequest<Arc<Api>> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, api: &Arc<Api>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Viewer(viewer) = Viewer::from_request_parts(&mut parts, api).await?;
        let web = api.web()?;
        let forbidden =
            |message: &str| WebError(ApiError::new(StatusCode::FORBIDDEN, message)).into_response();
        if let Some(origin) = parts.headers.get(header::ORIGIN) {
            if origin.as_bytes() != web.origin.as_bytes() {
                tracing::warn!(user = %viewer.user, origin = ?origin, "refused a form from another origin");
                return Err(forbidden("the form was sent from another site"));
            }
        }
        let request = Request::from_parts(parts, body);
        let bytes = axum::body::Bytes::from_request(request, api)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            WebError(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unreadable form: {e}"),
            ))
            .into_response()
        })?;
        let token = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str());
        if !token.is_some_and(|t| session::same_secret(t, &viewer.csrf)) {
            tracing::warn!(user = %viewer.user, "refused a form without this session's CSRF token");
            return Err(forbidden(
                "the form did not carry this session's CSRF token; reload the page and try again",
            ));
        }
        Ok(Self { viewer, fields })
    }
}

/// A safe place to return to after sign-in: a path of this app, never another site.
fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/web/") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_string()
        }
        _ => "/web/".to_string(),
    }
}

#[derive(Deserialize)]
struct SignInQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    why: Option<String>,
}

async fn signin(State(api): State<Arc<Api>>, Query(q): Query<SignInQuery>) -> Response {
    if let Err(e) = api.web() {
        return e.into();
    }
    let next = local_next(q.next.as_deref());
    let login = format!(
        "/web/login?{}",
        crate::client::form_urlencoded(&[("next", &next)])
    );
    let markup = html! {
        @match q.why.as_deref() {
            Some("expired") => p.notice role="status" { "Your session expired. Sign in again to go on." },
            Some("signedout") => p.notice role="status" { "You are signed out." },
            _ => {}
        }
        p { "tregov governs this Trusted Research Environment. Sign in with your TRE account." }
        p { a.button href=(login) { "Sign in" } }
    };
    page::respond(StatusCode::OK, page::page("Sign in", None, "", markup))
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

async fn login(State(api): State<Arc<Api>>, Query(q): Query<LoginQuery>) -> Response {
    let web = match api.web() {
        Ok(w) => w,
        Err(e) => return e.into(),
    };
    let next = local_next(q.next.as_deref());
    let departure = web
        .sign_in
        .depart(api.auth.issuer(), || web.sessions.token(), &next)
        .await;
    match departure {
        Ok(d) => {
            let mut response = Redirect::to(&d.url).into_response();
            let cookie = web.set_cookie(oidc::STATE_COOKIE, &d.state, "Lax", Some(600));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start a sign-in");
            WebError(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ))
            .into_response()
        }
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

async fn callback(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let web = match api.web() {
        Ok(w) => w,
        Err(e) => return e.into(),
    };
    let refused = |status: StatusCode, message: String| {
        WebError(ApiError::new(status, message)).into_response()
    };
    if let Some(error) = q.error {
        let description = q.error_description.unwrap_or_default();
        return refused(
            StatusCode::FORBIDDEN,
            format!("the identity provider refused the sign-in: {error} {description}"),
        );
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "the sign-in came back without a code".into(),
        );
    };
    // The state must be the one this browser left with.
    let bound = session::cookie(&headers, oidc::STATE_COOKIE);
    if !bound.is_some_and(|b| session::same_secret(b, &state)) {
        return refused(
            StatusCode::FORBIDDEN,
            "this sign-in was not started in this browser; sign in again".into(),
        );
    }
    let (user, next) = match web.sign_in.arrive(&api.auth, &state, &code).await {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, "a sign-in failed");
            return refused(StatusCode::FORBIDDEN, e.to_string());
        }
    };
    let Some(id) = web.sessions.start(&user) else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness for a session".into(),
        );
    };
    tracing::info!(user = %user, "signed in to the web app");
    // A page, not a redirect: browsers withhold SameSite=Strict cookies along a redirect
    // chain that began at another site (the provider), so the next page is a fresh,
    // same-site navigation.
    let markup = html! {
        p { "Signed in as " strong { (user) } "." }
        p { a #continue href=(next) { "Continue" } }
    };
    let mut response = page::respond(StatusCode::OK, page::page("Signed in", None, "", markup));
    let refresh = format!("0;url={next}");
    if let Ok(v) = HeaderValue::from_str(&refresh) {
        response.headers_mut().insert("refresh", v);
    }
    for cookie in [
        web.set_cookie(web.cookie_name(), &id, "Strict", None),
        web.set_cookie(oidc::STATE_COOKIE, "", "Lax", Some(0)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

async fn logout(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    posted: Posted,
) -> Response {
    let web = match api.web() {
        Ok(w) => w,
        Err(e) => return e.into(),
    };
    web.sessions
        .end(session::cookie(&headers, web.cookie_name()));
    tracing::info!(user = %posted.viewer.user, "signed out of the web app");
    let mut response = Redirect::to("/web/signin?why=signedout").into_response();
    if let Ok(v) = HeaderValue::from_str(&web.set_cookie(web.cookie_name(), "", "Strict", Some(0)))
    {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

async fn home(State(api): State<Arc<Api>>, Viewer(viewer): Viewer) -> WebResult<Response> {
    let user = viewer.user.clone();
    let roles = api
        .blocking(move |_, engine| Ok(roles_of(engine, &user)))
        .await?;
    let markup = html! {
        p { "Your roles: "
            @if roles.is_empty() { "none" }
            @for (i, role) in roles.iter().enumerate() {
                @if i > 0 { ", " }
                strong { (role) }
            }
        }
        ul.cards {
            li { a href="/web/egress" { "Egress requests" } " — your review queue, your requests, submitting results" }
            li { a href="/web/access" { "Access" } " — who can reach a dataset and why; what a user can reach" }
            li { a href="/web/reviews" { "Access reviews" } " — the items you are asked to attest" }
            li { a href="/web/breakglass" { "Break-glass" } " — requests, approvals and grants" }
            li { a href="/web/why" { "Decision explorer" } " — why a request is allowed or denied" }
            li { a href="/web/drift" { "Out-of-band changes" } " — what changed outside tregov and what was put back" }
            li { a href="/web/log" { "Decision log" } " — whether the record is intact" }
        }
    };
    Ok(page::respond(
        StatusCode::OK,
        page::page("tregov", Some(&viewer), "", markup),
    ))
}

/// The TRE-wide roles `user` holds, by id.
pub(crate) fn roles_of(engine: &tregov_engine::Engine, user: &str) -> Vec<String> {
    let Ok(uid) = tregov_engine::entities::uid_from_parts("Tre::User", user) else {
        return Vec::new();
    };
    let mut roles: Vec<String> = engine
        .graph()
        .ancestors(&uid)
        .filter(|a| a.type_name().to_string() == "Tre::Role")
        .map(|a| a.id().unescaped().to_string())
        .collect();
    roles.sort();
    roles
}

async fn stylesheet() -> Response {
    static_file("text/css; charset=utf-8", include_str!("../../web/app.css"))
}

async fn script() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    )
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
