"""``POST /instance/bounce/test`` (and ``mail-proxy NAME bounce test``): can the service log
in to the bounce mailbox, and how many messages does the folder hold?

Runs the standard library's ``imaplib`` in a worker thread (one short session: connect,
STARTTLS when asked, LOGIN, STATUS, LOGOUT), bounded by a timeout. Nothing in the mailbox is
read or changed. The answer says in one line what is wrong when it cannot.
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import socket
import ssl
from typing import Any

from .config import BounceConfig

TIMEOUT = 20.0
_MESSAGES = re.compile(rb"MESSAGES (\d+)")


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _session(config: BounceConfig, context: ssl.SSLContext | None) -> int:
    host, port = config.host or "", config.effective_port
    context = context or ssl.create_default_context()
    imap: imaplib.IMAP4
    if config.use_tls:
        imap = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=TIMEOUT)
    else:
        imap = imaplib.IMAP4(host, port, timeout=TIMEOUT)
    try:
        if config.starttls:
            imap.starttls(ssl_context=context)
        imap.login(config.user or "", config.password or "")
        typ, data = imap.status(_quote(config.folder), "(MESSAGES)")
        if typ != "OK":
            raise imaplib.IMAP4.error(f"folder {config.folder!r}: {_text(data)}")
        found = _MESSAGES.search(data[0] or b"")
        return int(found.group(1)) if found else 0
    finally:
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def _text(data: Any) -> str:
    parts = [d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data or []]
    return " ".join(" ".join(parts).split())[:200]


def explain(exc: BaseException, config: BounceConfig) -> str:
    """One line an operator can act on."""
    where = f"{config.host}:{config.effective_port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {config.host}: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {where} refused (wrong port, or no IMAP server there)"
    if isinstance(exc, (TimeoutError, socket.timeout, asyncio.TimeoutError)):
        return f"no answer from {where} within {TIMEOUT:.0f}s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate of {where} not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        hint = " (is it an implicit-TLS port? try use_tls/starttls)" if config.use_tls else ""
        return f"TLS with {where} failed: {exc.reason or exc}{hint}"
    if isinstance(exc, imaplib.IMAP4.abort):
        return f"{where} closed the connection: {exc}"
    if isinstance(exc, imaplib.IMAP4.error):
        text = str(exc)
        if text.startswith("b'") or text.startswith('b"'):
            text = text[2:-1]
        if "LOGIN" in text.upper() or "AUTHENTICATIONFAILED" in text.upper():
            return f"login as {config.user} refused: {text}"
        return text
    if isinstance(exc, OSError):
        return f"connection to {where} failed: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


async def probe(config: BounceConfig, context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """``{"reachable": True, "messages": n, "folder"}`` or ``{"reachable": False, "error"}``."""
    if not (config.host and config.user and config.password):
        return {"reachable": False, "error": "host, user and password are needed"}
    try:
        count = await asyncio.wait_for(asyncio.to_thread(_session, config, context), TIMEOUT + 5)
    except Exception as exc:
        return {"reachable": False, "folder": config.folder, "error": explain(exc, config)}
    return {"reachable": True, "folder": config.folder, "messages": count}
