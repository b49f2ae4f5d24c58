"""Forged provenance headers: parsed defensively, never trusted for the attempt or the wait."""

from __future__ import annotations

import pytest

from kafka_retry import Config, Message
from kafka_retry.message import (
    H_ATTEMPTS,
    H_DUE_AT,
    H_FAILED_AT,
    H_GROUP,
    H_OFFSET,
    H_PARTITION,
    H_TIMESTAMP,
    H_TOPIC,
    decode_provenance,
)
from kafka_retry.testing import TestConsumer

YEAR_9999_MS = 253_402_300_799_000
DELAY = 60.0


def fields(**overrides: bytes) -> dict[str, bytes]:
    """Well-formed provenance fields with some replaced."""
    base = {
        H_ATTEMPTS: b"1",
        H_TOPIC: b"product",
        H_PARTITION: b"0",
        H_OFFSET: b"7",
        H_TIMESTAMP: b"1700000000000",
        H_GROUP: b"shop",
        H_FAILED_AT: b"1700000000000",
        H_DUE_AT: b"1700000060000",
    }
    base.update({f"kafka-retry-{k.replace('_', '-')}": v for k, v in overrides.items()})
    return base


@pytest.mark.parametrize(
    "forged",
    [
        {"attempts": b"-1"},
        {"attempts": b"0"},
        {"attempts": b"abc"},
        {"attempts": b"1" * 30},
        {"attempts": b"\xff\xfe"},
        {"original_partition": b"-5"},
        {"original_offset": b"1e9"},
        {"due_at": b"99999999999999999999"},
        {"failed_at": b"-1"},
    ],
)
def test_malformed_provenance_is_ignored(forged: dict[str, bytes]) -> None:
    """Out-of-range or non-numeric fields make the whole provenance None, not an error."""
    assert decode_provenance(fields(**forged)) is None


def test_long_texts_are_truncated() -> None:
    """A 1 MB error message header is cut to a bounded length."""
    decoded = decode_provenance({**fields(), "kafka-retry-error-message": b"x" * 1_000_000})
    assert decoded is not None
    assert len(decoded.error_message) <= 65_536


def config() -> Config:
    # create_topics off: the test consumer creates the whole chain up front.
    return Config(
        bootstrap_servers="k:9092",
        group="shop",
        topics=["product"],
        retry_intervals=[DELAY, DELAY],
        create_topics=False,
    )


async def test_due_time_in_year_9999_waits_one_delay_at_most() -> None:
    """A forged far-future due time is bounded by the tier delay from first sight."""
    calls: list[tuple[float, Message]] = []
    test: TestConsumer

    async def handler(message: Message) -> None:
        calls.append((test.clock.time(), message))

    test = TestConsumer(config(), {"product": handler})
    retry1 = config().topic_chain("product")[1]
    async with test:
        await test.settle()
        start = test.clock.time()
        await test.publish(retry1, b"v", headers=list(fields(due_at=b"%d" % YEAR_9999_MS).items()))
        await test.advance(DELAY + 1)
    assert len(calls) == 1
    handled_at, message = calls[0]
    assert message.attempt == 2
    assert DELAY - 1 <= handled_at - start <= DELAY + 1


async def test_forged_attempt_counts_do_not_move_a_message_along_the_chain() -> None:
    """attempt -1, "abc" or a million on retry1: attempt 2 there, attempt 3 on retry2."""
    attempts: list[tuple[bytes | None, int]] = []

    async def handler(message: Message) -> None:
        attempts.append((message.key, message.attempt))
        raise RuntimeError("fails")

    retry1 = config().topic_chain("product")[1]
    async with TestConsumer(config(), {"product": handler}) as test:
        await test.settle()
        for forged in (b"-1", b"abc", b"1000000"):
            headers = list(fields(attempts=forged).items())
            await test.publish(retry1, b"v", key=forged, headers=headers)
        await test.drain()
        dead = test.dead_letters("product")
    for forged in (b"-1", b"abc", b"1000000"):
        assert [a for k, a in attempts if k == forged] == [2, 3]
    assert sorted(d.attempts or 0 for d in dead) == [3, 3, 3]
