"""The event-loop lag monitor sees a blocked loop, and exports it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mail_proxy.core.engine.loop_lag import PERIOD, LoopLagMonitor
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.plugins.loader import create_plugin_manager


def _late(rt: Runtime) -> float:
    """How many samples were more than 100 ms late (count minus the ``le=0.1`` bucket)."""
    samples = {
        (s.name, s.labels.get("le")): s.value
        for metric in rt.metrics.loop_lag.collect()
        for s in metric.samples
    }
    return (
        samples[("gmp_event_loop_lag_seconds_count", None)]
        - samples[("gmp_event_loop_lag_seconds_bucket", "0.1")]
    )


async def test_a_blocked_loop_shows_as_lag(make_settings: Any) -> None:
    rt = Runtime(make_settings(), create_plugin_manager(load_entry_points=False))
    monitor = LoopLagMonitor.create(rt)
    await monitor.start(rt)
    try:
        await asyncio.sleep(PERIOD * 3)
        assert _late(rt) == 0  # an idle loop is not late by 100 ms
        time.sleep(0.2)  # hold the loop, as a blocking call would
        await asyncio.sleep(PERIOD * 2)
        assert _late(rt) >= 1
        assert b"gmp_event_loop_lag_seconds_bucket" in rt.metrics.render()
    finally:
        await monitor.stop()
