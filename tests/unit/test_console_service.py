"""The console's operations on a store double: page order, group selections, pacing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import attrs
import pytest

from kafka_retry import Config, Provenance
from kafka_retry.console import _service
from kafka_retry.console._selection import Listing, Selection, decode_cursor
from kafka_retry.deadletter import (
    DeadLetterEntry,
    DeadLetterQuery,
    PurgePlan,
    ReplayResult,
    ReplayTarget,
    stable_id,
)

NOW = 1_714_564_800_000
KAFKA = Config(bootstrap_servers="x:1", group="shop", topics=["orders"])


def entry(partition: int, offset: int, message: str) -> DeadLetterEntry:
    """A Kafka dead letter of orders at ``partition``/``offset`` that failed with ``message``."""
    origin = Provenance(1, "orders", partition, offset, NOW, "shop", NOW, NOW, "E", message)
    return DeadLetterEntry(
        id=f"{partition}:{offset}",
        main_topic="orders",
        source="deadLetter.shop.orders",
        key=f"k{partition}-{offset}".encode(),
        value=b"v",
        headers=(),
        timestamp=NOW,
        dead_lettered_at=NOW,
        provenance=origin,
    )


@attrs.define
class Store:
    """The dead-letter store interface over a list; records replays and purges."""

    found: list[DeadLetterEntry]
    replays: list[tuple[str, ...]] = attrs.field(factory=list)
    purged: list[DeadLetterQuery] = attrs.field(factory=list)

    async def entries(self, query: DeadLetterQuery) -> AsyncGenerator[DeadLetterEntry, None]:
        for item in self.found:
            if query.ids and stable_id(item) not in query.ids:
                continue
            if query.matches(item):
                yield item

    async def get(self, text: str, topic: str | None = None) -> DeadLetterEntry:
        raise NotImplementedError

    async def replay(
        self,
        query: DeadLetterQuery,
        target: ReplayTarget | None = None,
        *,
        dry_run: bool = False,
        progress: Any = None,
    ) -> ReplayResult:
        chosen = [stable_id(e) async for e in self.entries(query)]
        if not dry_run:
            self.replays.append(query.ids)
        return ReplayResult(
            target or ReplayTarget(), len(chosen), 0 if dry_run else len(chosen), 0, dry_run
        )

    async def plan_purge(self, query: DeadLetterQuery) -> PurgePlan:
        return PurgePlan(query, len([e async for e in self.entries(query)]))

    async def purge(self, plan: PurgePlan) -> int:
        self.purged.append(plan.query)
        return plan.count


# Partitions interleave as a Kafka scan returns them.
FOUND = [
    entry(1, 0, "order 1 timed out"),
    entry(0, 0, "bad 'x'"),
    entry(1, 1, "order 2 timed out"),
    entry(0, 1, "order 3 timed out"),
    entry(0, 2, "bad 'y'"),
]


async def test_pages_follow_one_order_and_cover_everything_once() -> None:
    """Pages come in (topic, partition, offset) order whatever the scan order, each item once."""
    store = Store(FOUND)
    seen: list[str] = []
    listing = Listing(DeadLetterQuery(replayed=None), limit=2)
    while True:
        page = await _service.list_page(store, KAFKA, listing)  # type: ignore[arg-type]
        seen.extend(stable_id(item) for item in page.items)
        if page.next is None:
            break
        listing = attrs.evolve(listing, after=decode_cursor(page.next))
    assert seen == ["orders:0:0", "orders:0:1", "orders:0:2", "orders:1:0", "orders:1:1"]


async def test_replay_by_group_and_an_empty_group() -> None:
    """A group replays its members only; a group that matches nothing replays nothing at all."""
    store = Store(FOUND)
    group = Selection(topic="orders", group="E: order <n> timed out")
    assert await _service.replay(store, group) == 3  # type: ignore[arg-type]
    assert store.replays == [("orders:1:0", "orders:1:1", "orders:0:1")]
    empty = Selection(topic="orders", group="E: nothing like this")
    assert await _service.replay(store, empty) == 0  # type: ignore[arg-type]
    assert await _service.purge(store, empty) == 0  # type: ignore[arg-type]
    assert len(store.replays) == 1 and store.purged == []  # never "no ids", which means all


async def test_a_rate_replays_in_paced_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """rate=2 sends chunks of two and waits between them (never after the last)."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    store = Store(FOUND)
    paced = Selection(topic="orders", everything=True, rate=2.0)
    assert await _service.replay(store, paced) == 5  # type: ignore[arg-type]
    assert [len(ids) for ids in store.replays] == [2, 2, 1]
    assert len(waits) == 2 and all(0 <= wait <= 1.0 for wait in waits)
