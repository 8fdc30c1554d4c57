"""Where the shared corpora are: ``../shared/corpora/<name>`` beside the repository (as in a
developer's checkout and in CI), or ``$GMP_CORPORA/<name>``."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def corpus(name: str) -> Path:
    base = os.environ.get("GMP_CORPORA")
    return Path(base) / name if base else ROOT.parent / "shared" / "corpora" / name
