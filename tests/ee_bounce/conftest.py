"""The bounce plugin tests' fixture: ``stack`` (bounce_stack.py)."""

from ee_bounce.bounce_stack import stack  # noqa: F401
