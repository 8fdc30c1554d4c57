"""The plugin's Prometheus series, in the service's own registry (``/metrics``).

- ``gmp_bounces_total{tenant_id, type, reason}``: bounce events recorded (one per failed
  recipient; a bounce read twice counts once);
- ``gmp_bounce_rejected_total{why}``: mail in a bounce mailbox that changed nothing:
  ``unmatched`` (names no message we know), ``forged`` (a VERP token or Message-ID that does
  not check out), ``foreign_tenant`` (a message of a tenant this mailbox does not serve),
  ``too_large`` (over ``GMP_BOUNCE_MAX_MESSAGE_BYTES``, left unread);
- ``gmp_bounce_messages_read_total{kind}``: what the mailboxes held: ``bounce``,
  ``complaint``, ``autoreply``, ``delivered``, ``not_bounce``;
- ``gmp_bounce_poll_lag_seconds{mailbox}``: seconds since the mailbox was last read
  successfully (from the start of polling until the first success); stays near
  ``poll_interval`` while all is well;
- ``gmp_bounce_mailbox_connected{mailbox}``: 1 while logged in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

#: ``{mailbox: (last success or start time, connected)}``
LagSource = Callable[[], dict[str, tuple[float, bool]]]


class BounceMetrics:
    """One per runtime (``runtime.local(BounceMetrics)``)."""

    def __init__(self, runtime: Runtime) -> None:
        registry = runtime.metrics.registry
        self.bounces = Counter(
            "gmp_bounces",
            "Bounce events recorded (one per failed recipient).",
            ("tenant_id", "type", "reason"),
            registry=registry,
        )
        self.rejected = Counter(
            "gmp_bounce_rejected",
            "Bounce-mailbox mail that changed nothing (unmatched, forged, foreign_tenant, "
            "too_large).",
            ("why",),
            registry=registry,
        )
        self.read = Counter(
            "gmp_bounce_messages_read",
            "Messages read from bounce mailboxes, by kind.",
            ("kind",),
            registry=registry,
        )
        self.lag_source: LagSource = dict
        registry.register(_MailboxCollector(self))


class _MailboxCollector:
    def __init__(self, owner: BounceMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Any]:
        lag = GaugeMetricFamily(
            "gmp_bounce_poll_lag_seconds",
            "Seconds since the bounce mailbox was last read successfully.",
            labels=["mailbox"],
        )
        up = GaugeMetricFamily(
            "gmp_bounce_mailbox_connected",
            "1 while the bounce poller is logged in to the mailbox.",
            labels=["mailbox"],
        )
        now = time.time()
        for mailbox, (since, connected) in self.owner.lag_source().items():
            lag.add_metric([mailbox], max(0.0, now - since))
            up.add_metric([mailbox], 1.0 if connected else 0.0)
        yield lag
        yield up

    def describe(self) -> list[Any]:
        return []
