//! The metrics endpoint: a small HTTP server (`tiny_http`) on its own thread
//! serving the exposition at `/metrics`, in the format the scraper's
//! `Accept` header asks for (see [`Format::negotiate`]: OpenMetrics for a
//! Prometheus server, the classic text format for everything else). It also
//! merges the workers' latency intervals about once a second, so the
//! histograms stay current between scrapes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::exposition::{self, MetricsSource};
use super::format::Format;
use super::latency::LatencyHub;

/// How often the serving thread looks at its stop flag (and merges the
/// latency intervals when idle): a successor taking the data path over
/// waits for this process to free the address.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The running endpoint; dropping it stops the thread.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

/// A bound metrics address, not served yet.
pub struct BoundMetrics {
    server: tiny_http::Server,
    addr: SocketAddr,
}

impl BoundMetrics {
    /// Binds `addr` (a successor retries this while its predecessor still
    /// holds the address).
    pub fn bind(addr: SocketAddr) -> std::io::Result<BoundMetrics> {
        let server = tiny_http::Server::http(addr).map_err(|e| std::io::Error::other(format!("binding {addr}: {e}")))?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        Ok(BoundMetrics { server, addr })
    }

    /// Serves from a new thread.
    pub fn serve(self, source: MetricsSource, hub: LatencyHub) -> std::io::Result<MetricsServer> {
        MetricsServer::serve(self.server, self.addr, source, hub)
    }
}

impl MetricsServer {
    /// Binds `addr` and serves from a new thread.
    pub fn start(addr: SocketAddr, source: MetricsSource, hub: LatencyHub) -> std::io::Result<MetricsServer> {
        BoundMetrics::bind(addr)?.serve(source, hub)
    }

    fn serve(server: tiny_http::Server, addr: SocketAddr, source: MetricsSource, mut hub: LatencyHub) -> std::io::Result<MetricsServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("encapd-metrics".into()).spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                match server.recv_timeout(STOP_POLL) {
                    Ok(Some(request)) => {
                        let response = answer(&request, &source, &mut hub);
                        if let Err(e) = request.respond(response) {
                            log::debug!("metrics: response failed: {e}");
                        }
                    }
                    Ok(None) => hub.collect(),
                    Err(e) => {
                        log::warn!("metrics endpoint stopped: {e}");
                        break;
                    }
                }
            }
        })?;
        Ok(MetricsServer { stop, thread: Some(thread), addr })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The response to one request: the exposition for `GET /metrics`, 404
/// for anything else.
fn answer(request: &tiny_http::Request, source: &MetricsSource, hub: &mut LatencyHub) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let path = request.url().split('?').next().unwrap_or("");
    if request.method() != &tiny_http::Method::Get || path != "/metrics" {
        return tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404);
    }
    let format = Format::negotiate(accept_header(request));
    let response = tiny_http::Response::from_string(exposition::render(source, hub, format));
    match content_type(format) {
        Some(header) => response.with_header(header),
        None => response,
    }
}

/// The request's `Accept` header, if it has one.
fn accept_header(request: &tiny_http::Request) -> Option<&str> {
    request.headers().iter().find(|h| h.field.equiv("Accept")).map(|h| h.value.as_str())
}

/// The `Content-Type` header of `format` (tiny_http accepts any ASCII
/// value, so this is always `Some`; a `None` would serve the body untyped
/// rather than panic).
fn content_type(format: Format) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes("Content-Type", format.content_type()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_content_types_are_valid_headers() {
        for format in [Format::PrometheusText, Format::OpenMetrics] {
            let header = content_type(format).expect("valid header");
            assert_eq!(header.value.as_str(), format.content_type());
        }
    }
}
