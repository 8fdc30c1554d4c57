"""The operator console: static pages served at ``/console`` by the same aiohttp server.

The pages are plain HTML, CSS and JavaScript modules shipped in this package (``static/``):
nothing to build, nothing fetched from elsewhere. They hold no authority of their own: every
figure and every action goes through the REST API with the token the person typed, kept in
the tab's ``sessionStorage`` and sent as ``X-API-Token``. So the console routes are public (they
serve files only) and the API enforces scope as it does for any client.

Every answer carries a strict Content-Security-Policy (scripts, styles and connections from
this origin only, no inline code, no framing): subjects, addresses and SMTP replies are
attacker input, and the pages render them as text (``textContent``), never as HTML.
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

from aiohttp import web

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.routes import RouteTable

#: No inline script or style, nothing from another origin, no plugins, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # the pages change with the installed version: always revalidate
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _load_files() -> dict[str, tuple[bytes, str]]:
    """Every file under ``static/`` by its relative path, with its content type. Only these
    names are ever served: a request path is looked up, never joined to a directory."""
    files: dict[str, tuple[bytes, str]] = {}
    root = resources.files(__name__).joinpath("static")

    def walk(node: Any, prefix: str) -> None:  # a Traversable
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif not child.name.startswith("."):
                suffix = PurePosixPath(child.name).suffix
                ctype = _TYPES.get(suffix) or mimetypes.guess_type(child.name)[0]
                files[name] = (child.read_bytes(), ctype or "application/octet-stream")

    walk(root, "")
    return files


class ConsoleFiles:
    """The console's files, read once from the package on first use."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, str]] | None = None

    def get(self, name: str) -> tuple[bytes, str] | None:
        if self._files is None:
            self._files = _load_files()
        return self._files.get(name)

    def respond(self, name: str) -> web.Response:
        found = self.get(name)
        if found is None:
            raise ApiError(404, "not_found", f"no console file {name!r}")
        body, ctype = found
        charset = "utf-8" if ctype.startswith("text/") or ctype.endswith("+xml") else None
        return web.Response(
            body=body, content_type=ctype, charset=charset, headers=SECURITY_HEADERS
        )


def register(routes: RouteTable, plugin: str) -> None:
    """``GET /console`` (the page), ``GET /console/{name}`` and ``GET /console/pages/{name}``
    (its scripts and styles: one directory level, plain names, no pattern routes)."""
    files = ConsoleFiles()

    async def page(request: web.Request) -> web.Response:
        return files.respond("index.html")

    async def asset(request: web.Request) -> web.Response:
        return files.respond(request.match_info["name"])

    async def page_script(request: web.Request) -> web.Response:
        return files.respond("pages/" + request.match_info["name"])

    add = routes.add
    add(
        "GET",
        "/console",
        page,
        scope="public",
        plugin=plugin,
        summary="Operator console (a static page; its data comes from this API with your token)",
    )
    add(
        "GET",
        "/console/{name}",
        asset,
        scope="public",
        plugin=plugin,
        summary="The console's scripts and stylesheet",
    )
    add(
        "GET",
        "/console/pages/{name}",
        page_script,
        scope="public",
        plugin=plugin,
        summary="The console's page scripts",
    )
