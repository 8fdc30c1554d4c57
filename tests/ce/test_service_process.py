"""The test kit's ServiceProcess (core/testing/service.py) starts the service it was asked for,
even when another server answers on the port it picked (a port taken between ``free_port`` and
the bind, by another test's process under xdist: seen as a 401 from a stranger's service)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.service import ServiceProcess


async def test_a_stranger_on_the_port_is_not_taken_for_the_service(tmp_path: Path) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    taken = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    env = {
        "GMP_DATABASE_URL": f"sqlite:///{tmp_path / 'kit.db'}",
        "GMP_API_TOKEN": "kit-admin-token-0123456789",
        "MAIL_PROXY_ENCRYPTION_KEY": generate_key(),
    }
    svc = ServiceProcess(env, tmp_path / "svc.log")
    svc.port, svc.env["GMP_PORT"] = taken, str(taken)
    try:
        await svc.start(timeout=30)
        assert svc.port != taken  # moved to another port after "address already in use"
        answer = await svc.call("GET", "/instance")
        assert answer["instance"]["instance_id"].split(":")[1] == str(svc.proc.pid)  # type: ignore[union-attr]
    finally:
        svc.stop()
        await runner.cleanup()
