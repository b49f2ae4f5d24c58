"""Dead letters of the Kafka backend: the dead-letter topics of the main topics.

Listing reads each dead-letter topic from its start to its end at that moment,
outside any consumer group. A replay sends each selected dead letter to its
main topic (or a retry topic), waits for the acks, then records it in the
replay ledger (see :mod:`kafka_retry.deadletter._ledger`); dead letters with a
mark are skipped by later replays. Replays go in windows, so a crash between
the acks and the marks can replay at most one window again, never lose one.
A purge deletes a prefix of each partition (``DeleteRecords``): Kafka cannot
delete records from the middle of a log.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import attrs
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete
from aiokafka.errors import KafkaError

from kafka_retry._kafka import (
    AIOKafkaTransport,
    partition_counts,
    start_admin,
)
from kafka_retry.config import Config
from kafka_retry.deadletter._clients import StoreClients, produce_all
from kafka_retry.deadletter._kafka_parts import ReplayPlan, destination, entry_of, position_of
from kafka_retry.deadletter._ledger import Ledger, Position
from kafka_retry.deadletter._model import (
    DeadLetterEntry,
    DeadLetterQuery,
    ProgressCallback,
    PurgePlan,
    ReplayResult,
    ReplayTarget,
    parse_kafka_id,
)
from kafka_retry.deadletter._reader import Offsets, TopicReader, open_reader
from kafka_retry.deadletter._replay import Mark, fingerprint, replayed_record
from kafka_retry.errors import DeadLetterError
from kafka_retry.topology import TopicChain

__all__ = ["KafkaDeadLetters"]

# Replays whose acks are awaited together before their marks are written.
_WINDOW = 200


class KafkaDeadLetters(StoreClients):
    """Lists, shows, replays and purges the dead letters of the Kafka backend.

    Use as ``async with KafkaDeadLetters(config) as store:``. ``config.topics``
    are the main topics it looks at unless a query names others.

    Args:
        config: The consumer's settings (servers, security, group, naming).
    """

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._admin: Any = None
        self._reader: TopicReader | None = None
        self._ledger: Ledger | None = None

    async def __aenter__(self) -> KafkaDeadLetters:
        try:
            admin = await start_admin(self._config, AIOKafkaTransport())
            self._stack.push_async_callback(admin.close)
            self._reader = await self._stack.enter_async_context(open_reader(self._config))
        except BaseException:
            await self._stack.aclose()
            raise
        self._admin = admin
        self._ledger = Ledger(self._config, admin, self._reader)
        return self

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except KafkaError as exc:
            raise DeadLetterError(f"Kafka at {self._config.bootstrap}: {exc}") from exc

    def _parts(self) -> tuple[Any, TopicReader, Ledger]:
        if self._reader is None or self._ledger is None:
            raise DeadLetterError("use the dead-letter store inside `async with`")
        return self._admin, self._reader, self._ledger

    async def chains(self, query: DeadLetterQuery) -> dict[str, TopicChain]:
        """The chain of each main topic the query looks at.

        Raises:
            DeadLetterError: A main topic does not exist on the broker.
        """
        admin, _, _ = self._parts()
        names = list(query.topics or self._config.topics)
        with self._translated():
            existing = set(await admin.list_topics())
        unknown = [name for name in names if name not in existing]
        if unknown:
            raise DeadLetterError(
                f"unknown topic {', '.join(unknown)}: not found at {self._config.bootstrap}"
            )
        return {name: self._config.chain(name) for name in names}

    async def entries(self, query: DeadLetterQuery) -> AsyncGenerator[DeadLetterEntry, None]:
        """Yield the dead letters the query selects, topic by topic, in offset order per partition.

        Raises:
            DeadLetterError: A main topic is unknown, a malformed id, or a Kafka error.
        """
        _, _, ledger = self._parts()
        for main, chain in (await self.chains(query)).items():
            with self._translated():
                marks = await ledger.load(main)
            async with contextlib.aclosing(self._candidates(chain, query, marks)) as found:
                async for entry in found:
                    if query.matches(entry):
                        yield entry

    async def get(self, text: str, topic: str | None = None) -> DeadLetterEntry:
        """The dead letter ``[TOPIC:]PARTITION:OFFSET`` (``topic`` when the text has none).

        Raises:
            DeadLetterError: Malformed or unknown id, or an ambiguous topic.
        """
        _, _, ledger = self._parts()
        wanted = parse_kafka_id(text)
        main = self._main_for(wanted.topic or topic)
        chain = (await self.chains(DeadLetterQuery(topics=[main])))[main]
        with self._translated():
            marks = await ledger.load(main)
            entry = await self._fetch(chain, wanted.partition, wanted.offset, marks)
        if entry is None:
            where = f"{chain.dead_letter}[{wanted.partition}]@{wanted.offset}"
            raise DeadLetterError(f"no dead letter at {where}")
        return entry

    def _main_for(self, name: str | None) -> str:
        topics = self._config.topics
        if name is None:
            if len(topics) != 1:
                raise DeadLetterError(
                    f"several topics ({', '.join(topics)}): name one, as TOPIC:PARTITION:OFFSET"
                )
            return topics[0]
        for main in topics:
            if name == self._config.chain(main).dead_letter:
                return main
        return name

    async def _candidates(
        self,
        chain: TopicChain,
        query: DeadLetterQuery,
        marks: dict[Position, Mark],
        stops: Offsets | None = None,
        reached: Offsets | None = None,
    ) -> AsyncGenerator[DeadLetterEntry, None]:
        """The query's ids, or every dead letter (up to ``stops``; ``reached`` filled in)."""
        if query.ids:
            for text in query.ids:
                wanted = parse_kafka_id(text)
                if wanted.topic not in (None, chain.main, chain.dead_letter):
                    continue
                with self._translated():
                    entry = await self._fetch(chain, wanted.partition, wanted.offset, marks)
                if entry is not None:
                    yield entry
            return
        async for entry in self._scan(chain, marks, stops, reached):
            yield entry

    async def _partitions(self, chain: TopicChain) -> list[TopicPartition]:
        admin, _, _ = self._parts()
        counts = await partition_counts(admin, [chain.dead_letter])
        return [
            TopicPartition(chain.dead_letter, p) for p in range(counts.get(chain.dead_letter, 0))
        ]

    async def _scan(
        self,
        chain: TopicChain,
        marks: dict[Position, Mark],
        stops: Offsets | None = None,
        reached: Offsets | None = None,
    ) -> AsyncGenerator[DeadLetterEntry, None]:
        _, reader, _ = self._parts()
        with self._translated():
            partitions = await self._partitions(chain)
            scan = reader.scan(partitions, stops=stops, reached=reached)
            async with contextlib.aclosing(scan) as records:
                async for record in records:
                    yield entry_of(chain, record, marks)

    async def _fetch(
        self, chain: TopicChain, partition: int, offset: int, marks: dict[Position, Mark]
    ) -> DeadLetterEntry | None:
        _, reader, _ = self._parts()
        if partition not in range(len(await self._partitions(chain))):
            return None
        tp = TopicPartition(chain.dead_letter, partition)
        async with contextlib.aclosing(
            reader.scan([tp], starts={tp: offset}, stops={tp: offset + 1})
        ) as records:
            async for record in records:
                if record.offset == offset:
                    return entry_of(chain, record, marks)
        return None

    async def replay(
        self,
        query: DeadLetterQuery,
        target: ReplayTarget | None = None,
        *,
        dry_run: bool = False,
        progress: ProgressCallback | None = None,
    ) -> ReplayResult:
        """Send the selected dead letters that were not replayed yet to ``target``.

        Each is recorded in the replay ledger after the broker acknowledged it,
        so running the same replay again sends nothing.

        Raises:
            DeadLetterError: Unknown topic or tier, malformed id, or a Kafka error.
        """
        target = target or ReplayTarget()
        query = attrs.evolve(query, replayed=None)
        chains = await self.chains(query)
        destinations = {main: destination(chain, target) for main, chain in chains.items()}
        plan = await self._plan_replay(chains, query)
        result = ReplayResult(
            target=target,
            selected=len(plan.ids),
            replayed=0,
            already_replayed=plan.already,
            dry_run=dry_run,
            ids=tuple(plan.ids),
        )
        if dry_run or not plan.ids:
            return result
        done = 0
        for main, chain in chains.items():
            async for window in self._windows(chain, query, plan):
                await self._send(chain, window, destinations[main], target.tier)
                done += len(window)
                if progress is not None:
                    progress(done, len(plan.ids))
        return attrs.evolve(result, replayed=done)

    async def _plan_replay(
        self, chains: dict[str, TopicChain], query: DeadLetterQuery
    ) -> ReplayPlan:
        _, _, ledger = self._parts()
        plan = ReplayPlan()
        for main, chain in chains.items():
            with self._translated():
                plan.marks[main] = marks = await ledger.load(main)
            reached = plan.stops[main] = {}
            candidates = self._candidates(chain, query, marks, reached=reached)
            async with contextlib.aclosing(candidates) as found:
                async for entry in found:
                    if query.matches(entry):
                        plan.add(main, entry)
        return plan

    async def _windows(
        self, chain: TopicChain, query: DeadLetterQuery, plan: ReplayPlan
    ) -> AsyncGenerator[list[DeadLetterEntry], None]:
        marks = plan.marks[chain.main]
        window: list[DeadLetterEntry] = []
        # The same records as the plan saw, not those dead-lettered since.
        found = self._candidates(chain, query, marks, stops=plan.stops[chain.main])
        async with contextlib.aclosing(found) as entries:
            async for entry in entries:
                if not entry.replayed and query.matches(entry):
                    window.append(entry)
                if len(window) >= _WINDOW:
                    yield window
                    window = []
        if window:
            yield window

    async def _send(
        self, chain: TopicChain, entries: list[DeadLetterEntry], topic: str, tier: int | None
    ) -> None:
        _, _, ledger = self._parts()
        with self._translated():
            producer = await self._ensure_producer()
            await ledger.ensure(chain.main)
            now = int(time.time() * 1000)
            sent = await produce_all(
                producer,
                [
                    replayed_record(entry, topic, f"{chain.dead_letter}:{entry.id}", now, tier)
                    for entry in entries
                ],
            )
            # Those acknowledged are marked even when another failed: a second
            # replay must not send them again.
            done = [entries[index] for index in sent.acked]
            marks = [(position_of(e), Mark(fingerprint(e), now, topic)) for e in done]
            if marks:
                await ledger.write(producer, chain.main, marks)
            sent.raise_error()

    async def plan_purge(self, query: DeadLetterQuery) -> PurgePlan:
        """Decide what :meth:`purge` deletes: per partition, the longest selected prefix.

        Raises:
            DeadLetterError: The query filters by ids, ``since`` or error text,
                which a prefix cannot honour; or an unknown topic.
        """
        if query.ids or query.since is not None or query.error:
            raise DeadLetterError(
                "a dead-letter topic can only be purged from its start: "
                "select by topic, until and replayed, not by id, since or error"
            )
        _, _, ledger = self._parts()
        plan = PurgePlan(query=query, count=0)
        for main, chain in (await self.chains(query)).items():
            with self._translated():
                marks = await ledger.load(main)
                for tp in await self._partitions(chain):
                    cut, count = await self._prefix(chain, tp, query, marks)
                    if count:
                        plan.cuts[tp.topic, tp.partition] = cut
                        plan.per_topic[main] = plan.per_topic.get(main, 0) + count
        return attrs.evolve(plan, count=sum(plan.per_topic.values()))

    async def _prefix(
        self,
        chain: TopicChain,
        tp: TopicPartition,
        query: DeadLetterQuery,
        marks: dict[Position, Mark],
    ) -> tuple[int, int]:
        _, reader, _ = self._parts()
        reached: Offsets = {}
        async with contextlib.aclosing(reader.scan([tp], reached=reached)) as records:
            count = 0
            async for record in records:
                if not query.matches(entry_of(chain, record, marks)):
                    return record.offset, count
                count += 1
        return reached.get(tp, 0), count

    async def purge(self, plan: PurgePlan) -> int:
        """Delete what ``plan`` selected; return how many dead letters went.

        Raises:
            DeadLetterError: The broker refused (Tansu, for one, cannot delete records).
        """
        admin, _, ledger = self._parts()
        if not plan.cuts:
            return 0
        wanted = {TopicPartition(t, p): RecordsToDelete(cut) for (t, p), cut in plan.cuts.items()}
        try:
            await admin.delete_records(wanted)
        except KafkaError as exc:
            raise DeadLetterError(
                f"the broker at {self._config.bootstrap} did not delete records ({exc}); "
                "it may not support DeleteRecords"
            ) from exc
        await self._forget(plan, ledger)
        return plan.count

    async def _forget(self, plan: PurgePlan, ledger: Ledger) -> None:
        """Tombstone the ledger marks of purged dead letters, so compaction drops them."""
        with self._translated():
            for main, chain in (await self.chains(plan.query)).items():
                marks = await ledger.load(main)
                gone = [
                    (position, None)
                    for position in marks
                    if position[1] < plan.cuts.get((chain.dead_letter, position[0]), -1)
                ]
                if gone:
                    await ledger.write(await self._ensure_producer(), main, gone)
