//! The one HTTP client: for the API (the `tregov egress` commands) and for fetching a JWKS.
//!
//! Every call is bounded in time and in the size of its answer. `https` URLs go through
//! `HTTPS_PROXY` (with `NO_PROXY`) when the environment sets one, tunnelled with `CONNECT`;
//! plain `http` is only ever used for loopback, and goes direct.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long a call may take, connection included, and how many bytes of its answer are
/// read.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub timeout: Duration,
    pub max_bytes: usize,
}

impl Bounds {
    /// For a JSON Web Key Set: small, and needed now.
    pub const JWKS: Bounds = Bounds {
        timeout: Duration::from_secs(5),
        max_bytes: 64 * 1024,
    };
    /// For the tregov API.
    pub const API: Bounds = Bounds {
        timeout: Duration::from_secs(60),
        max_bytes: 16 * 1024 * 1024,
    };
}

/// A request body with its content type.
struct Payload {
    content_type: &'static str,
    bytes: Bytes,
}

async fn send(
    method: hyper::Method,
    url: &str,
    authorization: Option<String>,
    body: Option<Payload>,
    bounds: Bounds,
) -> Result<(u16, Bytes), String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad URL `{url}`: {e}"))?;
    let mut request = hyper::Request::builder().method(method).uri(uri.clone());
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let payload = match body {
        Some(p) => {
            request = request.header("content-type", p.content_type);
            p.bytes
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(payload))
        .map_err(|e| format!("bad request `{url}`: {e}"))?;
    let call = async {
        let response = match proxy_for(&uri) {
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), HttpConnector::new());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                request_with(
                    tls()?.https_only().enable_http1().wrap_connector(tunnel),
                    request,
                )
                .await
            }
            None => request_with(tls()?.https_or_http().enable_http1().build(), request).await,
        }
        .map_err(|e| format!("cannot reach `{url}`: {e}"))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), bounds.max_bytes)
            .collect()
            .await
            .map_err(|e| format!("reading the answer from `{url}`: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(bounds.timeout, call)
        .await
        .map_err(|_| format!("`{url}` did not answer within {:?}", bounds.timeout))?
}

/// Sends `request` through `connector` on a client of its own.
async fn request_with<C: Connect + Clone + Send + Sync + 'static>(
    connector: C,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
    Client::builder(TokioExecutor::new())
        .build(connector)
        .request(request)
        .await
}

fn tls(
) -> Result<hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>, String>
{
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no TLS root certificates: {e}"))
}

/// The proxy an `https` URL goes through, if the environment names one for it.
fn proxy_for(uri: &Uri) -> Option<hyper_util::client::proxy::matcher::Intercept> {
    if uri.scheme_str() != Some("https") {
        return None;
    }
    Matcher::from_env().intercept(uri)
}

/// GETs `url` within `bounds` and returns the body of a 2xx answer.
pub async fn get_text(url: &str, bounds: Bounds) -> Result<String, String> {
    let (status, body) = send(hyper::Method::GET, url, None, None, bounds).await?;
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8".to_string())
}

/// POSTs `fields` form-encoded to `url` (an OAuth token endpoint), with HTTP Basic client
/// authentication when `basic` holds a client id and secret; returns the status and the
/// JSON answer.
pub async fn post_form(
    url: &str,
    fields: &[(&str, &str)],
    basic: Option<(&str, &str)>,
    bounds: Bounds,
) -> Result<(u16, Value), String> {
    use base64::Engine as _;
    let body = form_urlencoded(fields);
    // RFC 6749 2.3.1: the id and secret are form-encoded before they are joined.
    let authorization = basic.map(|(id, secret)| {
        let pair = format!(
            "{}:{}",
            form_urlencoded_one(id),
            form_urlencoded_one(secret)
        );
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    });
    let payload = Payload {
        content_type: "application/x-www-form-urlencoded",
        bytes: Bytes::from(body),
    };
    let (status, bytes) = send(
        hyper::Method::POST,
        url,
        authorization,
        Some(payload),
        bounds,
    )
    .await?;
    let value = serde_json::from_slice(&bytes)
        .map_err(|_| format!("`{url}` answered HTTP {status} without JSON"))?;
    Ok((status, value))
}

/// `application/x-www-form-urlencoded` of `fields`.
pub fn form_urlencoded(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_urlencoded_one(k), form_urlencoded_one(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_urlencoded_one(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The tregov API at `base` (`http://127.0.0.1:9465`), called with a bearer token.
pub struct ApiClient {
    base: String,
    token: String,
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// Calls the API; returns the HTTP status and the JSON answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|e| format!("bad method `{method}`: {e}"))?;
        let url = format!("{}{path}", self.base);
        let payload = body.map(|b| Payload {
            content_type: "application/json",
            bytes: Bytes::from(b.to_string()),
        });
        let authorization = Some(format!("Bearer {}", self.token));
        let (status, bytes) = send(method, &url, authorization, payload, Bounds::API).await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }
}
