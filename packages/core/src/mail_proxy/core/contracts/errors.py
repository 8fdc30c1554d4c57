"""Errors that become clean JSON answers (``{"ok": false, "error", "code"}``) at the edge."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with an HTTP status and a stable snake_case ``code`` for clients."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        return {"ok": False, "error": self.message, "code": self.code, **self.extra}


class ConfigError(Exception):
    """Invalid configuration: raised at startup, names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"configuration error: {key}: {message}")
        self.key = key


class StorageUnavailable(Exception):
    """The database cannot be reached right now (the API answers 503)."""


class MessageContentError(ValueError):
    """A failure only the message itself can cause (a header the builder refuses, a step that
    cannot process its content): permanent at once, with this text as the reason."""
