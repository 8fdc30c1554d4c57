"""Helpers for the REST API tests: start the real app, post JSON, build messages.

The app runs in test mode (the dispatcher waits for ``run-now``), so queued messages stay
where the tests put them; accounts use the ``file`` transport, so nothing leaves the machine
even when a test wakes the dispatcher.

Fixtures that use :func:`start_api` must ask for ``db_url`` *before*
``aiohttp_client_factory``: pytest tears fixtures down in reverse order, and the PostgreSQL
schema must be dropped after the app closed its connections (dropping it first blocks on the
app's locks while the app's event loop is not running).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ADMIN_TOKEN = "test-admin-token-0123456789"


class Api:
    """A started app plus the calls the tests repeat."""

    def __init__(self, client: Any, tmp_path: Path) -> None:
        self.client = client
        self.tmp_path = tmp_path
        self.headers = {"X-API-Token": ADMIN_TOKEN}

    @property
    def runtime(self) -> Any:
        from mail_proxy.core.web.app import RUNTIME

        return self.client.app[RUNTIME]

    async def call(
        self, method: str, path: str, json: Any = None, *, expect: int | None = 200, **kw: Any
    ) -> dict[str, Any]:
        headers = {**self.headers, **kw.pop("headers", {})}
        resp = await self.client.request(method, path, json=json, headers=headers, **kw)
        data: dict[str, Any] = await resp.json()
        if expect is not None:
            assert resp.status == expect, (resp.status, data)
        data["_status"] = resp.status
        return data

    async def post(self, path: str, json: Any = None, **kw: Any) -> dict[str, Any]:
        return await self.call("POST", path, {} if json is None else json, **kw)

    async def get(self, path: str, **kw: Any) -> dict[str, Any]:
        return await self.call("GET", path, **kw)

    async def add_account(self, account_id: str = "main", **fields: Any) -> dict[str, Any]:
        body = {
            "id": account_id,
            "transport": "file",
            "options": {"directory": str(self.tmp_path / "out")},
            "default": True,
            **fields,
        }
        return await self.post("/account", body)

    async def send(self, *messages: Any, expect: int | None = 200, **extra: Any) -> dict[str, Any]:
        """POST add-messages with ``messages``; ``extra`` are more body fields."""
        body = {"messages": list(messages), **extra}
        return await self.post("/commands/add-messages", body, expect=expect)

    async def wait_status(self, msg_id: str, status: str, timeout: float = 5.0) -> str:
        """Poll ``GET /messages/{id}`` until it has ``status`` (bounded); the last status."""
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            current = (await self.get(f"/messages/{msg_id}"))["message"]["status"]
            if current == status or loop.time() > deadline:
                return str(current)
            await asyncio.sleep(0.03)

    async def message_ids(self, **params: Any) -> list[str]:
        """Ids of every stored message (all pages)."""
        ids: list[str] = []
        cursor = None
        while True:
            query = {**params, "limit": "1000"}
            if cursor:
                query["cursor"] = cursor
            page = await self.get("/messages", params=query)
            ids.extend(m["id"] for m in page["messages"])
            cursor = page["next_cursor"]
            if not cursor:
                return ids


def message(msg_id: str, **fields: Any) -> dict[str, Any]:
    """A valid message entry; ``fields`` override or add fields (None removes one)."""
    base: dict[str, Any] = {
        "id": msg_id,
        "from": "Sender <sender@example.com>",
        "to": ["rcpt@example.org"],
        "subject": "Hello",
        "body": "Hi there",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


async def start_api(
    factory: Any, make_settings: Any, db_url: str, tmp_path: Path, **overrides: Any
) -> Api:
    settings = make_settings(database_url=db_url, test_mode=True, **overrides)
    client = await factory(settings)
    return Api(client, tmp_path)
