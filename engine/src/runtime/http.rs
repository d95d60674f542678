//! The HTTP listener (`[listen] http`): `/metrics` (Prometheus text),
//! `/healthz` (200 once every shard serves, 503 while starting or stopping)
//! and the client autoconfiguration file Thunderbird and others ask for
//! (`/.well-known/autoconfig/mail/config-v1.1.xml`, `/mail/config-v1.1.xml`).
//!
//! Runs on one side thread (`ringmail-http`) with a tokio current-thread
//! runtime and hyper's HTTP/1.1 server; the shards never see a request. A
//! scrape renders the snapshots the shards published (metrics.rs), so it
//! costs the shards nothing. Bounded: at most [`HTTP_CONNECTIONS_MAX`]
//! connections at once (more wait in the kernel's backlog), each closed
//! after [`HTTP_CONNECTION_TIMEOUT`] whatever it is doing, a request body
//! is never read (only GET and HEAD are answered), and hyper bounds the
//! request head (`max_buf_size`).
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
            let rt = match crate::util::side_runtime() {
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

/// Cluster mode: this node's view of the cluster for `/metrics`.
fn cluster_figures(shared: &Shared) -> Option<crate::metrics::ClusterFigures> {
    let view = shared.cluster.as_ref()?.load();
    let me = shared.config.cluster.as_ref()?.node.as_str();
    let mut figures = crate::metrics::ClusterFigures {
        live_nodes: view.members.len() as u64,
        lease_valid: view.may_acknowledge(std::time::Instant::now()),
        silent_nodes: shared.silence.silent_now() as u64,
        ..Default::default()
    };
    if let Some((map, version)) = &view.placement {
        figures.map_version = u64::try_from(*version).unwrap_or(0);
        let (primary, replica) = map.counts().get(me).copied().unwrap_or_default();
        (figures.primary_buckets, figures.replica_buckets) = (primary as u64, replica as u64);
    }
    Some(figures)
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
                cluster: cluster_figures(shared),
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
        "/.well-known/autoconfig/mail/config-v1.1.xml" | "/mail/config-v1.1.xml" => {
            // The bound addresses (a configured port 0 is a real port now).
            let mut config = crate::config::Config::clone(&shared.live.load());
            let l = &mut config.listen;
            (l.imap, l.imaps, l.pop3, l.pop3s) = (
                shared.imap.clone(),
                shared.imaps.clone(),
                shared.pop3.clone(),
                shared.pop3s.clone(),
            );
            (l.submission, l.submissions) = (shared.submission.clone(), shared.submissions.clone());
            text(
                StatusCode::OK,
                "text/xml; charset=utf-8",
                autoconfig(&config),
            )
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Thunderbird's autoconfig file (clientConfig version 1.1) describing the
/// listeners this server has, implicit TLS first, by their configured ports
/// and `hostname`. Every login is the full address, over TLS.
pub fn autoconfig(config: &crate::config::Config) -> String {
    use std::fmt::Write as _;
    let host = xml_escape(&config.hostname);
    let l = &config.listen;
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n",
    );
    let id = config
        .local_domains
        .first()
        .map(|d| xml_escape(d))
        .unwrap_or_else(|| host.clone());
    let _ = writeln!(out, "  <emailProvider id=\"{id}\">");
    for d in &config.local_domains {
        let _ = writeln!(out, "    <domain>{}</domain>", xml_escape(d));
    }
    let _ = writeln!(
        out,
        "    <displayName>{host}</displayName>\n    <displayShortName>{host}</displayShortName>"
    );
    let servers: [(&str, &str, &[std::net::SocketAddr], &str); 6] = [
        ("incomingServer", "imap", &l.imaps, "SSL"),
        ("incomingServer", "imap", &l.imap, "STARTTLS"),
        ("incomingServer", "pop3", &l.pop3s, "SSL"),
        ("incomingServer", "pop3", &l.pop3, "STARTTLS"),
        ("outgoingServer", "smtp", &l.submissions, "SSL"),
        ("outgoingServer", "smtp", &l.submission, "STARTTLS"),
    ];
    for (tag, kind, addrs, socket) in servers {
        let Some(a) = addrs.first() else { continue };
        let _ = write!(
            out,
            "    <{tag} type=\"{kind}\">\n      <hostname>{host}</hostname>\n      <port>{}</port>\n      \
             <socketType>{socket}</socketType>\n      <username>%EMAILADDRESS%</username>\n      \
             <authentication>password-cleartext</authentication>\n    </{tag}>\n",
            a.port()
        );
    }
    out.push_str("  </emailProvider>\n</clientConfig>\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn autoconfig_lists_the_listeners_with_their_ports() {
        let mut c = crate::config::Config {
            hostname: "mail.example.org".into(),
            local_domains: vec!["example.org".into(), "a&b.test".into()],
            ..Default::default()
        };
        c.listen.pop3.clear();
        let x = super::autoconfig(&c);
        assert!(
            x.contains("<domain>example.org</domain>")
                && x.contains("<domain>a&amp;b.test</domain>"),
            "{x}"
        );
        assert!(x.contains("<incomingServer type=\"imap\">\n      <hostname>mail.example.org</hostname>\n      <port>9930</port>\n      <socketType>SSL</socketType>"), "{x}");
        assert!(
            x.contains("<port>5870</port>\n      <socketType>STARTTLS</socketType>"),
            "{x}"
        );
        // No POP3 listener in clear: only POP3S is offered.
        assert_eq!(x.matches("type=\"pop3\"").count(), 1, "{x}");
    }
}
