"""The PEC event types: what each one reports to the client and what ``GET /messages/{id}``
shows of a message's receipts.

Every PEC event carries in its metadata what its report needs (written by
:mod:`.receipts` and :mod:`.timeouts`): ``pec_ts`` (the receipt's own time, epoch seconds),
``pec_kind``, ``recipient``, ``recipients`` (acceptance and refusals: the message's
recipients), ``error``, ``provider``, ``warnings``, and the message's ``pec_acceptance_ts`` /
``pec_delivery_ts`` as known when the event was recorded.
"""

from __future__ import annotations

from typing import Any

from mail_proxy.core.contracts.extensions import EventType
from mail_proxy.core.contracts.model import EventRecord

ACCEPTANCE = "pec_acceptance"
DELIVERY = "pec_delivery"
ERROR = "pec_error"
TAKEN_IN_CHARGE = "pec_taken_in_charge"
DELIVERY_WARNING = "pec_delivery_warning"
TIMEOUT = "pec_timeout"

#: event type → per-recipient status in ``pec_recipients``
RECIPIENT_STATUS = {
    ACCEPTANCE: "accepted",
    TAKEN_IN_CHARGE: "taken_in_charge",
    DELIVERY_WARNING: "delivery_warning",
    DELIVERY: "delivered",
    ERROR: "error",
}
#: a later event never moves a recipient back to an earlier status
_RANK = {"accepted": 1, "taken_in_charge": 2, "delivery_warning": 3, "delivered": 4, "error": 4}

#: metadata members copied into ``pec_details``
_DETAILS = (
    "pec_kind",
    "recipient",
    "error",
    "error_code",
    "provider",
    "identificativo",
    "timeout_seconds",
    "sent_ts",
    "warnings",
)


def _pec_ts(event: EventRecord) -> float:
    value = (event.metadata or {}).get("pec_ts")
    return float(value) if isinstance(value, (int, float)) else event.event_ts


def report(event: EventRecord) -> dict[str, Any]:
    """The delivery-report fields of a PEC event (API.md "Delivery reports")."""
    meta = event.metadata or {}
    details = {k: meta[k] for k in _DETAILS if meta.get(k) not in (None, [], "")}
    if "pec_kind" in details:
        details["kind"] = details.pop("pec_kind")
    item: dict[str, Any] = {
        "pec_event": event.event_type,
        "pec_ts": _pec_ts(event),
        "pec_details": details,
    }
    for known in ("pec_acceptance_ts", "pec_delivery_ts"):
        if meta.get(known) is not None:
            item[known] = meta[known]
    return item


def message_view(events: list[EventRecord]) -> dict[str, Any]:
    """``pec_acceptance_ts``, ``pec_delivery_ts``, ``pec_timeout_ts`` and ``pec_recipients``
    (address → ``{"status", "ts", "error"?}``) of a message, from its PEC events; nothing for
    a message that has none."""
    pec = [e for e in events if e.event_type.startswith("pec_")]
    if not pec:
        return {}
    view: dict[str, Any] = {
        "pec_acceptance_ts": None,
        "pec_delivery_ts": None,
        "pec_timeout_ts": None,
    }
    recipients: dict[str, dict[str, Any]] = {}
    for event in pec:
        meta = event.metadata or {}
        ts = _pec_ts(event)
        if event.event_type == ACCEPTANCE and view["pec_acceptance_ts"] is None:
            view["pec_acceptance_ts"] = ts
        if event.event_type == TIMEOUT and view["pec_timeout_ts"] is None:
            view["pec_timeout_ts"] = ts
        if meta.get("pec_delivery_ts") is not None and view["pec_delivery_ts"] is None:
            view["pec_delivery_ts"] = meta["pec_delivery_ts"]
        status = RECIPIENT_STATUS.get(event.event_type)
        if status is None:
            continue
        targets = [meta["recipient"]] if meta.get("recipient") else meta.get("recipients") or []
        for address in targets:
            current = recipients.get(address)
            if current is not None and _RANK[current["status"]] > _RANK[status]:
                continue
            entry: dict[str, Any] = {"status": status, "ts": ts}
            if status == "error" and meta.get("error"):
                entry["error"] = meta["error"]
            recipients[address] = entry
    view["pec_recipients"] = recipients
    return view


EVENT_TYPES = (
    EventType(
        ACCEPTANCE,
        "PEC: the sender's provider accepted the message (accettazione).",
        report=report,
        message_view=message_view,
    ),
    EventType(
        DELIVERY,
        "PEC: the message reached one recipient's mailbox (avvenuta-consegna); "
        "pec_delivery_ts once every recipient has it.",
        report=report,
    ),
    EventType(
        ERROR,
        "PEC: refused (non-accettazione), not delivered to a recipient (errore-consegna) or "
        "a virus was found (rilevazione-virus); the recipient and error in pec_details.",
        report=report,
    ),
    EventType(
        TAKEN_IN_CHARGE,
        "PEC: the recipient's provider took the message (presa-in-carico).",
        report=report,
    ),
    EventType(
        DELIVERY_WARNING,
        "PEC: not yet delivered to a recipient 12 hours after sending (preavviso-errore-consegna).",
        report=report,
    ),
    EventType(
        TIMEOUT,
        "PEC: no acceptance receipt within pec_acceptance_timeout (recorded once; a later "
        "acceptance is still recorded).",
        report=report,
    ),
)
