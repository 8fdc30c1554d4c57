"""S12: Hypothesis round trips through the real API and a real SMTP server.

Random Unicode in the subject, the display names, a custom header value, the local part of
the recipient and an attachment's file name. Each generated message is enqueued; either it
is rejected with a reason, or what the SMTP server receives and parses has exactly the
expected recipients (envelope and ``To``), one of each header the proxy writes, no header it
does not, and the values given (whitespace aside: see ``folded``). Half of the examples put a
character that would end a header line into one field: those must be refused.
"""

from __future__ import annotations

import asyncio
import base64
import time
from email import message_from_string
from email.message import EmailMessage
from email.policy import default
from email.utils import getaddresses
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mail_proxy.core.testing.smtp import SmtpTestServer
from support.api import add_account

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

#: Unicode text without the characters that end a header line (any other is fair game).
TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40
)
LOCAL = st.one_of(
    st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,16}(\.[A-Za-z0-9_+-]{1,8})?", fullmatch=True),
    st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp", "Zs")),
        min_size=1,
        max_size=12,
    ),
)
#: Characters that would end a header line: C0 controls but TAB, DEL, NEL, LS, PS.
LINE_BREAKING = [chr(c) for c in range(0x20) if c != 0x09] + ["\x7f", "\x85", "\u2028", "\u2029"]
FIELDS = ("subject", "from_name", "to_name", "local", "header", "filename")
#: Half of the examples put one such character somewhere in one field.
POISON = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(FIELDS), st.sampled_from(LINE_BREAKING), st.integers(0, 40)),
)
EXAMPLES = 100


def named(name: str, address: str) -> str:
    """``"name" <address>`` as a person writes it (Unicode as is, quotes escaped)."""
    if not name:
        return address
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


def folded(value: str) -> str:
    """The value without its whitespace: folding and RFC 2047 encoding may move or add
    whitespace (the standard library's encoder splits a long display name into several
    encoded words and its parser may keep a space between them); the characters stay."""
    return "".join(value.split())


@pytest.fixture
async def world(aiohttp_client_factory: Any, make_settings: Any) -> Any:
    async with SmtpTestServer() as smtp:
        client = await aiohttp_client_factory(make_settings())
        await add_account(client, smtp, default=True)
        baseline = await send(client, smtp, "baseline", plain("baseline"))
        assert not isinstance(baseline, list | dict), baseline
        yield client, smtp, {k.lower() for k in baseline.message}


def plain(msg_id: str) -> dict[str, Any]:
    return {
        "id": msg_id,
        "from": "sender@example.com",
        "to": ["rcpt@example.com"],
        "subject": "plain",
        "body": "hello",
        "headers": {"X-Battery": "v"},
        "attachments": [
            {"filename": "a.txt", "storage_path": "base64:" + base64.b64encode(b"x").decode()}
        ],
    }


async def send(client: Any, smtp: SmtpTestServer, msg_id: str, entry: dict[str, Any]) -> Any:
    """Enqueue one entry: its rejection reason, or the message the server received."""
    resp = await client.post(
        "/commands/add-messages", json={"messages": [entry]}, headers=client.admin_headers
    )
    data = await resp.json()
    assert resp.status in (200, 400), (resp.status, data)
    if resp.status == 400 or not data.get("queued"):
        return data.get("rejected") or data
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for got in smtp.messages:
            if got.message["X-Genro-Mail-ID"] == msg_id:
                return got
        detail = await (
            await client.get(f"/messages/{msg_id}", headers=client.admin_headers)
        ).json()
        status = detail["message"]["status"]
        assert status != "error", f"accepted, then failed: {detail['message']['error']}"
        await asyncio.sleep(0.02)
    raise AssertionError(f"{msg_id} never reached the server")


_n = iter(range(10**9))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    subject=TEXT,
    from_name=TEXT,
    to_name=TEXT,
    local=LOCAL,
    header=TEXT,
    filename=TEXT.filter(str.strip),
    poison=POISON,
)
async def test_s12_header_round_trips(
    world: Any,
    subject: str,
    from_name: str,
    to_name: str,
    local: str,
    header: str,
    filename: str,
    poison: tuple[str, str, int] | None,
) -> None:
    client, smtp, baseline = world
    msg_id = f"rt{next(_n)}"
    if poison is not None:
        field, char, at = poison
        values = {
            "subject": subject,
            "from_name": from_name,
            "to_name": to_name,
            "local": local,
            "header": header,
            "filename": filename,
        }
        text = values[field]
        at = min(at, len(text))
        values[field] = text[:at] + char + text[at:]
        subject, from_name, to_name = values["subject"], values["from_name"], values["to_name"]
        local, header, filename = values["local"], values["header"], values["filename"]
    address = f"{local}@example.com"
    entry = {
        **plain(msg_id),
        "from": named(from_name, "sender@example.com"),
        "to": [named(to_name, address)],
        "subject": subject,
        "headers": {"X-Battery": header},
    }
    entry["attachments"][0]["filename"] = filename
    outcome = await send(client, smtp, msg_id, entry)
    if isinstance(outcome, list | dict):  # refused: with a reason
        reasons = outcome if isinstance(outcome, list) else [outcome]
        assert all(r.get("reason") or r.get("error") for r in reasons), outcome
        event("refused" if poison is None else "poisoned, refused")
        return
    assert poison is None, f"a line-breaking character in {poison[0]} was accepted"
    event("delivered")
    got = outcome
    # Parsed from the text: with SMTPUTF8 the headers may carry raw UTF-8 (RFC 6532).
    msg = cast(EmailMessage, message_from_string(got.raw.decode("utf-8"), policy=default))
    # Envelope: exactly the one recipient, from the sender.
    assert got.mail_from == "sender@example.com"
    assert [a.lower() for a in got.rcpt_tos] == [address.lower()]
    # Headers: the baseline set, each once; nothing injected.
    names = [k.lower() for k in msg]
    assert set(names) == baseline, set(names) ^ baseline
    assert len(names) == len(set(names)), names
    assert folded(str(msg["Subject"])) == folded(subject)
    assert folded(str(msg["X-Battery"])) == folded(header)
    [(_, shown_to)] = getaddresses([str(msg["To"])])
    assert shown_to.lower() == address.lower()
    assert folded(msg["To"].addresses[0].display_name) == folded(to_name)
    assert folded(msg["From"].addresses[0].display_name) == folded(from_name)
    [part] = [p for p in msg.iter_attachments()]
    assert folded(part.get_filename() or "") == folded(filename)
