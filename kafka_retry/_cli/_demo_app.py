"""The demo's shop: sample orders, a handler with a flaky upstream, and a tally of outcomes.

Which orders fail is fixed by their number, so every run ends the same way:

* every 61st order is malformed (not JSON): ``NonRetryableError``, dead-lettered at once;
* every 97th names a discontinued SKU: fails on every attempt, dead-lettered after the last tier;
* every 7th meets the inventory service down once, every 28th twice: it recovers on a retry;
* the rest are handled on the first attempt.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence

import attrs

from kafka_retry._observe import NullObserver
from kafka_retry.errors import NonRetryableError
from kafka_retry.message import Header, Message

OUTCOMES = ("success", "retry", "dead_letter")


def order_id(number: int) -> str:
    """``order-00042``."""
    return f"order-{number:05d}"


def upstream_failures(number: int) -> int:
    """How many attempts of order ``number`` meet the inventory service down."""
    if number % 28 == 0:
        return 2
    return 1 if number % 7 == 0 else 0


def is_malformed(number: int) -> bool:
    """Whether order ``number`` is sent as bytes that are not JSON."""
    return number % 61 == 0


def is_poison(number: int) -> bool:
    """Whether order ``number`` names a discontinued SKU (it can never succeed)."""
    return number % 97 == 0 and not is_malformed(number)


def order_record(number: int) -> tuple[bytes, bytes, list[Header]]:
    """``(key, value, headers)`` of sample order ``number``."""
    key = order_id(number).encode()
    headers: list[Header] = [("source", b"kafka-retry-demo")]
    if is_malformed(number):
        return key, b"\xff\xfe order " + str(number).encode() + b" \x00garbled", headers
    order = {
        "order_id": order_id(number),
        "customer": f"customer-{number % 37:02d}",
        "sku": "DISCONTINUED-7" if is_poison(number) else f"SKU-{number % 13:02d}",
        "quantity": 1 + number % 4,
        "amount_cents": 1999 + 250 * (number % 9),
    }
    return key, json.dumps(order).encode(), headers


@attrs.frozen
class Expected:
    """How a run of ``orders`` orders must end with ``tiers`` retry tiers.

    Attributes:
        handled: Orders that succeed in the end.
        dead_lettered: Orders that end as dead letters.
    """

    handled: int
    dead_lettered: int


def expected(orders: int, tiers: int) -> Expected:
    """What :class:`Shop` does to ``orders`` orders with ``tiers`` retry tiers."""
    dead = 0
    for number in range(1, orders + 1):
        if is_malformed(number) or is_poison(number) or upstream_failures(number) > tiers:
            dead += 1
    return Expected(handled=orders - dead, dead_lettered=dead)


class Shop:
    """The handler: parses the order, reserves stock upstream, records it."""

    def __init__(self) -> None:
        self.handled: set[str] = set()

    async def __call__(self, message: Message) -> None:
        """Handle one order event.

        Raises:
            NonRetryableError: The event is not JSON.
            LookupError: The SKU is discontinued (every attempt).
            ConnectionError: The simulated inventory service is down.
        """
        await asyncio.sleep(0.002)  # the "work"
        try:
            order = json.loads(message.value or b"")
        except ValueError:
            raise NonRetryableError("malformed order: not JSON") from None
        if order["sku"].startswith("DISCONTINUED"):
            raise LookupError(f"{order['sku']} is discontinued")
        number = int(order["order_id"].rpartition("-")[2])
        if message.attempt <= upstream_failures(number):
            raise ConnectionError("inventory service unavailable (simulated outage)")
        self.handled.add(order["order_id"])


@attrs.frozen
class Snapshot:
    """The demo's counts at one moment.

    Attributes:
        tiers: Tier names in chain order.
        counts: Per tier, attempts per outcome (``success``, ``retry``, ``dead_letter``).
        produced: Orders sent so far.
        handled: Distinct orders handled.
    """

    tiers: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    produced: int
    handled: int

    def total(self, outcome: str) -> int:
        """Attempts with ``outcome`` on every tier."""
        return sum(self.counts[tier][outcome] for tier in self.tiers)

    @property
    def dead_lettered(self) -> int:
        """Messages sent to the dead letter."""
        return self.total("dead_letter")

    @property
    def settled(self) -> int:
        """Orders that are done: handled or dead-lettered."""
        return self.handled + self.dead_lettered

    @property
    def waiting(self) -> int:
        """Messages handed to a retry tier that has not finished them yet."""
        finished = sum(sum(self.counts[tier].values()) for tier in self.tiers[1:])
        return max(0, self.total("retry") - finished)


class Tally(NullObserver):
    """An observer counting outcomes per tier (the consumer reports to it).

    Other hooks are the :class:`~kafka_retry._observe.NullObserver`'s: ignored.
    """

    def __init__(self, tiers: Sequence[str]) -> None:
        self.tiers = tuple(tiers)
        self.counts = {tier: dict.fromkeys(OUTCOMES, 0) for tier in self.tiers}
        self.produced = 0

    def snapshot(self, handled: int) -> Snapshot:
        """The counts now."""
        counts = {tier: dict(outcomes) for tier, outcomes in self.counts.items()}
        return Snapshot(self.tiers, counts, self.produced, handled)

    def success_recorder(self, tier: str, topic: str) -> Callable[[float], None]:
        """Count each success of ``tier``."""
        counts = self.counts.get(tier)
        if counts is None:
            return super().success_recorder(tier, topic)

        def record(seconds: float) -> None:
            counts["success"] += 1

        return record

    def handled(self, tier: str, topic: str, outcome: str) -> None:
        """Count one attempt's outcome."""
        if tier in self.counts:
            self.counts[tier][outcome] += 1
