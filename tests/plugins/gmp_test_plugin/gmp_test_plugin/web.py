"""The test plugin's route."""

from __future__ import annotations

from aiohttp import web

from mail_proxy.core.web.app import ok, principal_of


async def hello(request: web.Request) -> web.Response:
    return ok({"hello": "plugin", "principal": principal_of(request).kind})
