"""The command log records every state-changing call of an authenticated caller, refusals
included, and never unauthenticated ones."""

from __future__ import annotations

from typing import Any


async def test_refused_calls_are_audited_unauthenticated_are_not(
    aiohttp_client_factory: Any, make_settings: Any
) -> None:
    client = await aiohttp_client_factory(make_settings())
    h = client.admin_headers
    bad = await client.post("/account", json={"id": "a", "port": "x"}, headers=h)
    assert bad.status == 400
    ok = await client.post("/account", json={"id": "a", "host": "127.0.0.1", "port": 25}, headers=h)
    assert ok.status == 200
    anon = await client.post("/account", json={"id": "b", "host": "h", "port": 25})
    assert anon.status == 401
    log = await (await client.get("/command-log", headers=h)).json()
    entries = [(e["method"], e["path"], e["status"]) for e in log["entries"]]
    assert entries == [("POST", "/account", 400), ("POST", "/account", 200)]
    assert all(e["principal"] == "admin" for e in log["entries"])
