"""The engine's switches that routes and plugins turn: the scheduler (pause, resume) and the
delivery-report sync (a tenant's sync asked for now). Objects with methods, so nobody
outside the engine mutates its sets."""

from __future__ import annotations

import asyncio


class Scheduler:
    """Whether the dispatcher claims messages. ``pause()``/``resume()`` change it for this
    instance (the API also stores the choice so that it outlives a restart)."""

    def __init__(self, active: bool, wakeup: asyncio.Event) -> None:
        self._active = active
        self._wakeup = wakeup

    @property
    def active(self) -> bool:
        return self._active

    def pause(self) -> None:
        self._active = False

    def resume(self) -> None:
        self._active = True
        self._wakeup.set()

    def set(self, active: bool) -> None:
        self.resume() if active else self.pause()


class ReportSync:
    """Requests for a delivery-report sync before its next heartbeat, read by the reporter.

    ``request_sync(tenant)`` syncs that tenant now (``None``: every tenant), keeping its
    do-not-disturb window; ``urgent=True`` (a tenant's own run-now) lifts the window too.
    """

    ALL = "*"

    def __init__(self, wakeup: asyncio.Event) -> None:
        self._requested: set[str] = set()
        self._urgent: set[str] = set()
        self._wakeup = wakeup

    def request_sync(self, tenant_id: str | None = None, *, urgent: bool = False) -> None:
        if urgent and tenant_id is not None:
            self._urgent.add(tenant_id)
        else:
            self._requested.add(tenant_id or self.ALL)
        self._wakeup.set()

    def take(self) -> tuple[set[str], set[str]]:
        """The pending requests (tenant ids or ``ALL``) and urgent tenants, cleared."""
        requested, urgent = self._requested, self._urgent
        self._requested, self._urgent = set(), set()
        return requested, urgent

    def forget(self, tenant_id: str) -> None:
        """A deleted tenant: drop its pending requests."""
        self._requested.discard(tenant_id)
        self._urgent.discard(tenant_id)
