"""The Grafana dashboard and the Prometheus rules in deploy/ against the real service.

One ``mail-proxy serve`` is started, made to deliver, fail and rate-limit a message and to fail
a delivery-report sync, and its live ``/metrics`` is read. Every series named in a dashboard
query, a dashboard variable or an alert rule must be exported (histograms as ``_bucket``,
``_sum``, ``_count``; counters with ``_total``), and every label a query groups or filters by
must be a label of the series it uses — except:

* ``PLUGIN_METRICS``: series that an installable plugin exports, not core + CE. Panels and rules
  using them must say they need the plugin. Add a name here only with the plugin that will
  export it, and its labels.
* ``PROMETHEUS_METRICS`` and ``TARGET_LABELS``: what Prometheus writes itself for each scrape
  target (``up``; the ``job`` and ``instance`` labels).

Then ``promtool`` checks the rules, runs their unit tests (deploy/prometheus/alerts_test.yml)
and parses every dashboard query. Those tests are skipped only when promtool is missing
(Debian package ``prometheus``, installed by scripts/ci-packages).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from mail_proxy.core.testing.service import ServiceProcess, free_port
from mail_proxy.core.testing.smtp import SmtpTestServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "genro-mail-proxy.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"

#: Series exported by a plugin, not by core + CE: name -> (what panels and rules must say, labels).
PLUGIN_METRICS: dict[str, tuple[str, set[str]]] = {
    # genro-mail-proxy-ee-bounce (packages/ee-bounce)
    "gmp_bounces_total": ("bounce plugin", {"tenant_id", "type", "reason"}),
}
#: Series that Prometheus writes itself for every scrape target, with their own labels.
PROMETHEUS_METRICS: dict[str, set[str]] = {"up": set()}
#: Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance"}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package 'prometheus'; scripts/ci-packages installs it)",
)


# -- reading /metrics ---------------------------------------------------------------------------
@dataclass
class Exposition:
    """Series names a /metrics page exports, with the labels seen on their samples."""

    series: set[str] = field(default_factory=set)
    labels: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exposition:
        expo = cls()
        suffixes = {
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"),
        }
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(maxsplit=3)
                expo.series.update(name + s for s in suffixes.get(kind, ("",)))
            elif line and not line.startswith("#"):
                m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
                assert m, f"unreadable sample line: {line!r}"
                names = re.findall(r'([a-zA-Z_]\w*)="(?:[^"\\]|\\.)*"', m.group(3) or "")
                expo.labels.setdefault(m.group(1), set()).update(names)
        return expo


async def exercise(tmp: Path) -> str:
    """Run the service until its main series have samples; return its /metrics page."""
    async with SmtpTestServer() as smtp:
        smtp.script_rcpt = {"nobody@example.org": "550 5.1.1 no such user"}
        env = {
            "GMP_API_TOKEN": "dashboard-test-token",
            "MAIL_PROXY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
            "GMP_INSTANCE_DIR": str(tmp),
            "GMP_DATABASE_URL": f"sqlite:///{tmp / 'gmp.db'}",
            "GMP_SEND_LOOP_INTERVAL": "0.05",
            "GMP_LOG_LEVEL": "WARNING",
            # a report endpoint that refuses connections: sync failures and last-success age
            "GMP_CLIENT_SYNC_URL": f"http://127.0.0.1:{free_port()}/mail-proxy/sync",
            "GMP_SYNC_INTERVAL": "1",
            "GMP_SYNC_TIMEOUT": "2",
        }
        svc = await ServiceProcess(env, tmp / "service.log").start()
        try:
            for account in (
                {"id": "main", "default": True},
                {"id": "limited", "limit_per_minute": 1},
            ):
                account.update(host="127.0.0.1", port=smtp.port, use_tls=False, starttls=False)
                await svc.call("POST", "/account", json=account)
            base = {"from": "app@example.com", "subject": "dashboard test", "body": "x"}
            messages = [
                {**base, "id": "ok", "to": ["ann@example.org"]},
                {**base, "id": "bad", "to": ["nobody@example.org"]},
                {**base, "id": "lim-1", "to": ["bob@example.org"], "account_id": "limited"},
                {**base, "id": "lim-2", "to": ["bob@example.org"], "account_id": "limited"},
            ]
            answer = await svc.call("POST", "/commands/add-messages", json={"messages": messages})
            assert answer["queued"] == len(messages), answer
            wanted = {
                "gmp_sent_total",
                "gmp_errors_total",
                "gmp_rate_limited_total",
                "gmp_report_sync_failures_total",
                "gmp_report_last_success_age_seconds",
            }
            deadline = time.monotonic() + 30
            async with aiohttp.ClientSession() as session:
                while True:
                    async with session.get(svc.url + "/metrics") as resp:
                        assert resp.status == 200
                        text = await resp.text()
                    missing = wanted - set(Exposition.parse(text).labels)
                    if not missing:
                        return text
                    assert time.monotonic() < deadline, (
                        f"no samples of {sorted(missing)} after 30 s:\n{text}\n"
                        + (tmp / "service.log").read_text()[-3000:]
                    )
                    await asyncio.sleep(0.2)
        finally:
            svc.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Exposition:
    return Exposition.parse(asyncio.run(exercise(tmp_path_factory.mktemp("live"))))


# -- reading PromQL -------------------------------------------------------------------------------
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "atan2", "inf", "nan",
}  # fmt: skip
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
LABEL_MATCHER = r'([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*"'


def grafana_to_promql(expr: str) -> str:
    """Grafana variables replaced by what Prometheus accepts ($__rate_interval -> 5m, ...)."""
    expr = re.sub(r"\$__(?:rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (functions, keywords and labels left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(GROUPING, " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # Grafana variables
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        word, before = m.group(), s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":  # the exponent of 1e3
            continue
        if s[m.end() :].lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def label_names(expr: str) -> set[str]:
    """Labels an expression filters, groups or matches on."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    used = set(re.findall(LABEL_MATCHER, expr))
    for group in re.findall(GROUPING, s):
        used.update(x.strip() for x in group.split(",") if x.strip())
    return used


