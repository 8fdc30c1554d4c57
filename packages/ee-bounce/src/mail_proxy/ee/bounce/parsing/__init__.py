"""Bounce parsing and classification (no I/O, standard library only).

``parse_bounce(raw)`` reads one returned message and says whether it is a bounce, which
recipients failed, hard or soft, why (a reason category plus the rule that decided it), and
which original message it was (``Message-ID`` and ``X-Genro-Mail-ID``). See
:mod:`.parser` for the steps and :mod:`.classify` for the classification rules.

Addresses are extracted by this package's own rules (no third-party library).
"""

from .model import KINDS, REASONS, BounceReport, RecipientFailure
from .parser import parse_bounce

__all__ = ["KINDS", "REASONS", "BounceReport", "RecipientFailure", "parse_bounce"]
