"""The bounce parser measured on the real-world corpus, against Sisimai's labels.

``../shared/corpora/bounces/`` holds 252 messages from about 60 mail systems with the
labels Sisimai 4.25.15 gives them (see its README). This test parses every file, compares,
prints a table and asserts floors. Run it with ``-s`` to see the table and, with
``BOUNCE_CORPUS_DETAIL=1``, every disagreement.

**Reason mapping** (Sisimai → ours), decided once here:

* userunknown → user_unknown, hostunknown → host_unknown, mailboxfull → mailbox_full,
  mesgtoobig and exceedlimit (over the recipient's size limit) → message_too_big,
  expired → expired, networkerror → network_error, hasmoved → has_moved, suspend →
  suspended, contenterror and virusdetected → content_rejected, spamdetected → spam_blocked;
* blocked → policy_blocked: Sisimai's "blocked" is a refusal because of the sending IP or
  host — block lists, IP reputation, dynamic ranges, missing PTR, SPF failures — which is
  our policy_blocked ("who sends is refused", see ``model.REASONS``); our spam_blocked is
  narrower, the message itself judged to be spam, i.e. Sisimai's spamdetected. (Had
  spam_blocked been defined to include block lists and IP reputation, about 9 of the 24
  "blocked" recipients would move there and the SPF/DMARC/PTR ones would stay policy:
  either mapping then disagrees on part of them; this definition is the cleaner split.)
* policyviolation, securityerror (authentication failures), rejected (the envelope sender
  refused) and toomanyconn (rate limits) → policy_blocked;
* filtered → user_unknown: in this corpus (and in Sisimai's rules) "filtered" is a
  "User unknown" answer given after DATA or with an X.2.x code, typically by recipient-side
  filters of Japanese mobile carriers; the text says the user does not exist, and so do we;
* notaccept (null MX: the domain accepts no mail) → host_unknown;
* systemerror, systemfull, mailererror, syntaxerror → other;
* onhold and undefined (Sisimai itself undecided) are left out of the reason figure.

**Addresses**: a bounce file counts as right when the set of addresses we report equals the
set labelled (no missing, no extra one); the per-recipient figure is printed too.

**Hard/soft truth**: the first digit of the label's ``status`` (or of ``replycode`` when the
status is empty); recipients with neither are left out. Sisimai invents ``X.0.9xx`` codes
from its reason when the bounce has none, so for those the class is its opinion.

**Non-bounces**: files whose labels are all feedback/vacation/delivered, or empty. Sisimai
4.25.15 predates its DragonFly Mail Agent module and misses one more plain-text bounce
(``rb-issue-368-bug.eml``, "reject reason: Mailbox full"), so empty-label files that are in
fact bounces are listed in ``_UNLABELLED_BOUNCES`` (checked by hand: each one says a message
was not delivered and names the recipient) and counted in their own line, not as
non-bounces.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pytest

from mail_proxy.ee.bounce.parsing import parse_bounce
from support.corpora import corpus

CORPUS = corpus("bounces")

REASON_MAP = {
    "userunknown": "user_unknown",
    "hostunknown": "host_unknown",
    "mailboxfull": "mailbox_full",
    "mesgtoobig": "message_too_big",
    "exceedlimit": "message_too_big",
    "spamdetected": "spam_blocked",
    "blocked": "policy_blocked",
    "policyviolation": "policy_blocked",
    "securityerror": "policy_blocked",
    "rejected": "policy_blocked",
    "toomanyconn": "policy_blocked",
    "filtered": "user_unknown",
    "contenterror": "content_rejected",
    "virusdetected": "content_rejected",
    "expired": "expired",
    "networkerror": "network_error",
    "hasmoved": "has_moved",
    "suspend": "suspended",
    "notaccept": "host_unknown",
    "systemerror": "other",
    "systemfull": "other",
    "mailererror": "other",
    "syntaxerror": "other",
}
EXCLUDED_REASONS = {"onhold", "undefined"}
NON_BOUNCE_REASONS = {"feedback", "vacation", "delivered"}

#: Empty-label files that are bounces (see the module docstring): Sisimai 4.25.15 has no
#: DragonFly module, and misses the "automatic bounce notification" of rb-issue-368.
_UNLABELLED_BOUNCES = {
    f"lhost-dragonfly-{n:02d}.eml" for n in (5, 8, 9, 10, 13, 14, 15, 16, 20, 22, 24, 27, 29)
}
_UNLABELLED_BOUNCES.add("rb-issue-368-bug.eml")

FLOORS = {"address": 97.0, "class": 95.0, "reason": 85.0, "non_bounce": 95.0}


@dataclass
class Tally:
    right: int = 0
    total: int = 0
    misses: list[str] = field(default_factory=list)

    def add(self, ok: bool, note: str) -> None:
        self.total += 1
        self.right += ok
        if not ok:
            self.misses.append(note)

    @property
    def percent(self) -> float:
        return 100.0 * self.right / self.total if self.total else 100.0


def _labels() -> list[dict]:
    path = CORPUS / "labels.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _label_class(result: dict) -> str:
    code = result.get("status") or result.get("replycode") or ""
    return {"5": "hard", "4": "soft"}.get(code[:1], "")


def measure() -> dict[str, Tally]:
    keys = ("address", "recipient", "class", "reason", "non_bounce", "unlabelled", "message_id")
    tallies = {k: Tally() for k in keys}
    for entry in _labels():
        name = entry["file"]
        report = parse_bounce((CORPUS / "messages" / name).read_bytes())
        results = entry["results"]
        failures = [r for r in results if r["reason"] not in NON_BOUNCE_REASONS]
        if not failures:
            if name in _UNLABELLED_BOUNCES:
                tallies["unlabelled"].add(report.is_bounce, f"{name}: not called a bounce")
            else:
                tallies["non_bounce"].add(
                    not report.is_bounce, f"{name}: called a bounce ({report.kind})"
                )
            continue
        ours = {r.address: r for r in report.recipients} if report.is_bounce else {}
        wanted = {r["recipient"].lower() for r in failures}
        tallies["address"].add(
            set(ours) == wanted, f"{name}: got {sorted(ours) or report.kind}, want {sorted(wanted)}"
        )
        for result in failures:
            address = result["recipient"].lower()
            mine = ours.get(address)
            tallies["recipient"].add(mine is not None, f"{name}: {address} missing")
            if mine is None:
                continue
            truth = _label_class(result)
            if truth:
                tallies["class"].add(
                    mine.type == truth,
                    f"{name}: {address} {mine.type} vs {truth} ({result['status']}) [{mine.rule}]",
                )
            if result["reason"] not in EXCLUDED_REASONS:
                expected = REASON_MAP.get(result["reason"], "other")
                tallies["reason"].add(
                    mine.reason == expected,
                    f"{name}: {mine.reason} vs {expected} ({result['reason']}) [{mine.rule}] "
                    f"{mine.diagnostic[:120]}",
                )
        expected_id = (results[0].get("messageid") or "").strip("<>")
        if expected_id:
            got = (report.message_id or "").strip("<>")
            tallies["message_id"].add(got == expected_id, f"{name}: {got!r} vs {expected_id!r}")
    return tallies


@pytest.mark.skipif(not (CORPUS / "labels.jsonl").exists(), reason="bounce corpus not present")
def test_corpus_figures(capsys: pytest.CaptureFixture[str]) -> None:
    tallies = measure()
    rows = [
        ("bounce files with exactly the labelled addresses", "address"),
        ("labelled recipients found", "recipient"),
        ("hard/soft right", "class"),
        ("reason agrees (mapped labels)", "reason"),
        ("non-bounces not called bounces", "non_bounce"),
        ("unlabelled bounces recognised (Sisimai gaps)", "unlabelled"),
        ("original Message-ID recovered (informative)", "message_id"),
    ]
    with capsys.disabled():
        print("\nbounce corpus:", CORPUS, "(pytest -s tests/ee_bounce/test_corpus.py)")
        for title, key in rows:
            t = tallies[key]
            print(f"  {title:<48} {t.right:>4}/{t.total:<4} {t.percent:6.1f} %")
        if os.environ.get("BOUNCE_CORPUS_DETAIL"):
            for key, t in tallies.items():
                for miss in t.misses:
                    print(f"  [{key}] {miss}")
    for key, floor in FLOORS.items():
        assert tallies[key].percent >= floor, (key, tallies[key].misses)
    assert tallies["unlabelled"].percent >= 90.0, tallies["unlabelled"].misses
