"""The ``bounce`` scenario: how fast the bounce plugin empties a mailbox full of bounces.

1. A private Dovecot (the test suite's helper, ``tests/support/dovecot.py``: its own
   configuration in a temporary directory, a loopback port) and the service with the dispatcher
   suspended; 10,000 messages are enqueued, each with a ``message_id`` of ours, so the bounces
   can quote it.
2. 10,000 Postfix-style DSNs (``multipart/report``, one hard user-unknown failure each, the
   original's headers quoted) are delivered to the mailbox as a local delivery agent does, a
   file each in the maildir's ``new/`` (IMAP APPEND costs Dovecot an fsync, ~10 ms, per
   message: 100 s of set-up); Dovecot indexes them when the poller opens the folder, inside
   the measured time.
3. The clock starts with ``PUT /instance/bounce`` (enabled): the poller logs in, fetches in
   batches, parses, correlates (by the quoted Message-ID, checked against
   ``X-Genro-Mail-ID``), commits one ``bounce`` event per message and a suppression, flags the
   message seen. It stops when ``gmp_bounces_total`` (counted after the commit) reaches 10,000.

Figures: bounces/s, service CPU ms per bounce, peak RSS against the RSS before the run,
``lost`` (bounces without their event) and ``duplicated`` (events beyond one per bounce).
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import re
import sys
import time
import uuid
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from .procs import REPO
from .report import eprint
from .service import CpuMeter, RssSampler

if TYPE_CHECKING:
    from .scenarios import Bench, Measured

BOUNCES = 10_000
_COUNTER = re.compile(r"^gmp_bounces_total\{[^}]*\} ([0-9.e+]+)$", re.M)
_REJECTED = re.compile(r"^gmp_bounce_rejected_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def dsn(n: int, message_id: str) -> bytes:
    rcpt = f"gone{n}@example.org"
    boundary = f"B{n:08d}"
    text = (
        "Return-Path: <>\nDelivered-To: bounces@example.com\n"
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\n"
        "To: bounces@example.com\nSubject: Undelivered Mail Returned to Sender\n"
        f"Date: {formatdate()}\nMessage-ID: <{uuid.uuid4().hex}@mx.example.org>\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n\n'
        f"--{boundary}\nContent-Type: text/plain; charset=us-ascii\n\n"
        "This is the mail system at host mx.example.org.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients. It's attached below.\n\n"
        f"<{rcpt}>: host mx.example.org[192.0.2.25] said: 550 5.1.1 <{rcpt}>: Recipient "
        "address rejected: User unknown in local recipient table (in reply to RCPT TO command)\n\n"
        f"--{boundary}\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.org\n\n"
        f"Final-Recipient: rfc822; {rcpt}\nOriginal-Recipient: rfc822;{rcpt}\n"
        "Action: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.example.org\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown\n\n"
        f"--{boundary}\nContent-Type: text/rfc822-headers\n\n"
        f"From: Shop <shop@example.com>\nTo: {rcpt}\nSubject: order {n}\n"
        f"Date: {formatdate()}\nMessage-ID: {message_id}\nX-Genro-Mail-ID: b-{n}\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
        f"--{boundary}--\n"
    )
    return text.replace("\n", "\r\n").encode()


def deliver_all(dovecot: Any, user: str, password: str, raws: list[bytes]) -> str:
    """Put the bounces in the mailbox: as a local delivery agent does (a file each in the
    maildir's ``new/``, which Dovecot indexes when the folder is opened), else by IMAP
    APPEND (one connection; Dovecot syncs each message to disk: ~10 ms each here)."""
    maildir = dovecot.dir / "mail" / user if dovecot.dir is not None else None
    if maildir is None:
        append_all(dovecot.host, dovecot.port, user, password, raws)
        return "IMAP APPEND"
    owner = (maildir.parent.stat().st_uid, maildir.parent.stat().st_gid)
    for sub in ("", "new", "cur", "tmp"):
        (maildir / sub).mkdir(exist_ok=True)
        os.chown(maildir / sub, *owner)
    stamp = int(time.time())
    for n, raw in enumerate(raws):
        tmp = maildir / "tmp" / f"{stamp}.M{n}P{os.getpid()}.bench"
        tmp.write_bytes(raw)
        os.chown(tmp, *owner)
        tmp.rename(maildir / "new" / tmp.name)
    return "maildir delivery"


def append_all(host: str, port: int, user: str, password: str, raws: list[bytes]) -> None:
    imap = imaplib.IMAP4(host, port, timeout=60)
    try:
        imap.login(user, password)
        for raw in raws:
            typ, data = imap.append("INBOX", None, None, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND: {typ} {data}")
    finally:
        imap.logout()


def _total(pattern: re.Pattern[str], text: str) -> float:
    return sum(float(v) for v in pattern.findall(text))


async def run(bench: Bench) -> Measured:
    from .scenarios import Measured

    sys.path.insert(0, str(REPO / "tests"))
    from support.dovecot import Dovecot  # the test suite's throw-away Dovecot

    count = bench.size(BOUNCES)
    dovecot = Dovecot().start()
    try:
        user, password = dovecot.new_user("bench")
        settings = {"scheduler_active": "false"}
        async with bench.stack(settings=settings) as stack:
            api = stack.api
            ids = [f"<bench.{n}.{uuid.uuid4().hex[:8]}@example.com>" for n in range(count)]
            for start in range(0, count, 500):
                batch = [
                    {
                        "id": f"b-{n}",
                        "from": "Shop <shop@example.com>",
                        "to": [f"gone{n}@example.org"],
                        "subject": f"order {n}",
                        "body": "x",
                        "message_id": ids[n],
                    }
                    for n in range(start, min(count, start + 500))
                ]
                answer = await api.call("POST", "/commands/add-messages", {"messages": batch})
                assert answer["queued"] == len(batch), answer
            raws = [dsn(n, ids[n]) for n in range(count)]
            t0 = time.monotonic()
            how = await asyncio.to_thread(deliver_all, dovecot, user, password, raws)
            eprint(f"   {count} bounces put in the mailbox ({how}) in {time.monotonic() - t0:.1f}s")
            pids = stack.pids
            svc = stack.services[0]
            baseline = svc.rss_mb()
            config = {
                "enabled": True,
                "host": dovecot.host,
                "port": dovecot.port,
                "user": user,
                "password": password,
                "use_tls": False,
                "starttls": False,
                "poll_interval": 5,
            }
            profile: dict[str, Any] = {}
            cpu = CpuMeter(pids)
            with RssSampler(pids) as sampler:
                async with bench.profiled(pids, profile):
                    start = time.monotonic()
                    await api.call("PUT", "/instance/bounce", config)
                    recorded, rejected = await _wait(api, count, timeout=60 + count / 50)
                    elapsed = time.monotonic() - start
            cpu_ms = cpu.ms_per(count)
            await asyncio.sleep(1.0)
            recorded, rejected = await _counts(api)
            mailboxes = (await api.call("GET", "/instance/bounce"))["mailboxes"]
    finally:
        dovecot.stop()
    metrics = {
        "bounces_per_s": round(recorded / elapsed, 1) if elapsed > 0 else 0.0,
        "elapsed_s": round(elapsed, 3),
        "recorded": int(recorded),
        "rejected_bounces": int(rejected),
        "service_cpu_ms_per_bounce": cpu_ms,
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(sampler.peak_mb, 1),
        "rss_growth_mb": round(sampler.peak_mb - baseline, 1),
        "lost": max(0, count - int(recorded)),
        "duplicated": max(0, int(recorded) - count),
        "poller_errors": [m.get("last_error") for m in mailboxes if m.get("last_error")],
    }
    params = {"bounces": count, "database": "sqlite", "batch": "GMP_BOUNCE_BATCH_SIZE"}
    return Measured(params, metrics, profile or None)


async def _counts(api: Any) -> tuple[float, float]:
    async with api.session.get(api.url + "/metrics") as resp:
        text = await resp.text()
    return _total(_COUNTER, text), _total(_REJECTED, text)


async def _wait(api: Any, count: int, timeout: float) -> tuple[float, float]:
    deadline = time.monotonic() + timeout
    while True:
        recorded, rejected = await _counts(api)
        if recorded + rejected >= count or time.monotonic() > deadline:
            return recorded, rejected
        await asyncio.sleep(0.1)
