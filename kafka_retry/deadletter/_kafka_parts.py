"""Pieces of the Kafka dead-letter store: records as entries, destinations, replay plans."""

from __future__ import annotations

from typing import Any

import attrs
from aiokafka import TopicPartition

from kafka_retry.deadletter._ledger import Position
from kafka_retry.deadletter._model import DeadLetterEntry, ReplayTarget, parse_kafka_id
from kafka_retry.deadletter._replay import Mark, fingerprint
from kafka_retry.errors import DeadLetterError
from kafka_retry.message import decode_provenance, split_headers
from kafka_retry.topology import TopicChain


@attrs.define
class ReplayPlan:
    """What a replay selected: marks and where reading stopped per main topic; ids; skips."""

    marks: dict[str, dict[Position, Mark]] = attrs.field(factory=dict)
    stops: dict[str, dict[TopicPartition, int]] = attrs.field(factory=dict)
    ids: list[str] = attrs.field(factory=list)
    already: int = 0

    def add(self, main: str, entry: DeadLetterEntry) -> None:
        """Count ``entry``: as already replayed, or as one to replay."""
        if entry.replayed:
            self.already += 1
        else:
            self.ids.append(f"{main}:{entry.id}")


def destination(chain: TopicChain, target: ReplayTarget) -> str:
    """The topic replays of ``chain``'s dead letters go to.

    Raises:
        DeadLetterError: The chain has no such retry tier.
    """
    if target.tier is None:
        return chain.main
    if target.tier > len(chain.retries):
        raise DeadLetterError(
            f"retry tier {target.tier} does not exist: {chain.main} has "
            f"{len(chain.retries)} retry tier(s) with the configured retry intervals"
        )
    return chain.retries[target.tier - 1]


def position_of(entry: DeadLetterEntry) -> Position:
    """``(partition, offset)`` of a Kafka dead letter."""
    wanted = parse_kafka_id(entry.id)
    return wanted.partition, wanted.offset


def entry_of(chain: TopicChain, record: Any, marks: dict[Position, Mark]) -> DeadLetterEntry:
    """The entry of a dead-letter topic record; replayed if a matching mark exists."""
    original, ours = split_headers(record.headers or ())
    provenance = decode_provenance(ours) if ours else None
    entry = DeadLetterEntry(
        id=f"{record.partition}:{record.offset}",
        main_topic=chain.main,
        source=chain.dead_letter,
        key=record.key,
        value=record.value,
        headers=original,
        timestamp=record.timestamp,
        dead_lettered_at=provenance.failed_at if provenance else record.timestamp,
        provenance=provenance,
    )
    mark = marks.get((record.partition, record.offset))
    if mark is None or mark.fingerprint != fingerprint(entry):
        return entry
    return attrs.evolve(entry, replayed_at=mark.replayed_at, replayed_to=mark.replayed_to)
