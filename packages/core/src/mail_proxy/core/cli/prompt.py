"""Asking for missing values: on a terminal, prompt (secrets without echo); otherwise fail
with a usage error naming the option to pass, so scripts never hang on a prompt."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable
from typing import TypeVar

from mail_proxy.core.cli.errors import UsageError

T = TypeVar("T")


def interactive() -> bool:
    """True when a person can answer: stdin is a terminal."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def require(
    value: T | None,
    option: str,
    label: str,
    *,
    parse: Callable[[str], T] | None = None,
    default: T | None = None,
    secret: bool = False,
) -> T:
    """``value`` if given; else ask ``label`` on a terminal; else exit 2 naming ``option``."""
    if value is not None:
        return value
    if not interactive():
        raise UsageError(f"missing {option} (no terminal to ask on)")
    while True:
        answer = ask(label, default=None if default is None else str(default), secret=secret)
        if answer == "" and default is not None:
            return default
        if answer == "":
            print(f"{label} is required.", file=sys.stderr)
            continue
        try:
            return parse(answer) if parse else answer  # type: ignore[return-value]
        except ValueError as exc:
            print(f"invalid {label}: {exc}", file=sys.stderr)


def optional(value: str | None, label: str, *, secret: bool = False) -> str | None:
    """``value`` if given; on a terminal ask (Enter = none); without a terminal None."""
    if value is not None or not interactive():
        return value
    return ask(f"{label} (Enter for none)", secret=secret) or None


def ask(label: str, *, default: str | None = None, secret: bool = False) -> str:
    suffix = f" [{default}]" if default is not None else ""
    prompt = f"{label}{suffix}: "
    try:
        return (getpass.getpass(prompt) if secret else input(prompt)).strip()
    except EOFError:
        raise UsageError(f"no answer for {label}") from None


def confirm(question: str, assume_yes: bool) -> bool:
    """True when ``assume_yes`` or nobody can answer; else ask (default no)."""
    if assume_yes or not interactive():
        return True
    return ask(f"{question} [y/N]").lower() in {"y", "yes"}
