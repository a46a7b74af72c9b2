//! Every metric, registered in one place; names start with `hookbridge_` and carry their unit.

use std::sync::LazyLock;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder, exponential_buckets,
};

/// The process-wide metrics (the one global: Prometheus registries are meant to be shared).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// All of hookbridge's metrics.
pub struct Metrics {
    registry: Registry,
    /// Deliveries from ArcGIS by hook and outcome (accepted, duplicate, or a rejection reason).
    pub requests: IntCounterVec,
    /// Time from request start to answer, by hook.
    pub request_seconds: HistogramVec,
    /// Events stored, by hook and kind.
    pub events_accepted: IntCounterVec,
    /// Events refused as retries of accepted ones, by hook.
    pub events_duplicate: IntCounterVec,
    /// Events no route matched, by hook.
    pub events_unrouted: IntCounterVec,
    /// Delivery attempts by sink and outcome (delivered, retry, dead, unavailable).
    pub deliveries: IntCounterVec,
    /// Time a sink took to send a batch, by sink.
    pub send_seconds: HistogramVec,
    /// Deliveries waiting to be sent, by sink.
    pub queue_pending: IntGaugeVec,
    /// Dead letters held, by sink.
    pub dead_letters: IntGaugeVec,
    /// Requests written per group commit.
    pub commit_batch_requests: Histogram,
    /// Time of one group commit's write and fsync.
    pub commit_fsync_seconds: Histogram,
    /// Time sled takes to apply one group commit's rows (before its fsync).
    pub commit_apply_seconds: Histogram,
    /// Rows the group commits wrote (a delivery's body, events, dedup keys and deliveries).
    pub commit_rows: IntCounter,
    /// Bytes of keys and values the group commits wrote.
    pub commit_bytes: IntCounter,
    /// Whether each sink has connected (1) or not (0).
    pub sink_up: IntGaugeVec,
    /// Sink failures by sink and kind (connect, connection_lost, nack, unroutable, render, ...).
    pub sink_errors: IntCounterVec,
    /// SIGHUP reloads by result (ok, invalid).
    pub config_reloads: IntCounterVec,
    /// Status page sign-ins refused for a wrong token.
    pub ui_signin_failures: IntCounter,
    /// Admin API requests refused for a wrong bearer token.
    pub admin_token_failures: IntCounter,
    /// Change files fetched and stored, by ArcGIS connection.
    pub enrich_fetches: IntCounterVec,
    /// Polls of extractChanges jobs, by connection.
    pub enrich_job_polls: IntCounterVec,
    /// Failed fetches, by connection and kind (unavailable, error, fatal, token).
    pub enrich_failures: IntCounterVec,
    /// Bytes of change files read, by connection.
    pub enrich_bytes: IntCounterVec,
    /// Change windows reconciliation found that no webhook delivered, by hook.
    pub reconciled_windows: IntCounterVec,
    /// Reconciliation polls by hook and result (ok, failed).
    pub reconcile_polls: IntCounterVec,
    /// Whether each watched ArcGIS webhook is active (1) or turned off (0), by hook and webhook.
    pub arcgis_webhook_active: IntGaugeVec,
    /// Failed notification attempts ArcGIS reports for each watched webhook.
    pub arcgis_webhook_failures: IntGaugeVec,
    /// Reads of watched ArcGIS webhook resources that failed, by hook and webhook.
    pub arcgis_webhook_read_failures: IntCounterVec,
    /// Answers from HTTP receivers, by sink and status code.
    pub http_responses: IntCounterVec,
    /// Time of one HTTP sink request, from sending to the end of the answer, by sink.
    pub http_request_seconds: HistogramVec,
    /// Time HTTP sink requests waited for the sink's rate limit, by sink.
    pub http_rate_limit_wait: CounterVec,
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let latency = exponential_buckets(0.0001, 2.0, 18).unwrap_or_default();
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "hookbridge_requests_total",
                    "Deliveries received from ArcGIS, by hook and outcome",
                ),
                &["hook", "outcome"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "hookbridge_request_duration_seconds",
                    "Time to answer a delivery",
                )
                .buckets(latency.clone()),
                &["hook"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            events_accepted: IntCounterVec::new(
                Opts::new("hookbridge_events_accepted_total", "Events stored durably"),
                &["hook", "kind"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            events_duplicate: IntCounterVec::new(
                Opts::new(
                    "hookbridge_events_duplicate_total",
                    "Events refused as retries of accepted ones",
                ),
                &["hook"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            events_unrouted: IntCounterVec::new(
                Opts::new(
                    "hookbridge_events_unrouted_total",
                    "Events that matched no route",
                ),
                &["hook"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            deliveries: IntCounterVec::new(
                Opts::new(
                    "hookbridge_deliveries_total",
                    "Delivery attempts by sink and outcome",
                ),
                &["sink", "outcome"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            send_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "hookbridge_sink_send_duration_seconds",
                    "Time a sink took to send one batch",
                )
                .buckets(latency.clone()),
                &["sink"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            queue_pending: IntGaugeVec::new(
                Opts::new(
                    "hookbridge_queue_pending_deliveries",
                    "Deliveries waiting to be sent",
                ),
                &["sink"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            dead_letters: IntGaugeVec::new(
                Opts::new("hookbridge_dead_letters", "Dead letters held"),
                &["sink"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            commit_batch_requests: Histogram::with_opts(
                HistogramOpts::new(
                    "hookbridge_commit_batch_requests",
                    "Requests written per group commit",
                )
                .buckets(exponential_buckets(1.0, 2.0, 11).unwrap_or_default()),
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            commit_fsync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "hookbridge_commit_fsync_duration_seconds",
                    "Time of one group commit's write and fsync",
                )
                .buckets(latency.clone()),
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            commit_apply_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "hookbridge_commit_apply_duration_seconds",
                    "Time sled takes to apply one group commit's rows, before its fsync",
                )
                .buckets(latency.clone()),
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            commit_rows: IntCounter::new(
                "hookbridge_commit_rows_total",
                "Rows the group commits wrote",
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            commit_bytes: IntCounter::new(
                "hookbridge_commit_bytes_total",
                "Bytes of keys and values the group commits wrote",
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            sink_up: IntGaugeVec::new(
                Opts::new(
                    "hookbridge_sink_connected",
                    "Whether the sink has connected (1) or not (0)",
                ),
                &["sink"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            sink_errors: IntCounterVec::new(
                Opts::new(
                    "hookbridge_sink_errors_total",
                    "Sink failures by sink and kind",
                ),
                &["sink", "kind"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "hookbridge_config_reloads_total",
                    "Config reloads by result",
                ),
                &["result"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            ui_signin_failures: IntCounter::new(
                "hookbridge_ui_signin_failures_total",
                "Status page sign-ins refused for a wrong token",
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            admin_token_failures: IntCounter::new(
                "hookbridge_admin_token_failures_total",
                "Admin API requests refused for a wrong bearer token",
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            enrich_fetches: counter(
                "hookbridge_enrich_fetches_total",
                "Change files fetched and stored, by ArcGIS connection",
                &["connection"],
            ),
            enrich_job_polls: counter(
                "hookbridge_enrich_job_polls_total",
                "Status polls of extractChanges jobs, by ArcGIS connection",
                &["connection"],
            ),
            enrich_failures: counter(
                "hookbridge_enrich_failures_total",
                "Failed change fetches, by ArcGIS connection and kind",
                &["connection", "kind"],
            ),
            enrich_bytes: counter(
                "hookbridge_enrich_bytes_total",
                "Bytes of change files read, by ArcGIS connection",
                &["connection"],
            ),
            reconciled_windows: counter(
                "hookbridge_reconciled_windows_total",
                "Layer change windows delivered by reconciliation (no webhook delivered them), by hook",
                &["hook"],
            ),
            reconcile_polls: counter(
                "hookbridge_reconcile_polls_total",
                "Reconciliation polls of extractChanges, by hook and result",
                &["hook", "result"],
            ),
            arcgis_webhook_active: IntGaugeVec::new(
                Opts::new(
                    "hookbridge_arcgis_webhook_active",
                    "Whether the ArcGIS webhook is active (1) or turned off (0), as ArcGIS reports it",
                ),
                &["hook", "webhook"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            arcgis_webhook_failures: IntGaugeVec::new(
                Opts::new(
                    "hookbridge_arcgis_webhook_failed_notifications",
                    "Failed notification attempts ArcGIS reports for the webhook (curNotificationAttempts)",
                ),
                &["hook", "webhook"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            arcgis_webhook_read_failures: counter(
                "hookbridge_arcgis_webhook_read_failures_total",
                "Reads of a watched ArcGIS webhook resource that failed",
                &["hook", "webhook"],
            ),
            http_responses: counter(
                "hookbridge_http_responses_total",
                "Answers from HTTP receivers, by sink and status code",
                &["sink", "status"],
            ),
            http_request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "hookbridge_http_request_duration_seconds",
                    "Time of one HTTP sink request, from sending to the end of the answer",
                )
                .buckets(latency),
                &["sink"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            http_rate_limit_wait: CounterVec::new(
                Opts::new(
                    "hookbridge_http_rate_limit_wait_seconds_total",
                    "Time HTTP sink requests waited for the sink's rate limit",
                ),
                &["sink"],
            )
            .unwrap_or_else(|e| unreachable!("{e}")),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.request_seconds.clone()),
            Box::new(m.events_accepted.clone()),
            Box::new(m.events_duplicate.clone()),
            Box::new(m.events_unrouted.clone()),
            Box::new(m.deliveries.clone()),
            Box::new(m.send_seconds.clone()),
            Box::new(m.queue_pending.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.commit_batch_requests.clone()),
            Box::new(m.commit_fsync_seconds.clone()),
            Box::new(m.commit_apply_seconds.clone()),
            Box::new(m.commit_rows.clone()),
            Box::new(m.commit_bytes.clone()),
            Box::new(m.sink_up.clone()),
            Box::new(m.sink_errors.clone()),
            Box::new(m.config_reloads.clone()),
            Box::new(m.ui_signin_failures.clone()),
            Box::new(m.admin_token_failures.clone()),
            Box::new(m.enrich_fetches.clone()),
            Box::new(m.enrich_job_polls.clone()),
            Box::new(m.enrich_failures.clone()),
            Box::new(m.enrich_bytes.clone()),
            Box::new(m.reconciled_windows.clone()),
            Box::new(m.reconcile_polls.clone()),
            Box::new(m.arcgis_webhook_active.clone()),
            Box::new(m.arcgis_webhook_failures.clone()),
            Box::new(m.arcgis_webhook_read_failures.clone()),
            Box::new(m.http_responses.clone()),
            Box::new(m.http_request_seconds.clone()),
            Box::new(m.http_rate_limit_wait.clone()),
        ];
        for c in collectors {
            if let Err(e) = m.registry.register(c) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        #[cfg(target_os = "linux")]
        if let Err(e) = m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::error!(error = %e, "process metrics registration failed");
        }
        m
    }
}

/// A counter family; the names are literals, so building one cannot fail.
fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("{e}"))
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
