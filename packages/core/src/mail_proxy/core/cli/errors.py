"""Errors a command raises to end with a one-line message on stderr and an exit code."""

from __future__ import annotations


class CliError(Exception):
    """The operation failed (the server said no, the instance is not running...): exit 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    """The command line is wrong or incomplete (a missing value without a terminal): exit 2."""

    exit_code = 2
