"""Helpers of the large-files tests: the running app with the plugin, files made on disk,
the links found in delivered messages, and downloads over real HTTP."""

from __future__ import annotations

import hashlib
import os
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp

from mail_proxy.core.testing.smtp import SmtpTestServer
from support.ce_api import Api

MB = 1024 * 1024
_URL = re.compile(r"https?://[^\s<>\"']+")


def write_random(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` (in 1 MB slices); their MD5."""
    md5 = hashlib.md5()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(MB, left))
            out.write(chunk)
            md5.update(chunk)
            left -= len(chunk)
    return md5.hexdigest()


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def bodies(msg: EmailMessage) -> dict[str, str]:
    """The text/plain and text/html bodies of a delivered message, by subtype."""
    found = {}
    for part in msg.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        if part.get_content_type() in ("text/plain", "text/html"):
            found[part.get_content_subtype()] = part.get_content()
    return found


def attachments(msg: EmailMessage) -> dict[str, bytes]:
    return {
        str(part.get_filename()): part.get_payload(decode=True) for part in msg.iter_attachments()
    }


def links(text: str) -> list[str]:
    """The URLs in a text body (or the href values in HTML, entities decoded)."""
    import html

    return [html.unescape(u).rstrip(").,") for u in _URL.findall(text)]


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """A plain HTTP GET: ``(status, headers, body)``."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers or {}) as resp:
            return resp.status, resp.headers, await resp.read()


class LargeFilesApp:
    """The real app (SQLite unless told otherwise, dispatcher running), an SMTP account on
    ``smtp`` and ``files``, the directory filesystem attachments come from."""

    def __init__(self, api: Api, smtp: SmtpTestServer, files: Path) -> None:
        self.api = api
        self.smtp = smtp
        self.files = files

    @classmethod
    async def start(
        cls,
        factory: Any,
        make_settings: Any,
        tmp_path: Path,
        smtp: SmtpTestServer,
        db_url: str | None = None,
        **overrides: Any,
    ) -> LargeFilesApp:
        files = tmp_path / "files"
        files.mkdir(parents=True, exist_ok=True)
        settings = make_settings(
            database_url=db_url or f"sqlite:///{tmp_path / 'lf.db'}",
            attachment_base_dirs=[str(files)],
            fetch_allow_networks=["127.0.0.0/8"],
            **overrides,
        )
        client = await factory(settings)
        api = Api(client, tmp_path)
        account = {"id": "main", "host": "127.0.0.1", "port": smtp.port, "default": True}
        await api.post("/account", account)
        return cls(api, smtp, files)

    @property
    def runtime(self) -> Any:
        return self.api.runtime

    @property
    def url(self) -> str:
        return str(self.api.client.make_url("")).rstrip("/")

    async def configure(self, expect: int | None = 200, **config: Any) -> dict[str, Any]:
        return await self.api.call("PUT", "/instance/large-files", config, expect=expect)

    def file(self, name: str, size: int) -> tuple[str, str]:
        """A random file of ``size`` bytes in :attr:`files`: ``(absolute path, md5)``."""
        path = self.files / name
        return str(path), write_random(path, size)

    async def deliver(
        self, msg: dict[str, Any], status: str = "sent", timeout: float = 60.0
    ) -> EmailMessage | None:
        """Queue ``msg``, wait for ``status``; the message the SMTP server got (if sent)."""
        answer = await self.api.send(msg)
        assert answer["queued"] == 1, answer
        reached = await self.api.wait_status(msg["id"], status, timeout)
        detail = (await self.api.get(f"/messages/{msg['id']}"))["message"]
        assert reached == status, detail
        return self.received(msg["id"]) if status == "sent" else None

    def received(self, msg_id: str) -> EmailMessage:
        [found] = [m for m in self.smtp.messages if m.message["X-Genro-Mail-ID"] == msg_id]
        return found.message

    async def events(self, msg_id: str) -> list[dict[str, Any]]:
        return (await self.api.get(f"/messages/{msg_id}/events"))["events"]  # type: ignore[no-any-return]

    async def metric(self, name: str) -> float:
        """The sum of a Prometheus series over its labels (0 when absent)."""
        resp = await self.api.client.get("/metrics")
        text = await resp.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total
