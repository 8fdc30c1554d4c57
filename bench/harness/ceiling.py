"""The raw ceiling: a minimal pooled SMTP client driving the same sink, no service in between.

``python -m harness.ceiling '<json spec>'`` sends ``count`` messages (stdlib
:class:`~email.message.EmailMessage` with the same ``X-Genro-Mail-ID`` header and body size as
the end-to-end scenario) over ``connections`` persistent aiosmtplib connections, and prints one
JSON line. The end-to-end figures are then read as a fraction of this one: what the machine,
Python and the sink allow with no queue, no database and no HTTP.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from .messages import MAIL_ID_HEADER, RECIPIENT, SENDER, filler, message_ids


def build(ident: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = RECIPIENT
    msg["Subject"] = f"Benchmark message {ident}"
    msg[MAIL_ID_HEADER] = ident
    msg.set_content(body)
    return msg


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    body = filler(int(spec.get("body_bytes", 1024)))
    ids = message_ids(spec["prefix"], 0, int(spec["count"]))
    ids.reverse()
    errors = 0

    async def worker() -> None:
        nonlocal errors
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=int(spec["port"]), start_tls=False)
        await smtp.connect()
        try:
            while ids:
                ident = ids.pop()
                try:
                    await smtp.send_message(build(ident, body))
                except aiosmtplib.SMTPException:
                    errors += 1
        finally:
            await smtp.quit()

    cpu0 = time.process_time()
    t_start = time.time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(int(spec["connections"]))))
    elapsed = time.perf_counter() - started
    return {
        "messages": spec["count"],
        "connections": spec["connections"],
        "t_start": t_start,
        "elapsed_s": round(elapsed, 3),
        "errors": errors,
        "cpu_s": round(time.process_time() - cpu0, 3),
    }


def main() -> int:
    result = asyncio.run(run(json.loads(sys.argv[1])))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
