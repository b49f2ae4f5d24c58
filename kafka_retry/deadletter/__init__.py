"""Dead letters: list, show, replay and purge them, on either retry backend.

The ``kafka-retry dlq`` commands are a thin layer over this package::

    from kafka_retry.deadletter import DeadLetterQuery, open_dead_letters

    async with open_dead_letters(config) as store:
        async for entry in store.entries(DeadLetterQuery(error="timeout")):
            print(entry.main_topic, entry.id, entry.error)
        result = await store.replay(DeadLetterQuery(topics=["orders"]))

Which store :func:`open_dead_letters` returns follows ``config.retry_backend``:
the dead-letter topics (Kafka backend) or the retry table's dead-lettered rows
(postgres backend). Replays are recorded, so running one twice sends nothing
the second time; see each store for how. :func:`failure_fingerprint` groups
dead letters whose errors differ only in numbers, ids and quoted values.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Protocol

from kafka_retry.config import Config
from kafka_retry.deadletter._groups import (
    FailureGroup,
    failure_fingerprint,
    fingerprint_of,
    group_entries,
    stable_id,
)
from kafka_retry.deadletter._kafka import KafkaDeadLetters
from kafka_retry.deadletter._ledger import LEDGER_PREFIX, ledger_topic
from kafka_retry.deadletter._model import (
    DeadLetterEntry,
    DeadLetterQuery,
    ProgressCallback,
    PurgePlan,
    ReplayResult,
    ReplayTarget,
)
from kafka_retry.deadletter._postgres import PostgresDeadLetters
from kafka_retry.deadletter._replay import H_REPLAYED_AT, H_REPLAYED_FROM

__all__ = [
    "H_REPLAYED_AT",
    "H_REPLAYED_FROM",
    "LEDGER_PREFIX",
    "DeadLetterEntry",
    "DeadLetterQuery",
    "DeadLetterStore",
    "FailureGroup",
    "KafkaDeadLetters",
    "PostgresDeadLetters",
    "PurgePlan",
    "ReplayResult",
    "ReplayTarget",
    "failure_fingerprint",
    "fingerprint_of",
    "group_entries",
    "ledger_topic",
    "open_dead_letters",
    "stable_id",
]


class DeadLetterStore(Protocol):
    """What both backends' dead-letter stores offer; use them with ``async with``."""

    async def __aenter__(self) -> DeadLetterStore: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def entries(self, query: DeadLetterQuery) -> AsyncGenerator[DeadLetterEntry, None]:
        """Yield the dead letters ``query`` selects."""
        ...

    async def get(self, text: str, topic: str | None = None) -> DeadLetterEntry:
        """The dead letter with id ``text``."""
        ...

    async def replay(
        self,
        query: DeadLetterQuery,
        target: ReplayTarget | None = None,
        *,
        dry_run: bool = False,
        progress: ProgressCallback | None = None,
    ) -> ReplayResult:
        """Send the selected dead letters not replayed yet to ``target``."""
        ...

    async def plan_purge(self, query: DeadLetterQuery) -> PurgePlan:
        """Decide which dead letters a purge deletes."""
        ...

    async def purge(self, plan: PurgePlan) -> int:
        """Delete what ``plan`` selected; return how many."""
        ...


def open_dead_letters(config: Config) -> DeadLetterStore:
    """The dead-letter store of ``config.retry_backend``, not yet opened.

    Raises:
        ConfigError: The postgres backend without database settings.
    """
    if config.retry_backend == "postgres":
        return PostgresDeadLetters(config)
    return KafkaDeadLetters(config)
