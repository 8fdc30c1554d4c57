"""Opaque page cursors: the last ``pk`` of a page, encoded so clients do not build them."""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
from collections.abc import Iterator
from typing import Protocol, TypeVar

from mail_proxy.core.contracts.errors import ApiError

_PREFIX = "p1:"


class _Row(Protocol):
    @property
    def pk(self) -> int: ...


RowT = TypeVar("RowT", bound=_Row)


def encode_cursor(pk: int, prefix: str = _PREFIX) -> str:
    """An opaque cursor for position ``pk``; ``prefix`` keeps kinds of cursors apart."""
    return _encode(str(pk), prefix)


def decode_cursor(
    cursor: str | None, prefix: str = _PREFIX, origin: str = "this server"
) -> int | None:
    """The ``pk`` a cursor stands for (None for the first page); 400 ``invalid_cursor``."""
    if not cursor:
        return None
    with _invalid(origin):
        pk = int(_decode(cursor, prefix))
        if pk < 0:
            raise ValueError(cursor)
    return pk


def page(rows: list[RowT], limit: int) -> tuple[list[RowT], str | None]:
    """Cut ``rows`` (fetched with ``limit + 1``) to ``limit`` and the next cursor, if any."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].pk)
    return rows, None


def encode_time_cursor(ts: float, pk: int, prefix: str) -> str:
    """An opaque cursor for position ``(ts, pk)`` (pages in creation-time order)."""
    return _encode(f"{ts!r}/{pk}", prefix)


def decode_time_cursor(
    cursor: str | None, prefix: str, origin: str = "this server"
) -> tuple[float, int] | None:
    """The ``(ts, pk)`` a time cursor stands for (None for the first page); 400
    ``invalid_cursor`` otherwise."""
    if not cursor:
        return None
    with _invalid(origin):
        ts_text, pk_text = _decode(cursor, prefix).split("/")
        ts, pk = float(ts_text), int(pk_text)
        if pk < 0 or not math.isfinite(ts):
            raise ValueError(cursor)
    return ts, pk


def _encode(text: str, prefix: str) -> str:
    return base64.urlsafe_b64encode(f"{prefix}{text}".encode()).decode().rstrip("=")


def _decode(cursor: str, prefix: str) -> str:
    """The text after ``prefix`` in ``cursor``; ``ValueError`` (or a decoding error) if it is
    not one of ours."""
    text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    if not text.startswith(prefix):
        raise ValueError(text)
    return text[len(prefix) :]


@contextlib.contextmanager
def _invalid(origin: str) -> Iterator[None]:
    """Turn a malformed cursor into 400 ``invalid_cursor``."""
    try:
        yield
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", f"the cursor is not one {origin} returned") from None
