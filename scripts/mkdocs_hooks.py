"""mkdocs hooks (``mkdocs.yml``: ``hooks``): the reference pages that must not drift, generated
at every build from the product itself.

* ``api-reference.md`` and ``openapi.json``: a real ``mail-proxy serve`` is started (SQLite in
  a temporary directory, a random token, a random key), its ``GET /openapi.json`` is saved as
  a static file of the site and rendered as a page (every route with its scope, parameters and
  request body; every schema with its fields);
* ``cli-reference.md``: ``mail-proxy ... --help`` of every command and sub-command, run as a
  user runs them.

``<!-- readme-tour: ... -->`` in a page becomes the code of the README's tour (the code
tests/deploy/test_readme_tour.py runs). And links from a page to a file of the repository outside ``docs/`` (``../bench/README.md``,
``../tests/plugins/gmp_example``): mkdocs cannot publish those, so a link whose target
exists in the repository becomes the path in code (or a link into ``repo_url`` when
``mkdocs.yml`` sets one); a target that does not exist is left alone, and the strict build
fails on it like on any broken link.

Only the plugins of genro-mail-proxy distributions are documented: test and third-party
plugins installed in a development environment are disabled (``GMP_DISABLED_PLUGINS``) for
both. The pages list the plugins they describe. Standard library only (plus mkdocs).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

BIN = Path(sys.executable).parent
MAIL_PROXY = str(BIN / "mail-proxy")
OURS = "genro-mail-proxy"
HELP_COLUMNS = "100"


# -- the environment both generators use -------------------------------------------------------
def _plugins() -> list[dict[str, Any]]:
    out = subprocess.run(
        [MAIL_PROXY, "plugins", "--json"], capture_output=True, text=True, check=True, env=_env()
    ).stdout
    return list(json.loads(out)["plugins"])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GMP_", "MAIL_PROXY_"))}
    env.update(COLUMNS=HELP_COLUMNS, NO_COLOR="1", TERM="dumb", **extra)
    return env


def _documented_env(home: str) -> tuple[dict[str, str], list[str]]:
    plugins = _plugins()
    foreign = [p["name"] for p in plugins if not str(p.get("distribution", "")).startswith(OURS)]
    names = sorted(p["name"] for p in plugins if p["name"] not in foreign)
    env = _env(GMP_HOME=home)
    if foreign:
        env["GMP_DISABLED_PLUGINS"] = ",".join(foreign)
    return env, names


# -- OpenAPI -------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch_openapi(env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Start ``mail-proxy serve``, read ``/openapi.json``, stop it."""
    port = _free_port()
    server_env = {
        **env,
        "GMP_API_TOKEN": secrets.token_urlsafe(24),
        "MAIL_PROXY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "GMP_INSTANCE_DIR": str(workdir),
        "GMP_HOST": "127.0.0.1",
        "GMP_PORT": str(port),
        "GMP_SCHEDULER_ACTIVE": "false",
        "GMP_LOG_LEVEL": "WARNING",
    }
    log = workdir / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([MAIL_PROXY, "serve"], env=server_env, stdout=fh, stderr=fh)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mail-proxy serve exited: {log.read_text()[-2000:]}")
            try:
                url = f"http://127.0.0.1:{port}/openapi.json"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    return dict(json.loads(resp.read()))
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no /openapi.json: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _anchor(name: str) -> str:
    return "schema-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _type(schema: dict[str, Any]) -> str:
    """A short, readable type for a JSON schema (references become links)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts = [_type(s) for s in schema[key] if s.get("type") != "null"]
            nullable = any(s.get("type") == "null" for s in schema[key])
            return " \\| ".join(parts) + (" \\| null" if nullable else "")
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"object of {_type(extra) if isinstance(extra, dict) else 'any'}"
    if isinstance(kind, list):
        return " \\| ".join(kind)
    return str(kind or "any")


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _fields(schema: dict[str, Any]) -> list[str]:
    props = schema.get("properties", {})
    if not props:
        return ["(no fields)" if schema.get("type") == "object" else f"type: {_type(schema)}", ""]
    required = set(schema.get("required", []))
    lines = ["| field | type | required | default | description |", "|---|---|---|---|---|"]
    for name, prop in props.items():
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        lines.append(
            f"| `{name}` | {_type(prop)} | {'yes' if name in required else ''} | {default} | "
            f"{_cell(prop.get('description', ''))} |"
        )
    extra = schema.get("additionalProperties")
    if extra is False:
        lines += ["", "Other fields are refused."]
    return [*lines, ""]


def render_openapi(doc: dict[str, Any], plugins: list[str]) -> str:
    schemas = doc.get("components", {}).get("schemas", {})
    ops: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            tag = (op.get("tags") or ["other"])[0]
            ops.setdefault(tag, []).append((method.upper(), path, op))
    out = [
        "# API reference",
        "",
        f"Every route of genro-mail-proxy {doc['info']['version']} with the plugins "
        f"{', '.join(f'`{p}`' for p in plugins)}, generated at each documentation build from "
        "the server's own OpenAPI document (`GET /openapi.json` of a running `mail-proxy "
        "serve`), itself made from the models that validate the requests: it cannot drift. "
        "The same document: [openapi.json](openapi.json); a running server also shows it at "
        "`/docs`. Conventions, examples and error codes: [REST API](api.md).",
        "",
        "Scopes: `public` (no token), `any` (admin or tenant token), `tenant` (a tenant token "
        "for its own tenant, or the admin token), `admin` (the admin token only). The token "
        "goes in the `X-API-Token` header.",
        "",
    ]
    for tag in sorted(ops, key=lambda t: (t not in ("core", "ce"), t)):
        out += [f"## Routes of `{tag}`", ""]
        for method, path, op in sorted(ops[tag], key=lambda o: (o[1], o[0])):
            out += [f"### `{method} {path}`", "", _cell(op.get("summary", "")), ""]
            out += [f"Scope: `{op.get('x-scope', 'public')}`.", ""]
            params = op.get("parameters", [])
            if params:
                out += [
                    "| parameter | in | type | required | description |",
                    "|---|---|---|---|---|",
                ]
                for p in params:
                    schema = p.get("schema", {})
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {_type(schema)} | "
                        f"{'yes' if p.get('required') else ''} | "
                        f"{_cell(schema.get('description', p.get('description', '')))} |"
                    )
                out.append("")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            if body:
                out += [f"Body (JSON): {_type(body['schema'])}", ""]
    out += ["## Schemas", ""]
    for name in sorted(schemas):
        schema = schemas[name]
        out += [f"### {name} {{#{_anchor(name)}}}", ""]
        if schema.get("description"):
            out += [_cell(schema["description"]), ""]
        out += _fields(schema)
    return "\n".join(out) + "\n"


# -- CLI -----------------------------------------------------------------------------------------
def _help(env: dict[str, str], argv: list[str]) -> str:
    proc = subprocess.run(
        [MAIL_PROXY, *argv, "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mail-proxy {' '.join(argv)} --help failed: {proc.stderr}")
    return "\n".join(line.rstrip() for line in proc.stdout.rstrip().splitlines())


def _commands(env: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(level, argv) of every command and sub-command, from the registry of the installed
    plugins (imported in a subprocess with the same environment)."""
    script = (
        "import json\n"
        "from cyclopts import App\n"
        "from mail_proxy.core.cli.main import load_commands\n"
        "out = []\n"
        "for s in load_commands().all():\n"
        "    module, _, attr = s.target.partition(':')\n"
        "    target = getattr(__import__(module, fromlist=[attr]), attr)\n"
        "    subs = [n for n in target if not n.startswith('-')] if isinstance(target, App) else []\n"
        "    out.append([s.level, s.name, subs])\n"
        "print(json.dumps(out))\n"
    )
    raw = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    ).stdout
    prefix = {"global": [], "instance": ["NAME"], "tenant": ["NAME", "TENANT"]}
    found = []
    for level, name, subs in sorted(json.loads(raw), key=lambda c: (c[0] != "global", c[0], c[1])):
        found.append((level, [*prefix[level], name]))
        found += [(level, [*prefix[level], name, sub]) for sub in sorted(subs)]
    return found


