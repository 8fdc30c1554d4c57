"""JSON notifications that stand in for bounces: Amazon SES event notifications.

When SES is set to send bounce, complaint and delivery events by e-mail (through SNS), the
message is not a DSN but a JSON document (``{"notificationType": "Bounce", "bounce":
{"bouncedRecipients": [...]}, "mail": {...}}``), possibly wrapped in the SNS envelope
(``{"Type": "Notification", "Message": "<the JSON as a string>"}``). The document says
everything a DSN would, so it is read directly.
"""

from __future__ import annotations

import json
from typing import Any

from .mime import normalize_address
from .model import Finding

#: SES bounce sub-types that name the reason, as text the pattern table recognises.
_SUBTYPE_TEXT = {
    "noemail": "no such user",
    "mailboxfull": "mailbox full",
    "messagetoolarge": "message too large",
    "contentrejected": "content rejected",
    "attachmentrejected": "attachment rejected",
}


def ses_notification(text: str) -> tuple[str, list[Finding], dict[str, str]] | None:
    """``(kind, findings, original headers)`` from an SES notification in ``text``, or None.

    ``kind`` is ``bounce``, ``complaint`` or ``delivered``.
    """
    document = _json_in(text)
    if document is None:
        return None
    if isinstance(document.get("Message"), str):
        inner = _json_in(document["Message"])
        if inner is None:
            return None
        document = inner
    kind = str(document.get("notificationType") or document.get("eventType") or "").lower()
    headers = _headers(document.get("mail") or {})
    if kind == "bounce":
        bounce = document.get("bounce") or {}
        permanent = str(bounce.get("bounceType", "")).lower() == "permanent"
        hint = _SUBTYPE_TEXT.get(str(bounce.get("bounceSubType", "")).lower(), "")
        findings = []
        for item in bounce.get("bouncedRecipients") or []:
            address = normalize_address(str(item.get("emailAddress", "")))
            if not address:
                continue
            diagnostic = str(item.get("diagnosticCode") or "")
            if diagnostic.lower().startswith("smtp;"):
                diagnostic = diagnostic[5:].strip()
            findings.append(
                Finding(
                    address=address,
                    source="json",
                    action=str(item.get("action") or ("failed" if permanent else "delayed")),
                    status=str(item.get("status") or ""),
                    diagnostic=diagnostic,
                    text=hint,
                )
            )
        return "bounce", findings, headers
    if kind == "complaint":
        items = (document.get("complaint") or {}).get("complainedRecipients") or []
        return "complaint", _plain(items, "complaint"), headers
    if kind == "delivery":
        items = (document.get("delivery") or {}).get("recipients") or []
        return "delivered", _plain(items, "delivered"), headers
    return None


def _plain(items: list[Any], action: str) -> list[Finding]:
    found = []
    for item in items:
        value = item.get("emailAddress", "") if isinstance(item, dict) else item
        address = normalize_address(str(value))
        if address:
            found.append(Finding(address=address, source="json", action=action))
    return found


def _headers(mail: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in mail.get("headers") or []:
        if isinstance(item, dict) and item.get("name"):
            found.setdefault(str(item["name"]).lower(), str(item.get("value", "")))
    common = mail.get("commonHeaders") or {}
    if "message-id" not in found and common.get("messageId"):
        found["message-id"] = str(common["messageId"])
    return found


def _json_in(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    if start < 0 or '"' not in text[start : start + 40]:
        return None
    body = text[start:]
    # SNS e-mails may hard-wrap the one-line document: retry with the line breaks removed
    unwrapped = body.split("\n\n", 1)[0].replace("\r", "").replace("\n", "")
    for candidate in (body, unwrapped):
        try:
            document, _end = json.JSONDecoder(strict=False).raw_decode(candidate)
        except ValueError:
            continue
        if isinstance(document, dict):
            return document
    return None
