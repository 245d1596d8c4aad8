//! A real Prometheus server (Debian's `prometheus`) for the tests, run inside
//! a network namespace the test created: it listens on that namespace's
//! loopback only, scrapes targets there every second, keeps its data in a
//! temporary directory, and is stopped by its pid (SIGTERM, then SIGKILL)
//! when the [`PrometheusServer`] is dropped, on every exit path. A server
//! left behind by a test process killed with SIGKILL sits in one of that
//! process's namespaces, which the next run removes with everything in it
//! (see [`super::netns`]).
//!
//! [`PrometheusServer::query`] and [`PrometheusServer::api`] talk to its
//! HTTP API with a minimal HTTP/1.0 client (no client crate needed).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cmd::{TempDir, wait_for};
use crate::netns::in_netns;
use crate::process::stop_child;

/// Where the server listens, inside its namespace.
const LISTEN: &str = "127.0.0.1:9090";

/// A running Prometheus server in a test namespace.
pub struct PrometheusServer {
    ns: String,
    child: Child,
    dir: TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus in namespace `ns`, scraping `targets` (addresses
    /// on that namespace's loopback, job `encapd`) every second and
    /// evaluating `rule_files` every second; returns once it is ready.
    /// Panics (after stopping it) if it is not ready within 30 s.
    pub fn start(ns: &str, targets: &[&str], rule_files: &[PathBuf]) -> PrometheusServer {
        let dir = TempDir::new("prometheus");
        let config = dir.write("prometheus.yml", &config_text(targets, rule_files));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("creating prometheus.log");
        // `ip netns exec` execs the server: the child's pid is Prometheus's.
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={LISTEN}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning prometheus in {ns}: {e}"));
        let mut server = PrometheusServer { ns: ns.to_owned(), child, dir };
        let ready = wait_for(Duration::from_secs(30), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("prometheus exited during start-up ({status}):\n{}", server.log());
            }
            server.http_get("/-/ready").ok().filter(|(status, _)| *status == 200)
        });
        assert!(ready.is_some(), "prometheus not ready within 30 s:\n{}", server.log());
        server
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path_and_query>` (the query already percent-encoded,
    /// see [`encode`]); returns the `data` member. Panics when the API does
    /// not answer `"status": "success"`.
    pub fn api(&self, path_and_query: &str) -> Value {
        let path = format!("/api/v1/{path_and_query}");
        let (status, body) = self.http_get(&path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} ({status}): not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "GET {path} ({status}): {body}");
        v["data"].clone()
    }

    /// The result vector of instant query `promql`, evaluated at Unix time
    /// `at` (seconds) or now.
    pub fn query(&self, promql: &str, at: Option<f64>) -> Vec<Value> {
        let mut path = format!("query?query={}", encode(promql));
        if let Some(t) = at {
            path.push_str(&format!("&time={t:.3}"));
        }
        let data = self.api(&path);
        match data["resultType"].as_str() {
            Some("vector") => data["result"].as_array().cloned().unwrap_or_default(),
            // A scalar query (e.g. `time()`) answers one value.
            Some("scalar") => vec![serde_json::json!({ "metric": {}, "value": data["result"].clone() })],
            other => panic!("query {promql:?}: unexpected result type {other:?}: {data}"),
        }
    }

    /// The value of the single series `promql` answers at `at`; `None` when
    /// it answers nothing. Panics when it answers several series.
    pub fn query_value(&self, promql: &str, at: Option<f64>) -> Option<f64> {
        let result = self.query(promql, at);
        assert!(result.len() <= 1, "query {promql:?} answered {} series: {result:?}", result.len());
        result.first().map(sample_value)
    }

    fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let addr: SocketAddr = LISTEN.parse().expect("valid address");
        let mut stream = in_netns(&self.ns, || TcpStream::connect_timeout(&addr, Duration::from_secs(3)))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {LISTEN}\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other("no HTTP status"))?;
        Ok((status, body.to_owned()))
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        // SIGTERM by pid (its own clean shutdown), SIGKILL after 10 s.
        let _ = stop_child(&mut self.child, Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}----", self.log());
        }
    }
}

/// The value of one result sample (`"value": [time, "number"]`).
pub fn sample_value(sample: &Value) -> f64 {
    let text = sample["value"][1].as_str().unwrap_or_else(|| panic!("no value in {sample}"));
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        t => t.parse().unwrap_or_else(|_| panic!("value {t:?} is not a number")),
    }
}

/// Percent-encodes `s` for a URL query (everything but RFC 3986's unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn config_text(targets: &[&str], rule_files: &[PathBuf]) -> String {
    let quoted = |items: Vec<String>| items.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ");
    let rules = quoted(rule_files.iter().map(|p| p.display().to_string()).collect());
    let targets = quoted(targets.iter().map(|t| (*t).to_owned()).collect());
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [{rules}]\n\
         scrape_configs:\n  - job_name: encapd\n    static_configs:\n      - targets: [{targets}]\n"
    )
}
