"""The bounce plugin's commands, run as the real ``mail-proxy`` script in a subprocess:

- ``mail-proxy bounce parse --json`` over the whole shared corpus, compared with Sisimai's
  labels (the same comparison and floors as test_corpus.py, but through the command line an
  operator uses), with the figures printed;
- ``mail-proxy NAME bounce show|set|test`` against an instance started with ``mail-proxy
  start`` and a real Dovecot mailbox;
- ``mail-proxy NAME [TENANT] suppressions list|add|remove``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ee_bounce.test_corpus import (
    _UNLABELLED_BOUNCES,
    CORPUS,
    EXCLUDED_REASONS,
    FLOORS,
    NON_BOUNCE_REASONS,
    REASON_MAP,
    Tally,
    _label_class,
    _labels,
)

from mail_proxy.core.testing.net import free_port
from support.cli_runner import Cli
from support.dovecot import Dovecot


@pytest.mark.skipif(not (CORPUS / "labels.jsonl").exists(), reason="bounce corpus not present")
def test_parse_json_on_the_corpus_meets_the_floors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = _labels()
    files = [str(CORPUS / "messages" / e["file"]) for e in labels]
    result = Cli(tmp_path).ok("bounce", "parse", "--json", *files, timeout=120)
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert [Path(line["file"]).name for line in lines] == [e["file"] for e in labels]
    for line in lines:  # the documented shape
        assert {"file", "is_bounce", "recipients", "message_id", "mail_id"} <= set(line)
        for r in line["recipients"]:
            assert set(r) == {"address", "status", "type", "reason", "diagnostic", "rule"}

    t = {k: Tally() for k in ("address", "class", "reason", "non_bounce", "unlabelled")}
    for entry, line in zip(labels, lines, strict=True):
        name = entry["file"]
        failures = [r for r in entry["results"] if r["reason"] not in NON_BOUNCE_REASONS]
        if not failures:
            key = "unlabelled" if name in _UNLABELLED_BOUNCES else "non_bounce"
            ok = line["is_bounce"] if key == "unlabelled" else not line["is_bounce"]
            t[key].add(ok, name)
            continue
        ours = {r["address"]: r for r in line["recipients"]} if line["is_bounce"] else {}
        t["address"].add(set(ours) == {r["recipient"].lower() for r in failures}, name)
        for result_ in failures:
            mine = ours.get(result_["recipient"].lower())
            if mine is None:
                continue
            truth = _label_class(result_)
            if truth:
                t["class"].add(mine["type"] == truth, name)
            if result_["reason"] not in EXCLUDED_REASONS:
                t["reason"].add(mine["reason"] == REASON_MAP.get(result_["reason"], "other"), name)
    with capsys.disabled():
        print("\nmail-proxy bounce parse --json on", CORPUS)
        for title, key in (
            ("bounce files with exactly the labelled addresses", "address"),
            ("hard/soft right (label's status class)", "class"),
            ("reason agrees with Sisimai's (mapped)", "reason"),
            ("non-bounces not called bounces", "non_bounce"),
            ("unlabelled bounces recognised", "unlabelled"),
        ):
            print(f"  {title:<50} {t[key].right:>4}/{t[key].total:<4} {t[key].percent:6.1f} %")
    for key, floor in FLOORS.items():
        assert t[key].percent >= floor, (key, t[key].misses)


def test_parse_table_and_unreadable_file(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    sample = CORPUS / "messages" / "lhost-postfix-01.eml"
    if not sample.exists():
        sample = next((CORPUS / "messages").glob("*postfix*"))
    result = cli.ok("bounce", "parse", str(sample))
    assert "RECIPIENT" in result.out and "bounce" in result.out
    missing = cli("bounce", "parse", str(tmp_path / "nope.eml"))
    assert missing.code == 1 and "nope.eml" in missing.err


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    cli = Cli(tmp_path_factory.mktemp("home"))
    cli.ok("start", "main", "--port", str(free_port()))
    yield cli
    cli.cleanup()


def test_bounce_show_set_test(srv: Cli, dovecot: Dovecot) -> None:
    user, password = dovecot.new_user("cli")
    shown = srv.ok("main", "bounce", "show", "--json").json()
    assert shown["bounce"]["enabled"] is False and shown["mailboxes"] == []

    wrong = srv("main", "bounce", "test")
    assert wrong.code == 1 and "host, user and password" in wrong.err

    srv.ok(
        "main", "bounce", "set", "--host", dovecot.host, "--port", str(dovecot.port),
        "--user", user, "--password", "wrong-password", "--plain",
        "--return-path", "bounces@example.com", "--poll-interval", "5",
    )  # fmt: skip
    refused = srv("main", "bounce", "test")
    assert refused.code == 1
    assert len(refused.err.strip().splitlines()) == 1 and "login" in refused.err.lower()
    assert "wrong-password" not in refused.err + refused.out

    srv.ok("main", "bounce", "set", "--password", password, "--enable")
    dovecot.append(user, b"Subject: hello\r\n\r\nnot a bounce\r\n")
    ok = srv.ok("main", "bounce", "test")
    assert ok.out.strip() == "ok: 1 message(s) in INBOX"
    out = srv.ok("main", "bounce", "show").out
    assert "return_path" in out and "bounces@example.com" in out and password not in out
    assert "password_set" in out and "yes" in out
    config = srv.ok("main", "bounce", "show", "--json").json()
    assert config["bounce"]["enabled"] is True and config["bounce"]["port"] == dovecot.port

    usage = srv("main", "bounce", "set", "--tls", "--plain")
    assert usage.code == 2


def test_suppressions_list_add_remove(srv: Cli) -> None:
    assert "(no suppressed address)" in srv.ok("main", "suppressions", "list").out
    srv.ok("main", "suppressions", "add", "Someone@Example.org", "--note", "asked to stop")
    listed = srv.ok("main", "suppressions", "list", "--json").json()["suppressions"]
    assert [(s["address"], s["source"], s["note"]) for s in listed] == [
        ("someone@example.org", "manual", "asked to stop")
    ]
    assert "someone@example.org" in srv.ok("main", "default", "suppressions", "list").out
    srv.ok("main", "suppressions", "remove", "someone@example.org")
    missing = srv("main", "suppressions", "remove", "someone@example.org")
    assert missing.code == 1 and "not on the suppression list" in missing.err
