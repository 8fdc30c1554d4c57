"""Opaque page cursors: the last ``pk`` of a page, encoded so clients do not build them."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Protocol, TypeVar

from mail_proxy.core.contracts.errors import ApiError

_PREFIX = "p1:"


class _Row(Protocol):
    @property
    def pk(self) -> int: ...


RowT = TypeVar("RowT", bound=_Row)


def encode_cursor(pk: int, prefix: str = _PREFIX) -> str:
    """An opaque cursor for position ``pk``; ``prefix`` keeps kinds of cursors apart."""
    return base64.urlsafe_b64encode(f"{prefix}{pk}".encode()).decode().rstrip("=")


def decode_cursor(
    cursor: str | None, prefix: str = _PREFIX, origin: str = "this server"
) -> int | None:
    """The ``pk`` a cursor stands for (None for the first page); 400 ``invalid_cursor``."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(prefix):
            raise ValueError(text)
        pk = int(text[len(prefix) :])
        if pk < 0:
            raise ValueError(text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", f"the cursor is not one {origin} returned") from None
    return pk


def page(rows: list[RowT], limit: int) -> tuple[list[RowT], str | None]:
    """Cut ``rows`` (fetched with ``limit + 1``) to ``limit`` and the next cursor, if any."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].pk)
    return rows, None


def encode_time_cursor(ts: float, pk: int, prefix: str) -> str:
    """An opaque cursor for position ``(ts, pk)`` (pages in creation-time order)."""
    return encode_cursor_text(f"{ts!r}/{pk}", prefix)


def encode_cursor_text(text: str, prefix: str) -> str:
    return base64.urlsafe_b64encode(f"{prefix}{text}".encode()).decode().rstrip("=")


def decode_time_cursor(
    cursor: str | None, prefix: str, origin: str = "this server"
) -> tuple[float, int] | None:
    """The ``(ts, pk)`` a time cursor stands for (None for the first page); 400
    ``invalid_cursor`` otherwise."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(prefix):
            raise ValueError(text)
        ts_text, pk_text = text[len(prefix) :].split("/")
        ts, pk = float(ts_text), int(pk_text)
        if pk < 0 or not math.isfinite(ts):
            raise ValueError(text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", f"the cursor is not one {origin} returned") from None
    return ts, pk
