//! `/metrics`: Prometheus text exposition, written by hand from [`wasmpool::PoolStats`]
//! (tasks by outcome, queue depth, running, workers restarted, worker RSS) and the server's
//! own counters (requests by status, a request latency histogram, modules held).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use wasmpool::PoolStats;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    /// Requests by status code.
    requests: Mutex<std::collections::BTreeMap<u16, u64>>,
    /// Per bucket (non-cumulative), then the overflow.
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Counts one answered request: its status and the time until its answer started.
    pub fn observe(&self, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status)
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, pool: &PoolStats, modules: usize, draining: bool) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let mut tasks = vec![(r#"{outcome="ok"}"#.to_string(), pool.done as f64)];
        tasks.extend(
            pool.failed
                .iter()
                .map(|(kind, n)| (format!(r#"{{outcome="{kind}"}}"#), *n as f64)),
        );
        metric(
            "wasmpool_tasks_total",
            "counter",
            "Finished tasks by outcome: ok, or the error kind.",
            &tasks,
        );
        let one = |v: f64| [(String::new(), v)];
        metric(
            "wasmpool_queue_depth",
            "gauge",
            "Calls waiting in the pool's queue.",
            &one(pool.queued as f64),
        );
        metric(
            "wasmpool_running",
            "gauge",
            "Calls sent to a worker and not finished.",
            &one(pool.running as f64),
        );
        metric(
            "wasmpool_workers",
            "gauge",
            "Worker processes alive.",
            &one(pool.workers_live as f64),
        );
        metric(
            "wasmpool_workers_restarted_total",
            "counter",
            "Worker processes replaced (died, killed at a deadline, or retired).",
            &one(pool.workers_restarted as f64),
        );
        let rss: Vec<(String, f64)> = pool
            .worker_rss
            .iter()
            .map(|(pid, rss)| (format!(r#"{{pid="{pid}"}}"#), *rss as f64))
            .collect();
        metric(
            "wasmpool_worker_rss_bytes",
            "gauge",
            "Resident memory of each live worker, as of its latest task.",
            &rss,
        );
        metric(
            "wasmpool_modules",
            "gauge",
            "Uploaded modules held in memory.",
            &one(modules as f64),
        );
        metric(
            "wasmpool_draining",
            "gauge",
            "1 while the server drains after SIGTERM.",
            &one(f64::from(u8::from(draining))),
        );
        let requests: Vec<(String, f64)> = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(code, n)| (format!(r#"{{code="{code}"}}"#), *n as f64))
            .collect();
        metric(
            "wasmpool_http_requests_total",
            "counter",
            "HTTP requests answered, by status code.",
            &requests,
        );
        let name = "wasmpool_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a request's arrival to the start of its answer."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.latency[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_counts_every_request() {
        let m = Metrics::default();
        m.observe(200, Duration::from_micros(300));
        m.observe(200, Duration::from_millis(3));
        m.observe(429, Duration::from_secs(100));
        let text = m.render(&PoolStats::default(), 2, false);
        assert!(
            text.contains("wasmpool_http_requests_total{code=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("wasmpool_http_requests_total{code=\"429\"} 1"));
        assert!(text.contains("_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("_bucket{le=\"30\"} 2\n"));
        assert!(text.contains("_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("wasmpool_http_request_duration_seconds_count 3\n"));
        assert!(text.contains("wasmpool_modules 2\n"));
        assert!(text.contains("wasmpool_tasks_total{outcome=\"ok\"} 0\n"));
    }
}
