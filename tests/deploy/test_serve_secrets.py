"""``mail-proxy serve`` as a container entry point, without a container: secrets from files
(``GMP_X_FILE``, ``/run/secrets/x``) and ``--require-key``. The image itself is tested in
test_container.py; this runs everywhere, with the real console script.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mail_proxy.core.cli.serve import secret_files, setting_variables
from mail_proxy.core.contracts.errors import ConfigError
from mail_proxy.core.testing.net import free_port

MAIL_PROXY = str(Path(sys.executable).parent / "mail-proxy")
TOKEN = "serve-secret-token-" + "z" * 16


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GMP_", "MAIL_PROXY_"))}
    return {**env, **extra}


def test_variables_come_from_files_named_by_setting_or_by_variable(tmp_path: Path) -> None:
    variables = setting_variables()
    assert variables["GMP_API_TOKEN"] == "api_token"
    assert variables["GMP_CLIENT_SYNC_SECRET"] == "client_sync_secret"  # a plugin section's
    (tmp_path / "api_token").write_text(TOKEN + "\n")
    (tmp_path / "GMP_DATABASE_URL").write_text("postgresql://u:p@db/x")
    (tmp_path / "encryption_key").write_text("left to the encryption module\n")
    found = secret_files({}, variables, tmp_path)
    assert found["GMP_API_TOKEN"] == (TOKEN, str(tmp_path / "api_token"))  # one newline off
    assert found["GMP_DATABASE_URL"][0] == "postgresql://u:p@db/x"
    assert "MAIL_PROXY_ENCRYPTION_KEY" not in found  # /run/secrets/encryption_key: its own reader
    # a value in the environment wins over a file
    assert "GMP_API_TOKEN" not in secret_files({"GMP_API_TOKEN": "x"}, variables, tmp_path)


def test_file_variables_point_at_any_path_and_must_be_readable(tmp_path: Path) -> None:
    variables = setting_variables()
    key = tmp_path / "key.txt"
    key.write_text("k3y\n\n")
    env = {"MAIL_PROXY_ENCRYPTION_KEY_FILE": str(key), "GMP_API_TOKEN_FILE": str(key)}
    found = secret_files(env, variables, tmp_path / "none")
    assert found["MAIL_PROXY_ENCRYPTION_KEY"] == ("k3y\n", str(key))  # only one newline off
    assert found["GMP_API_TOKEN"][0] == "k3y\n"
    with pytest.raises(ConfigError, match="GMP_API_TOKEN_FILE: cannot read"):
        secret_files({"GMP_API_TOKEN_FILE": str(tmp_path / "missing")}, variables, tmp_path)


def test_serve_require_key_refuses_without_a_key(tmp_path: Path) -> None:
    env = clean_env(GMP_API_TOKEN=TOKEN, GMP_INSTANCE_DIR=str(tmp_path), GMP_PORT=str(free_port()))
    proc = subprocess.run(
        [MAIL_PROXY, "serve", "--require-key"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc
    assert "no encryption key (required by --require-key)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing created


def test_serve_reads_its_token_and_key_from_file_variables(tmp_path: Path) -> None:
    token_file, key_file = tmp_path / "token", tmp_path / "key"
    token_file.write_text(TOKEN + "\n")
    key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    port = free_port()
    env = clean_env(
        GMP_API_TOKEN_FILE=str(token_file),
        MAIL_PROXY_ENCRYPTION_KEY_FILE=str(key_file),
        GMP_INSTANCE_DIR=str(tmp_path),
        GMP_PORT=str(port),
        GMP_HOST="127.0.0.1",
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [MAIL_PROXY, "serve", "--require-key"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/status", headers={"X-API-Token": TOKEN}
                )
                with urllib.request.urlopen(req, timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    text = log.read_text()
    assert f"GMP_API_TOKEN read from {token_file}" in text
    assert f"MAIL_PROXY_ENCRYPTION_KEY read from {key_file}" in text
    assert TOKEN not in text
