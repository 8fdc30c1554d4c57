"""compose.yaml, the Prometheus and Grafana files it mounts, and the systemd unit, checked
against the image, the configuration table and docs/deployment.md (no container is started:
the image itself runs in test_container.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOYMENT = ROOT / "docs" / "deployment.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
PROXIES = ("proxy-1", "proxy-2")
SERVICES = {"postgres", *PROXIES, "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def documented_variables() -> dict[str, str]:
    """``GMP_*`` variable → setting name, from the table of docs/configuration.md."""
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([a-z_0-9]+)` \|", CONFIGURATION.read_text(), re.M)
    assert len(rows) > 40
    return dict(rows)


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage."""
    text = DOCKERFILE.read_text()
    last = text.rsplit("\nFROM ", 1)[1]
    block = re.search(r"^ENV (.*?)(?:\n(?!\s)|\Z)", last, re.M | re.S)
    assert block
    pairs = re.findall(r"([A-Z_]+)=(\S+)", block.group(1))
    return dict(pairs)


def host_port(mapping: str) -> tuple[int, int]:
    host, _, inside = mapping.rpartition(":")
    return int(host), int(inside)


def test_services_and_their_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    published = {
        name: [host_port(p) for p in svc.get("ports", [])] for name, svc in services.items()
    }
    all_host = [h for ports in published.values() for h, _ in ports]
    assert len(all_host) == len(set(all_host)), "a host port is published twice"
    listen = int(image_env()["GMP_PORT"])
    for name in PROXIES:
        svc = services[name]
        assert svc["build"]["context"] == "."
        assert (ROOT / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert [inside for _, inside in published[name]] == [listen]
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert any(v.endswith(":/var/lib/mail-proxy") for v in svc["volumes"])
        assert svc["image"] == services[PROXIES[0]]["image"]
    assert "healthcheck" in services["postgres"] and not services["postgres"].get("ports")
    # the table of docs/deployment.md names each service with its host port
    doc = DEPLOYMENT.read_text()
    for name, ports in published.items():
        row = next((ln for ln in doc.splitlines() if ln.startswith(f"| `{name}` |")), None)
        assert row, f"docs/deployment.md: no row for the service {name}"
        for host, _ in ports:
            assert f"| {host} |" in row, f"docs/deployment.md: {name} is on port {host}"


def test_proxy_variables_and_secrets_are_settings(compose: dict[str, Any]) -> None:
    documented = documented_variables()
    settings = set(documented.values())
    services = compose["services"]
    secret_sets = []
    for name in PROXIES:
        env = services[name]["environment"]
        for variable in env:
            assert variable in documented, f"{name}: {variable} is not in docs/configuration.md"
        secrets = services[name]["secrets"]
        secret_sets.append(sorted(secrets))
        for secret in secrets:
            # /run/secrets/NAME is read as the setting NAME (encryption_key by its own reader)
            assert secret in settings, f"{name}: secret {secret} is no setting"
    assert secret_sets[0] == secret_sets[1]  # one key for one database: the same secrets
    assert {"api_token", "encryption_key", "database_url"} <= set(secret_sets[0])
    assert (
        services["proxy-1"]["environment"]["GMP_INSTANCE_NAME"]
        != (services["proxy-2"]["environment"]["GMP_INSTANCE_NAME"])
    )
    # every secret file is under deploy/secrets/ and made by deploy/secrets/make
    make = (ROOT / "deploy/secrets/make").read_text()
    for secret, spec in compose["secrets"].items():
        assert spec["file"].startswith("./deploy/secrets/"), secret
        assert re.search(rf"\b{secret}\b", make), f"deploy/secrets/make does not make {secret}"
    used = {s for svc in services.values() for s in svc.get("secrets", [])}
    assert used == set(compose["secrets"])


def test_prometheus_scrapes_both_proxies_with_the_rules(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    prom = compose["services"]["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prom["volumes"] if v.startswith("./"))
    config_file = ROOT / next(h for h, c in mounts.items() if c.endswith("prometheus.yml"))
    config = yaml.safe_load(config_file.read_text())
    [job] = config["scrape_configs"]
    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    assert f'job="{job["job_name"]}"' in alerts  # the job the alert rules select
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    listen = image_env()["GMP_PORT"]
    assert targets == {f"{name}:{listen}" for name in PROXIES}
    rules_inside = config["rule_files"][0]
    assert mounts[next(h for h, c in mounts.items() if c == rules_inside)]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/ci-packages installs it)")
    local = tmp_path / "prometheus.yml"
    local.write_text(
        config_file.read_text().replace(rules_inside, str(ROOT / "deploy/prometheus/alerts.yml"))
    )
    check = subprocess.run(
        [promtool, "check", "config", str(local)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_provisions_the_datasource_and_the_dashboard(compose: dict[str, Any]) -> None:
    graf = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in graf["volumes"] if v.startswith("./"))
    provisioning = ROOT / next(h for h, c in mounts.items() if c == "/etc/grafana/provisioning")
    [ds] = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:" + str(
        host_port(compose["services"]["prometheus"]["ports"][0])[1]
    )
    [provider] = yaml.safe_load((provisioning / "dashboards/genro-mail-proxy.yml").read_text())[
        "providers"
    ]
    dashboard_host = next(h for h, c in mounts.items() if c.endswith(".json"))
    assert (ROOT / dashboard_host).is_file()
    assert mounts[dashboard_host].startswith(provider["options"]["path"] + "/")
    assert "grafana_admin_password" in graf["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]


def test_systemd_unit_runs_serve_with_credentials() -> None:
    unit = (ROOT / "deploy/systemd/genro-mail-proxy.service").read_text()
    assert re.search(r"^ExecStart=\S+/mail-proxy serve --require-key$", unit, re.M)
    documented = documented_variables()
    for variable in re.findall(r"^Environment=([A-Z_]+)=", unit, re.M):
        base = variable.removesuffix("_FILE")
        assert base in documented, f"the unit sets {variable}, not a documented setting"
    credentials = re.findall(r"^LoadCredential=(\w+):", unit, re.M)
    assert set(credentials) == {"api_token", "encryption_key"}
    for name in credentials:
        assert f"_FILE=%d/{name}" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        [analyze, "verify", str(ROOT / "deploy/systemd/genro-mail-proxy.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "is not executable" not in line  # /opt/... is not installed here
    ]
    assert not problems, problems
