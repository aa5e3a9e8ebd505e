//! Serving the router over TCP: HTTPS when `[api] tls_cert` and `tls_key` are set (both
//! read again on SIGHUP, the last good pair kept when they do not load), a cap on open
//! connections, and a deadline for each request's head that also closes a connection left
//! idle between requests — a slowloris client holds a connection for seconds, not forever.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::rustls;
use tregov_config::api::ApiConfig;

/// How long connections still open at shutdown are given to finish.
const DRAIN: Duration = Duration::from_secs(10);

/// How the API is served.
pub(crate) struct Transport {
    tls: Option<Arc<TlsFiles>>,
    header_read: Duration,
    connections: Arc<Semaphore>,
}

impl Transport {
    /// From `[api]`: a TLS pair that does not load is refused here, at start.
    pub(crate) fn new(config: &ApiConfig) -> Result<Self, String> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(TlsFiles::load(cert, key)?)),
            _ => None,
        };
        Ok(Self {
            tls,
            header_read: Duration::from_secs(config.limits.header_read_seconds),
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
        })
    }

    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Serves `router` on `listener` until `shutdown` resolves, then gives open connections
    /// `DRAIN` to finish.
    pub(crate) async fn serve(
        &self,
        listener: TcpListener,
        router: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let reloads = self
            .tls
            .clone()
            .map(|tls| tokio::spawn(tls.reload_on_hangup()));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            // At the cap, connections wait in the listen backlog rather than being served.
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = self.connections.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, say: pause rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let tls = self.tls.as_ref().map(|t| t.acceptor());
            let header_read = self.header_read;
            let service = TowerToHyperService::new(router.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let served = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(header_read, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                http1(header_read)
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            // A failed or stalled handshake: nothing to answer.
                            _ => return,
                        }
                    }
                    None => {
                        http1(header_read)
                            .serve_connection(TokioIo::new(tcp), service)
                            .await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended");
                }
            });
            // Finished connections are reaped as others arrive.
            while tasks.try_join_next().is_some() {}
        }
        if let Some(reloads) = reloads {
            reloads.abort();
        }
        let drained =
            tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} });
        if drained.await.is_err() {
            tracing::warn!(
                open = tasks.len(),
                "connections still open at shutdown were closed"
            );
        }
        Ok(())
    }
}

fn http1(header_read: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .keep_alive(true);
    builder
}

/// The certificate chain and key the API serves HTTPS with.
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl TlsFiles {
    fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        Ok(Self {
            current: RwLock::new(server_config(cert, key)?),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Reads the pair again on every SIGHUP (a renewed certificate); a pair that does not
    /// load is reported and the one in use stays.
    async fn reload_on_hangup(self: Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the TLS certificate is not reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            match server_config(&self.cert, &self.key) {
                Ok(config) => {
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; the one in use stays")
                }
            }
        }
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read the certificate chain `{}`: {e}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!("`{}` holds no certificate", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key `{}`: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "`{}` and `{}` do not make a TLS identity: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
