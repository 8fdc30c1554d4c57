"""VERP: the envelope sender of every message names the message, authenticated.

With a ``return_path`` (``bounces@example.com``) configured, :class:`VerpStep` (a
``before_send`` message step) sets the envelope sender to ``bounces+TOKEN@example.com``.
A bounce is delivered to that address, so it names its message even when the reporting
server quotes none of the original headers.

``TOKEN`` is ``<pk>-<mac>``: the message's storage key in base 36, and the first 12 base-32
characters (60 bits) of an HMAC-SHA256 over the key, tenant, client id and Message-ID of the
message, keyed with an instance secret. Lower case letters and digits only (some servers
lower-case local parts), about 20 characters: well inside the 64 of a local part. A token
that does not verify is forged (or belongs to a message since purged and its key reused):
:func:`verify` says so and the bounce changes nothing.

The secret is 32 random bytes made once per database (the first instance that needs it
wins), stored sealed with the instance key in ``bounce_secrets``; there is no built-in
default. Key rotation re-encrypts it (the ``reencrypt_secrets`` hook, :func:`reencrypt`).
Should it ever not open with the current key (the table restored from elsewhere), a new one
is made (logged), and bounces of messages sent before are matched by their quoted Message-ID
only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from mail_proxy.core.contracts.extensions import DeliveryContext, MessageStep
from mail_proxy.core.contracts.storage import MessageFilter
from mail_proxy.core.engine.encryption import secret_context

from . import schema
from .config import BounceConfigs
from .sqlutil import insert_ignore

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import MessageRecord
    from mail_proxy.core.engine.runtime import Runtime

log = logging.getLogger(__name__)

SECRET_NAME = "verp"
MAC_CHARS = 12
#: :func:`records_by_pk` reads keys no further apart than this in one query, at most RUN_MAX.
RUN_GAP = 8
RUN_MAX = 1000
_TOKEN = re.compile(rf"([0-9a-z]{{1,13}})-([a-z2-7]{{{MAC_CHARS}}})")


def _b36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
        if not value:
            return out


def mac(secret: bytes, pk: int, tenant_id: str, client_id: str, message_id: str) -> str:
    data = "\n".join((str(pk), tenant_id, client_id, message_id)).encode()
    digest = hmac.new(secret, data, hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:MAC_CHARS]


def make_token(secret: bytes, rec: MessageRecord) -> str:
    return f"{_b36(rec.pk)}-{mac(secret, rec.pk, rec.tenant_id, rec.id, rec.message_id)}"


def verp_address(return_path: str, token: str) -> str:
    local, _, domain = return_path.rpartition("@")
    return f"{local}+{token}@{domain}"


def token_in(address: str, return_paths: set[str]) -> str | None:
    """The token of ``address`` when it is a VERP address of one of ``return_paths``
    (``local+TOKEN@domain``, compared without case), else None."""
    local, at, domain = address.strip().lower().rpartition("@")
    base, plus, token = local.rpartition("+")
    if not at or not plus or f"{base}@{domain}" not in return_paths:
        return None
    return token


class VerpSecret:
    """The instance secret of the tokens (``runtime.local(VerpSecret)``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._value: bytes | None = None

    async def get(self) -> bytes:
        if self._value is None:
            self._value = await self._load()
        return self._value

    async def _load(self) -> bytes:
        engine = self.rt.storage.database
        t = schema.secrets
        fresh = base64.b64encode(os.urandom(32)).decode()
        async with engine.begin() as conn:
            await insert_ignore(
                conn,
                t,
                [
                    {
                        "name": SECRET_NAME,
                        "value": self.rt.encrypt(fresh, _place(SECRET_NAME)),
                        "created_at": time.time(),
                    }
                ],
            )
            stored = await conn.scalar(sa.select(t.c.value).where(t.c.name == SECRET_NAME))
            try:
                return base64.b64decode(self.rt.decrypt(stored, _place(SECRET_NAME)))
            except Exception:
                log.error(
                    "bounce: the VERP secret does not open with the current encryption key "
                    "(rotated?): a new secret is made; bounces of messages sent before are "
                    "matched by their quoted Message-ID only"
                )
                await conn.execute(
                    t.update()
                    .where(t.c.name == SECRET_NAME)
                    .values(
                        value=self.rt.encrypt(fresh, _place(SECRET_NAME)), created_at=time.time()
                    )
                )
                return base64.b64decode(fresh)


class VerpStep(MessageStep):
    """``before_send``: the envelope sender becomes the message's VERP address."""

    name = "bounce-verp"

    async def before_send(self, ctx: DeliveryContext) -> None:
        rt = ctx.runtime
        config = await rt.local(BounceConfigs).effective(ctx.record.tenant_id)
        if config is None or not config.return_path or rt.cipher is None:
            return
        secret = await rt.local(VerpSecret).get()
        ctx.sender = verp_address(config.return_path, make_token(secret, ctx.record))


def parse_token(token: str) -> tuple[int, str] | None:
    """``(pk, mac)`` of a well-formed token, else None."""
    found = _TOKEN.fullmatch(token)
    return (int(found.group(1), 36), found.group(2)) if found else None


def verify(secret: bytes, rec: MessageRecord, token_mac: str) -> bool:
    """Whether ``token_mac`` is the MAC of ``rec`` (constant time)."""
    expected = mac(secret, rec.pk, rec.tenant_id, rec.id, rec.message_id)
    return hmac.compare_digest(expected, token_mac)


async def records_by_pk(runtime: Runtime, pks: set[int]) -> dict[int, MessageRecord]:
    """The messages with these storage keys, read in runs of neighbouring keys (the bounces of
    one campaign name neighbouring messages): one query per run instead of one per message."""
    wanted = sorted(pks)
    found: dict[int, MessageRecord] = {}
    i = 0
    while i < len(wanted):
        j = i
        while (
            j + 1 < len(wanted)
            and wanted[j + 1] - wanted[j] <= RUN_GAP
            and wanted[j + 1] - wanted[i] < RUN_MAX
        ):
            j += 1
        span = wanted[j] - wanted[i] + 1
        flt = MessageFilter(after_pk=wanted[i] - 1, limit=span)
        for rec in await runtime.storage.list_messages(flt):
            if rec.pk in pks:
                found[rec.pk] = rec
        i = j + 1
    return found


def _place(name: str) -> str:
    """Where a secret of ``bounce_secrets`` is stored (its encryption context)."""
    return secret_context(schema.secrets.name, "value", name)


async def reencrypt(runtime: Runtime, transform: Callable[[str, str], str]) -> int:
    """Key rotation (and the upgrade to place-bound tokens): the sealed secret rewritten by
    ``transform(token, context)``."""
    engine = runtime.storage.database if runtime.storage is not None else None
    if engine is None:
        return 0
    t = schema.secrets
    changed = 0
    async with engine.begin() as conn:
        for row in (await conn.execute(sa.select(t.c.name, t.c.value))).all():
            new = transform(row.value, _place(row.name))
            if new != row.value:
                await conn.execute(t.update().where(t.c.name == row.name).values(value=new))
                changed += 1
    return changed
