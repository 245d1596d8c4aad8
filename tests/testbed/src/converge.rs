//! How long a fleet takes to learn a change: every node's `/metrics` is
//! polled (one thread per node, inside its namespace) until
//! `encapd_routes` reaches a value; per node, the time from an event to
//! the table holding the change is measured twice: to the moment encapd
//! says it published the table (`encapd_table_published_timestamp_seconds`,
//! its own clock) and to the moment the poll saw it.
//!
//! The events are timed here too, through etcd's HTTP gateway (etcd 3.4's
//! `/v3/...` JSON API) from the underlay namespace: a lease deleted by
//! [`etcd_delete`] (its time is just before the request), or a lease put
//! seen by an [`EtcdWatch`] opened before the put (when the put reaches
//! this watcher it reaches every node's watch too), or a time given by the
//! caller (a lease's expiry). Times are Unix seconds (f64): encapd reports
//! wall-clock times.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::counters::metric_value;
use crate::netns::{enter_netns, in_netns};
use crate::stats::Percentiles;

/// Where encapd serves `/metrics` inside its namespace.
const METRICS: &str = "127.0.0.1:9285";

/// Now, in Unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// When one node held the change: as encapd published it, and as polled.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub published: f64,
    pub observed: f64,
}

/// Polls `/metrics` of every namespace in `nodes` (index, namespace) every
/// `interval` until its `encapd_routes` equals `routes`, at most `timeout`.
/// Returns what each converged node showed, and the nodes that did not
/// (with the last error, if any).
pub fn wait_routes(
    nodes: &[(usize, String)],
    routes: usize,
    timeout: Duration,
    interval: Duration,
) -> (BTreeMap<usize, Seen>, Vec<(usize, String)>) {
    let deadline = Instant::now() + timeout;
    let results: Vec<(usize, Result<Seen, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|(i, ns)| {
                std::thread::Builder::new()
                    .name(format!("converge-{i}"))
                    .spawn_scoped(s, move || {
                        enter_netns(ns);
                        (*i, poll_routes(routes, deadline, interval))
                    })
                    .expect("spawning a poller")
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    let mut seen = BTreeMap::new();
    let mut pending = Vec::new();
    for (i, r) in results {
        match r {
            Ok(s) => {
                seen.insert(i, s);
            }
            Err(e) => pending.push((i, e)),
        }
    }
    (seen, pending)
}

fn poll_routes(routes: usize, deadline: Instant, interval: Duration) -> Result<Seen, String> {
    let addr: SocketAddr = METRICS.parse().expect("a socket address");
    let mut last: String;
    loop {
        match encapd::stats::scrape::fetch(addr) {
            Ok(text) => {
                let now = unix_now();
                let n = metric_value(&text, "encapd_routes");
                if n == Some(routes as f64) {
                    let published = metric_value(&text, "encapd_table_published_timestamp_seconds").unwrap_or(now);
                    return Ok(Seen { published, observed: now });
                }
                last = format!("encapd_routes {n:?}");
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(interval);
    }
}

/// One convergence sample: `label node published_ms observed_ms` (the
/// line format of `convergence.txt`).
#[derive(Debug, Clone)]
pub struct Sample {
    pub label: String,
    pub node: usize,
    pub published_ms: f64,
    pub observed_ms: f64,
}

/// The samples of `seen` relative to event time `t0`.
pub fn samples(label: &str, seen: &BTreeMap<usize, Seen>, t0: f64) -> Vec<Sample> {
    seen.iter()
        .map(|(&node, s)| Sample {
            label: label.to_owned(),
            node,
            published_ms: (s.published - t0) * 1e3,
            observed_ms: (s.observed - t0) * 1e3,
        })
        .collect()
}

/// (published, observed) percentiles of the samples labelled `label`.
pub fn summary(samples: &[Sample], label: &str) -> (Percentiles, Percentiles) {
    let of = |f: fn(&Sample) -> f64| Percentiles::of(&samples.iter().filter(|s| s.label == label).map(f).collect::<Vec<_>>());
    (of(|s| s.published_ms), of(|s| s.observed_ms))
}

/// One HTTP/1.0 request to `addr` from inside namespace `ns`: (status, body).
pub fn http(ns: &str, addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = in_netns(ns, || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, payload) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, payload.to_owned()))
}

/// Deletes `key` through etcd's gateway at `addr` (from namespace `ns`);
/// returns the time just before the request, or why it failed (the key
/// must have existed).
pub fn etcd_delete(ns: &str, addr: SocketAddr, key: &str) -> Result<f64, String> {
    let body = serde_json::json!({ "key": BASE64.encode(key) }).to_string();
    let t0 = unix_now();
    let (status, payload) = http(ns, addr, "POST", "/v3/kv/deleterange", &body).map_err(|e| format!("deleting {key}: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
    // int64 fields come as JSON strings from the gateway.
    let deleted = match &v["deleted"] {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_u64().unwrap_or(0),
    };
    if status != 200 || deleted != 1 {
        return Err(format!("deleting {key}: HTTP {status}, {deleted} key(s) deleted: {payload}"));
    }
    Ok(t0)
}

/// An etcd watch on one key, open before the event it times.
pub struct EtcdWatch {
    stream: TcpStream,
    needle: String,
    seen: String,
}

impl EtcdWatch {
    /// Opens a watch on `key` through etcd's gateway at `addr` (from
    /// namespace `ns`); returns once etcd confirmed it was created.
    pub fn open(ns: &str, addr: SocketAddr, key: &str) -> Result<EtcdWatch, String> {
        let err = |e: std::io::Error| format!("etcd watch on {key}: {e}");
        let mut stream = in_netns(ns, || TcpStream::connect_timeout(&addr, Duration::from_secs(2))).map_err(err)?;
        let b64 = BASE64.encode(key);
        let body = serde_json::json!({ "create_request": { "key": b64 } }).to_string();
        let req = format!(
            "POST /v3/watch HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).map_err(err)?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(err)?;
        let mut w = EtcdWatch { stream, needle: b64, seen: String::new() };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !w.seen.contains("\"created\":true") {
            if Instant::now() >= deadline || !w.read_some().map_err(err)? {
                return Err(format!("etcd watch on {key} was not created: {}", w.seen));
            }
        }
        w.seen.clear();
        Ok(w)
    }

    /// Reads what arrived; false at end of stream.
    fn read_some(&mut self) -> std::io::Result<bool> {
        let mut buf = [0u8; 8192];
        match self.stream.read(&mut buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Waits (at most `timeout`) for the first event on the key; returns
    /// the time it arrived here.
    pub fn wait_event(mut self, timeout: Duration) -> Result<f64, String> {
        let deadline = Instant::now() + timeout;
        let _ = self.stream.set_read_timeout(Some(Duration::from_millis(100)));
        loop {
            if self.seen.contains("\"events\"") && self.seen.contains(&self.needle) {
                return Ok(unix_now());
            }
            if Instant::now() >= deadline {
                return Err(format!("no event on the watched key within {timeout:?}"));
            }
            match self.read_some() {
                Ok(true) => {}
                Ok(false) => return Err("etcd closed the watch".into()),
                Err(e) => return Err(format!("reading the etcd watch: {e}")),
            }
        }
    }
}

/// Unix seconds of encapd's log time stamp (`2026-12-07T07:06:18.123Z`,
/// UTC, as env_logger writes it).
pub fn parse_log_time(stamp: &str) -> Option<f64> {
    let s = stamp.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (hh, mm): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let ss: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    Some((days_from_civil(y, m, day) * 86_400 + hh * 3_600 + mm * 60) as f64 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_parse_to_unix_seconds() {
        assert_eq!(parse_log_time("1970-01-01T00:00:00.000Z"), Some(0.0));
        assert_eq!(parse_log_time("2000-03-01T00:00:01.500Z"), Some(951_868_801.5));
        assert_eq!(parse_log_time("2026-12-07T07:06:18.123Z").map(|t| (t * 1e3).round()), Some(1_796_627_178_123.0));
        assert_eq!(parse_log_time("2026-12-07 07:06:18"), None);
        assert_eq!(parse_log_time("2026-13-07T07:06:18.123Z"), None);
    }

    #[test]
    fn samples_are_relative_to_the_event() {
        let seen = BTreeMap::from([(1, Seen { published: 10.5, observed: 10.75 }), (2, Seen { published: 11.0, observed: 11.0 })]);
        let s = samples("join", &seen, 10.0);
        assert_eq!((s[0].published_ms, s[0].observed_ms, s[1].published_ms), (500.0, 750.0, 1000.0));
        let (p, o) = summary(&s, "join");
        assert_eq!((p.samples, p.max, o.p50), (2, Some(1000.0), Some(750.0)));
        assert_eq!(summary(&s, "leave").0.samples, 0);
    }
}
