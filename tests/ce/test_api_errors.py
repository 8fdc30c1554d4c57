"""The error middleware (core/web/app.py): what a client gets when something fails."""

from __future__ import annotations

from typing import Any

from support.ce_api import Api


async def test_a_database_error_raised_outside_the_storage_is_a_503(
    api: Api, monkeypatch: Any
) -> None:
    """A query that is not the storage's own (a plugin's, on ``storage.database``) and finds
    the database gone answers 503 ``database_unavailable``, as the storage's own do, not 500."""

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    monkeypatch.setattr(api.runtime.storage, "list_messages", refused)
    answer = await api.call("GET", "/messages", expect=503)
    assert answer["code"] == "database_unavailable"

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug, not an outage")

    monkeypatch.setattr(api.runtime.storage, "list_messages", broken)
    answer = await api.call("GET", "/messages", expect=500)
    assert answer["code"] == "internal_error"
