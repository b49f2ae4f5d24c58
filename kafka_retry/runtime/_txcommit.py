"""A tier's commit with ``exactly_once``: its offsets and its hand-offs in one transaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from kafka_retry._transaction import TierTransaction
from kafka_retry.errors import KafkaRetryError

log = logging.getLogger("kafka_retry")

#: Seconds a commit waits for the hand-offs in flight to end and their offsets to be done.
SETTLE_BOUND = 5.0
#: Seconds ending a transaction may take; past that its outcome is unknown and the tier ends.
END_BOUND = 30.0
# A hand-off's offset is marked done by a callback a loop turn after its send:
# the first checks only yield, later ones wait a little.
_SPINS = 20
_POLL = 0.001


class CommittingTier(Protocol):
    """What :func:`commit_in_transaction` needs of a tier."""

    name: str

    def moved(self, partitions: list[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Done positions not committed yet."""

    def positions(self) -> dict[TopicPartition, int | None]:
        """Done position of every held partition."""

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Note offsets as committed."""


async def commit_in_transaction(
    tier: CommittingTier, transaction: TierTransaction, *, final: bool
) -> None:
    """Commit ``tier``'s open transaction with the done offsets of every partition it holds.

    New hand-offs wait meanwhile. The transaction commits only once every
    hand-off in it has its offset done, so after any crash each forward is
    committed together with the offset that stops its record from coming back.
    If that does not happen within :data:`SETTLE_BOUND` (a send retried in an
    outage, a hand-off cancelled half-way) a periodic commit is left for the
    next one; a final one (revoke, stop) aborts the transaction instead, so
    those records are handed off again by whoever reads the partitions next.

    Raises:
        KafkaRetryError: The transaction could not commit or abort (fenced by a
            newer instance with the same transactional id, timed out): nothing
            of it is committed, and the tier ends.
    """
    if transaction.failed is not None:
        return  # the tier ends with that failure; this producer can end no transaction
    async with transaction.held():
        settled = await _settle(tier, transaction)
        if settled:
            offsets = tier.moved()
            if not offsets and not transaction.sent:
                return
            await _end(tier, transaction, "commit", transaction.commit(offsets))
            tier.committed(offsets)
        elif final:
            log.warning(
                "tier %s: hand-offs of transaction %s not all done; aborting it:"
                " their records are handled again",
                tier.name,
                transaction.name,
                extra={"tier": tier.name},
            )
            await _end(tier, transaction, "abort", transaction.abort())
        else:
            log.info(
                "tier %s: hand-offs still in flight after %gs; committing later",
                tier.name,
                SETTLE_BOUND,
                extra={"tier": tier.name},
            )


async def _settle(tier: CommittingTier, transaction: TierTransaction) -> bool:
    """Wait (bounded) until no hand-off is in flight and each one's offset is done."""
    try:
        async with asyncio.timeout(SETTLE_BOUND):
            await transaction.idle()
            spins = 0
            while not transaction.covered(tier.positions()):
                spins += 1
                await asyncio.sleep(0 if spins < _SPINS else _POLL)
    except TimeoutError:
        return False
    return True


async def _end(
    tier: CommittingTier, transaction: TierTransaction, what: str, ending: Awaitable[None]
) -> None:
    try:
        async with asyncio.timeout(END_BOUND):
            await ending
    except (KafkaError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, ProducerFenced):
            reason = (
                "fenced: a newer producer has its transactional id, so another instance"
                " with the same instance_id started, or this one's transaction timed out"
            )
        if isinstance(exc, TimeoutError):
            transaction.failed = exc
        raise KafkaRetryError(
            f"tier {tier.name}: could not {what} transaction {transaction.name} ({reason});"
            " none of its hand-offs or offsets is committed: its records are handled again"
            " after a restart"
        ) from exc
