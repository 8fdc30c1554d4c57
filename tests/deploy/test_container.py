"""The container image (Dockerfile), built and run as it ships.

The image is built by ``scripts/build-image`` (the wheels of scripts/build, buildah with
``--isolation chroot``; the base is ``localhost/debian-python``, made once by
``scripts/container-base`` with debootstrap and cached, because base images cannot be pulled
here). It is started with ``buildah run --isolation chroot`` — ``podman run`` needs the
capability to set resource limits, which this machine withholds — running exactly the image's
ENTRYPOINT as the image's USER, with the image's ENV. Chroot isolation shares the host's
network, so the server and the SMTP sink meet on the host's loopback.

Checked: the image's metadata (non-root numeric user, entry point, HEALTHCHECK on /health, the
data volume, no secret in its environment); refusal to start without an encryption key or an
admin token (exit 2, one clear line); secrets read from files in /run/secrets; the HEALTHCHECK
command answering from inside; one message delivered to an SMTP server on the host; the data
volume written by the non-root user; a clean stop on SIGTERM (exit 0).

The tools (buildah, podman, debootstrap) come from scripts/ci-packages; without them the tests
are skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from mail_proxy.core.testing.net import free_port
from mail_proxy.core.testing.smtp import SmtpTestServer

ROOT = Path(__file__).resolve().parents[2]
BUILD_IMAGE = ROOT / "scripts" / "build-image"
TOOLS = ("buildah", "podman", "debootstrap")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
UID = 10001
DATA = "/var/lib/mail-proxy"
TOKEN = "container-admin-token-" + "x" * 16

pytestmark = [
    # the first test builds the image: debootstrap of the base (cold, once) + pip install
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        bool(MISSING) and os.environ.get("CI") != "true",
        reason=f"{', '.join(MISSING)} not installed (scripts/ci-packages installs them)",
    ),
]


def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("building and running the image with buildah needs root here")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Build the image once per test process (a lock: xdist workers build one at a time;
    the second build is all cache hits)."""
    _root()
    assert not MISSING, f"CI=true and {MISSING} missing: scripts/ci-packages installs them"
    lock = ROOT / ".tmp" / "build-image.lock"
    lock.parent.mkdir(exist_ok=True)
    # xdist workers of one run share this id: the first builds, the others reuse its image
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    stamp = ROOT / ".tmp" / f"build-image.{run_id}" if run_id else None
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if stamp is not None and stamp.exists():
            return stamp.read_text().strip()
        started = time.monotonic()
        proc = subprocess.run(
            [str(BUILD_IMAGE)], cwd=ROOT, capture_output=True, text=True, timeout=1700
        )
        assert proc.returncode == 0, f"scripts/build-image failed:\n{proc.stdout}\n{proc.stderr}"
        print(f"image built in {time.monotonic() - started:.0f}s")
        tag = proc.stdout.strip().splitlines()[-1]
        if stamp is not None:
            for old in stamp.parent.glob("build-image.*"):
                if old.name != "build-image.lock":
                    old.unlink(missing_ok=True)  # stamps of earlier runs
            stamp.write_text(tag + "\n")
    return tag


@pytest.fixture(scope="module")
def config(image: str) -> dict[str, Any]:
    out = subprocess.run(
        ["podman", "image", "inspect", image], capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out)[0])


