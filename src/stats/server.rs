//! The metrics endpoint: a small HTTP server (`tiny_http`) on its own thread
//! serving the Prometheus exposition at `/metrics`. It also merges the
//! workers' latency intervals about once a second, so the histograms stay
//! current between scrapes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::exposition::{self, MetricsSource};
use super::latency::LatencyHub;

/// The running endpoint; dropping it stops the thread.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and serves from a new thread.
    pub fn start(addr: SocketAddr, source: MetricsSource, mut hub: LatencyHub) -> std::io::Result<MetricsServer> {
        let server = tiny_http::Server::http(addr).map_err(|e| std::io::Error::other(format!("binding {addr}: {e}")))?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("encapd-metrics".into()).spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(500)) {
                    Ok(Some(request)) => {
                        let path = request.url().split('?').next().unwrap_or("");
                        let response = if request.method() == &tiny_http::Method::Get && path == "/metrics" {
                            let body = exposition::render(&source, &mut hub);
                            let header = tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                                .expect("static header is valid");
                            tiny_http::Response::from_string(body).with_header(header)
                        } else {
                            tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404)
                        };
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
