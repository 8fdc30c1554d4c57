"""``mail-proxy NAME rotate-key``: re-encrypt every stored secret with a new key, live.

The order of the steps is what keeps the key from ever being lost:

1. the new key is written first to ``encryption.key.new`` (mode 0600) in the instance
   directory, so it is on disk before the database can depend on it;
2. ``POST /instance/rotate-key`` re-encrypts everything in one transaction and the server
   switches to the new key at once (no restart);
3. only after the server confirmed, ``encryption.key`` is copied to ``encryption.key.old``
   and the new key is moved into ``encryption.key`` (both mode 0600, each step atomic).

If the answer is lost (timeout, dropped connection) the rotation may or may not have
happened: the pending file stays, and the next ``rotate-key`` resumes with the same key,
which is correct in both cases (rotating to the key already in use only re-encrypts).

When the server read its key from ``MAIL_PROXY_ENCRYPTION_KEY`` (environment or
``encryption_key`` in config.toml) or ``/run/secrets/encryption_key``, the CLI cannot update
that source: it prints the new key once and says where it must go before the next restart.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from mail_proxy.core.cli.errors import CliError
from mail_proxy.core.cli.home import Instance, write_private
from mail_proxy.core.cli.output import Activity
from mail_proxy.core.cli.rest import Client, HttpError
from mail_proxy.core.cli.target import current
from mail_proxy.core.engine.encryption import (
    KEY_FILE_NAME,
    EncryptionError,
    generate_key,
    parse_key,
)

PENDING_SUFFIX = ".new"
OLD_SUFFIX = ".old"


def rotate_key(*, timeout: float = 300.0) -> int:
    """Re-encrypt every stored secret with a new encryption key (the instance keeps running).

    The new key goes to the instance's encryption.key once the server confirmed; the previous
    key is kept as encryption.key.old. With a key from MAIL_PROXY_ENCRYPTION_KEY or
    /run/secrets, the new key is printed once: put it there before the next restart.

    Parameters
    ----------
    timeout
        Seconds to wait for the server to re-encrypt everything.
    """
    inst = current().instance_dir().require()
    paths = _KeyPaths(inst.dir)
    if inst.running_pid() is None:
        raise CliError(_not_running(inst, paths))
    key, resumed = paths.pending_or_new()
    if resumed:
        _note(f"resuming the unfinished rotation whose key is in {paths.pending}")
    _note(f"rotating the encryption key of {inst.name!r}: re-encrypting stored secrets...")
    client = Client(inst.url, inst.token, name=inst.name, timeout=timeout)
    try:
        with Activity("re-encrypting"):
            answer = client.post("/instance/rotate-key", {"new_key": key})
    except HttpError as exc:  # the server refused: nothing changed
        if not resumed:
            paths.discard_pending()
            raise CliError(f"key not rotated: {exc.message}") from None
        raise CliError(
            f"key not rotated: {exc.message} (the key of the unfinished rotation stays in "
            f"{paths.pending})"
        ) from None
    except CliError as exc:  # no answer: the rotation may have been committed
        raise CliError(
            f"{exc.message}; the rotation may or may not have happened. The new key is kept in "
            f"{paths.pending}: run `mail-proxy {inst.name} rotate-key` again to finish"
        ) from None

    count = int(answer.get("reencrypted", 0))
    source = str(answer.get("key_source") or "")
    if _same_file(source, paths.current):
        paths.commit_pending()
        _note(
            f"done: {count} stored value(s) re-encrypted; new key in {paths.current}, "
            f"previous key in {paths.old}"
        )
        return 0
    paths.discard_pending()
    _note(
        f"done: {count} stored value(s) re-encrypted. The instance reads its key from "
        f"{source or 'an unknown source'}: put this new key there before the next restart "
        "(it is shown only now; the old key no longer decrypts the database):"
    )
    print(key)
    return 0


class _KeyPaths:
    """The key files of one instance directory."""

    def __init__(self, directory: Path) -> None:
        self.current = directory / KEY_FILE_NAME
        self.pending = directory / (KEY_FILE_NAME + PENDING_SUFFIX)
        self.old = directory / (KEY_FILE_NAME + OLD_SUFFIX)

    def pending_or_new(self) -> tuple[str, bool]:
        """The key of an unfinished rotation (``True``), else a new key written pending."""
        if self.pending.exists():
            text = self.pending.read_text().strip()
            try:
                parse_key(text, str(self.pending))
            except EncryptionError as exc:
                raise CliError(f"{exc} (remove the file if no rotation is in progress)") from None
            return text, True
        key = generate_key()
        fd = os.open(self.pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return key, False

    def commit_pending(self) -> None:
        """Previous key → ``.old``, pending key → current; no moment without a key file."""
        if self.current.exists():
            write_private(self.old, self.current.read_text())
        os.chmod(self.pending, 0o600)
        os.replace(self.pending, self.current)

    def discard_pending(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pending.unlink()


def _same_file(source: str, path: Path) -> bool:
    if not source or source.startswith("MAIL_PROXY_"):
        return False
    try:
        return Path(source).resolve() == path.resolve()
    except OSError:
        return False


def _not_running(inst: Instance, paths: _KeyPaths) -> str:
    message = (
        f"instance {inst.name!r} is not running (start it with: mail-proxy start {inst.name}); "
        "the key is rotated by the running server"
    )
    if paths.pending.exists():
        message += (
            f". An unfinished rotation left its key in {paths.pending}: if the instance "
            "refuses to start because its key does not match the database, move that file "
            f"to {paths.current}"
        )
    return message


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
