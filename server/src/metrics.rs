//! Process metrics in the Prometheus text format, kept as plain atomics (no registry crate needed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Shared counters; cloning shares them.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    started: Instant,
    grpc_requests: AtomicU64,
    grpc_errors: AtomicU64,
    readings_ingested: AtomicU64,
    readings_rejected: AtomicU64,
    batches_refused: AtomicU64,
    readings_dropped_by_devices: AtomicU64,
    webhooks_delivered: AtomicU64,
    webhook_attempts_failed: AtomicU64,
    webhooks_dropped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics(Arc::new(Inner {
            started: Instant::now(),
            grpc_requests: AtomicU64::new(0),
            grpc_errors: AtomicU64::new(0),
            readings_ingested: AtomicU64::new(0),
            readings_rejected: AtomicU64::new(0),
            batches_refused: AtomicU64::new(0),
            readings_dropped_by_devices: AtomicU64::new(0),
            webhooks_delivered: AtomicU64::new(0),
            webhook_attempts_failed: AtomicU64::new(0),
            webhooks_dropped: AtomicU64::new(0),
        }))
    }
}

impl Metrics {
    /// Counts one gRPC call and whether it failed.
    pub fn grpc_call(&self, failed: bool) {
        self.0.grpc_requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.0.grpc_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an ingested batch's rejected readings (accepted ones are counted by [`Metrics::ingested`]).
    pub fn readings(&self, rejected: u32) {
        self.0.readings_rejected.fetch_add(u64::from(rejected), Ordering::Relaxed);
    }

    /// Counts readings stored.
    pub fn ingested(&self, n: u64) {
        self.0.readings_ingested.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts readings devices reported lost for good (their disk cap forced them out).
    pub fn dropped_by_device(&self, n: u64) {
        self.0.readings_dropped_by_devices.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a batch refused whole (bad signature, unknown device, malformed).
    pub fn invalid_batch(&self) {
        self.0.batches_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a webhook delivery answered with 2xx.
    pub fn webhook_delivered(&self) {
        self.0.webhooks_delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed webhook attempt (error status, timeout, no connection).
    pub fn webhook_attempt_failed(&self) {
        self.0.webhook_attempts_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a webhook delivery given up on.
    pub fn webhook_dropped(&self) {
        self.0.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let i = &self.0;
        format!(
            "# HELP vaxtrace_uptime_seconds Seconds since the server started.\n\
             # TYPE vaxtrace_uptime_seconds gauge\n\
             vaxtrace_uptime_seconds {}\n\
             # HELP vaxtrace_grpc_requests_total gRPC calls answered.\n\
             # TYPE vaxtrace_grpc_requests_total counter\n\
             vaxtrace_grpc_requests_total {}\n\
             # HELP vaxtrace_grpc_errors_total gRPC calls answered with a non-OK status.\n\
             # TYPE vaxtrace_grpc_errors_total counter\n\
             vaxtrace_grpc_errors_total {}\n\
             # HELP vaxtrace_readings_ingested_total Readings accepted from MQTT (a re-sent reading counts again but is stored once).\n\
             # TYPE vaxtrace_readings_ingested_total counter\n\
             vaxtrace_readings_ingested_total {}\n\
             # HELP vaxtrace_readings_rejected_total Readings refused for their content.\n\
             # TYPE vaxtrace_readings_rejected_total counter\n\
             vaxtrace_readings_rejected_total {}\n\
             # HELP vaxtrace_batches_refused_total Batches refused whole (signature, device, format).\n\
             # TYPE vaxtrace_batches_refused_total counter\n\
             vaxtrace_batches_refused_total {}\n\
             # HELP vaxtrace_readings_dropped_by_devices_total Readings devices reported lost before sending them.\n\
             # TYPE vaxtrace_readings_dropped_by_devices_total counter\n\
             vaxtrace_readings_dropped_by_devices_total {}\n\
             # HELP vaxtrace_webhook_deliveries_total Webhook deliveries answered with 2xx.\n\
             # TYPE vaxtrace_webhook_deliveries_total counter\n\
             vaxtrace_webhook_deliveries_total {}\n\
             # HELP vaxtrace_webhook_failed_attempts_total Webhook attempts that failed (status, timeout, connection).\n\
             # TYPE vaxtrace_webhook_failed_attempts_total counter\n\
             vaxtrace_webhook_failed_attempts_total {}\n\
             # HELP vaxtrace_webhook_dropped_total Webhook deliveries given up after 24 h of failures.\n\
             # TYPE vaxtrace_webhook_dropped_total counter\n\
             vaxtrace_webhook_dropped_total {}\n",
            i.started.elapsed().as_secs(),
            i.grpc_requests.load(Ordering::Relaxed),
            i.grpc_errors.load(Ordering::Relaxed),
            i.readings_ingested.load(Ordering::Relaxed),
            i.readings_rejected.load(Ordering::Relaxed),
            i.batches_refused.load(Ordering::Relaxed),
            i.readings_dropped_by_devices.load(Ordering::Relaxed),
            i.webhooks_delivered.load(Ordering::Relaxed),
            i.webhook_attempts_failed.load(Ordering::Relaxed),
            i.webhooks_dropped.load(Ordering::Relaxed),
        )
    }
}