@dataclass
class Query:
    where: str  # e.g. "panel 'Sent / s by tenant' (A)"
    expr: str  # PromQL, Grafana variables replaced
    extra_labels: set[str] = field(default_factory=set)  # label_values(..., LABEL)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for p in dashboard["panels"]:
        found.append(p)
        found.extend(p.get("panels", []))  # collapsed rows hold their panels
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    queries = []
    for p in panels(dashboard):
        for t in p.get("targets", []):
            where = f"panel {p['title']!r} ({t['refId']})"
            queries.append(Query(where, grafana_to_promql(t["expr"])))
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        text = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
        assert m, f"variable {v['name']}: only label_values(SERIES, LABEL) is checked: {text}"
        queries.append(Query(f"variable ${v['name']}", grafana_to_promql(m[1]), {m[2]}))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def all_queries() -> list[Query]:
    dashboard = json.loads(DASHBOARD.read_text())
    rules = [Query(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in alert_rules()]
    return dashboard_queries(dashboard) + rules


# -- the checks -----------------------------------------------------------------------------------
def test_the_promql_reader_finds_series_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, tenant_id) (rate(gmp_x_bucket{job=~"a"}[5m]))) '
        '/ on (job) group_left sum(up offset 5m) > 1e3 unless absent(gmp_y{k="v"})'
    )
    assert metric_names(expr) == {"gmp_x_bucket", "up", "gmp_y"}
    assert label_names(expr) == {"le", "tenant_id", "job", "k"}
    assert grafana_to_promql('rate(m{a=~"$tenant"}[$__rate_interval])') == 'rate(m{a=~".*"}[5m])'


