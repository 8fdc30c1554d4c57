"""A real Dovecot IMAP server for tests, started as a child process with its own configuration.

Nothing of the system installation is used but the binary (Debian package ``dovecot-imapd``,
installed by ``scripts/ci-packages``): configuration, sockets, state, log and mail all live in
a fresh temporary directory, and ``dovecot -F -c <tmp>/dovecot.conf`` runs in the foreground
as a child of the test process (no systemd)::

    server = Dovecot()
    server.start()
    user, password = server.new_user()
    server.append(user, b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
    ...connect to (server.host, server.port), or server.tls_port with server.ssl_context()...
    server.stop()

Listeners, all on 127.0.0.1 with free ports: ``port`` (plain IMAP, STARTTLS offered) and
``tls_port`` (implicit TLS). The certificate is minted with ``trustme`` for ``127.0.0.1`` and
``localhost``; clients trust it through ``ca_file`` / :meth:`Dovecot.ssl_context`. Users come
from passwd-files (one per user) with plaintext passwords; PLAIN and LOGIN are allowed without
TLS. Mail is maildir under the temporary directory. Test-friendly settings: no authentication
penalty for repeated failures (a wrong-password test would slow down every later login from
127.0.0.1), and IDLE notices new mail within a second.

Privileges: run as root (CI containers), Dovecot needs its system users ``dovecot`` and
``dovenull`` (made by the package) and refuses to access mail as root, so mail belongs to
``nobody``. Run as another user, everything runs as that user.

The helper methods (:meth:`append`, :meth:`count`, :meth:`uidvalidity`, ...) talk IMAP with the
standard library's synchronous ``imaplib``: each call is a short login/command/logout.

The pytest fixture :func:`dovecot` is session-scoped: one server per pytest process, hence one
per xdist worker (each with its own directory, instance name and ports). Tests keep apart by
using their own users (:meth:`Dovecot.new_user`).
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from mail_proxy.core.testing.net import free_port

DOVECOT_BIN = shutil.which("dovecot") or "/usr/sbin/dovecot"
START_TIMEOUT = 15.0


def dovecot_available() -> bool:
    """Whether the dovecot binary (and, when root, its system users) are present."""
    if not os.access(DOVECOT_BIN, os.X_OK):
        return False
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("dovecot")
            pwd.getpwnam("dovenull")
        except KeyError:
            return False
    return True


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Dovecot:
    """One Dovecot instance in its own temporary directory (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.tls_port = 0
        self.dir: Path | None = None
        self.ca_file = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._passwords: dict[str, str] = {}
        self._ca: object | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Dovecot:
        import trustme

        if self.proc is not None:
            return self
        if not dovecot_available():
            raise RuntimeError(f"dovecot is not installed ({DOVECOT_BIN}); run scripts/ci-packages")
        # Short path: the sockets in base_dir must fit in sun_path (108 bytes).
        self.dir = Path(tempfile.mkdtemp(prefix="dovecot-"))
        self.dir.chmod(0o755)  # the mail processes (not root) walk through it to the mail
        ca = trustme.CA()
        self._ca = ca
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.dir / "server.pem"))
        ca.cert_pem.write_to_path(str(self.dir / "ca.pem"))
        self.ca_file = str(self.dir / "ca.pem")
        (self.dir / "users").mkdir()
        (self.dir / "users").chmod(0o755)  # read by the auth worker (user dovecot)
        mail = self.dir / "mail"
        mail.mkdir()
        if os.geteuid() == 0:
            mail_user = pwd.getpwnam("nobody")
            os.chown(mail, mail_user.pw_uid, mail_user.pw_gid)
            internal_user, login_user, internal_group = "dovecot", "dovenull", "dovecot"
        else:
            mail_user = pwd.getpwuid(os.getuid())
            internal_user = login_user = mail_user.pw_name
            internal_group = grp.getgrgid(os.getgid()).gr_name
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port(self.host)
            self.tls_port = free_port(self.host)
            self._write_config(mail_user, internal_user, login_user, internal_group)
            log = open(self.dir / "stderr.log", "ab")
            try:
                self.proc = subprocess.Popen(
                    [DOVECOT_BIN, "-F", "-c", str(self.dir / "dovecot.conf")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                log.close()
            try:
                error = self._wait_ready()
            except BaseException:
                self.stop()
                raise
            if not error:
                atexit.register(self.stop)  # also when the session ends abnormally
                return self
            last_error = error
            self._kill()
        self.stop()
        raise RuntimeError(f"dovecot did not start: {last_error}")

    def stop(self) -> None:
        atexit.unregister(self.stop)
        self._kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # the master stops its children, then itself
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def _write_config(
        self, mail_user: pwd.struct_passwd, internal: str, login: str, group: str
    ) -> None:
        assert self.dir is not None
        d = self.dir
        # Unprivileged, Dovecot cannot chroot its login and anvil processes.
        chroot = "" if os.geteuid() == 0 else "  chroot =\n"
        conf = f"""\
# Generated by tests/support/dovecot.py: a private, throw-away instance.
instance_name = test-{uuid.uuid4().hex[:12]}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = imap
listen = {self.host}
shutdown_clients = yes
default_internal_user = {internal}
default_login_user = {login}
default_internal_group = {group}
first_valid_uid = {min(mail_user.pw_uid, 100) or 1}
first_valid_gid = {min(mail_user.pw_gid, 100) or 1}
ssl = yes
ssl_cert = <{d}/server.pem
ssl_key = <{d}/server.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u
mailbox_idle_check_interval = 1 secs
auth_failure_delay = 0
service anvil {{
{chroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users/%u
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={d}/mail/%u
}}
service imap-login {{
{chroot}  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.tls_port}
    ssl = yes
  }}
}}
"""
        (d / "dovecot.conf").write_text(conf)

    def _wait_ready(self) -> str:
        """Wait for the greeting on both listeners; '' when ready, else what went wrong."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        pending = [self.port, self.tls_port]
        while pending:
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode}: {self.log_tail()}"
            if time.monotonic() > deadline:
                return f"no greeting within {START_TIMEOUT}s: {self.log_tail()}"
            port = pending[0]
            try:
                with socket.create_connection((self.host, port), timeout=2) as sock:
                    if port == self.tls_port:
                        with self.ssl_context().wrap_socket(sock, server_hostname=self.host) as tls:
                            greeting = tls.recv(200)
                    else:
                        greeting = sock.recv(200)
                if greeting.startswith(b"* OK"):
                    pending.pop(0)
                    continue
            except OSError:
                pass
            time.sleep(0.05)
        return ""

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's logs (for failure messages)."""
        if self.dir is None:
            return ""
        out: list[str] = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.dir / name
            if path.exists():
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    # -- users --------------------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Create the user, or change the password of an existing one.

        Each user has a passwd-file of its own (``users/<name>``): Dovecot re-reads a file it
        knows at most once a second, a new file at once. So a new user can log in right away;
        a password change is waited for (a probing login) until Dovecot has taken it.
        """
        if not re.fullmatch(r"[A-Za-z0-9._@+-]+", name) or re.search(r"[:\s]", password):
            raise ValueError("user names: letters, digits, ._@+-; no ':' or spaces in passwords")
        assert self.dir is not None, "start() first"
        changed = name in self._passwords and self._passwords[name] != password
        self._passwords[name] = password
        tmp = self.dir / "users" / f".{name}.tmp"
        tmp.write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        tmp.replace(self.dir / "users" / name)  # atomic: never a half-written file
        if changed:
            deadline = time.monotonic() + 10
            while True:
                try:
                    self.client(name).logout()
                    return
                except imaplib.IMAP4.error:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    def new_user(self, prefix: str = "u") -> tuple[str, str]:
        """A fresh user with a random password: ``(name, password)``."""
        name = f"{prefix}{uuid.uuid4().hex[:10]}"
        password = uuid.uuid4().hex
        self.add_user(name, password)
        return name, password

    # -- clients ------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this server's certificate."""
        return ssl.create_default_context(cafile=self.ca_file)

    def client(self, user: str) -> imaplib.IMAP4:
        """A logged-in synchronous ``imaplib`` client (the caller logs out)."""
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        imap.login(user, self._passwords[user])
        return imap

    def _session(self, user: str) -> _Session:
        return _Session(self.client(user))

    def create_folder(self, user: str, folder: str) -> None:
        with self._session(user) as imap:
            typ, data = imap.create(_quote(folder))
            if typ != "OK" and b"exists" not in b"".join(d or b"" for d in data).lower():
                raise RuntimeError(f"CREATE {folder}: {typ} {data}")

    def append(
        self,
        user: str,
        message: bytes,
        folder: str = "INBOX",
        flags: Iterable[str] = (),
    ) -> int:
        """Append a message (creating the folder if needed); returns its UID."""
        with self._session(user) as imap:
            if folder.upper() != "INBOX":
                imap.create(_quote(folder))  # NO when it exists: fine
            flag_list = "(" + " ".join(flags) + ")" if flags else None
            typ, data = imap.append(_quote(folder), flag_list, None, message)
            if typ != "OK":
                raise RuntimeError(f"APPEND: {typ} {data}")
            match = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            return int(match.group(1)) if match else 0

    def _status(self, user: str, folder: str, item: str) -> int:
        with self._session(user) as imap:
            typ, data = imap.status(_quote(folder), f"({item})")
            if typ != "OK":
                raise RuntimeError(f"STATUS {folder}: {typ} {data}")
            match = re.search(rf"{item} (\d+)".encode(), data[0] or b"")
            assert match, data
            return int(match.group(1))

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        return self._status(user, folder, "UIDVALIDITY")

    def count(self, user: str, folder: str = "INBOX", unseen_only: bool = False) -> int:
        """Messages in the folder (only those without ``\\Seen`` with ``unseen_only``)."""
        return self._status(user, folder, "UNSEEN" if unseen_only else "MESSAGES")

    def uids(self, user: str, folder: str = "INBOX", criteria: str = "ALL") -> list[int]:
        with self._session(user) as imap:
            imap.select(_quote(folder), readonly=True)
            typ, data = imap.uid("SEARCH", criteria)
            if typ != "OK":
                raise RuntimeError(f"UID SEARCH {criteria}: {typ} {data}")
            return [int(x) for x in (data[0] or b"").split()]

    def flags(self, user: str, uid: int, folder: str = "INBOX") -> set[str]:
        with self._session(user) as imap:
            imap.select(_quote(folder), readonly=True)
            typ, data = imap.uid("FETCH", str(uid), "(FLAGS)")
            match = re.search(rb"FLAGS \(([^)]*)\)", data[0] or b"") if typ == "OK" else None
            if not match:
                raise RuntimeError(f"UID FETCH {uid} FLAGS: {typ} {data}")
            return set(match.group(1).decode().split())

    def kick(self, user: str) -> None:
        """Drop every IMAP connection of ``user`` from the server side: its imap processes
        (listed by ``doveadm who``) are terminated. Nothing happens when it has none."""
        assert self.dir is not None, "start() first"
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        who = subprocess.run(
            [doveadm, "-c", str(self.dir / "dovecot.conf"), "who", "-1", user],
            capture_output=True,
            timeout=10,
            text=True,
        )
        if who.returncode not in (0, 68):  # 68 (EX_NOUSER): not connected
            raise RuntimeError(f"doveadm who {user}: {who.returncode} {who.stderr!r}")
        for line in who.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == user and fields[1] == "imap":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(fields[2]), signal.SIGTERM)

    def recreate_folder(self, user: str, folder: str) -> int:
        """Force a UIDVALIDITY change: the folder is deleted (with its messages) and created
        again; Dovecot hands out a new, larger UIDVALIDITY. ``INBOX`` cannot be deleted in
        IMAP, so for it the messages are emptied and Dovecot's UID list and indexes are removed
        from the maildir (it then numbers the messages afresh under a new UIDVALIDITY).
        Returns the new UIDVALIDITY. Nobody should have the folder selected meanwhile.
        """
        old = self.uidvalidity(user, folder)
        if folder.upper() == "INBOX":
            assert self.dir is not None
            maildir = self.dir / "mail" / user
            with self._session(user) as imap:
                typ, data = imap.select("INBOX")
                if typ == "OK" and int(data[0] or 0) > 0:
                    imap.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                    imap.expunge()
            for path in maildir.glob("dovecot*"):
                if path.name != "dovecot-uidvalidity" and not path.name.startswith(
                    "dovecot-uidvalidity."
                ):
                    path.unlink()
        else:
            with self._session(user) as imap:
                typ, data = imap.delete(_quote(folder))
                if typ != "OK":
                    raise RuntimeError(f"DELETE {folder}: {typ} {data}")
                typ, data = imap.create(_quote(folder))
                if typ != "OK":
                    raise RuntimeError(f"CREATE {folder}: {typ} {data}")
        new = self.uidvalidity(user, folder)
        if new == old:
            raise RuntimeError(f"UIDVALIDITY of {folder} did not change ({old})")
        return new


class _Session:
    def __init__(self, imap: imaplib.IMAP4) -> None:
        self.imap = imap

    def __enter__(self) -> imaplib.IMAP4:
        return self.imap

    def __exit__(self, *exc: object) -> None:
        try:
            self.imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A running Dovecot for this pytest process (one per xdist worker).

    Skipped when dovecot is not installed, except under ``CI=true`` where that fails.
    """
    if not dovecot_available():
        message = f"dovecot not installed ({DOVECOT_BIN}): run scripts/ci-packages"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = Dovecot().start()
    try:
        yield server
    finally:
        server.stop()
