"""GET /status, GET|PUT /instance, the command log and its export, /openapi.json, /docs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.core.engine.dispatcher import Dispatcher
from support.ce_api import Api, message, start_api

CE_ROUTES = {
    ("get", "/status"): None,
    ("post", "/commands/add-messages"): "AddMessagesBody",
    ("post", "/commands/run-now"): "TenantBody",
    ("post", "/commands/suspend"): "SuspendBody",
    ("post", "/commands/activate"): "SuspendBody",
    ("post", "/commands/delete-messages"): "DeleteMessagesBody",
    ("post", "/commands/cleanup-messages"): "CleanupBody",
    ("get", "/messages"): None,
    ("get", "/messages/{id}"): None,
    ("get", "/messages/{id}/events"): None,
    ("post", "/account"): "AccountBody",
    ("get", "/accounts"): None,
    ("delete", "/account/{account_id}"): None,
    ("get", "/instance"): None,
    ("put", "/instance"): "InstanceUpdate",
    ("get", "/command-log"): None,
    ("get", "/command-log/export"): None,
}


async def test_status(api: Api, db_url: str) -> None:
    await api.add_account()
    await api.send(message("m1"), message("m2"))
    status = await api.get("/status")
    assert status["ok"] is True and status["scheduler_active"] is True
    assert status["instance"] == "mail-proxy" and status["version"]
    assert {"core", "ce"} <= set(status["plugins"])
    assert status["pending_messages"] == 2
    assert status["database"] == ("sqlite" if db_url.startswith("sqlite") else "postgresql")


async def test_instance_get_and_put(api: Api) -> None:
    instance = (await api.get("/instance"))["instance"]
    assert instance["name"] == "mail-proxy" and instance["max_retries"] == 5
    assert instance["retry_delays"] == [0.2, 0.4, 0.8] and instance["scheduler_active"] is True

    changed = await api.call(
        "PUT",
        "/instance",
        {
            "name": "edge-1",
            "max_retries": 2,
            "retry_delays": [1, 2],
            "send_loop_interval": 0.2,
            "sync_interval": 30,
            "scheduler_active": False,
        },
    )
    instance = changed["instance"]
    assert instance["name"] == "edge-1" and instance["max_retries"] == 2
    assert instance["retry_delays"] == [1, 2] and instance["scheduler_active"] is False
    rt = api.runtime
    assert rt.settings.instance_name == "edge-1" and rt.settings.sync_interval == 30
    assert rt.settings.send_loop_interval == 0.2 and rt.scheduler.active is False
    assert (await api.get("/status"))["instance"] == "edge-1"
    stored = await rt.storage.get_settings()
    assert stored["instance_name"] == "edge-1" and stored["retry_delays"] == [1, 2]
    assert stored["scheduler_active"] is False
    # the dispatcher retries with the new policy at once
    [dispatcher] = [s for s in rt.services if isinstance(s, Dispatcher)]
    assert dispatcher.policy.max_retries == 2 and dispatcher.policy.delays == (1.0, 2.0)


@pytest.mark.parametrize(
    "body",
    [
        {"api_token": "x"},
        {"max_retries": -1},
        {"retry_delays": []},
        {"send_loop_interval": 0},
        {"name": ""},
        {"name": "a\nb"},
        {"name": None},
        {"scheduler_active": "yes"},
    ],
)
async def test_instance_put_rejects_bad_values(api: Api, body: dict[str, Any]) -> None:
    answer = await api.call("PUT", "/instance", body, expect=400)
    assert answer["code"] == "validation_error"
    instance = (await api.get("/instance"))["instance"]
    assert instance["name"] == "mail-proxy" and instance["max_retries"] == 5


async def test_instance_settings_survive_a_restart(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    from mail_proxy.core.engine.encryption import generate_key

    key = generate_key()
    first = await start_api(
        aiohttp_client_factory, make_settings, db_url, tmp_path, encryption_key=key
    )
    await first.call("PUT", "/instance", {"name": "kept", "max_retries": 1})
    await first.client.close()
    second = await start_api(
        aiohttp_client_factory, make_settings, db_url, tmp_path, encryption_key=key
    )
    instance = (await second.get("/instance"))["instance"]
    assert instance["name"] == "kept" and instance["max_retries"] == 1


async def test_command_log_records_state_changes(api: Api) -> None:
    await api.add_account()
    await api.send(message("m1"), message("bad", to=[]))
    await api.post("/commands/suspend", {"batch_code": "x"})
    await api.call("PUT", "/instance", {"max_retries": 3}, expect=200)
    await api.get("/messages")  # reads are not logged

    entries = (await api.get("/command-log"))["entries"]
    calls = [(e["method"], e["path"], e["status"]) for e in entries]
    assert calls == [
        ("POST", "/account", 200),
        ("POST", "/commands/add-messages", 200),
        ("POST", "/commands/suspend", 200),
        ("PUT", "/instance", 200),
    ]
    assert entries[1]["summary"] == {"queued": 1, "rejected": 1}
    assert all(e["principal"] == "admin" and e["ts"] > 0 for e in entries)

    # pagination and since
    first = await api.get("/command-log", params={"limit": "2"})
    assert len(first["entries"]) == 2 and first["next_cursor"]
    rest = await api.get("/command-log", params={"cursor": first["next_cursor"]})
    assert [e["pk"] for e in first["entries"] + rest["entries"]] == [e["pk"] for e in entries]
    later = await api.get("/command-log", params={"since": str(entries[3]["ts"])})
    assert [e["pk"] for e in later["entries"]] == [e["pk"] for e in entries[3:]]


async def test_command_log_export_is_json_lines(api: Api) -> None:
    await api.add_account()
    for i in range(3):
        await api.send(message(f"m{i}"))
    resp = await api.client.get("/command-log/export", headers=api.headers)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    lines = (await resp.text()).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["path"] for r in rows] == ["/account"] + ["/commands/add-messages"] * 3
    assert all(set(r) >= {"pk", "ts", "principal", "method", "path", "status"} for r in rows)


async def test_openapi_lists_every_route_with_its_body(api: Api) -> None:
    resp = await api.client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    paths = doc["paths"]
    for (method, path), body in CE_ROUTES.items():
        assert method in paths.get(path, {}), (method, path)
        op = paths[path][method]
        if body is None:
            assert "requestBody" not in op
            continue
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{body}"
        assert body in doc["components"]["schemas"]
    message_schema = doc["components"]["schemas"]["AddMessagesBody"]["properties"]["messages"]
    assert "items" in message_schema
    names = [p["name"] for p in paths["/messages"]["get"]["parameters"]]
    assert {"limit", "cursor", "status", "batch_code", "active_only", "tenant_id"} <= set(names)


async def test_docs_page_is_html(api: Api) -> None:
    resp = await api.client.get("/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    text = await resp.text()
    assert "/commands/add-messages" in text and "/command-log/export" in text
