"""The test plugin's command: ``mail-proxy hello [NAME]``."""

from __future__ import annotations


def hello(name: str = "world", /, *, shout: bool = False) -> int:
    """Print a greeting.

    Parameters
    ----------
    name
        Who to greet.
    shout
        Upper case.
    """
    text = f"hello {name} from gmp_test_plugin"
    print(text.upper() if shout else text)
    return 0
