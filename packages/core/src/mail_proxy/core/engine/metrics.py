"""Prometheus metrics of one instance (its own registry, so tests can build many apps).

Two kinds of series are read when Prometheus scrapes rather than updated as things happen:

- the queue (``gmp_queue_messages{status}``, ``gmp_pending_messages``,
  ``gmp_oldest_pending_age_seconds``): set by ``GET /metrics`` from one storage query
  (``Storage.active_queue``) just before rendering;
- the attachment cache (``gmp_attachment_cache_*``): :class:`AttachmentCacheCollector` reads
  the live :class:`~mail_proxy.core.engine.attachment_cache.CacheStats` of the cache the
  runtime's attachment resolver uses, so the counters are the cache's own (never counted twice).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mail_proxy.core.engine.attachment_cache import CacheStats

if TYPE_CHECKING:
    from mail_proxy.core.contracts.storage import ActiveQueue
    from mail_proxy.core.engine.attachment_cache import AttachmentCache

LABELS = ("tenant_id", "account_id")
#: The statuses ``gmp_queue_messages`` reports (``Storage.active_queue``): active ones only.
QUEUE_STATUSES = ("pending", "scheduled", "deferred", "sending")
#: Said by every series read from the shared database.
_SHARED = (
    " Read from the database at each scrape: every instance on one database reports the same"
    " value (aggregate with max, not sum)."
)


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
        self.pending = Gauge(
            "gmp_pending_messages", "Messages not yet sent or failed." + _SHARED, registry=r
        )
        self.oldest_pending_age = Gauge(
            "gmp_oldest_pending_age_seconds",
            "Age of the oldest message not yet sent or failed." + _SHARED,
            registry=r,
        )
        self.queue = Gauge(
            "gmp_queue_messages",
            "Messages not yet sent or failed, by status (pending, including scheduled ones whose"
            " time has come; scheduled; deferred; sending). Sent and failed rows are not"
            " counted (their rates are gmp_sent_total and gmp_errors_total)." + _SHARED,
            ("status",),
            registry=r,
        )
        for status in QUEUE_STATUSES:
            self.queue.labels(status)
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
        #: The cache the attachment resolver uses (set by it: engine/attachments.py).
        self.attachment_cache: AttachmentCache | None = None
        r.register(AttachmentCacheCollector(self))

    def set_queue(self, queue: ActiveQueue, now: float) -> None:
        """The queue gauges from one ``Storage.active_queue`` reading."""
        for status in QUEUE_STATUSES:
            self.queue.labels(status).set(queue.counts.get(status, 0))
        self.pending.set(queue.total)
        oldest = queue.oldest_created_at
        self.oldest_pending_age.set(max(0.0, now - oldest) if oldest is not None else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class AttachmentCacheCollector(Collector):
    """The attachment cache's counters and sizes, read from the live cache at each scrape
    (zeros until the resolver exists: no attachment fetched yet)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        cache = self.metrics.attachment_cache
        stats = cache.stats if cache is not None else CacheStats()
        hits = CounterMetricFamily(
            "gmp_attachment_cache_hits",
            "Attachment cache lookups answered, by tier (memory, disk).",
            labels=["tier"],
        )
        hits.add_metric(["memory"], stats.memory_hits)
        hits.add_metric(["disk"], stats.disk_hits)
        yield hits
        for name, value, text in (
            ("misses", stats.misses, "Attachment cache lookups found in neither tier."),
            ("stores", stats.stores, "Attachments stored in the cache (either tier)."),
            (
                "evictions",
                stats.evictions,
                "Attachment cache entries dropped to keep a tier under its size cap.",
            ),
            ("expired", stats.expired, "Attachment cache entries dropped when their TTL ran out."),
            (
                "corrupt",
                stats.corrupt,
                "Attachment cache entries dropped because their content did not match its MD5.",
            ),
        ):
            yield CounterMetricFamily(f"gmp_attachment_cache_{name}", text, value=value)
        size = GaugeMetricFamily(
            "gmp_attachment_cache_bytes",
            "Content bytes held by the attachment cache, by tier (disk: the entries this"
            " process knows; the directory is scanned at its first use).",
            labels=["tier"],
        )
        limit = GaugeMetricFamily(
            "gmp_attachment_cache_max_bytes",
            "Size cap of each attachment cache tier (0 before the first attachment looked up"
            " since the start, and for the disk tier when it is off).",
            labels=["tier"],
        )
        entries = GaugeMetricFamily(
            "gmp_attachment_cache_entries",
            "Entries in the attachment cache, by tier.",
            labels=["tier"],
        )
        if cache is not None:
            disk_max = cache.disk_max_bytes if cache.disk_dir is not None else 0
            readings = {
                "memory": (cache.memory_bytes, cache.memory_max_bytes, cache.memory_entries),
                "disk": (cache.disk_bytes, disk_max, cache.disk_entries),
            }
        else:
            readings = {"memory": (0, 0, 0), "disk": (0, 0, 0)}
        for tier, (held, cap, count) in readings.items():
            size.add_metric([tier], held)
            limit.add_metric([tier], cap)
            entries.add_metric([tier], count)
        yield size
        yield limit
        yield entries
