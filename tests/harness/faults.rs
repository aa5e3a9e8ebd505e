//! A loopback proxy between the AWS SDK and moto that fails a share of calls the ways AWS
//! does: throttling, 500s, connections reset before the call reaches the service or after it
//! was done (its answer lost, so a retry repeats it), and calls that hang past the SDK's
//! timeout. Every call it lets through goes to moto unchanged; nothing here answers for AWS.
//! Seeded, so a failing run can be replayed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

use crate::cloudtrail::Lcg;

/// What the proxy did with each call, by kind.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub throttled: AtomicU64,
    pub server_errors: AtomicU64,
    pub reset_before: AtomicU64,
    pub reset_after: AtomicU64,
    pub timed_out: AtomicU64,
}

impl Counts {
    pub fn faults(&self) -> u64 {
        [
            &self.throttled,
            &self.server_errors,
            &self.reset_before,
            &self.reset_after,
            &self.timed_out,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    pub fn calls(&self) -> u64 {
        self.faults() + self.forwarded.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy)]
enum Fault {
    Throttle,
    ServerError,
    ResetBefore,
    ResetAfter,
    Hang,
}

pub struct FaultProxy {
    addr: SocketAddr,
    pub counts: Arc<Counts>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    upstream: String,
    rate: f64,
    hang: Duration,
    rng: Mutex<Lcg>,
    counts: Arc<Counts>,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl FaultProxy {
    /// Proxies to `upstream` (moto's `http://127.0.0.1:port`), failing `rate` of calls; a
    /// hung call is answered after `hang` (make it longer than the SDK's attempt timeout).
    pub fn start(upstream: &str, rate: f64, seed: u64, hang: Duration) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let counts = Arc::new(Counts::default());
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            rate,
            hang,
            rng: Mutex::new(Lcg(seed)),
            counts: counts.clone(),
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { shared.handle(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            counts,
            runtime: Some(runtime),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// An error from the service: hyper drops the connection without an answer.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the fault proxy")
    }
}

impl std::error::Error for Reset {}

impl Shared {
    fn pick(&self) -> Option<Fault> {
        let mut rng = self.rng.lock().expect("rng");
        let roll = rng.below(1_000_000) as f64 / 1_000_000.0;
        if roll >= self.rate {
            return None;
        }
        Some(match rng.below(100) {
            0..=34 => Fault::Throttle,
            35..=64 => Fault::ServerError,
            65..=79 => Fault::ResetBefore,
            80..=89 => Fault::ResetAfter,
            _ => Fault::Hang,
        })
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Reset> {
        let fault = self.pick();
        let json = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("json"));
        let count = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
        match fault {
            Some(Fault::Throttle) => {
                count(&self.counts.throttled);
                return Ok(error_response(json, true));
            }
            Some(Fault::ServerError) => {
                count(&self.counts.server_errors);
                return Ok(error_response(json, false));
            }
            Some(Fault::ResetBefore) => {
                count(&self.counts.reset_before);
                return Err(Reset);
            }
            Some(Fault::Hang) => {
                count(&self.counts.timed_out);
                tokio::time::sleep(self.hang).await;
                return Err(Reset);
            }
            Some(Fault::ResetAfter) | None => {}
        }
        let answer = self.forward(req).await;
        if matches!(fault, Some(Fault::ResetAfter)) {
            // The call was done; its answer is lost on the way back.
            count(&self.counts.reset_after);
            return Err(Reset);
        }
        count(&self.counts.forwarded);
        Ok(answer)
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return error_response(false, false);
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let Ok(uri) = format!("{}{path}", self.upstream).parse::<hyper::Uri>() else {
            return error_response(false, false);
        };
        let mut out = Request::builder().method(parts.method).uri(uri);
        for (name, value) in &parts.headers {
            out = out.header(name, value);
        }
        let Ok(out) = out.body(Full::new(body)) else {
            return error_response(false, false);
        };
        match self.client.request(out).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Response::from_parts(parts, Full::new(bytes))
            }
            Err(_) => error_response(false, false),
        }
    }
}

/// A throttling error or a 500 as the call's protocol words it: JSON protocols by
/// `x-amzn-ErrorType`, XML ones (S3, IAM, STS, SNS, EC2) by the body's `Code`.
fn error_response(json: bool, throttle: bool) -> Response<Full<Bytes>> {
    let (status, code) = if throttle {
        (StatusCode::BAD_REQUEST, "ThrottlingException")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure")
    };
    let (status, code) = match (json, throttle) {
        // S3 throttles with 503 SlowDown; a 503 is retried by every protocol.
        (false, true) => (StatusCode::SERVICE_UNAVAILABLE, "SlowDown"),
        _ => (status, code),
    };
    let builder = Response::builder().status(status);
    let response = if json {
        builder
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-errortype", code)
            .body(Full::new(Bytes::from(format!(
                r#"{{"__type":"{code}","message":"injected by the fault proxy"}}"#
            ))))
    } else {
        builder
            .header("content-type", "text/xml")
            .body(Full::new(Bytes::from(format!(
                "<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code><Message>injected by the fault proxy</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
            ))))
    };
    response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
