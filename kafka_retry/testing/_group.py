"""Consumer groups of the in-memory broker: members, generations, assignment, offsets.

The protocol is Kafka's eager one, reduced to what a single process needs: a
member joining or leaving (or a subscribed topic appearing) starts a new
generation; every member then revokes all it holds, and once all have, each
gets its share of the partitions, round-robin in join order.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Protocol

from aiokafka import TopicPartition

if TYPE_CHECKING:
    from kafka_retry.testing._broker import MemoryBroker

__all__ = ["ConsumerGroup", "Member"]

_member_ids = itertools.count(1)


def new_member_id(client_id: str) -> str:
    """A member id unique in this process, ordered by creation."""
    return f"{client_id}-{next(_member_ids):06d}"


class Member(Protocol):
    """What a group needs of a member."""

    @property
    def member_id(self) -> str: ...

    @property
    def topics(self) -> frozenset[str]: ...

    def wake(self) -> None:
        """Make a waiting fetch look again (records or a rebalance arrived)."""


class ConsumerGroup:
    """One consumer group: its members, current generation, and committed offsets.

    Args:
        group_id: The group id.
        broker: The broker holding the group's topics.
    """

    def __init__(self, group_id: str, broker: MemoryBroker) -> None:
        self.group_id = group_id
        self._broker = broker
        self.members: dict[str, Member] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.generation = 0
        self._synced: set[str] = set()
        self._assignment: dict[str, frozenset[TopicPartition]] | None = None
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<ConsumerGroup {self.group_id!r} generation={self.generation}>"

    def join(self, member: Member) -> None:
        """Add ``member`` (or note its new subscription) and start a new generation."""
        self.members[member.member_id] = member
        self._rebalance()

    def leave(self, member: Member) -> None:
        """Remove ``member``; the others rebalance. Committed offsets stay."""
        if self.members.pop(member.member_id, None) is not None:
            self._rebalance()

    def topic_created(self, topic: str) -> None:
        """A topic appeared: rebalance if a member subscribes to it."""
        if any(topic in member.topics for member in self.members.values()):
            self._rebalance()

    def records_arrived(self, topic: str) -> None:
        """Wake the members that subscribe to ``topic``."""
        for member in self.members.values():
            if topic in member.topics:
                member.wake()

    def _rebalance(self) -> None:
        self.generation += 1
        self._synced.clear()
        self._assignment = None
        self._broker.touch()
        self._notify()
        for member in self.members.values():
            member.wake()

    def _notify(self) -> None:
        # Waiters hold the old event; a fresh one serves the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    async def sync(self, member: Member) -> tuple[int, frozenset[TopicPartition]]:
        """Wait until every member revoked for the current generation; return its share.

        ``member`` must have revoked its partitions before calling.

        Returns:
            The generation and the partitions ``member`` now holds.
        """
        while True:
            if member.member_id not in self.members:
                return self.generation, frozenset()
            self._synced.add(member.member_id)
            if self._synced >= set(self.members):
                if self._assignment is None:
                    self._assignment = self._assign()
                    self._broker.touch()
                    self._notify()
                return self.generation, self._assignment.get(member.member_id, frozenset())
            changed = self._changed
            await changed.wait()

    def waiting_for(self) -> list[str]:
        """Members that have not revoked for the current generation yet."""
        return sorted(set(self.members) - self._synced)

    def _assign(self) -> dict[str, frozenset[TopicPartition]]:
        shares: dict[str, set[TopicPartition]] = {member_id: set() for member_id in self.members}
        topics = sorted({topic for member in self.members.values() for topic in member.topics})
        turn = 0
        for topic in topics:
            if not self._broker.has_topic(topic):
                continue  # assigned once it is created
            takers = [m for m in self.members.values() if topic in m.topics]
            for partition in range(self._broker.partitions(topic)):
                taker = takers[turn % len(takers)]
                shares[taker.member_id].add(TopicPartition(topic, partition))
                turn += 1
        return {member_id: frozenset(share) for member_id, share in shares.items()}

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Store committed offsets."""
        self.committed.update(offsets)
        self._broker.touch()
