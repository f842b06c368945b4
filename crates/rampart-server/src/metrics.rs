//! Prometheus metrics: a handful of counters, gauges and one latency histogram, written in the
//! text exposition format. Our own few lines instead of a metrics framework: the set is small
//! and fixed, and every value is an atomic the hot path bumps without locking.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the detection-latency buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
pub struct Metrics {
    pub events_ingested: AtomicU64,
    pub events_set_aside: AtomicU64,
    pub ingest_refused: AtomicU64,
    pub ingest_waiting: AtomicU64,
    pub alerts_raised: AtomicU64,
    pub alerts_deduplicated: AtomicU64,
    pub alerts_allowed: AtomicU64,
    pub incidents_created: AtomicU64,
    pub rule_errors: AtomicU64,
    pub requests: [AtomicU64; 5],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
}

impl Metrics {
    /// Records the time from receiving events to their alerts being stored.
    pub fn observe_detection(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts a response by its status class (1xx … 5xx).
    pub fn count_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `read` are values the caller read at this time, as (name, help,
    /// type — `gauge` or `counter` —, value).
    pub fn render(&self, read: &[(&str, &str, &str, f64)]) -> String {
        let mut out = String::new();
        let counters = [
            (
                "rampart_events_ingested_total",
                "Events accepted and stored.",
                &self.events_ingested,
            ),
            (
                "rampart_events_set_aside_total",
                "Records that could not be read, counted and set aside.",
                &self.events_set_aside,
            ),
            (
                "rampart_ingest_refused_total",
                "Ingest requests refused with 429 (back-pressure).",
                &self.ingest_refused,
            ),
            (
                "rampart_alerts_raised_total",
                "Alerts raised.",
                &self.alerts_raised,
            ),
            (
                "rampart_alerts_deduplicated_total",
                "Detections folded into an open alert.",
                &self.alerts_deduplicated,
            ),
            (
                "rampart_alerts_allowed_total",
                "Detections not raised because an allow indicator covers their evidence.",
                &self.alerts_allowed,
            ),
            (
                "rampart_incidents_created_total",
                "Incidents created.",
                &self.incidents_created,
            ),
            (
                "rampart_rule_errors_total",
                "Rules that failed to load or evaluate.",
                &self.rule_errors,
            ),
        ];
        for (name, help, value) in counters {
            metric(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        metric(
            &mut out,
            "rampart_http_responses_total",
            "HTTP responses by status class.",
            "counter",
        );
        for (i, n) in self.requests.iter().enumerate() {
            let _ = writeln!(
                out,
                "rampart_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                n.load(Ordering::Relaxed)
            );
        }
        metric(
            &mut out,
            "rampart_ingest_queue_depth",
            "Ingest requests waiting for a worker.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "rampart_ingest_queue_depth {}",
            self.ingest_waiting.load(Ordering::Relaxed)
        );
        for (name, help, kind, value) in read {
            metric(&mut out, name, help, kind);
            let _ = writeln!(out, "{name} {value}");
        }
        let name = "rampart_detection_latency_seconds";
        metric(
            &mut out,
            name,
            "From events received to their alerts stored.",
            "histogram",
        );
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        out
    }
}

fn metric(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_detection(Duration::from_millis(3));
        m.observe_detection(Duration::from_millis(300));
        m.count_response(201);
        m.count_response(429);
        let text = m.render(&[
            ("rampart_store_rows", "Rows stored.", "gauge", 7.0),
            (
                "rampart_store_flush_cpu_seconds_total",
                "CPU.",
                "counter",
                1.5,
            ),
        ]);
        assert!(text.contains("rampart_detection_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("rampart_detection_latency_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("rampart_detection_latency_seconds_count 2\n"));
        assert!(text.contains("rampart_http_responses_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("rampart_http_responses_total{class=\"4xx\"} 1\n"));
        assert!(text.contains("# TYPE rampart_store_rows gauge\nrampart_store_rows 7\n"));
        assert!(text.contains(
            "# TYPE rampart_store_flush_cpu_seconds_total counter\n\
             rampart_store_flush_cpu_seconds_total 1.5\n"
        ));
    }
}
