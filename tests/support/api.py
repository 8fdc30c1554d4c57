"""Small helpers for tests that drive the real application over HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

_counter = iter(range(1, 10**9))


def message(to: str | list[str] = "rcpt@example.com", **fields: Any) -> dict[str, Any]:
    """A valid message entry for add-messages (unique id unless given)."""
    n = next(_counter)
    base: dict[str, Any] = {
        "id": f"msg-{n}",
        "from": "Sender <sender@example.com>",
        "to": to if isinstance(to, list) else [to],
        "subject": f"test {n}",
        "body": "hello " * 30,
    }
    base.update(fields)
    return base


async def add_account(
    client: Any, server: Any, account_id: str = "smtp1", **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": account_id,
        "host": "127.0.0.1",
        "port": server.port if server else 9,
    }
    body.update(fields)
    resp = await client.post("/account", json=body, headers=client.admin_headers)
    data = await resp.json()
    assert resp.status == 200, data
    return data  # type: ignore[no-any-return]


async def enqueue(client: Any, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    resp = await client.post(
        "/commands/add-messages", json={"messages": messages, **extra}, headers=client.admin_headers
    )
    data = await resp.json()
    assert resp.status == 200, data
    return data  # type: ignore[no-any-return]


async def get_message(client: Any, msg_id: str, tenant_id: str | None = None) -> dict[str, Any]:
    params = {"tenant_id": tenant_id} if tenant_id else None
    resp = await client.get(f"/messages/{msg_id}", headers=client.admin_headers, params=params)
    data = await resp.json()
    assert resp.status == 200, data
    return data["message"]  # type: ignore[no-any-return]


async def events(client: Any, msg_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/messages/{msg_id}/events", headers=client.admin_headers)
    data = await resp.json()
    assert resp.status == 200, data
    return data["events"]  # type: ignore[no-any-return]


async def wait_status(
    client: Any, msg_id: str, status: str | tuple[str, ...], timeout: float = 10.0
) -> dict[str, Any]:
    wanted = (status,) if isinstance(status, str) else status
    deadline = time.monotonic() + timeout
    while True:
        msg = await get_message(client, msg_id)
        if msg["status"] in wanted:
            return msg
        if time.monotonic() > deadline:
            raise AssertionError(f"{msg_id}: status {msg['status']!r}, expected {wanted}: {msg}")
        await asyncio.sleep(0.05)


async def run_now(client: Any) -> None:
    resp = await client.post("/commands/run-now", json={}, headers=client.admin_headers)
    assert resp.status == 200, await resp.text()