def render_cli(env: dict[str, str], plugins: list[str]) -> str:
    commands = _commands(env)
    with ThreadPoolExecutor(4) as pool:
        top = pool.submit(_help, env, [])
        helps = list(pool.map(lambda c: _help(env, c[1]), commands))
    titles = {
        "global": "Global commands: `mail-proxy COMMAND`",
        "instance": "Instance commands: `mail-proxy NAME COMMAND`",
        "tenant": "Tenant commands: `mail-proxy NAME [TENANT] COMMAND`",
    }
    out = [
        "# CLI reference",
        "",
        "The `--help` of every `mail-proxy` command, generated at each documentation build by "
        "running the commands (plugins: " + ", ".join(f"`{p}`" for p in plugins) + "), so it "
        "cannot drift from the code. `NAME` is an instance, `TENANT` a tenant (left out: the "
        "default tenant). The guide, with examples: [The mail-proxy command line](cli.md).",
        "",
        "```text",
        top.result(),
        "```",
        "",
    ]
    level = None
    for (lvl, argv), text in zip(commands, helps, strict=True):
        if lvl != level:
            level = lvl
            out += [f"## {titles[lvl]}", ""]
        heading = (
            "###" if len(argv) - {"global": 0, "instance": 1, "tenant": 2}[lvl] == 1 else "####"
        )
        out += [f"{heading} `mail-proxy {' '.join(argv)}`", "", "```text", text, "```", ""]
    return "\n".join(out) + "\n"


