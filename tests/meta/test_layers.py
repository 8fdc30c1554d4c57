"""The import direction of the code base, checked on the source (imports made only for type
checking, under ``if TYPE_CHECKING:``, are not dependencies and are not counted).

- core's ``contracts`` import nothing else of core;
- ``plugins`` (hook specs, manager, registries) import contracts; its ``builtin`` module,
  which registers the engine's own services, sits with web and CLI on top;
- ``engine`` imports contracts and plugins; ``web`` and ``cli`` may import anything in core;
- nothing in core imports ``mail_proxy.ce`` or ``mail_proxy.ee``;
- no enterprise package imports ``mail_proxy.ce`` or another enterprise package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "packages/core/src/mail_proxy/core"

#: What each core area may import of core (by dotted prefix below ``mail_proxy.core``).
ALLOWED: dict[str, tuple[str, ...]] = {
    "contracts": ("contracts",),
    "plugins.hookspecs": ("contracts", "plugins.manager", "plugins.registry"),
    "plugins.manager": ("contracts", "plugins.hookspecs", "plugins.registry"),
    "plugins.registry": ("contracts",),
    "plugins": ("contracts", "plugins.manager", "plugins.hookspecs", "plugins.registry"),
    "imap": ("contracts", "imap"),
    "engine": ("contracts", "plugins.manager", "plugins.hookspecs", "plugins.registry", "engine"),
    "plugins.builtin": ("",),
    "plugins.loader": ("",),
    "web": ("",),
    "cli": ("",),
    "testing": ("",),
}


def runtime_imports(path: Path) -> list[str]:
    """Absolute module names imported by ``path`` outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    type_only.add(id(sub))
    names = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def area_of(module: str) -> str:
    for key in sorted(ALLOWED, key=len, reverse=True):
        if module == key or module.startswith(key + "."):
            return key
    raise AssertionError(f"core module {module} is in no known area: add it to ALLOWED")


def core_modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if parts:
            out.append((".".join(parts), path))
    return out


@pytest.mark.parametrize(("module", "path"), core_modules(), ids=lambda v: str(v))
def test_core_imports_follow_the_layers(module: str, path: Path) -> None:
    allowed = ALLOWED[area_of(module)]
    wrong = []
    for name in runtime_imports(path):
        if name.startswith(("mail_proxy.ce", "mail_proxy.ee")):
            wrong.append(name)
        elif name.startswith("mail_proxy.core.") and allowed != ("",):
            inner = name[len("mail_proxy.core.") :]
            if inner == "__version__":
                continue
            if not any(inner == a or inner.startswith(a + ".") for a in allowed):
                wrong.append(name)
    assert not wrong, f"mail_proxy.core.{module} imports {wrong}, outside {allowed}"


def ee_packages() -> list[Path]:
    return sorted(p for p in (ROOT / "packages").glob("ee-*/src/mail_proxy/ee/*") if p.is_dir())


@pytest.mark.parametrize("package", ee_packages(), ids=lambda p: p.name)
def test_enterprise_packages_import_only_core(package: Path) -> None:
    own = f"mail_proxy.ee.{package.name}"
    wrong = [
        f"{path.relative_to(package)}: {name}"
        for path in sorted(package.rglob("*.py"))
        for name in runtime_imports(path)
        if name.startswith("mail_proxy.ce")
        or (name.startswith("mail_proxy.ee") and not name.startswith(own))
    ]
    assert not wrong, f"{own} imports other packages: {wrong}"