def test_every_series_in_the_dashboard_and_the_rules_is_exported(live: Exposition) -> None:
    problems = []
    queries = all_queries()
    assert len(queries) > 30
    for q in queries:
        names = metric_names(q.expr)
        if not names:
            problems.append(f"{q.where}: no series found in {q.expr!r}")
        for name in sorted(names):
            if name not in live.series and name not in PLUGIN_METRICS | PROMETHEUS_METRICS:
                problems.append(f"{q.where}: {name} is not exported")
    assert not problems, "\n".join(problems)


def test_every_label_used_belongs_to_the_series_queried(live: Exposition) -> None:
    def labels_of(name: str) -> set[str] | None:
        if name in live.labels:
            return live.labels[name]
        if name in PLUGIN_METRICS:
            return PLUGIN_METRICS[name][1]
        if name in PROMETHEUS_METRICS:
            return PROMETHEUS_METRICS[name]
        return None  # exported without samples: its labels are unknown

    problems, checked = [], 0
    for q in all_queries():
        known = [labels_of(n) for n in metric_names(q.expr)]
        if any(k is None for k in known):
            continue
        allowed = set(TARGET_LABELS).union(*[k for k in known if k is not None])
        unknown = (label_names(q.expr) | q.extra_labels) - allowed
        if unknown:
            problems.append(f"{q.where}: no label {sorted(unknown)} on {metric_names(q.expr)}")
        checked += 1
    assert not problems, "\n".join(problems)
    assert checked > 25  # the exercise gave samples to nearly every series


def test_panels_and_rules_using_plugin_series_say_they_need_the_plugin() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    problems = []
    for p in panels(dashboard):
        for t in p.get("targets", []):
            for name in metric_names(t["expr"]) & set(PLUGIN_METRICS):
                needs = f"needs the {PLUGIN_METRICS[name][0]}"
                if needs not in p["title"] or needs not in p.get("description", "").lower():
                    problems.append(f"panel {p['title']!r} uses {name}: title and description "
                                    f"must say {needs!r}")  # fmt: skip
    for rule in alert_rules():
        for name in metric_names(rule["expr"]) & set(PLUGIN_METRICS):
            plugin = PLUGIN_METRICS[name][0]
            if rule.get("labels", {}).get("requires") != plugin.replace(" ", "-"):
                problems.append(f"rule {rule['alert']} uses {name}: label requires: "
                                f"{plugin.replace(' ', '-')} missing")  # fmt: skip
    assert not problems, "\n".join(problems)


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance", "tenant", "account"} <= variables
    ids, cells, problems = set(), set(), []
    for p in panels(dashboard):
        assert p["id"] not in ids, f"duplicate panel id {p['id']}"
        ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] + g["w"] > 24:
            problems.append(f"{p['title']!r} is wider than the grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append(f"{p['title']!r} overlaps another panel at {x},{y}")
                    break
                cells.add((x, y))
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{p['title']!r}: datasource is not the $datasource variable")
        refs = [t["refId"] for t in p["targets"]]
        if not refs or len(refs) != len(set(refs)):
            problems.append(f"{p['title']!r}: targets missing or refIds repeated")
        for t in p["targets"]:
            used = set(re.findall(r"\$\{?(\w+)\}?", t["expr"])) - {"__rate_interval", "__range"}
            if used - variables:
                problems.append(f"{p['title']!r}: undefined variables {sorted(used - variables)}")
    assert not problems, "\n".join(dict.fromkeys(problems))


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_checks_the_alert_rules() -> None:
    done = promtool("check", "rules", ALERTS.name, cwd=ALERTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert len(fired) >= 3, f"unit tests make only {sorted(fired)} fire"
    done = promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each dashboard query, as a recording rule, goes through Prometheus' own parser."""
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    rules = [{"record": f"dashboard:query_{i}", "expr": q.expr} for i, q in enumerate(queries)]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", path.name, cwd=tmp_path)
    where = "\n".join(f"dashboard:query_{i} = {q.where}" for i, q in enumerate(queries))
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{where}"
