//! The HTTP listener (`[listen] http`): `/metrics` (Prometheus text) and
//! `/healthz` (200 once every shard serves, 503 while starting or stopping).
//!
//! Runs on one side thread (`ringmail-http`) with a tokio current-thread
//! runtime and hyper's HTTP/1.1 server; the shards never see a request. A
//! scrape renders the snapshots the shards published (metrics.rs), so it
//! costs the shards nothing. Bounded: at most [`HTTP_CONNECTIONS_MAX`]
//! connections at once (more wait in the kernel's backlog), each closed
//! after [`HTTP_CONNECTION_TIMEOUT`] whatever it is doing, requests with a
//! body are refused, and hyper bounds the request head.
use std::convert::Infallible;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};

use super::shard::Shared;

/// Connections served at once.
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// Whole life of one connection (slow clients are cut off).
pub const HTTP_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve the bound listeners on a side thread until the process exits.
pub fn start(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    started: std::time::Instant,
) -> std::io::Result<()> {
    if listeners.is_empty() {
        return Ok(());
    }
    for l in &listeners {
        l.set_nonblocking(true)?;
    }
    std::thread::Builder::new()
        .name("ringmail-http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "HTTP listener: no runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let slots = Arc::new(tokio::sync::Semaphore::new(HTTP_CONNECTIONS_MAX));
                let mut tasks = Vec::new();
                for l in listeners {
                    let l = match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "HTTP listener");
                            continue;
                        }
                    };
                    tasks.push(tokio::spawn(accept(
                        l,
                        shared.clone(),
                        slots.clone(),
                        started,
                    )));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })?;
    Ok(())
}

async fn accept(
    l: tokio::net::TcpListener,
    shared: Arc<Shared>,
    slots: Arc<tokio::sync::Semaphore>,
    started: std::time::Instant,
) {
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match l.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&req, &shared, started)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(16 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(HTTP_CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn answer<B>(
    req: &Request<B>,
    shared: &Shared,
    started: std::time::Instant,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let dns = shared
                .relay
                .dns
                .as_ref()
                .map(|d| d.stats())
                .unwrap_or_default();
            let process = crate::metrics::ProcessFigures {
                dns_queries: dns.queries(),
                dns_cache_hits: dns.cache_hits,
                uptime_seconds: started.elapsed().as_secs(),
            };
            text(
                StatusCode::OK,
                crate::metrics::Published::CONTENT_TYPE,
                shared.published.render(process),
            )
        }
        "/healthz" => {
            if shared.serving.load(Ordering::Acquire) && !shared.shutdown.load(Ordering::Acquire) {
                text(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "starting or stopping\n".into(),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
