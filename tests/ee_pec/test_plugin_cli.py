"""The PEC commands through the real ``mail-proxy`` script: ``pec parse`` on the two real
receipts of the corpus and on saved mail (no instance), and ``pec enable|status|disable``
against a real running instance whose PEC mailbox is on the test Dovecot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mail_proxy.core.testing.net import free_port
from support.cli_runner import Cli
from support.corpora import corpus
from support.dovecot import Dovecot
from support.pec_provider import build_anomaly, build_receipt

CORPUS = corpus("pec")


def corpus(name: str) -> Path:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"PEC corpus not available ({path})")
    return path


def test_parse_json_reads_the_real_receipts(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    files = [corpus("accettazione.eml"), corpus("errore-consegna.eml")]
    result = cli.ok("pec", "parse", "--json", *map(str, files))
    lines = result.out.splitlines()
    assert len(lines) == 2
    accepted, failed = (json.loads(line) for line in lines)
    keys = ["file", "is_receipt", "kind", "event", "reference", "recipient", "error"]
    assert list(accepted)[: len(keys) + 2] == [*keys, "provider", "ts"]
    assert accepted["file"] == str(files[0])
    assert accepted["is_receipt"] is True
    assert accepted["kind"] == "accettazione" and accepted["event"] == "pec_acceptance"
    assert accepted["reference"] == "<SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@fakepec.it>"
    assert accepted["recipient"] == "rec@fakepec.it"
    assert accepted["error"] is None
    assert accepted["provider"] == "FAKEPEC PEC S.p.A."
    assert accepted["ts"] == "2024-11-15T18:20:38+01:00"

    assert failed["kind"] == "errore-consegna" and failed["event"] == "pec_error"
    # the header is kept as the reference; its disagreement with daticert is a warning
    assert failed["reference"] == "<SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@pec.it>"
    assert any("disagrees with daticert msgid" in w for w in failed["warnings"])
    assert failed["recipient"] == "rec@fakepec.it"
    assert failed["error"] == "no-dest: 5.1.1 - FAKE Pec S.p.A. - indirizzo non valido"
    assert failed["ts"] == "2024-11-15T18:21:03+01:00"


def test_parse_table_not_a_receipt_and_unreadable_files(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    anomaly = tmp_path / "anomalia.eml"
    anomaly.write_bytes(
        build_anomaly(
            original_message_id="<a.1@pec.test>",
            sender="a@pec.test",
            recipients=["b@pec.test"],
            subject="S",
        )
    )
    delivery = tmp_path / "consegna.eml"
    delivery.write_bytes(
        build_receipt(
            "avvenuta-consegna",
            original_message_id="<a.1@pec.test>",
            sender="a@pec.test",
            recipients=["b@pec.test"],
            subject="S",
        )
    )
    table = cli.ok("pec", "parse", str(delivery), str(anomaly))
    header, first, second = table.out.splitlines()
    assert header.split()[:3] == ["FILE", "KIND", "EVENT"]
    assert "avvenuta-consegna" in first and "pec_delivery" in first and "b@pec.test" in first
    assert "(not a receipt)" in second and "anomaly" in second

    lines = cli("pec", "parse", "--json", str(anomaly), str(tmp_path / "missing.eml"))
    assert lines.code == 1
    assert "missing.eml" in lines.err
    (row,) = [json.loads(x) for x in lines.out.splitlines()]
    assert row["is_receipt"] is False and "X-Trasporto: errore" in row["reason"]


def test_without_the_plugin_there_is_no_pec_command(tmp_path: Path) -> None:
    without = Cli(tmp_path, GMP_DISABLED_PLUGINS="pec")("pec", "parse", "x.eml")
    assert without.code == 2


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(tmp_path / "home")
    cli.ok("start", "main", "--port", str(free_port()))
    yield cli
    cli.cleanup()


def test_enable_status_disable_against_a_running_instance(instance: Cli, dovecot: Dovecot) -> None:
    cli = instance
    user, password = dovecot.new_user("cli")
    cli.ok("main", "accounts", "add", "pec1", "--host", "127.0.0.1", "--port", "2525")
    cli.ok(
        "main",
        "pec",
        "enable",
        "pec1",
        "--imap-host",
        dovecot.host,
        "--imap-port",
        str(dovecot.port),
        "--imap-user",
        user,
        "--imap-password",
        password,
        "--no-imap-use-tls",
    )
    accounts = cli.ok("main", "accounts", "list", "--json").json()["accounts"]
    (acc,) = accounts
    assert acc["pec"] is True and acc["imap_user"] == user and acc["imap_password_set"]
    assert acc["host"] == "127.0.0.1" and acc["port"] == 2525  # the rest unchanged
    assert password not in json.dumps(accounts)

    deadline = time.monotonic() + 20
    while True:  # the new account's mailbox is polled at once
        status = cli.ok("main", "pec", "status", "--json").json()
        (entry,) = status["accounts"]
        if entry["polled_here"] and entry["mailbox"] and entry["mailbox"]["uidvalidity"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert entry["poller"]["last_error"] is None
    table = cli.ok("main", "pec", "status").out
    assert "pec1" in table and f"{user}@{dovecot.host}/INBOX" in table
    assert "default" in cli.ok("main", "default", "pec", "status").out

    # enabling again without a password keeps the stored one
    cli.ok("main", "pec", "enable", "pec1", "--imap-folder", "INBOX")
    cli.ok("main", "pec", "disable", "pec1")
    assert cli.ok("main", "pec", "status", "--json").json()["accounts"] == []
    missing = cli("main", "pec", "enable", "nope", "--imap-host", "h", "--imap-user", "u")
    assert missing.code == 1 and "no account 'nope'" in missing.err
