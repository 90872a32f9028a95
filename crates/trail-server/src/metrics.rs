//! A small Prometheus registry: counters and latency histograms keyed by route, rendered in the text
//! exposition format at `/metrics`. Kept in-house because it is a few dozen lines.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Process-wide metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (method, route, status) → count
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// (method, route) → latency
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    pub events_created: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_conflict: AtomicU64,
    pub events_rejected: AtomicU64,
    pub sign_in_failures: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((method.to_string(), route.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry((method.to_string(), route.to_string())).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP trail_http_requests_total HTTP requests by route and status.\n# TYPE trail_http_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((m, route, s), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "trail_http_requests_total{{method=\"{m}\",route=\"{route}\",status=\"{s}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP trail_http_request_duration_seconds HTTP request latency.\n# TYPE trail_http_request_duration_seconds histogram\n");
        if let Ok(l) = self.latency.lock() {
            for ((m, route), h) in l.iter() {
                let labels = format!("method=\"{m}\",route=\"{route}\"");
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "trail_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "trail_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "trail_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "trail_http_request_duration_seconds_count{{{labels}}} {}", h.count);
            }
        }
        for (name, help, c) in [
            ("trail_events_created_total", "Events stored.", &self.events_created),
            ("trail_events_duplicate_total", "Events answered as duplicates.", &self.events_duplicate),
            (
                "trail_events_conflict_total",
                "Events refused because their id is stored with different content.",
                &self.events_conflict,
            ),
            ("trail_events_rejected_total", "Events rejected by validation.", &self.events_rejected),
            ("trail_sign_in_failures_total", "Failed sign-in attempts.", &self.sign_in_failures),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out
    }
}
