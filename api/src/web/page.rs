//! The pages' common parts: the layout (skip link, navigation, one `h1`), forms' CSRF field,
//! tables that paginate, and errors as pages. Markup is maud's: every value is escaped.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::session::Session;
use crate::ApiError;

/// The sections in the navigation bar: (path, label).
const SECTIONS: [(&str, &str); 7] = [
    ("/web/egress", "Egress"),
    ("/web/access", "Access"),
    ("/web/reviews", "Reviews"),
    ("/web/breakglass", "Break-glass"),
    ("/web/why", "Decisions"),
    ("/web/drift", "Out-of-band changes"),
    ("/web/log", "Log"),
];

/// A whole page: `title` is its `h1` and `<title>`; `current` the section it is in.
pub(crate) fn page(title: &str, viewer: Option<&Session>, current: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · tregov" }
                link rel="stylesheet" href="/web/static/app.css";
                script src="/web/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.bar {
                    a.brand href="/web/" { "tregov" }
                    @if let Some(viewer) = viewer {
                        nav aria-label="Sections" {
                            ul {
                                @for (path, label) in SECTIONS {
                                    li {
                                        @if path == current {
                                            a href=(path) aria-current="page" { (label) }
                                        } @else {
                                            a href=(path) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form.signout method="post" action="/web/logout" {
                            (csrf(viewer))
                            span { "Signed in as " strong { (viewer.user) } }
                            " "
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden field every form carries.
pub(crate) fn csrf(viewer: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// An HTML answer that no cache keeps and no other origin frames.
pub(crate) fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, Html(markup.into_string())).into_response();
    secure_headers(response.headers_mut());
    response
}

/// The headers every web answer carries: a strict Content Security Policy (scripts and
/// styles from this origin only, no framing, forms posting only here), no caching of pages
/// that hold personal data, no referrer leaking request ids to download hosts (`same-origin`,
/// not `no-referrer`: under that, browsers send `Origin: null` with this app's own forms).
pub(crate) fn secure_headers(headers: &mut axum::http::HeaderMap) {
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// One page of `items` (1-based `page`), with the pager under it.
pub(crate) struct Paged<'a, T> {
    pub items: &'a [T],
    pub page: usize,
    pub pages: usize,
}

pub(crate) fn paged<T>(items: &[T], page: Option<usize>, size: usize) -> Paged<'_, T> {
    let size = size.max(1);
    let pages = items.len().div_ceil(size).max(1);
    let page = page.unwrap_or(1).clamp(1, pages);
    let start = (page - 1) * size;
    let end = (start + size).min(items.len());
    Paged {
        items: &items[start.min(end)..end],
        page,
        pages,
    }
}

/// "Page 2 of 5" with previous/next links; `base` is the list's URL with its other query
/// parameters (ending in `?` or `&`).
pub(crate) fn pager<T>(paged: &Paged<'_, T>, base: &str) -> Markup {
    html! {
        @if paged.pages > 1 {
            nav.pager aria-label="Pages" {
                @if paged.page > 1 {
                    a rel="prev" href={ (base) "page=" (paged.page - 1) } { "← Previous" }
                }
                span { "Page " (paged.page) " of " (paged.pages) }
                @if paged.page < paged.pages {
                    a rel="next" href={ (base) "page=" (paged.page + 1) } { "Next →" }
                }
            }
        }
    }
}

/// A failed page: the API's error as a page. A refusal by policy names the policies that
/// refused and links to the logged decision in the decision explorer.
pub(crate) struct WebError(pub ApiError);

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<tregov_engine::workflow::WorkflowError> for WebError {
    fn from(e: tregov_engine::workflow::WorkflowError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = self.0.body();
        let reasons: Vec<&str> = body["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let refused = body["decision"] == "Deny";
        let title = match (refused, status) {
            (true, _) => "Refused by policy",
            (_, StatusCode::NOT_FOUND) => "Not found",
            (_, StatusCode::FORBIDDEN) => "Refused",
            (_, StatusCode::CONFLICT) => "Not possible now",
            (_, StatusCode::BAD_REQUEST) => "Check the form",
            (_, StatusCode::TOO_MANY_REQUESTS) => "Too many requests",
            _ => "Something went wrong",
        };
        let markup = html! {
            div.error role="alert" {
                p.message { (self.0.message()) }
                @if refused {
                    @if reasons.is_empty() {
                        p { "No policy permits it." }
                    } @else {
                        p { "The policies that refused it:" }
                        ul.policies {
                            @for id in &reasons { li { code { (id) } } }
                        }
                    }
                    @if let Some(seq) = body["logSeq"].as_u64() {
                        p { a href={ "/web/why?seq=" (seq) } { "Why: the logged decision #" (seq) } }
                    }
                }
                @if let Some(id) = body["errorId"].as_str() {
                    p { "Error id (for the IT admins): " code { (id) } }
                }
            }
            p { a href="/web/" { "Back to the start page" } }
        };
        respond(status, page(title, None, "", markup))
    }
}

pub(crate) type WebResult<T> = Result<T, WebError>;

/// A byte count as people read it.
pub(crate) fn size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_clamp_to_what_there_is() {
        let items: Vec<u32> = (0..53).collect();
        let p = paged(&items, Some(3), 25);
        assert_eq!((p.items.len(), p.page, p.pages), (3, 3, 3));
        let p = paged(&items, Some(99), 25);
        assert_eq!(p.page, 3);
        let none: Vec<u32> = Vec::new();
        let p = paged(&none, None, 25);
        assert_eq!((p.items.len(), p.pages), (0, 1));
    }

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(size(17), "17 B");
        assert_eq!(size(2048), "2.0 KiB");
        assert_eq!(size(5 * 1024 * 1024), "5.0 MiB");
    }

    #[test]
    fn user_text_is_escaped() {
        let viewer = Session {
            user: "<script>".into(),
            csrf: "t".into(),
        };
        let text = page("t", Some(&viewer), "", html! {}).into_string();
        assert!(text.contains("&lt;script&gt;") && !text.contains("<script>"));
    }
}
