"""Delivery outcomes: the writer that commits them in batches (group commit) with their
events, fenced by the claim token, and the per-recipient bookkeeping of an attempt (who got
the message, who was refused, who is retried)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from mail_proxy.core.contracts.extensions import Event
from mail_proxy.core.contracts.model import (
    MessageRecord,
    Outcome,
    RecipientOutcome,
)
from mail_proxy.core.contracts.transport import SendResult

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime


log = logging.getLogger(__name__)
#: How long the outcome writer gathers outcomes before committing them together.
BATCH_WINDOW = 0.005


class OutcomeWriter:
    """Collects outcomes and commits them in batches (one transaction per batch)."""

    def __init__(self, runtime: Runtime, max_batch: int = 500) -> None:
        self.rt = runtime
        self.max_batch = max_batch
        self._buffer: list[tuple[Outcome, MessageRecord, asyncio.Future[None]]] = []
        #: Outcomes not committed yet (buffered or being written), by message pk.
        self._pending: dict[int, Outcome] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="outcome-writer")

    def add(self, outcome: Outcome, rec: MessageRecord) -> asyncio.Future[None]:
        """Queue an outcome of ``rec``; the returned future completes once it is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer.append((outcome, rec, done))
        self._pending[outcome.pk] = outcome
        self._ready.set()
        return done

    def retarget(self, pk: int, claim_token: int) -> None:
        """This instance claimed message ``pk`` again while its outcome waits here: the
        outcome now belongs to the new claim (see ``Dispatcher._adopt``)."""
        outcome = self._pending.get(pk)
        if outcome is not None:
            outcome.claim_token = claim_token

    async def _loop(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            # Let outcomes completing in the next few milliseconds join the batch: one
            # transaction per batch instead of one per message.
            await asyncio.sleep(BATCH_WINDOW)
            await self.flush()

    async def flush(self, retry: bool = True) -> None:
        """Commit what is buffered. With ``retry`` False (shutdown) a failed batch is dropped:
        its messages stay ``sending`` and are retaken when their lease expires."""
        while self._buffer:
            batch, self._buffer = self._buffer[: self.max_batch], self._buffer[self.max_batch :]
            tokens = [o.claim_token for o, *_ in batch]
            try:
                applied = set(await self.rt.storage.record_outcomes([o for o, *_ in batch]))
            except Exception:
                if not retry:
                    log.exception("recording %d outcomes failed at shutdown", len(batch))
                    for outcome, _, done in batch:
                        self._pending.pop(outcome.pk, None)
                        if not done.done():
                            done.set_result(None)
                    continue
                log.exception("recording %d outcomes failed; retrying", len(batch))
                self._buffer[:0] = batch
                await asyncio.sleep(1.0)
                continue
            now = time.time()
            for (outcome, rec, done), token in zip(batch, tokens, strict=True):
                if outcome.pk not in applied and outcome.claim_token != token:
                    self._buffer.append((outcome, rec, done))  # retargeted meanwhile: again
                    self._ready.set()
                    continue
                if self._pending.get(outcome.pk) is outcome:
                    del self._pending[outcome.pk]
                if not done.done():
                    done.set_result(None)
                if outcome.pk not in applied:
                    log.warning("outcome for message pk=%s fenced off (claim retaken)", outcome.pk)
                    continue
                if outcome.kind != "released":
                    self.rt.emit(
                        Event(
                            outcome.kind,
                            rec.tenant_id,
                            rec.account_id,
                            rec.pk,
                            rec.id,
                            outcome.ts,
                            outcome.metadata,
                        )
                    )
                if outcome.kind == "sent" and outcome.metadata.get("created_at"):
                    self.rt.metrics.queue_latency.observe(now - outcome.metadata["created_at"])
            self.rt.wake_reporter()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush(retry=False)


def planned_recipients(rec: MessageRecord) -> list[str]:
    """The envelope recipients of the stored message (none when it cannot be read)."""
    from mail_proxy.core.engine.mime import envelope

    try:
        return envelope(rec.payload)[1]
    except Exception:
        return []


def reply_text(r: RecipientOutcome) -> str:
    return " ".join(str(x) for x in (r.code, r.reply) if x not in (None, "")) or "no reply"


def recipient_answers(todo: list[str], result: SendResult) -> list[RecipientOutcome]:
    """Each tried recipient's state from the transport's result."""
    answers = []
    for address in todo:
        if address in result.perm_failed:
            code, text = result.perm_failed[address]
            answers.append(RecipientOutcome(address, "error", code, text))
        elif address in result.temp_failed:
            code, text = result.temp_failed[address]
            answers.append(RecipientOutcome(address, "deferred", code, text))
        elif address in result.accepted:
            answers.append(RecipientOutcome(address, "sent", 250, result.response or None))
        else:  # a transport that did not say: try this one again
            answers.append(RecipientOutcome(address, "deferred", None, "no answer for it"))
    return answers


def merge_recipients(
    known: list[RecipientOutcome], answers: list[RecipientOutcome]
) -> list[RecipientOutcome]:
    """``known`` with this attempt's answers replacing the same addresses' (order kept)."""
    new = {a.address.lower(): a for a in answers}
    merged = [new.pop(r.address.lower(), r) for r in known]
    return merged + list(new.values())
