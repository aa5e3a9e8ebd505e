//! An HTTP client for the API (the `tregov egress` commands) and for fetching a JWKS.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

fn client() -> Result<Client<Https, Full<Bytes>>, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no TLS root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

async fn send(
    method: hyper::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Bytes), String> {
    let mut request = hyper::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let payload = match body {
        Some(b) => {
            request = request.header("content-type", "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(payload))
        .map_err(|e| format!("bad request `{url}`: {e}"))?;
    let response = client()?
        .request(request)
        .await
        .map_err(|e| format!("cannot reach `{url}`: {e}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer from `{url}`: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

/// GETs `url` and returns the body of a 2xx answer.
pub async fn get_text(url: &str) -> Result<String, String> {
    let (status, body) = send(hyper::Method::GET, url, None, None).await?;
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8".to_string())
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
        let (status, bytes) = send(method, &url, Some(&self.token), body).await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }
}
