"""The example plugin's command: ``mail-proxy example-verp MESSAGE_ID DOMAIN``."""

from __future__ import annotations


def verp(message_id: str, domain: str, /) -> int:
    """Print the envelope sender the example plugin uses for a message.

    Parameters
    ----------
    message_id
        The client's message id.
    domain
        The bounce domain (GMP_EXAMPLE_VERP_DOMAIN).
    """
    from .parts import verp_address

    print(verp_address(message_id, domain))
    return 0
