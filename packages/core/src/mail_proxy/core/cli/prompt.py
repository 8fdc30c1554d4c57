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


def optional(
    value: str | None, label: str, *, secret: bool = False, empty: str = "none"
) -> str | None:
    """``value`` if given; on a terminal ask (Enter = ``empty``, shown as the prompt's one
    hint); without a terminal None."""
    if value is not None or not interactive():
        return value
    return ask(label, hint=f"Enter for {empty}", secret=secret) or None


def ask(
    label: str, *, default: str | None = None, secret: bool = False, hint: str | None = None
) -> str:
    """Ask ``label`` and return the stripped answer. The prompt shows at most one hint: the
    ``[default]``, else ``(hint)``; none is added when ``label`` already carries one."""
    prompt = f"{prompt_text(label, default=default, hint=hint)}: "
    try:
        return (getpass.getpass(prompt) if secret else input(prompt)).strip()
    except EOFError:
        raise UsageError(f"no answer for {label}") from None


def prompt_text(label: str, *, default: str | None = None, hint: str | None = None) -> str:
    """``label`` with one hint: ``[default]`` or ``(hint)``; a label that already ends with a
    hint of its own (``(...)`` or ``[...]``) is left as it is."""
    label = label.rstrip().rstrip(":").rstrip()
    if label.endswith((")", "]")):
        return label
    if default is not None:
        return f"{label} [{default}]"
    if hint:
        return f"{label} ({hint})"
    return label


def confirm(question: str, assume_yes: bool) -> bool:
    """True when ``assume_yes`` or nobody can answer; else ask (default no)."""
    if assume_yes or not interactive():
        return True
    return yes_no(question, default=False)


def yes_no(question: str, *, default: bool) -> bool:
    """Ask a yes/no question on a terminal (Enter = ``default``); asks again on other
    answers. Callers check :func:`interactive` first."""
    hint = "[Y/n]" if default else "[y/N]"
    while True:
        answer = ask(f"{question} {hint}").lower()
        if not answer:
            return default
        if answer in {"y", "yes"}:
            return True
        if answer in {"n", "no"}:
            return False
        print("answer y or n", file=sys.stderr)
