"""What the PEC plugin is configured with: its settings section (``pec``) and the fields it
adds to accounts (``pec``, ``imap_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mail_proxy.core.contracts.config import positive, setting

PLUGIN = "pec"
#: The settings section and the account-fields group share the plugin's name.
SECTION = "pec"

#: IMAP settings a PEC account cannot do without (the password may be kept from before).
REQUIRED_MAILBOX = ("imap_host", "imap_user", "imap_password")


@dataclass
class PecSettings:
    """The ``pec`` settings section (docs/configuration.md)."""

    pec_acceptance_timeout: float = setting(
        1800.0,
        "GMP_PEC_ACCEPTANCE_TIMEOUT",
        "PEC: a message sent through a PEC account with no acceptance receipt after this "
        "many seconds gets a pec_timeout event (once).",
        positive(float),
    )
    pec_poll_interval: float = setting(
        60.0,
        "GMP_PEC_POLL_INTERVAL",
        "PEC: longest wait between two reads of a PEC mailbox (seconds; IMAP IDLE, when the "
        "server has it, reads new receipts at once).",
        positive(float),
    )
    pec_timeout_check_interval: float = setting(
        60.0,
        "GMP_PEC_TIMEOUT_CHECK_INTERVAL",
        "PEC: how often messages waiting for their acceptance are checked (seconds).",
        positive(float),
    )
    pec_account_refresh: float = setting(
        30.0,
        "GMP_PEC_ACCOUNT_REFRESH",
        "PEC: how often the list of PEC accounts is re-read, for accounts changed through "
        "another instance (seconds; changes made through this instance apply at once).",
        positive(float),
    )
    pec_retention_seconds: float = setting(
        30 * 86400.0,
        "GMP_PEC_RETENTION_SECONDS",
        "PEC: how long the plugin remembers sent PEC messages and the receipts it read "
        "(seconds; a receipt arriving later is still recorded if its message exists).",
        positive(float),
    )


class PecAccountFields(BaseModel):
    """The fields a PEC account adds to an account body (``POST /account``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    pec: bool = Field(False, description="true: a PEC account, its receipts read from imap_*")
    imap_host: str | None = Field(None, min_length=1, max_length=253)
    imap_port: int | None = Field(None, ge=1, le=65535, description="default 993 (143 no TLS)")
    imap_user: str | None = Field(None, min_length=1, max_length=512)
    imap_password: str | None = Field(None, max_length=4096, description="stored encrypted")
    imap_folder: str = Field("INBOX", min_length=1, max_length=255)
    imap_use_tls: bool = Field(True, description="implicit TLS (IMAPS)")

    @model_validator(mode="after")
    def _mailbox_complete(self) -> PecAccountFields:
        if self.pec:
            missing = [name for name in REQUIRED_MAILBOX if not getattr(self, name)]
            if missing:
                raise ValueError(
                    "a PEC account needs the IMAP settings of its mailbox, where the "
                    f"provider's receipts arrive: missing {', '.join(missing)}"
                )
        for name in ("imap_host", "imap_user", "imap_folder"):
            value = getattr(self, name)
            if value is not None and any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                raise ValueError(f"{name} may not contain control characters")
        if self.imap_folder and not self.imap_folder.isascii():
            raise ValueError("imap_folder: plain ASCII folder names only")
        return self

    @property
    def port(self) -> int:
        """The IMAP port: the one given, else 993 with TLS and 143 without."""
        if self.imap_port is not None:
            return self.imap_port
        return 993 if self.imap_use_tls else 143

    def fingerprint(self) -> tuple[Any, ...]:
        """What a poller depends on: a change means a new connection."""
        return (
            self.imap_host,
            self.port,
            self.imap_user,
            self.imap_password,
            self.imap_folder,
            self.imap_use_tls,
        )
