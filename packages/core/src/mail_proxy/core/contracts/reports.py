"""The report-sink interface: where delivery reports go.

The reporter service reads unacknowledged events per tenant and hands them to the tenant's
sink; events are acknowledged only when the sink says the client accepted them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Tenant
    from mail_proxy.core.engine.runtime import Runtime


@dataclass
class SinkAnswer:
    """The client's answer to one delivery."""

    accepted: bool
    #: Client says it has this many messages to submit: sync again at once.
    queued: int = 0
    #: Client asks not to be called (heartbeats) before this epoch.
    next_sync_after: float | None = None
    error: str | None = None


class ReportSink(abc.ABC):
    """Delivers a batch of report items (API.md shapes) for one tenant."""

    @abc.abstractmethod
    def configured_for(self, tenant: Tenant, runtime: Runtime) -> bool:
        """True when this sink has somewhere to send this tenant's reports."""

    @abc.abstractmethod
    async def deliver(
        self, tenant: Tenant, items: list[dict[str, Any]], runtime: Runtime
    ) -> SinkAnswer:
        """Send ``items`` (possibly empty: a heartbeat). Never raises for client faults:
        returns ``SinkAnswer(accepted=False, error=...)``."""

    async def close(self) -> None:
        """Release resources at shutdown."""
