"""The ``file`` transport: write each message as an ``.eml`` file instead of sending it.

For development, demos and archiving. The account's ``options["directory"]`` names the
folder (created if missing). The file is ``<mail id>.eml`` (``<tenant>_<mail id>.eml`` outside
the default tenant), the id reduced to safe characters; without a mail id the Message-ID is
used. A retry of the same message overwrites its file, and the write goes through a temporary
file and a rename, so a reader never sees half a message. Every recipient counts as accepted.
A message with a UTF-8 local part in an address header is written with UTF-8 headers
(RFC 6532), as an SMTPUTF8 server would receive it.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import uuid
from email.message import EmailMessage
from email.policy import EmailPolicy
from pathlib import Path
from typing import TYPE_CHECKING, cast

from mail_proxy.ce.transport.addresses import headers_need_smtputf8
from mail_proxy.ce.transport.wire import without_bcc
from mail_proxy.core.contracts.model import DEFAULT_TENANT
from mail_proxy.core.contracts.transport import SendResult, Transport, TransportError

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Account
    from mail_proxy.core.engine.runtime import Runtime

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 180


def safe_name(text: str) -> str:
    """``text`` reduced to a file name: safe characters only, no leading dots, bounded."""
    name = _UNSAFE.sub("_", text.strip().strip("<>")).lstrip(".")[:MAX_NAME]
    return name or uuid.uuid4().hex


def _write(directory: Path, name: str, message: EmailMessage) -> Path:
    """Flatten and write atomically (runs in a worker thread)."""
    message = without_bcc(message)
    if headers_need_smtputf8(message):
        data = message.as_bytes(policy=cast(EmailPolicy, message.policy).clone(utf8=True))
    else:
        data = message.as_bytes()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


class FileTransport(Transport):
    """Writes messages to ``options["directory"]`` (see the module doc). The directory is
    anywhere the service may write, so its accounts are the operator's (admin token)."""

    operator_only = True

    def __init__(self, runtime: Runtime | None = None) -> None:
        """(The runtime is part of the transport factory signature; not needed here.)"""

    async def probe(self, account: Account) -> str:
        """What "test connection" checks for a file account: the directory exists (or can be
        made) and takes a file."""
        directory = (account.options or {}).get("directory")
        if not directory:
            raise TransportError(
                f"account {account.id}: the file transport needs options.directory",
                permanent=True,
            )

        def check() -> None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".probe-")
            os.close(fd)
            os.unlink(tmp)

        try:
            await asyncio.to_thread(check)
        except OSError as exc:
            raise TransportError(
                f"account {account.id}: cannot write to {directory}: {exc.strerror or exc}",
                permanent=False,
            ) from None
        return f"directory {directory} is writable"

    async def send(
        self,
        account: Account,
        message: EmailMessage,
        sender: str,
        recipients: list[str],
    ) -> SendResult:
        directory = (account.options or {}).get("directory")
        if not directory:
            raise TransportError(
                f"account {account.id}: the file transport needs options.directory "
                "(the folder to write .eml files to)",
                permanent=True,
            )
        ident = message.get("X-Genro-Mail-ID") or message.get("Message-ID") or ""
        name = safe_name(str(ident))
        if account.tenant_id != DEFAULT_TENANT:
            name = f"{safe_name(account.tenant_id)}_{name}"
        try:
            path = await asyncio.to_thread(_write, Path(directory), f"{name}.eml", message)
        except OSError as exc:
            raise TransportError(
                f"account {account.id}: cannot write to {directory}: {exc.strerror or exc}",
                permanent=False,
            ) from None
        return SendResult(accepted=list(recipients), response=f"250 written {path.name}")