class Container:
    """A buildah working container of the image; :meth:`start` runs the entry point."""

    def __init__(self, image: str, entrypoint: list[str]) -> None:
        self.name = f"gmp-test-{uuid.uuid4().hex[:10]}"
        self.entrypoint = entrypoint
        subprocess.run(
            ["buildah", "from", "--quiet", "--name", self.name, image],
            check=True,
            capture_output=True,
        )
        # buildah run mounts an anonymous volume at the image's VOLUME and, in an order that
        # varies from run to run, the --volume given for the same path: sometimes the
        # anonymous one wins. The working container forgets the VOLUME (the image keeps it:
        # test_image_metadata), so the test's directory is the only mount there.
        subprocess.run(
            ["buildah", "config", "--volume", f"{DATA}-", self.name],
            check=True,
            capture_output=True,
        )

    def argv(self, command: list[str], env: dict[str, str], volumes: dict[Path, str]) -> list[str]:
        args = ["buildah", "run", "--isolation", "chroot"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        for host, inside in volumes.items():
            args += ["--volume", f"{host}:{inside}"]
        return [*args, self.name, "--", *command]

    def run(
        self,
        command: list[str],
        env: dict[str, str] | None = None,
        volumes: dict[Path, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command, env or {}, volumes or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(
        self, env: dict[str, str], volumes: dict[Path, str], log: Path
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as fh:
            return subprocess.Popen(
                self.argv(self.entrypoint, env, volumes), stdout=fh, stderr=subprocess.STDOUT
            )

    def remove(self) -> None:
        subprocess.run(["buildah", "rm", self.name], capture_output=True, check=False)


@pytest.fixture
def container(image: str, config: dict[str, Any]) -> Iterator[Container]:
    ctr = Container(image, list(config["Config"]["Entrypoint"]))
    yield ctr
    ctr.remove()


def secrets_dir(tmp_path: Path, **files: str) -> Path:
    """A directory for /run/secrets, readable by the image's user only."""
    path = tmp_path / "secrets"
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text + "\n")
        os.chown(path / name, UID, UID)
        (path / name).chmod(0o400)
    os.chown(path, UID, UID)
    path.chmod(0o500)
    return path


def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    os.chown(path, UID, UID)
    path.chmod(0o700)
    return path


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def server_pid(runner: subprocess.Popen[bytes]) -> int:
    """The server process under ``buildah run`` (buildah does not pass SIGTERM on)."""
    for child in psutil.Process(runner.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            # buildah's helpers (buildah-chroot-runtime, then buildah-chroot-exec, already
            # as the image's user) carry the same arguments: the server is python itself
            argv = child.cmdline()
            if child.uids().real == UID and "serve" in argv and "python" in argv[0]:
                return int(child.pid)
    raise AssertionError("no server process under buildah run")


# -- the image as built ----------------------------------------------------------------------
def test_image_metadata(config: dict[str, Any], container: Container) -> None:
    cfg = config["Config"]
    assert cfg["User"] == f"{UID}:{UID}"  # numeric: runAsNonRoot can check it
    assert cfg["Entrypoint"] == ["mail-proxy", "serve", "--require-key"]
    assert DATA in cfg["Volumes"]
    assert "8000/tcp" in cfg["ExposedPorts"]
    env = dict(item.split("=", 1) for item in cfg["Env"])
    assert env["GMP_HOST"] == "0.0.0.0" and env["GMP_PORT"] == "8000"
    assert env["GMP_DB_PATH"].startswith(DATA + "/") and env["GMP_CACHE_DISK_DIR"].startswith(DATA)
    assert not {"GMP_API_TOKEN", "MAIL_PROXY_ENCRYPTION_KEY"} & set(env)  # no secret baked in
    health = config["Healthcheck"]["Test"]
    assert health[0] == "CMD" and "/health" in " ".join(health)

    ids = container.run(["id", "-u"])
    assert ids.returncode == 0 and ids.stdout.strip() == str(UID), ids
    plugins = container.run(["mail-proxy", "plugins", "--json"])
    assert plugins.returncode == 0, plugins.stderr
    assert {p["name"] for p in json.loads(plugins.stdout)["plugins"]} == {"core", "ce"}
    driver = container.run(["python3", "-c", "import asyncpg"])  # the [postgresql] extra
    assert driver.returncode == 0, driver.stderr
    code_only = container.run(["touch", "/opt/mail-proxy/x"])  # the code is root's
    assert code_only.returncode != 0 and "Permission denied" in code_only.stderr, code_only
    owner = container.run(["stat", "-c", "%u", DATA])
    assert owner.returncode == 0 and owner.stdout.strip() == str(UID), owner


# -- refusing to start -------------------------------------------------------------------------
def test_refuses_to_start_without_a_key_or_a_token(tmp_path: Path, container: Container) -> None:
    data = data_dir(tmp_path)
    no_key = container.run(
        container.entrypoint, {"GMP_API_TOKEN": TOKEN}, {data: DATA}, timeout=120
    )
    assert no_key.returncode == 2, no_key
    assert "MAIL_PROXY_ENCRYPTION_KEY" in no_key.stderr and "--require-key" in no_key.stderr
    assert "Traceback" not in no_key.stderr

    secrets = secrets_dir(tmp_path, encryption_key=new_key())
    no_token = container.run(container.entrypoint, {}, {data: DATA, secrets: "/run/secrets"})
    assert no_token.returncode == 2, no_token
    assert "GMP_API_TOKEN" in no_token.stderr and "no admin token" in no_token.stderr
    assert "Traceback" not in no_token.stderr
    assert not (data / "mail_proxy.db").exists()  # refused before opening the database


# -- running -----------------------------------------------------------------------------------
async def _wait_health(url: str, runner: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert runner.poll() is None, f"the container exited:\n{_tail(log)}"
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/health") as resp:
                    if resp.status == 200 and (await resp.json()) == {"ok": True}:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError(f"no /health in 90 s:\n{_tail(log)}")


def _where_is_the_database(container: Container, runner: subprocess.Popen[bytes]) -> str:
    """Diagnostics: what the container has at the data path, and what is mounted there."""
    mnt = subprocess.run(
        ["buildah", "mount", container.name], capture_output=True, text=True
    ).stdout.strip()
    inside = list(Path(mnt, DATA.lstrip("/")).iterdir()) if mnt else []
    mountinfo = Path(f"/proc/{server_pid(runner)}/mountinfo").read_text()
    mounts = [m for m in mountinfo.splitlines() if "mail-proxy" in m or "secrets" in m]
    return f"no database in the volume; in the container: {inside}; mounts: {mounts}"


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _call(method: str, url: str, token: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, headers={"X-API-Token": token}, **kwargs) as resp:
            return resp.status, await resp.json()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_serves_with_secret_files_and_delivers_a_message(
    tmp_path: Path, image: str, container: Container, config: dict[str, Any]
) -> None:
    data = data_dir(tmp_path)
    secrets = secrets_dir(tmp_path, api_token=TOKEN, encryption_key=new_key())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "container.log"
    env = {"GMP_PORT": str(port), "GMP_SEND_LOOP_INTERVAL": "0.1"}
    volumes = {data: DATA, secrets: "/run/secrets"}
    # the SMTP server wants the password stored (encrypted) in the account: it was decrypted
    async with SmtpTestServer(
        auth=("box", "box-secret-from-container"), auth_required=True
    ) as smtp:
        runner = container.start(env, volumes, log)
        try:
            await _wait_health(url, runner, log)
            status, answer = await _call("GET", url + "/status", TOKEN)
            assert status == 200 and answer["database"] == "sqlite", answer
            assert sorted(answer["plugins"]) == ["ce", "core"]
            status, _ = await _call("GET", url + "/status", "wrong-token-" + "y" * 16)
            assert status == 401
            text = log.read_text()
            assert "GMP_API_TOKEN read from /run/secrets/api_token" in text
            assert TOKEN not in text

            # the image's own HEALTHCHECK command, run in the image (a second working
            # container: a second `buildah run` in the first one upsets its first process)
            check = config["Healthcheck"]["Test"][1:]
            probe = Container(image, [])
            try:
                health = await asyncio.to_thread(probe.run, check, {"GMP_PORT": str(port)})
                assert health.returncode == 0, health
                wrong = await asyncio.to_thread(probe.run, check, {"GMP_PORT": str(free_port())})
                assert wrong.returncode != 0  # and it fails when nothing answers
            finally:
                probe.remove()

            # a password is stored: the key from /run/secrets/encryption_key is in use
            account = {
                "id": "main",
                "host": "127.0.0.1",
                "port": smtp.port,
                "use_tls": False,
                "starttls": False,
                "user": "box",
                "password": "box-secret-from-container",
                "allow_plaintext_auth": True,  # a test relay on loopback, without TLS
                "default": True,
            }
            status, answer = await _call("POST", url + "/account", TOKEN, json=account)
            assert status == 200 and answer["account"]["has_password"] is True, answer
            message = {
                "id": "container-1",
                "from": "Shop <shop@example.com>",
                "to": ["ann@example.org"],
                "subject": "From the container",
                "body": "Delivered by the image.",
            }
            status, answer = await _call(
                "POST", url + "/commands/add-messages", TOKEN, json={"messages": [message]}
            )
            assert status == 200 and answer["queued"] == 1, answer
            deadline = time.monotonic() + 60
            while not smtp.messages:
                if time.monotonic() > deadline:
                    _, shown = await _call("GET", url + "/messages/container-1", TOKEN)
                    raise AssertionError(f"not delivered: {shown}\n{_tail(log)}")
                await asyncio.sleep(0.1)
            got = smtp.messages[0]
            assert got.rcpt_tos == ["ann@example.org"] and got.authenticated_as == "box"
            assert got.message["Subject"] == "From the container"
            while True:
                status, answer = await _call("GET", url + "/messages/container-1", TOKEN)
                if answer["message"]["status"] == "sent":
                    break
                assert time.monotonic() < deadline, answer
                await asyncio.sleep(0.1)

            # the volume holds the database, written by the image's non-root user
            db = data / "mail_proxy.db"
            assert db.exists(), _where_is_the_database(container, runner)
            assert db.stat().st_uid == UID
            assert b"box-secret-from-container" not in db.read_bytes()
            owner = psutil.Process(server_pid(runner)).uids().real
            assert owner == UID
        finally:
            with contextlib.suppress(AssertionError, psutil.Error):
                os.kill(server_pid(runner), signal.SIGTERM)
            try:
                code = await asyncio.to_thread(runner.wait, 30)
            except subprocess.TimeoutExpired:
                runner.kill()
                raise
    assert code == 0, log.read_text()[-3000:]  # SIGTERM: a clean stop
    assert "stopped" in log.read_text()
