"""The message step that notes each message sent through a PEC account.

Sending is ordinary SMTP through the account; the Message-ID the proxy generated at enqueue
(stored with the message, the same on every retry) is what the provider's receipts will
reference. Before each delivery attempt through a PEC account the step notes the message in
``pec_messages``: its recipients (the envelope, Bcc included: the provider issues one
delivery receipt per recipient) and the time, from which the acceptance timeout runs.
"""

from __future__ import annotations

import time

from mail_proxy.core.contracts.extensions import DeliveryContext, MessageStep

from .accounts import is_pec_account
from .settings import SECTION
from .tables import tables_of


class TrackPecMessages(MessageStep):
    """``before_send``: note the message of a PEC account (see the module docstring)."""

    name = "pec"

    async def before_send(self, ctx: DeliveryContext) -> None:
        if not is_pec_account(ctx.account):
            return
        rt = ctx.runtime
        rec = ctx.record
        await tables_of(rt).track(
            tenant_id=rec.tenant_id,
            msg_id=rec.id,
            message_pk=rec.pk,
            account_id=rec.account_id,
            message_id=rec.message_id,
            recipients=ctx.recipients,
            now=time.time(),
            timeout=rt.settings.section(SECTION).pec_acceptance_timeout,
        )
