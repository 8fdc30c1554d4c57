"""Bad requests get the documented status and code, and change nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.ce_api import Api, message, start_api


@pytest.fixture
async def api(db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path) -> Api:
    api = await start_api(
        aiohttp_client_factory, make_settings, db_url, tmp_path, max_request_bytes=20_000
    )
    await api.add_account("main")
    return api


async def _raw(api: Api, data: bytes | str, content_type: str | None, **headers: str) -> Any:
    hdrs = {**api.headers, **headers}
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    resp = await api.client.post("/commands/add-messages", data=data, headers=hdrs)
    return resp.status, await resp.json()


def _valid_body() -> str:
    return json.dumps({"messages": [message("m1")]})


#: (raw body, Content-Type, expected status, expected code)
BAD_BODIES: list[tuple[str, str | None, int, str]] = [
    ('{"messages": [', "application/json", 400, "malformed_json"),
    ("{'messages': []}", "application/json", 400, "malformed_json"),
    ("[" * 100_000 + "]" * 100_000, "application/json", 413, "payload_too_large"),
    ("[" * 5000 + "]" * 5000, "application/json", 400, "malformed_json"),
    (_valid_body(), "text/plain", 415, "unsupported_media_type"),
    (_valid_body(), "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (_valid_body(), None, 415, "unsupported_media_type"),
    ('{"messages": {"id": "m1"}}', "application/json", 400, "validation_error"),
    ('{"messages": [], "default_priority": 9}', "application/json", 400, "validation_error"),
    ('{"msgs": []}', "application/json", 400, "validation_error"),
    ("[1, 2]", "application/json", 400, "validation_error"),
]


async def test_bad_bodies(api: Api) -> None:
    for data, content_type, status, code in BAD_BODIES:
        got_status, answer = await _raw(api, data, content_type)
        assert got_status == status, (data[:40], answer)
        assert answer["ok"] is False and answer["code"] == code and answer["error"]
        assert "Traceback" not in json.dumps(answer)
    assert await api.message_ids() == []


async def test_oversize_body_is_413(api: Api) -> None:
    big = json.dumps({"messages": [message("m1", body="x" * 30_000)]})
    status, answer = await _raw(api, big, "application/json")
    assert status == 413 and answer["code"] == "payload_too_large"
    assert await api.message_ids() == []


@pytest.mark.parametrize(
    ("token", "code"),
    [(None, "missing_token"), ("wrong-token", "invalid_token"), ("", "missing_token")],
)
async def test_token_required(api: Api, token: str | None, code: str) -> None:
    headers = {} if token is None else {"X-API-Token": token}
    resp = await api.client.post(
        "/commands/add-messages", json={"messages": [message("m1")]}, headers=headers
    )
    answer = await resp.json()
    assert resp.status == 401 and answer["code"] == code and answer["ok"] is False
    for path in ("/status", "/messages", "/accounts", "/instance", "/command-log"):
        resp = await api.client.get(path, headers=headers)
        assert resp.status == 401, path
        assert (await resp.json())["code"] == code
    assert await api.message_ids() == []


async def test_unknown_tenant_is_404(api: Api) -> None:
    answer = await api.send(message("m1"), tenant_id="ghost", expect=404)
    assert answer["code"] == "tenant_not_found"
    answer = await api.get("/messages", params={"tenant_id": "ghost"}, expect=404)
    assert answer["code"] == "tenant_not_found"
    assert await api.message_ids() == []


async def test_injection_attempts_store_nothing(api: Api) -> None:
    attempts = [
        message("a", subject="Hi\r\nBcc: victim@example.org"),
        message("b", **{"from": '"Boss\r\nBcc: victim@example.org" <boss@example.com>'}),
        message("c", to=['"Name\nX-Evil: 1" <rcpt@example.org>']),
        message("d", headers={"X-Tag": "ok\nBcc: victim@example.org"}),
        message("e", headers={"X-Tag\r\nBcc": "victim@example.org"}),
        message("f", reply_to="a@example.org\r\nBcc: victim@example.org"),
        message("g", batch_code="x\r\ny"),
        message("h", message_id="<x@y>\nBcc: victim@example.org"),
    ]
    answer = await api.send(*attempts)
    assert answer["ok"] is False and answer["queued"] == 0
    assert len(answer["rejected"]) == len(attempts)
    assert await api.message_ids() == []


async def test_unknown_route_and_method(api: Api) -> None:
    answer = await api.get("/nope", expect=404)
    assert answer["code"] == "not_found"
    answer = await api.call("DELETE", "/messages", expect=405)
    assert answer["code"] == "method_not_allowed"
    # the 405 names the methods the path has (RFC 9110; it was lost in the JSON error)
    resp = await api.client.request("DELETE", "/messages", headers=api.headers)
    assert resp.status == 405 and set(resp.headers["Allow"].split(", ")) >= {"GET"}


@pytest.mark.parametrize(
    "field, raw",
    [
        ("subject", '"\\ud800"'),  # a high surrogate alone
        ("body", '"text \\udfff end"'),  # a low one
        ("subject", '"\\udc00\\ud83d"'),  # a pair the wrong way round
        ("body", b'"\xed\xa0\x80"'),  # the (invalid) UTF-8 form of U+D800
    ],
)
async def test_a_lone_surrogate_is_refused_with_a_stable_code(
    api: Api, field: str, raw: str | bytes
) -> None:
    # (before: accepted, then an internal error when it was stored or sent)
    head = json.dumps({"messages": [{**message("s1"), field: "PLACEHOLDER"}]})
    before, after = head.split('"PLACEHOLDER"')
    data = before.encode() + (raw if isinstance(raw, bytes) else raw.encode()) + after.encode()
    status, answer = await _raw(api, data, "application/json")
    assert (status, answer["code"]) == (400, "invalid_unicode"), answer
    assert "surrogate" in answer["error"]
    assert await api.message_ids() == []
    # a real pair (an emoji written as two escapes) is a character: accepted
    ok = head.replace('"PLACEHOLDER"', '"smile \\ud83d\\ude00"')
    status, answer = await _raw(api, ok, "application/json")
    assert status == 200 and answer["queued"] == 1, answer


async def test_a_number_with_no_fraction_is_an_integer(api: Api) -> None:
    # JSON Schema's "integer" accepts 2.0 and 1e0: so does the API (it refused them: 400)
    entry = json.dumps({**message("n1"), "priority": 1}).replace('"priority": 1', '"priority": 1e0')
    data = f'{{"messages": [{entry}], "default_priority": 2.0}}'
    status, answer = await _raw(api, data, "application/json")
    assert status == 200 and answer["queued"] == 1, answer
    status, answer = await _raw(
        api, '{"messages": [], "default_priority": 2.5}', "application/json"
    )
    assert status == 400 and answer["code"] == "validation_error", answer
