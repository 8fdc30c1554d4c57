"""The PEC plugin's Prometheus series, in the service's own registry (``runtime.metrics``).

- ``gmp_pec_receipts_total{tenant_id, kind}``: receipts recorded as events, by receipt kind;
- ``gmp_pec_receipts_unmatched_total{tenant_id, reason}``: receipts that changed nothing:
  ``unknown_message`` (no message has that Message-ID), ``other_account`` (the message
  belongs to another account or tenant than the mailbox the receipt came from);
- ``gmp_pec_receipts_duplicate_total{tenant_id}``: receipts read again and skipped;
- ``gmp_pec_ignored_total{tenant_id, reason}``: mail in a PEC mailbox that is not a receipt
  (``certified_mail``, ``anomaly``, ``not_a_receipt``);
- ``gmp_pec_timeouts_total{tenant_id}``: ``pec_timeout`` events recorded;
- ``gmp_pec_poll_lag_seconds{tenant_id, account_id}``: seconds since the mailbox was last
  read successfully, for the mailboxes this instance polls (computed at scrape time);
- ``gmp_pec_poll_failures{tenant_id, account_id}``: consecutive failed reads of a mailbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

#: ``(tenant_id, account_id, last successful poll or None, consecutive failures)`` per mailbox
MailboxReadings = Callable[[], Iterable[tuple[str, str, float | None, int]]]


class PecMetrics:
    """One per runtime (``runtime.local(PecMetrics)``)."""

    def __init__(self, runtime: Runtime) -> None:
        r = runtime.metrics.registry
        self.started_at = time.time()
        self.receipts = Counter(
            "gmp_pec_receipts", "PEC receipts recorded, by kind.", ("tenant_id", "kind"), registry=r
        )
        self.unmatched = Counter(
            "gmp_pec_receipts_unmatched",
            "PEC receipts that changed nothing (unknown Message-ID, another account's message).",
            ("tenant_id", "reason"),
            registry=r,
        )
        self.duplicates = Counter(
            "gmp_pec_receipts_duplicate",
            "PEC receipts read again and skipped.",
            ("tenant_id",),
            registry=r,
        )
        self.ignored = Counter(
            "gmp_pec_ignored",
            "Mail in a PEC mailbox that is not a receipt (certified mail, anomalies, ...).",
            ("tenant_id", "reason"),
            registry=r,
        )
        self.timeouts = Counter(
            "gmp_pec_timeouts",
            "PEC messages with no acceptance receipt within the timeout.",
            ("tenant_id",),
            registry=r,
        )
        self._sources: list[MailboxReadings] = []
        r.register(_PollCollector(self))

    def watch(self, readings: MailboxReadings) -> None:
        """Report the poll lag of the mailboxes ``readings`` lists (a poller service)."""
        self._sources.append(readings)

    def unwatch(self, readings: MailboxReadings) -> None:
        if readings in self._sources:
            self._sources.remove(readings)

    def readings(self) -> Iterator[tuple[str, str, float | None, int]]:
        for source in list(self._sources):
            yield from source()


class _PollCollector(Collector):
    """Poll lag and failures, read from the pollers when Prometheus scrapes."""

    def __init__(self, metrics: PecMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        labels = ["tenant_id", "account_id"]
        lag = GaugeMetricFamily(
            "gmp_pec_poll_lag_seconds",
            "Seconds since the PEC mailbox was last read successfully (mailboxes polled here).",
            labels=labels,
        )
        failures = GaugeMetricFamily(
            "gmp_pec_poll_failures",
            "Consecutive failed reads of the PEC mailbox (mailboxes polled here).",
            labels=labels,
        )
        now = time.time()
        for tenant_id, account_id, last_poll, failed in self.metrics.readings():
            since = last_poll if last_poll is not None else self.metrics.started_at
            lag.add_metric([tenant_id, account_id], max(0.0, now - since))
            failures.add_metric([tenant_id, account_id], float(failed))
        yield lag
        yield failures

    def describe(self) -> Iterator[Any]:
        return iter(())
