"""Opaque page cursors: the last ``pk`` of a page, encoded so clients do not build them."""

from __future__ import annotations

import base64
import binascii
from typing import Protocol, TypeVar

from mail_proxy.core.errors import ApiError

_PREFIX = "p1:"


class _Row(Protocol):
    @property
    def pk(self) -> int: ...


RowT = TypeVar("RowT", bound=_Row)


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The ``pk`` a cursor stands for (None for the first page); 400 ``invalid_cursor``."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_PREFIX):
            raise ValueError(text)
        pk = int(text[len(_PREFIX) :])
        if pk < 0:
            raise ValueError(text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_cursor", "the cursor is not one this server returned"
        ) from None
    return pk


def page(rows: list[RowT], limit: int) -> tuple[list[RowT], str | None]:
    """Cut ``rows`` (fetched with ``limit + 1``) to ``limit`` and the next cursor, if any."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].pk)
    return rows, None
