"""The README's "A 5-minute tour", run as written.

The ``bash`` blocks of that section become one script (``set -euo pipefail`` in front), run by
bash in a fresh directory that holds links to the repository's ``scripts/`` and to the
virtualenv running the tests (``.venv``), with a fresh ``GMP_HOME`` and no other ``GMP_*``
variable. The only change from what a reader does: ``GMP_RUN_NO_INSTALL=1``, so
``scripts/run`` starts the instance without reinstalling the packages the other tests are
using at the same time (the install step is what ``scripts/test`` has just done).

It must end with exit 0, a delivered message (the ``.eml`` file the tour's account writes, and
status ``sent``) and the delivery report received by the tour's report receiver.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from support.cli_runner import Cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RECEIVER_PORT = 8099  # the port the tour gives scripts/report-receiver


def tour_script() -> str:
    text = README.read_text()
    section = text.split("## A 5-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert blocks, "no bash block in the README's tour"
    return "set -euo pipefail\n" + "\n".join(blocks)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_tour_delivers_a_message_and_its_report(tmp_path: Path) -> None:
    if not port_is_free(RECEIVER_PORT):
        pytest.fail(f"port {RECEIVER_PORT}, which the README's tour uses, is taken on this machine")
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "scripts").symlink_to(ROOT / "scripts")
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
    script = work / "tour.sh"
    script.write_text(tour_script())
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GMP_", "MAIL_PROXY_"))}
    env.update(GMP_HOME=str(home), GMP_RUN_NO_INSTALL="1")
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the receiver it starts is in its process group
    )
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        out = ""
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        if proc.poll() is None:
            proc.kill()
            out, _ = proc.communicate()
        Cli(home).cleanup()  # the instance, if the tour stopped before `stop demo`
    assert proc.returncode == 0, f"the tour failed (exit {proc.returncode}):\n{out}"

    # the message was delivered: the file transport's .eml, and the status
    eml = work / "outbox" / "order-1001.eml"
    assert eml.is_file(), out
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert msg["Subject"] == "Your order" and msg["To"] == "ann@example.org"
    assert msg["X-Genro-Mail-ID"] == "order-1001"
    assert re.search(r"status\s+sent", out), out  # `messages show`
    assert '"event_type": "sent"' in out or '"event_type":"sent"' in out, out

    # the delivery report reached the receiver and was acknowledged by its {}
    reports = [json.loads(line) for line in (work / "reports.jsonl").read_text().splitlines()]
    items = [i for r in reports for i in r["body"]["delivery_report"]]
    sent = [i for i in items if i["id"] == "order-1001" and "sent_ts" in i]
    assert len(sent) == 1, reports  # once: {} acknowledged it, nothing was sent again
    assert "API reference: http://127.0.0.1:" in out and "/docs" in out
    assert "stopped 'demo'" in out
