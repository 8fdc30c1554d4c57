"""POST /commands/add-messages and the message routes, against the real app and database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.ce_api import Api, message, start_api


@pytest.fixture
async def api(api: Api) -> Api:
    """The shared ``api`` (tests/conftest.py) with a default account ``main``."""
    await api.add_account("main")
    return api


async def test_accepted_message_is_listed_with_its_details(api: Api) -> None:
    answer = await api.send(
        message(
            "m1",
            to='a@example.org, "Doe, John" <john@example.net>',
            cc=["cc@example.org"],
            bcc="hidden@example.org",
            batch_code="spring",
            attachments=[{"filename": "a.txt", "storage_path": "base64:aGVsbG8="}],
        )
    )
    assert answer == {"ok": True, "queued": 1, "rejected": [], "_status": 200}

    listed = await api.get("/messages")
    assert [m["id"] for m in listed["messages"]] == ["m1"]
    row = listed["messages"][0]
    assert row["status"] == "pending" and row["priority"] == 2 and row["account_id"] == "main"
    assert row["batch_code"] == "spring" and row["tenant_id"] == "default"
    assert set(row) >= {
        "pk",
        "attempts",
        "deferred_ts",
        "sent_ts",
        "error_ts",
        "error",
        "created_at",
    }

    detail = (await api.get("/messages/m1"))["message"]
    assert detail["subject"] == "Hello"
    assert detail["from"] == "Sender <sender@example.com>"
    assert detail["to"] == ["a@example.org", '"Doe, John" <john@example.net>']
    assert detail["attachments"] == ["a.txt"]
    assert detail["message_id"].startswith("<") and detail["message_id"].endswith("@example.com>")

    events = (await api.get("/messages/m1/events"))["events"]
    assert [e["event_type"] for e in events] == ["queued"]

    # the stored payload is the normalised message the MIME builder reads
    stored = await api.runtime.storage.get_message("default", "m1")
    assert stored.payload["to"] == ["a@example.org", '"Doe, John" <john@example.net>']
    assert stored.payload["bcc"] == ["hidden@example.org"]
    assert stored.payload["content_type"] == "plain"


async def test_unknown_message_is_404(api: Api) -> None:
    for path in ("/messages/nope", "/messages/nope/events"):
        answer = await api.get(path, expect=404)
        assert answer["ok"] is False and answer["code"] == "message_not_found"


async def test_invalid_entries_do_not_block_valid_ones(api: Api) -> None:
    answer = await api.send(
        message("good1"),
        message("bad-from", **{"from": "not an address"}),
        message("bad-to", to=["ok@example.org", "nope@"]),
        message("no-rcpt", to=[]),
        message("good2", priority="high"),
        "not an object",
    )
    assert answer["ok"] is True and answer["queued"] == 2
    assert answer["rejected"] == [
        {"id": "bad-from", "reason": "invalid from address", "index": 1},
        {"id": "bad-to", "reason": "invalid recipient address: nope@", "index": 2},
        {"id": "no-rcpt", "reason": "no recipients", "index": 3},
        {"id": None, "reason": "invalid message", "index": 5},
    ]
    assert sorted(await api.message_ids()) == ["good1", "good2"]


#: (fields changed in a valid message, the documented reason); a None value removes a field.
REJECTIONS: list[tuple[dict[str, Any], str]] = [
    ({"id": None}, "missing id"),
    ({"id": 7}, "invalid id"),
    ({"id": "a\nb"}, "id: control character U+000A is not allowed"),
    ({"from": None}, "missing from address"),
    ({"from": "a@b.com <c@d.com>"}, "invalid from address"),
    ({"from": "x <a@example.com"}, "invalid from address"),
    (
        {"from": "Evil\r\nBcc: x@evil.com <a@example.com>"},
        "from: control character U+000D is not allowed",
    ),
    ({"to": None}, "no recipients"),
    ({"to": ""}, "no recipients"),
    (
        {"to": "a@example.org b@example.org"},
        "invalid recipient address: a@example.org b@example.org",
    ),
    ({"to": ["Name\n <a@example.org>"]}, "to: control character U+000A is not allowed"),
    ({"cc": ["bad"]}, "invalid recipient address: bad"),
    ({"bcc": "x@example.org\r\nSubject: hi"}, "bcc: control character U+000D is not allowed"),
    ({"reply_to": "nobody"}, "invalid reply_to address"),
    ({"return_path": "bounce@"}, "invalid return_path address"),
    ({"subject": None}, "missing subject"),
    (
        {"subject": "hi\r\nBcc: victim@example.org"},
        "subject: control character U+000D is not allowed",
    ),
    ({"subject": "nul\x00"}, "subject: control character U+0000 is not allowed"),
    ({"headers": {"X-Ok": "1", "Bad Name": "x"}}, "invalid header name"),
    (
        {"headers": {"X-Evil": "a\r\nBcc: x@evil.com"}},
        "header X-Evil: control character U+000D is not allowed",
    ),
    ({"headers": {"Bcc": "x@evil.com"}}, "reserved header: Bcc"),
    ({"headers": {"X-Num": 5}}, "invalid headers"),
    ({"message_id": "no-brackets@example.com"}, "invalid message_id"),
    ({"message_id": "<a@b>\r\nX: y"}, "message_id: control character U+000D is not allowed"),
    ({"priority": 7}, "invalid priority"),
    ({"priority": "urgent"}, "invalid priority"),
    ({"priority": True}, "invalid priority"),
    ({"deferred_ts": "tomorrow"}, "invalid deferred_ts"),
    ({"deferred_ts": -5}, "invalid deferred_ts"),
    ({"content_type": "rtf"}, "invalid content_type"),
    ({"batch_code": "a\tb"}, "batch_code: control character U+0009 is not allowed"),
    ({"account_id": "ghost"}, "unknown account"),
    ({"tenant_id": "someone-else"}, "tenant mismatch"),
    ({"colour": "blue"}, "unknown field: colour"),
    ({"attachments": [{"filename": "a.txt"}]}, "attachment 1: missing storage_path"),
    (
        {"attachments": [{"filename": "a\r\n.txt", "storage_path": "base64:aGk="}]},
        "attachment 1: filename: control character U+000D is not allowed",
    ),
    (
        {"attachments": [{"filename": "a", "storage_path": "x", "fetch_mode": "ftp"}]},
        "attachment 1: unknown fetch_mode 'ftp'",
    ),
    ({"attachments": "report.pdf"}, "invalid attachments"),
    ({"attachments": ["report.pdf"]}, "attachment 1: must be an object"),
    ({"to": 5}, "invalid to"),
    ({"subject": ["x"]}, "invalid subject"),
    ({"account_id": 3}, "invalid account_id"),
]


async def test_rejection_reasons_and_nothing_stored(api: Api) -> None:
    """One request per case: the documented reason, and nothing queued."""
    for fields, reason in REJECTIONS:
        answer = await api.send(message("m", **fields), tenant_id="default")
        assert answer["ok"] is False and answer["queued"] == 0, fields
        assert [r["reason"] for r in answer["rejected"]] == [reason], fields
    assert await api.message_ids() == []


async def test_all_rejections_in_one_batch_keep_the_valid_entry(api: Api) -> None:
    entries = [message(f"bad{i}", **fields) for i, (fields, _) in enumerate(REJECTIONS)]
    entries.insert(5, message("good"))
    answer = await api.send(*entries, tenant_id="default")
    assert answer["ok"] is True and answer["queued"] == 1
    expected = [reason for _, reason in REJECTIONS]
    assert [r["reason"] for r in answer["rejected"]] == expected
    assert [r["index"] for r in answer["rejected"]] == [i for i in range(len(entries)) if i != 5]
    assert await api.message_ids() == ["good"]


async def test_unknown_account_when_no_default(api: Api) -> None:
    await api.add_account("main", default=False)
    answer = await api.send(message("m1"))
    assert answer["rejected"][0]["reason"] == "unknown account"
    answer = await api.send(message("m2", account_id="main"))
    assert answer["queued"] == 1


async def test_admin_entry_tenant_must_exist(api: Api) -> None:
    """An admin batch naming no tenant lets each entry name one; unknown ones are refused."""
    answer = await api.send(message("m1", tenant_id="ghost"), message("m2", tenant_id="default"))
    assert answer["queued"] == 1
    assert answer["rejected"] == [{"id": "m1", "reason": "unknown tenant", "index": 0}]


async def test_duplicate_id_in_batch(api: Api) -> None:
    answer = await api.send(message("dup", subject="first"), message("dup", subject="second"))
    assert answer["queued"] == 1
    assert answer["rejected"] == [{"id": "dup", "reason": "duplicate id in batch", "index": 1}]
    detail = (await api.get("/messages/dup"))["message"]
    assert detail["subject"] == "first"


async def test_resubmitting_a_queued_id_replaces_it(api: Api) -> None:
    await api.send(message("camp", subject="typo", priority=3))
    answer = await api.send(message("camp", subject="fixed", priority=1))
    assert answer == {"ok": True, "queued": 1, "rejected": [], "_status": 200}
    assert await api.message_ids() == ["camp"]
    detail = (await api.get("/messages/camp"))["message"]
    assert detail["subject"] == "fixed" and detail["priority"] == 1


async def test_already_sent_id_is_rejected(api: Api) -> None:
    await api.send(message("once"))
    rt = api.runtime
    claimed = await rt.storage.claim_messages(rt.instance_id, 4e9, 10, 60, 10)
    from mail_proxy.core.contracts.model import Outcome

    await rt.storage.record_outcomes(
        [Outcome(pk=claimed[0].pk, claim_token=claimed[0].claim_token, kind="sent", ts=4e9)]
    )
    answer = await api.send(message("once", subject="again"))
    assert answer["ok"] is False
    assert answer["rejected"] == [{"id": "once", "reason": "already sent", "index": 0}]


async def test_priority_default_and_names(api: Api) -> None:
    await api.send(
        message("a"),
        message("b", priority="immediate"),
        message("c", priority=3),
        default_priority="low",
    )
    listed = {m["id"]: m["priority"] for m in (await api.get("/messages"))["messages"]}
    assert listed == {"a": 3, "b": 0, "c": 3}


async def test_fifo_within_a_priority(api: Api) -> None:
    """Claim order: priority first, then the order the messages were submitted."""
    await api.send(message("low1", priority=3), message("high1", priority=1))
    await api.send(message("med1"), message("high2", priority="high"))
    await api.send(message("low2", priority="low"), message("med2"))
    rt = api.runtime
    claimed = await rt.storage.claim_messages(rt.instance_id, 4e9, 10, 60, 10)
    assert [r.id for r in claimed] == ["high1", "high2", "med1", "med2", "low1", "low2"]


async def test_deferred_message_is_scheduled(api: Api) -> None:
    await api.send(message("later", deferred_ts=4_000_000_000))
    row = (await api.get("/messages"))["messages"][0]
    assert row["status"] == "scheduled" and row["deferred_ts"] == 4_000_000_000


async def test_client_message_id_is_kept(api: Api) -> None:
    await api.send(message("m", message_id="<abc.123@client.example>"))
    detail = (await api.get("/messages/m"))["message"]
    assert detail["message_id"] == "<abc.123@client.example>"


async def test_pagination_with_cursor(api: Api) -> None:
    await api.send(*[message(f"m{i:02d}") for i in range(7)])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await api.get("/messages", params=params)
        assert len(page["messages"]) <= 3
        seen.extend(m["id"] for m in page["messages"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"m{i:02d}" for i in range(7)]

    bad = await api.get("/messages", params={"cursor": "garbage!"}, expect=400)
    assert bad["code"] == "invalid_cursor"
    too_big = await api.get("/messages", params={"limit": "1001"}, expect=400)
    assert too_big["code"] == "validation_error"


async def test_list_filters(api: Api) -> None:
    await api.send(
        message("a", batch_code="x"),
        message("b", batch_code="y"),
        message("c", deferred_ts=4_000_000_000),
    )
    assert await api.message_ids(batch_code="x") == ["a"]
    assert await api.message_ids(status="scheduled") == ["c"]
    assert sorted(await api.message_ids(active_only="true")) == ["a", "b", "c"]


async def test_delete_messages(api: Api) -> None:
    await api.send(message("keep"), message("drop1"), message("drop2"), message("sent"))
    rt = api.runtime
    claimed = {r.id: r for r in await rt.storage.claim_messages(rt.instance_id, 4e9, 10, 60, 10)}
    from mail_proxy.core.contracts.model import Outcome

    # "sent" is delivered; the others go back to the queue untouched
    await rt.storage.record_outcomes(
        [
            Outcome(
                pk=claimed["sent"].pk, claim_token=claimed["sent"].claim_token, kind="sent", ts=4e9
            )
        ]
        + [
            Outcome(
                pk=r.pk, claim_token=r.claim_token, kind="released", ts=4e9, count_attempt=False
            )
            for i, r in claimed.items()
            if i != "sent"
        ]
    )
    answer = await api.post(
        "/commands/delete-messages", {"ids": ["drop1", "drop2", "ghost", "sent"]}
    )
    assert answer["removed"] == 2
    assert answer["not_found"] == ["ghost"]
    assert answer["unauthorized"] == ["sent"]
    assert sorted(await api.message_ids()) == ["keep", "sent"]

    bad = await api.post("/commands/delete-messages", {"ids": "drop1"}, expect=400)
    assert bad["code"] == "validation_error"


async def test_batch_too_large_queues_nothing(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    api = await start_api(
        aiohttp_client_factory, make_settings, db_url, tmp_path, max_batch_messages=3
    )
    await api.add_account()
    answer = await api.send(*[message(f"m{i}") for i in range(4)], expect=413)
    assert answer["ok"] is False and answer["code"] == "batch_too_large"
    assert await api.message_ids() == []
    assert (await api.send(*[message(f"m{i}") for i in range(3)]))["queued"] == 3


async def test_a_batch_naming_unknown_accounts_reads_the_tenant_once(api: Api) -> None:
    """An unknown account id re-reads the tenant's accounts (one may have just been created
    elsewhere), but once per batch, not once per entry."""
    import asyncio

    import sqlalchemy as sa

    await api.send(message("warm"))  # the tenant's view is cached now...
    await asyncio.sleep(0.15)  # ...and old enough for a miss to re-read it
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM accounts" in statement:
            reads.append(statement)

    engine = api.runtime.storage.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        entries = [message(f"u{i}", account_id="nope") for i in range(50)]
        answer = await api.send(*entries)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert answer["queued"] == 0 and len(answer["rejected"]) == 50
    assert {r["reason"] for r in answer["rejected"]} == {"unknown account"}
    assert len(reads) == 1, reads