# -- links out of docs/ --------------------------------------------------------------------
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


TOUR_MARKER = re.compile(r"<!-- readme-tour:[^>]*-->")


def readme_tour(root: Path) -> str:
    """The code of the README's "A 5-minute tour" (the blocks tests/deploy/test_readme_tour.py
    runs), for docs/getting-started.md."""
    text = (root / "README.md").read_text()
    section = text.split("## A 5-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n.*?```", section, re.S)
    if not blocks:
        raise RuntimeError("README.md: no bash block in the tour")
    return "\n\n".join(blocks)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    if TOUR_MARKER.search(markdown):
        tour = readme_tour(root)
        markdown = TOUR_MARKER.sub(lambda _: tour, markdown)
    here = (docs / page.file.src_uri).parent
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def replace(m: re.Match[str]) -> str:
        text, target = m.group(1), m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return m.group(0)
        path, _, fragment = target.partition("#")
        resolved = (here / path).resolve()
        if resolved.is_relative_to(docs) or not resolved.is_relative_to(root):
            return m.group(0)  # a page of the site (checked by mkdocs), or outside the repo
        if not resolved.exists():
            return m.group(0)  # broken: mkdocs reports it, the strict build fails
        rel = resolved.relative_to(root).as_posix()
        if repo_url:
            return f"[{text}]({repo_url}/blob/main/{rel}{'#' + fragment if fragment else ''})"
        return text if f"`{rel}`" in text else f"{text} (`{rel}` in the repository)"

    return LINK.sub(replace, markdown)


# -- the hook --------------------------------------------------------------------------------
def on_files(files: Files, config: Any) -> Files:
    with tempfile.TemporaryDirectory(prefix="gmp-docs-") as tmp:
        env, plugins = _documented_env(tmp)
        doc = fetch_openapi(env, Path(tmp))
        generated = {
            "openapi.json": json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
            "api-reference.md": render_openapi(doc, plugins),
            "cli-reference.md": render_cli(env, plugins),
        }
    for name, content in generated.items():
        if files.get_file_from_path(name) is not None:
            raise RuntimeError(f"docs/{name} is generated: remove the file from docs/")
        files.append(File.generated(config, name, content=content))
    return files
