"""PEC accounts: which accounts are PEC accounts, their mailbox settings, their mailbox key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mail_proxy.core.engine.account_fields import AccountFieldsCodec

from .settings import SECTION

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Account
    from mail_proxy.core.engine.runtime import Runtime

    from .settings import PecAccountFields


def is_pec_account(account: Account) -> bool:
    """Cheap check (no decryption): the account's stored fields say ``pec: true``."""
    stored = (account.extra or {}).get(SECTION)
    return isinstance(stored, dict) and stored.get("pec") is True


def pec_fields(runtime: Runtime, account: Account) -> PecAccountFields | None:
    """The account's PEC settings (the IMAP password decrypted) when it is a PEC account."""
    if not is_pec_account(account):
        return None
    fields: PecAccountFields | None = runtime.local(AccountFieldsCodec).get(account, SECTION)
    return fields if fields is not None and fields.pec else None


def mailbox_key(tenant_id: str, account_id: str) -> str:
    """The key of an account's mailbox in ``pec_mailboxes`` (and in logs)."""
    return f"pec:{tenant_id}:{account_id}"
