"""S11: schemathesis against the live ``/openapi.json`` of a real service, with tenant keys.

One ``mail-proxy serve`` on SQLite with the multitenancy plugin, its scheduler paused (the
generated accounts and tenants name random hosts: nothing is sent anywhere). Two tenants,
A and B, each with its own API key.

1. **Tenant A's key**, every operation of the document, positive and negative data, every
   schemathesis check (no 5xx, status codes, content types, headers and bodies as documented,
   schema-violating requests refused, valid ones not, authentication not ignored, ...).
2. **Tenant B's key**, after A created messages, an account and a batch (every id and text of
   them carries :data:`MARK`): every operation again, plus every operation with a path
   parameter called with each of A's ids. No answer to B holds :data:`MARK`, unless B's own
   request did; then the answer is the one an id that exists nowhere gets (same status, same
   body once the id is masked). A's data is unchanged afterwards.

``GMP_RELIABILITY_S11_EXAMPLES`` sets the examples per operation and mode (default 12;
derandomized, so CI and a developer see the same cases).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from reliability.harness import Fleet, message, record

from mail_proxy.core.testing.service import ServiceProcess

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

EXAMPLES = int(os.environ.get("GMP_RELIABILITY_S11_EXAMPLES", "12"))
#: In every id and text tenant A owns before B's pass.
MARK = "s11amark"
#: The same shape as A's ids, existing nowhere.
PHANTOM = "s11phant"


@dataclass
class Tally:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def count(self, status: int) -> None:
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def fail(self, what: str) -> None:
        if len(self.failures) < 200:
            self.failures.append(what[:2000])


def load_schema(url: str) -> Any:
    import schemathesis

    return schemathesis.openapi.from_url(url + "/openapi.json")


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(schema: Any, base_url: str, token: str, tally: Tally, check_answer: Any = None) -> None:
    """Every operation, positive then negative data, every check; failures go to ``tally``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode

    headers = {"X-API-Token": token}
    for op in operations(schema):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(base_url=base_url, headers=headers, timeout=30)
                tally.count(response.status_code)
                if check_answer is not None:
                    check_answer(case, response)
                case.validate_response(response, headers=headers)

            try:
                run()
            except Exception as exc:
                tally.fail(f"{op.label} [{mode.value}]: {exc}")


def request_text(case: Any) -> str:
    parts = [case.path_parameters, case.query, case.body, case.headers]
    return json.dumps(parts, default=str)


def masked(text: str, *ids: str) -> str:
    for value in ids:
        text = text.replace(value, "<id>")
    return text


async def create_tenant(svc: ServiceProcess, tenant_id: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            svc.url + "/tenant", json={"id": tenant_id}, headers=svc.headers
        ) as resp:
            data = await resp.json()
            assert resp.status == 201, data
            return str(data["api_key"])


async def as_key(svc: ServiceProcess, key: str, method: str, path: str, **kw: Any) -> Any:
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method, svc.url + path, headers={"X-API-Token": key}, **kw
        ) as resp:
            return resp.status, await resp.json()


async def test_s11_schemathesis_with_tenant_keys(tmp_path: Path) -> None:
    pytest.importorskip(
        "mail_proxy.ee.multitenancy", reason="tenant keys need the multitenancy plugin"
    )
    pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")
    url = f"sqlite:///{tmp_path / 's11.db'}"
    async with Fleet(tmp_path, url, GMP_SCHEDULER_ACTIVE="0") as fleet:
        svc = await fleet.start()
        key_a = await create_tenant(svc, f"{MARK}-tenant")
        key_b = await create_tenant(svc, "s11-tenant-b")
        schema = load_schema(svc.url)

        # 1. tenant A's key: every operation, every check
        first = Tally()
        await asyncio.to_thread(fuzz, schema, svc.url, key_a, first)

        # 2. A's data, then tenant B's key
        account = {"id": f"{MARK}-acct", "host": "127.0.0.1", "port": 9, "default": True}
        status, _ = await as_key(svc, key_a, "POST", "/account", json=account)
        assert status == 200
        a_ids = [f"{MARK}-msg-{i}" for i in range(3)]
        batch = {
            "messages": [
                message(i, subject=f"subject {MARK}", batch_code=f"{MARK}-batch") for i in a_ids
            ]
        }
        status, data = await as_key(svc, key_a, "POST", "/commands/add-messages", json=batch)
        assert status == 200 and data["queued"] == len(a_ids), data
        owned = [*a_ids, f"{MARK}-acct", f"{MARK}-batch", f"{MARK}-tenant"]

        second = Tally()

        def no_leak(case: Any, response: Any) -> None:
            if MARK not in response.text:
                return
            if MARK not in request_text(case):
                second.fail(f"{case.method} {case.formatted_path}: A's data in {response.text}")
                return
            # B named one of A's ids: the answer must be the one a missing id gets
            ghost = json.loads(request_text(case).replace(MARK, PHANTOM))
            twin = case.operation.Case(
                path_parameters=ghost[0], query=ghost[1], body=ghost[2], headers=ghost[3]
            )
            other = twin.call(base_url=svc.url, headers={"X-API-Token": key_b}, timeout=30)
            if (other.status_code, masked(other.text, PHANTOM)) != (
                response.status_code,
                masked(response.text, MARK),
            ):
                second.fail(
                    f"{case.method} {case.formatted_path}: A's id answered "
                    f"{response.status_code} {response.text[:300]}, a missing one "
                    f"{other.status_code} {other.text[:300]}"
                )

        def b_pass() -> None:
            fuzz(schema, svc.url, key_b, second, no_leak)
            for op in operations(schema):
                params = [p.name for p in op.path_parameters]
                if not params:
                    continue
                for value in owned:
                    case = op.Case(path_parameters=dict.fromkeys(params, value))
                    response = case.call(
                        base_url=svc.url, headers={"X-API-Token": key_b}, timeout=30
                    )
                    second.count(response.status_code)
                    no_leak(case, response)

        await asyncio.to_thread(b_pass)

        # A's data is as A left it
        for msg_id in a_ids:
            status, data = await as_key(svc, key_a, "GET", f"/messages/{msg_id}")
            assert status == 200 and data["message"]["status"] == "pending", data
        status, data = await as_key(svc, key_a, "GET", "/accounts")
        assert status == 200 and f"{MARK}-acct" in json.dumps(data), data

        record(
            "S11 schemathesis",
            operations=len(operations(schema)),
            examples=EXAMPLES,
            a_requests=first.requests,
            a_5xx=sum(n for s, n in first.statuses.items() if s >= 500),
            a_failures=len(first.failures),
            b_requests=second.requests,
            b_5xx=sum(n for s, n in second.statuses.items() if s >= 500),
            b_failures=len(second.failures),
        )
        assert not first.failures, "\n\n".join(first.failures)
        assert not second.failures, "\n\n".join(second.failures)
