"""Instance lifecycle through the real ``mail-proxy`` script: real background servers.

Each test has its own GMP_HOME and loopback ports; every server it started is stopped at
teardown even when the test fails.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mail_proxy.core.cli.home import choose_port, port_is_free
from mail_proxy.core.testing.net import free_port
from support.cli_runner import MAIL_PROXY, Cli, clean_env, http


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(tmp_path / "home")
    yield cli
    cli.cleanup()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """One instance ``main``, started once for the tests that only need it running."""
    cli = Cli(tmp_path_factory.mktemp("home"))
    cli.ok("start", "main", "--port", str(free_port()))
    yield cli
    cli.cleanup()


def _states(cli: Cli) -> dict[str, dict[str, object]]:
    return {i["name"]: i for i in cli.ok("list", "--json").json()["instances"]}


def _token_from(output: str) -> str:
    lines = output.splitlines()
    index = next(i for i, ln in enumerate(lines) if ln.startswith("Admin token (keep it secret"))
    return lines[index + 1].strip()


def test_two_instances_start_list_stop_restart(cli: Cli) -> None:
    port_a, port_b = free_port(), free_port()
    # side by side, started at the same time
    beta = subprocess.Popen(
        [MAIL_PROXY, "start", "beta", "--port", str(port_b)],
        env=cli.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    first = cli.ok("start", "alpha", "--port", str(port_a))
    assert beta.wait(60) == 0, beta.communicate()
    assert "Created instance 'alpha'" in first.out
    assert f"running at http://127.0.0.1:{port_a}" in first.out
    assert "mail-proxy alpha token" in first.out
    token_a = _token_from(first.out)
    assert len(token_a) >= 40

    states = _states(cli)
    assert states["alpha"]["state"] == states["beta"]["state"] == "running"
    assert (states["alpha"]["port"], states["beta"]["port"]) == (port_a, port_b)
    assert states["alpha"]["url"] == f"http://127.0.0.1:{port_a}"
    assert states["alpha"]["pid"] == cli.pid("alpha") and states["beta"]["pid"] == cli.pid("beta")
    for port in (port_a, port_b):
        assert http("GET", f"http://127.0.0.1:{port}/health") == (200, {"ok": True})

    # the token shown at creation is the instance's admin token, printed again by `token`
    assert cli.ok("alpha", "token").out.strip() == token_a
    status, body = http("GET", f"http://127.0.0.1:{port_a}/status", token_a)
    assert status == 200 and body["instance"] == "alpha"
    assert http("GET", f"http://127.0.0.1:{port_b}/status", token_a)[0] == 401

    table = cli.ok("list").out
    assert "alpha" in table and "running" in table and str(port_b) in table

    assert "already running" in cli.ok("start", "alpha").out
    assert "stopped 'alpha'" in cli.ok("stop", "alpha").out
    assert not (cli.home / "alpha" / "mail-proxy.pid").exists()
    states = _states(cli)
    assert states["alpha"]["state"] == "stopped" and states["alpha"]["pid"] is None
    assert states["beta"]["state"] == "running"
    assert "not running" in cli.ok("stop", "alpha").out  # idempotent

    old_pid = cli.pid("beta")
    restarted = cli.ok("restart", "beta")
    assert "stopped 'beta'" in restarted.out and "running at" in restarted.out
    assert cli.pid("beta") not in (None, old_pid)
    assert http("GET", f"http://127.0.0.1:{port_b}/health")[0] == 200

    # a stopped instance: info without status, resource commands fail with exit 1
    assert cli.ok("alpha", "info", "--json").json()["status"] is None
    result = cli("alpha", "accounts", "list")
    assert result.code == 1
    assert "instance 'alpha' is not running" in result.err and result.err.count("\n") == 1


def test_instance_files_are_private(running: Cli) -> None:
    cli = running
    idir = cli.home / "main"
    for name in ("config.toml", "encryption.key"):
        assert stat.S_IMODE((idir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(idir.stat().st_mode) == 0o700
    config = cli.config("main")
    assert set(config) == {"instance_name", "host", "port", "api_token"}
    assert (idir / "mail_proxy.db").exists()
    assert "listening on" in cli.ok("main", "logs", "-n", "20").out
    assert len(cli.ok("main", "logs", "--lines", "1").out.splitlines()) == 1


def test_stale_pid_file_is_detected_and_cleaned(cli: Cli) -> None:
    port = free_port()
    cli.ok("start", "stale", "--port", str(port))
    pid = cli.pid("stale")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # a crash: the pid file stays behind
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and http_alive(port):
        time.sleep(0.05)
    pid_file = cli.home / "stale" / "mail-proxy.pid"
    assert pid_file.exists()

    result = cli.ok("list", "--json")
    assert result.json()["instances"][0]["state"] == "stopped"
    assert "stale pid file of 'stale'" in result.err
    assert not pid_file.exists()

    # a pid that belongs to another live process is stale too
    pid_file.write_text(f"{os.getpid()}\n")
    result = cli.ok("stale", "info", "--json")
    assert result.json()["state"] == "stopped" and "stale pid file" in result.err
    assert not pid_file.exists()

    pid_file.write_text("garbage\n")
    started = cli.ok("start", "stale")
    assert "stale pid file" in started.err and "running at" in started.out


def http_alive(port: int) -> bool:
    try:
        return http("GET", f"http://127.0.0.1:{port}/health", timeout=1)[0] == 200
    except OSError:
        return False


def test_busy_port_fails_with_exit_1(cli: Cli) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("start", "busy", "--port", str(port))
        assert result.code == 1, result
        assert f"port {port} on 127.0.0.1 is in use" in result.err
        assert result.err.count("\n") == 1 and "Traceback" not in result.err
    # the instance exists and starts once the port is free
    cli.ok("start", "busy")


def test_server_that_cannot_start_is_reported_in_one_line(cli: Cli) -> None:
    (cli.home / "broken").mkdir(parents=True)
    # a key file that `start` keeps; a bad key is a startup error, never a fallback
    (cli.home / "broken" / "encryption.key").write_text("not a key\n")
    result = cli("start", "broken", "--port", str(free_port()))
    assert result.code == 1, result
    assert "'broken' failed to start" in result.err and "encryption" in result.err.lower()
    assert result.err.count("\n") == 1
    assert _states(cli)["broken"]["state"] == "stopped"


def test_default_port_is_the_first_free_from_8000_and_remembered(cli: Cli) -> None:
    cli.ok("start", "auto")
    first = cli.config("auto")["port"]
    assert first >= 8000
    assert http("GET", f"http://127.0.0.1:{first}/health")[0] == 200
    cli.ok("stop", "auto")
    # a stopped instance keeps its port: the next instance does not take it
    cli.ok("start", "auto2")
    assert cli.config("auto2")["port"] > first
    assert cli.config("auto")["port"] == first


def test_choose_port_skips_busy_and_claimed_ports() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        chosen = choose_port("127.0.0.1", taken={port + 1}, first=port)
        assert chosen not in (port, port + 1) and chosen > port
        assert port_is_free("127.0.0.1", chosen)


def test_token_regenerate_restarts_with_the_new_token(running: Cli) -> None:
    cli = running
    old = cli.ok("main", "token").out.strip()
    new = cli.ok("main", "token", "--regenerate").out.strip()
    assert new != old and new == cli.token("main")
    url = f"{cli.url('main')}/status"
    assert http("GET", url, old)[0] == 401
    assert http("GET", url, new)[0] == 200


def test_info_json_includes_the_status_answer(running: Cli) -> None:
    cli = running
    data = cli.ok("main", "info", "--json").json()
    assert data["state"] == "running" and data["url"] == cli.url("main")
    assert data["pid"] == cli.pid("main")
    assert "api_token" not in data["config"]
    _, status = http("GET", f"{cli.url('main')}/status", cli.token("main"))
    assert data["status"]["instance"] == status["instance"] == "main"
    assert data["status"]["database"] == "sqlite"
    text = cli.ok("main", "info").out
    assert "running" in text and "sqlite" in text


def test_wrong_token_is_refused_with_exit_1(running: Cli) -> None:
    cli = running
    config = cli.home / "main" / "config.toml"
    original = config.read_text()
    config.write_text(original.replace(cli.token("main"), "not-the-token"))
    try:
        result = cli("main", "accounts", "list")
    finally:
        config.write_text(original)
    assert result.code == 1, result
    assert "invalid_token" in result.err and "HTTP 401" in result.err
    assert result.err.count("\n") == 1


def test_plugin_route_answers_on_a_running_instance(running: Cli) -> None:
    url = f"{running.url('main')}/hello-plugin"
    assert http("GET", url, running.token("main")) == (
        200,
        {"ok": True, "hello": "plugin", "principal": "admin"},
    )
    assert http("GET", url)[0] == 401


def test_serve_runs_in_the_foreground_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        tmp_path / "unused-home",
        GMP_API_TOKEN="serve-token-0123456789",
        GMP_PORT=str(port),
        GMP_DB_PATH=str(tmp_path / "serve.db"),
    )
    proc = subprocess.Popen(
        [MAIL_PROXY, "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not http_alive(port):
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        status, body = http("GET", f"http://127.0.0.1:{port}/status", "serve-token-0123456789")
        assert status == 200 and body["database"] == "sqlite"
        assert (tmp_path / "serve.db").exists()
        assert not (tmp_path / "unused-home").exists()  # no instance directory involved
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "listening on" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_serve_without_token_is_a_configuration_error(tmp_path: Path) -> None:
    env = clean_env(tmp_path, GMP_PORT=str(free_port()), GMP_DB_PATH=str(tmp_path / "x.db"))
    proc = subprocess.run(
        [MAIL_PROXY, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "GMP_API_TOKEN" in proc.stderr and "Traceback" not in proc.stderr


def test_server_module_refuses_a_missing_instance(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mail_proxy.core.cli.serve",
            "--instance-dir",
            str(tmp_path / "none"),
        ],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    log = (tmp_path / "none" / "logs" / "mail-proxy.log").read_text()
    assert "config file not found" in log


def test_a_second_server_of_a_running_instance_refuses_to_run(running: Cli) -> None:
    idir = running.home / "main"
    pid = running.pid("main")
    proc = subprocess.run(
        [sys.executable, "-m", "mail_proxy.core.cli.serve", "--instance-dir", str(idir)],
        env=running.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert (
        "another server of this instance is running"
        in (idir / "logs" / "mail-proxy.log").read_text()
    )
    assert running.pid("main") == pid  # the pid file still names the running server
    assert running.ok("list", "--json").json()["instances"][0]["state"] == "running"
