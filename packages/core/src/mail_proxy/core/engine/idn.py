"""Internationalised domain names: one conversion for every place a domain goes.

The enqueue check (``mail_proxy.ce.api.addresses``), the MIME headers (:mod:`.mime`), the
Message-ID domain and the SMTP envelope (``mail_proxy.ce.transport.addresses``) all use
:func:`ascii_domain`, so a domain accepted at enqueue is the domain that goes on the wire.

IDNA 2008 with the UTS #46 mapping (the ``idna`` package), not the standard library's
``encodings.idna``, which implements IDNA 2003: the two disagree on real names (``straße.de``
is ``xn--strae-oqa.de`` under IDNA 2008 and ``strasse.de`` under IDNA 2003, a different
domain) and IDNA 2003 accepts symbols that registries no longer do.
"""

from __future__ import annotations

import functools
import re

import idna

#: One hostname label: letters, digits, hyphens inside (RFC 1123).
_LDH_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
MAX_DOMAIN = 253


class DomainError(ValueError):
    """Not a valid (internationalised) domain name; the text says why."""


@functools.lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str:
    """The ASCII form of ``domain``: A-labels (``xn--...``) for Unicode labels.

    A plain ASCII hostname is returned unchanged (case kept); ``xn--`` labels are checked to
    be valid A-labels. Raises :class:`DomainError` for anything that is not a hostname (empty
    labels, a trailing dot, ``_``, disallowed code points, over 253 characters).
    """
    if domain.isascii():
        labels = domain.split(".")
        if len(domain) > MAX_DOMAIN or not all(_LDH_LABEL.match(label) for label in labels):
            raise DomainError(f"{domain!r} is not a valid domain name")
        for label in labels:
            if label[:4].lower() == "xn--":
                try:
                    idna.decode(label)
                except idna.IDNAError as exc:
                    raise DomainError(f"{domain!r}: invalid A-label {label!r}: {exc}") from None
        return domain
    try:
        converted = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise DomainError(
            f"{domain!r} is not a valid internationalised domain name: {exc}"
        ) from None
    labels = converted.split(".")
    if len(converted) > MAX_DOMAIN or not all(_LDH_LABEL.match(label) for label in labels):
        raise DomainError(f"{domain!r} is not a valid internationalised domain name")
    return converted
