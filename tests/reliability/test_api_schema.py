"""S11: schemathesis against the live ``/openapi.json`` of a real service, with tenant keys.

One ``mail-proxy serve`` on SQLite with the multitenancy plugin, its scheduler paused (the
generated accounts name random hosts: nothing is sent anywhere). Two tenants, A and B, each
with its own API key.

1. **Tenant A's key**: ``schemathesis run`` over every operation of the document, every phase
   (examples, coverage, fuzzing, stateful), positive and negative data, every check (no 5xx,
   status codes, content types, headers and bodies as documented, schema-violating requests
   refused and valid ones accepted, authentication not ignored, 405 with ``Allow``, ...).
   The few places where the API validates more than a JSON schema can say are listed in
   :data:`CONFIG`, each with its reason.
2. **Tenant B's key**, after A created messages, an account and a batch (every id and text of
   them carries :data:`MARK`): ``schemathesis run`` again, and no answer (read from its HAR
   record) holds :data:`MARK`; then every operation with path parameters is called with each
   of A's ids, and ``tenant_id=`` A's tenant where the operation takes one: each answer is
   the one an id that exists nowhere gets (same status, same body once the id is masked).
   A's data is unchanged afterwards.

``GMP_RELIABILITY_S11_EXAMPLES`` sets the examples per operation (default 20); the seed is
fixed (``GMP_RELIABILITY_SEED``), so CI and a developer see the same cases.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from reliability.harness import Fleet, message, record

from mail_proxy.core.testing.service import ServiceProcess

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(400)]

EXAMPLES = int(os.environ.get("GMP_RELIABILITY_S11_EXAMPLES", "20"))
SEED = int(os.environ.get("GMP_RELIABILITY_SEED", "16"))
#: In every id and text tenant A owns before B's pass.
MARK = "s11amark"
#: The same shape as :data:`MARK`, in no id that exists.
PHANTOM = "s11phant"

#: What a JSON schema cannot say about this API, per operation (schemathesis.toml).
CONFIG = """
# A batch is checked entry by entry: an entry that is not a valid message is listed in
# `rejected` (200, ok: false) and never blocks the others (docs/api.md).
[[operations]]
include-path = "/commands/add-messages"
checks.negative_data_rejection.expected-statuses = [200, 400, 401, 403, 404, 413, 415]

# Valid by the schema, refused by meaning (400 with a stable code): opaque cursors that this
# server did not issue (invalid_cursor), since >= until (invalid_range), an smtp account
# without a host (invalid_host), a setting name no installed plugin provides
# (unknown_setting), a suppressed address that is not an address, a client_auth whose fields
# do not go with its method (invalid_auth).
[[operations]]
include-path-regex = "^/(messages|reports|reports/ack|large-files|account|suppressions|tenant-settings/[^/]+|tenant/[^/]+)$"
checks.positive_data_acceptance.expected-statuses = [200, 201, 400, 401, 403, 404, 409]
"""


def schemathesis_run(
    url: str, key: str, workdir: Path, name: str
) -> tuple[int, str, dict[str, Any], list[dict[str, Any]]]:
    """One ``schemathesis run`` with ``key``: exit code, output, JUnit figures, HAR entries."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    reports = workdir / f"report-{name}"
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--header",
        f"X-API-Token: {key}",
        "--checks",
        "all",
        "--mode",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--report",
        "junit,har",
        "--report-dir",
        str(reports),
    ]
    # (in the test's directory: schemathesis keeps a cache of its own in .schemathesis/)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=workdir
    )
    [junit] = reports.glob("junit*.xml")
    [har] = reports.glob("har*.json")
    suites = ET.parse(junit).getroot()
    figures = {
        "operations": len(suites.findall(".//testcase")),
        "failed_operations": len(
            [c for c in suites.findall(".//testcase") if c.find("failure") is not None]
        ),
    }
    generated = re.search(r"(\d+) generated", done.stdout)
    figures["cases"] = int(generated.group(1)) if generated else 0
    entries = json.loads(har.read_text())["log"]["entries"]
    return done.returncode, done.stdout + done.stderr, figures, entries


def statuses(entries: list[dict[str, Any]]) -> list[int]:
    return [int(e["response"]["status"]) for e in entries]


async def call(
    session: aiohttp.ClientSession, url: str, key: str, method: str, path: str, **kw: Any
) -> tuple[int, str]:
    async with session.request(method, url + path, headers={"X-API-Token": key}, **kw) as resp:
        return resp.status, await resp.text()


