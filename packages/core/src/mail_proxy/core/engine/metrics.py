"""Prometheus metrics of one instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

LABELS = ("tenant_id", "account_id")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        # (per instance: the dashboard's CPU and memory panels) and python_info.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.sent = Counter("gmp_sent", "Messages delivered.", LABELS, registry=r)
        self.errors = Counter("gmp_errors", "Messages failed for good.", LABELS, registry=r)
        self.deferred = Counter(
            "gmp_deferred", "Messages deferred (retry or rate limit).", LABELS, registry=r
        )
        self.rate_limited = Counter(
            "gmp_rate_limited", "Sends held back by a rate limit.", LABELS, registry=r
        )
        self.pending = Gauge("gmp_pending_messages", "Messages not yet sent or failed.", registry=r)
        self.oldest_pending_age = Gauge(
            "gmp_oldest_pending_age_seconds", "Age of the oldest pending message.", registry=r
        )
        self.send_latency = Histogram(
            "gmp_send_duration_seconds",
            "Time of one delivery attempt (attachments, MIME, transport).",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.queue_latency = Histogram(
            "gmp_dispatch_latency_seconds",
            "Time from enqueue to delivery of sent messages.",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
        )
        self.intake_hold = Counter(
            "gmp_dispatch_intake_hold_seconds",
            "Time the dispatcher held new claims because the intake was busy (intake.py).",
            registry=r,
        )
        self.report_backlog = Gauge(
            "gmp_report_backlog",
            "Delivery-report events not yet acknowledged.",
            ("tenant_id",),
            registry=r,
        )
        self.report_failures = Counter(
            "gmp_report_sync_failures", "Failed delivery-report syncs.", ("tenant_id",), registry=r
        )
        self.report_last_success_age = Gauge(
            "gmp_report_last_success_age_seconds",
            "Seconds since the last successful delivery-report sync.",
            ("tenant_id",),
            registry=r,
        )

        self.loop_lag = Histogram(
            "gmp_event_loop_lag_seconds",
            "How late the event loop ran a timer (engine/loop_lag.py): time the loop was held.",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