async def create_tenant(svc: ServiceProcess, tenant_id: str) -> str:
    async with aiohttp.ClientSession() as session:
        status, text = await call(
            session, svc.url, svc.token, "POST", "/tenant", json={"id": tenant_id}
        )
    assert status == 201, text
    return str(json.loads(text)["api_key"])


async def named_by_b(svc: ServiceProcess, key_b: str, owned: list[str]) -> tuple[int, list[str]]:
    """Every operation with path parameters, with each of A's ids, and every operation taking
    ``tenant_id`` with A's tenant: the answers must be those a missing id gets."""
    async with aiohttp.ClientSession() as session:
        _, text = await call(session, svc.url, key_b, "GET", "/openapi.json")
        doc = json.loads(text)
        calls = 0
        leaks: list[str] = []

        async def compare(method: str, path: str, real: str, **kw: Any) -> None:
            nonlocal calls
            ghost = real.replace(MARK, PHANTOM)
            got = await call(session, svc.url, key_b, method, path.replace("{}", real), **kw)
            kw = json.loads(json.dumps(kw).replace(MARK, PHANTOM))
            twin = await call(session, svc.url, key_b, method, path.replace("{}", ghost), **kw)
            calls += 2
            if (got[0], got[1].replace(real, "<id>")) != (twin[0], twin[1].replace(ghost, "<id>")):
                leaks.append(f"{method} {path} with {real}: {got} but a missing id: {twin}")

        for path, ops in doc["paths"].items():
            template = re.sub(r"\{[^}]+\}", "{}", path)
            for method, op in ops.items():
                body = {"json": {}} if "requestBody" in op else {}
                names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
                if "{}" in template:
                    for value in owned:
                        await compare(method.upper(), template, value, **body)
                elif "tenant_id" in names:
                    await compare(method.upper(), path + "?tenant_id={}", owned[-1], **body)
    return calls, leaks


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

        # 1. tenant A's key: every operation, every phase, every check
        rc_a, out_a, fig_a, har_a = await asyncio.to_thread(
            schemathesis_run, svc.url, key_a, tmp_path, "a"
        )

        # 2. A's data (each id and text marked), then tenant B's key
        a_ids = [f"{MARK}-msg-{i}" for i in range(3)]
        async with aiohttp.ClientSession() as session:
            account = {"id": f"{MARK}-acct", "host": "127.0.0.1", "port": 9, "default": True}
            status, text = await call(session, svc.url, key_a, "POST", "/account", json=account)
            assert status == 200, text
            batch = [
                message(i, subject=f"subject {MARK}", batch_code=f"{MARK}-batch") for i in a_ids
            ]
            status, text = await call(
                session,
                svc.url,
                key_a,
                "POST",
                "/commands/add-messages",
                json={"messages": batch},
            )
            assert status == 200 and json.loads(text)["queued"] == len(a_ids), text
        rc_b, out_b, fig_b, har_b = await asyncio.to_thread(
            schemathesis_run, svc.url, key_b, tmp_path, "b"
        )
        seen_by_b = [
            f"{e['request']['method']} {e['request']['url']}: {e['response']['content'].get('text')}"
            for e in har_b
            if MARK in (e["response"]["content"].get("text") or "")
            and MARK not in json.dumps(e["request"])
            # /metrics is public, for Prometheus: its labels name every tenant (a known
            # finding, docs/reliability.md), nothing else of theirs
            and not e["request"]["url"].endswith("/metrics")
        ]
        owned = [*a_ids, f"{MARK}-acct", f"{MARK}-batch", f"{MARK}-tenant"]
        named_calls, named_leaks = await named_by_b(svc, key_b, owned)

        # A's data is as A left it
        async with aiohttp.ClientSession() as session:
            for msg_id in a_ids:
                status, text = await call(session, svc.url, key_a, "GET", f"/messages/{msg_id}")
                assert status == 200 and json.loads(text)["message"]["status"] == "pending", text
            status, text = await call(session, svc.url, key_a, "GET", "/accounts")
            assert status == 200 and f"{MARK}-acct" in text, text

    all_statuses = statuses(har_a) + statuses(har_b)
    record(
        "S11 schemathesis",
        examples=EXAMPLES,
        seed=SEED,
        a=fig_a,
        b=fig_b,
        requests=len(all_statuses) + named_calls,
        **{"5xx": sum(s >= 500 for s in all_statuses)},
        a_leaks_to_b=len(seen_by_b) + len(named_leaks),
    )
    assert not seen_by_b, seen_by_b[:5]
    assert not named_leaks, named_leaks[:5]
    assert rc_a == 0, out_a[-20000:]
    assert rc_b == 0, out_b[-20000:]
