"""The postgres retry backend in memory: its own store and pollers on a MemoryRetryTable."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_retry import Config, DatabaseConfig, Message
from kafka_retry.retry._pg_rows import INSERT_COLUMNS, to_datetime
from kafka_retry.retry._pg_table import Outcome
from kafka_retry.testing import MemoryRetryTable, TestConsumer, VirtualClock

ODD = b"\xff\x00\xfe not utf-8 \x80"
HEADERS = [("trace", b"1"), ("trace", b"2"), ("bin", b"\x00\xff")]


def pg_config(**fields: Any) -> Config:
    fields.setdefault("topics", ["product"])
    return Config(
        bootstrap_servers="localhost:9092",
        group="shop",
        retry_backend="postgres",
        database=DatabaseConfig(schema="app", table="retries"),
        **fields,
    )


async def failing(message: Message) -> None:
    raise RuntimeError(f"boom {message.attempt}")


async def test_a_retry_waits_in_the_table_until_its_interval() -> None:
    """Fail once: a pending row at tier 1, handled at 60 s of clock time, then succeeded."""

    async def fail_first(message: Message) -> None:
        if message.attempt == 1:
            raise ValueError("upstream down")

    # A clock on a whole millisecond: due times are kept in milliseconds.
    clock = VirtualClock(start=1_800_000_000.0)
    config = pg_config(retry_intervals=[60])
    async with TestConsumer(config, {"product": fail_first}, clock=clock) as t:
        await t.publish("product", ODD, key=b"k", headers=HEADERS)
        await t.settle()
        assert t.table is not None
        assert t.table.counts("shop").pending == {1: 1}
        await t.advance(59.999)
        assert len(t.calls) == 1
        await t.advance(0.001)
        assert [m.attempt for m in t.calls] == [1, 2]
        counts = t.table.counts("shop")
    retry = t.calls[1]
    assert (retry.topic, retry.key, retry.value, list(retry.headers)) == (
        "product",
        b"k",
        ODD,
        HEADERS,
    )
    assert retry.provenance is not None
    assert retry.provenance.due_at == retry.provenance.failed_at + 60_000
    assert (counts.pending, counts.succeeded, counts.dead_lettered) == ({}, 1, 0)
    # No retry or dead-letter topics with this backend.
    assert not any(t.broker.has_topic(name) for name in config.topic_chain("product")[1:])


async def test_drain_ends_without_polling_the_clock_forward() -> None:
    """An idle poller waits for the next due row or a change, not a timer every second."""
    config = pg_config(retry_intervals=[600, 3600])
    async with TestConsumer(config, {"product": failing}) as t:
        await t.publish("product", b"v", key=b"k")
        await t.drain(max_jumps=20)  # 4,200 s of clock time in a handful of jumps
        dead = t.dead_letters("product")
    assert [m.attempt for m in t.calls] == [1, 2, 3]
    [letter] = dead
    assert (letter.topic, letter.key, letter.value) == ("app.retries", b"k", b"v")
    assert (letter.attempts, letter.error_type, letter.error_message) == (
        3,
        "RuntimeError",
        "boom 3",
    )
    assert letter.provenance is not None
    assert letter.provenance.original_offset == t.calls[0].offset
    assert t.table is not None
    assert t.table.counts("shop").dead_lettered == 1


async def test_retries_of_a_partition_run_in_due_order() -> None:
    """ordering="partition": a claimed batch runs one row after another, earliest first."""
    order: list[bytes] = []

    async def record(message: Message) -> None:
        if message.attempt == 1:
            raise RuntimeError("later")
        order.append(message.value or b"")

    async with TestConsumer(pg_config(retry_intervals=[5]), {"product": record}) as t:
        for value in (b"a", b"b", b"c"):
            await t.publish("product", value)
        await t.drain()
    assert order == [b"a", b"b", b"c"]


def _row_params(**fields: Any) -> list[object]:
    values: dict[str, object] = {
        "consumer_group": "shop",
        "main_topic": "product",
        "kafka_partition": 0,
        "kafka_offset": 7,
        "message_key": b"k",
        "message_value": b"v",
        "header_names": [b"h"],
        "header_values": [b"1"],
        "message_timestamp": 1,
        "attempts": 1,
        "state": "pending",
        "due_at": to_datetime(1_000),
        "failed_at": to_datetime(0),
        "last_error_type": "RuntimeError",
        "last_error": "boom",
        "last_span": None,
        "key_hash": None,
        **fields,
    }
    return [values[column] for column in INSERT_COLUMNS]


async def test_writes_only_touch_rows_still_leased_to_the_writer() -> None:
    """A worker whose lease expired and was taken over cannot record its outcome."""
    clock = VirtualClock(start=10.0)
    table = MemoryRetryTable(clock)
    await table.insert(_row_params())
    [row] = await table.claim("shop", 1, 10, 1.0, "old", ["product"])
    assert await table.claim("shop", 1, 10, 1.0, "new", ["product"]) == []
    # The lease ends (on the table's clock); another worker claims the row.
    clock.advance(1.001)
    [again] = await table.claim("shop", 1, 10, 60.0, "new", ["product"])
    assert again["id"] == row["id"]
    assert await table.write(Outcome(succeeded=[row["id"]]), "old", 1) == 0
    assert table.counts("shop").pending == {1: 1}
    assert await table.write(Outcome(succeeded=[row["id"]]), "new", 1) == 1
    assert table.counts("shop").succeeded == 1
    [stored] = table.rows("shop")
    assert (stored["attempts"], stored["claimed_by"]) == (2, None)


async def test_claims_take_only_due_rows_of_the_tier_and_topics() -> None:
    """Pending rows due by the table's now, of this group, tier and topics; due_in sees the rest."""
    table = MemoryRetryTable(VirtualClock(start=2.0))
    await table.insert(_row_params(kafka_offset=1, due_at=to_datetime(5_000)))
    await table.insert(_row_params(kafka_offset=2, due_at=to_datetime(1_000)))
    await table.insert(_row_params(kafka_offset=3, attempts=2))
    await table.insert(_row_params(kafka_offset=4, consumer_group="other"))
    await table.insert(_row_params(kafka_offset=5, main_topic="price"))
    await table.insert(_row_params(kafka_offset=6, state="dead_lettered"))
    claimed = await table.claim("shop", 1, 10, 60.0, "me", ["product"])
    assert [row["kafka_offset"] for row in claimed] == [2]
    assert claimed[0]["claimed_until"] == to_datetime(62_000)
    assert await table.due_in("shop", 1, ["product"]) == 3.0


async def test_a_row_due_before_the_poller_looks_again_wakes_it() -> None:
    """A poller napping until its poll cap is woken by a row that falls due sooner.

    The PostgreSQL table has the same notices (for rows this process writes) and a
    1 s cap; here the cap is 1,000 s, so only the notice can make the retry run at 5 s.
    """
    clock = VirtualClock(start=1_800_000_000.0)
    config = pg_config(retry_intervals=[5])
    calls: list[float] = []

    async def fail_first(message: Message) -> None:
        calls.append(clock.time())
        if message.attempt == 1:
            raise RuntimeError("once")

    t = TestConsumer(config, {"product": fail_first}, clock=clock)
    assert t.table is not None
    t.table.poll_cap = 1000.0
    async with t:
        await t.advance(1)  # the poller is napping until 1,001 s
        await t.publish("product", b"v")
        await t.advance(5)
        assert [call - 1_800_000_000.0 for call in calls] == [1, 6]


class Fatal(BaseException):
    """Not an Exception: a handler raising it ends the consumer."""


async def test_a_handler_ending_the_consumer_leaves_no_row_leased() -> None:
    """What finished is recorded, the rest released at once, not after the lease (600 s)."""

    async def handle(message: Message) -> None:
        if message.attempt == 1:
            raise RuntimeError("first try")
        if message.value == b"x":
            raise Fatal()

    t = TestConsumer(pg_config(retry_intervals=[5]), {"product": handle})
    with pytest.raises(Fatal):
        async with t:
            for value in (b"y", b"x", b"z"):
                await t.publish("product", value)
            await t.drain()
    assert t.table is not None
    rows = {row["message_value"]: row for row in t.table.rows()}
    assert [m.value for m in t.calls if m.attempt == 2] == [b"y", b"x"]  # z never started
    assert (rows[b"y"]["state"], rows[b"y"]["attempts"]) == ("succeeded", 2)
    for value in (b"x", b"z"):
        assert (rows[value]["state"], rows[value]["attempts"]) == ("pending", 1)
        assert rows[value]["claimed_by"] is None


def _seen(calls: list[Message], key: bytes) -> list[tuple[bytes, int]]:
    return [(m.value or b"", m.attempt) for m in calls if m.key == key]


async def test_ordered_retries_keep_a_keys_later_messages_behind_its_retry() -> None:
    """k1's b and c wait in the table behind a's retry; k2 flows on meanwhile."""
    failed: set[bytes] = set()

    async def fail_a_once(message: Message) -> None:
        if message.value == b"a" and message.value not in failed:
            failed.add(message.value)
            raise RuntimeError("a fails once")

    config = pg_config(retry_intervals=[30], ordered_retries=True)
    async with TestConsumer(config, {"product": fail_a_once}) as t:
        for key, value in ((b"k1", b"a"), (b"k1", b"b"), (b"k2", b"x"), (b"k1", b"c")):
            await t.publish("product", value, key=key)
        await t.settle()
        assert t.table is not None
        counts = t.table.counts("shop")
        assert (counts.pending, counts.waiting) == ({1: 1}, 2)
        await t.publish("product", b"y", key=b"k2")
        await t.drain()
    assert _seen(t.calls, b"k1") == [(b"a", 1), (b"a", 2), (b"b", 1), (b"c", 1)]
    values = [m.value for m in t.calls]
    assert values.index(b"y") < values.index(b"b")
    for message in t.calls:
        if message.value in (b"b", b"c"):
            assert message.provenance is None


async def test_ordered_dead_letter_release_or_dead_letter_the_followers() -> None:
    """A dead-lettered head releases its followers, or with "dead_letter" takes them along."""

    async def fail_a(message: Message) -> None:
        if message.value == b"a":
            raise RuntimeError("a always fails")

    cases = (("release", [b"a", b"a", b"b"], 1), ("dead_letter", [b"a", b"a"], 2))
    for mode, handled, dead_letters in cases:
        config = pg_config(retry_intervals=[5], ordered_retries=True, ordered_dead_letter=mode)
        async with TestConsumer(config, {"product": fail_a}) as t:
            await t.publish("product", b"a", key=b"k")
            await t.publish("product", b"b", key=b"k")
            await t.drain()
            assert t.table is not None
            dead = t.table.counts("shop").dead_lettered
        assert [m.value for m in t.calls] == handled, mode
        assert dead == dead_letters, mode


async def test_claims_take_a_keys_head_only() -> None:
    """A row is claimed only once every earlier row of its key is settled; null keys always."""
    clock = VirtualClock(start=10.0)
    table = MemoryRetryTable(clock)
    hashed = 1234
    await table.insert(
        _row_params(kafka_offset=1, attempts=1, due_at=to_datetime(20_000), key_hash=hashed)
    )
    await table.insert(
        _row_params(
            kafka_offset=2, attempts=0, state="waiting", due_at=to_datetime(0), key_hash=hashed
        )
    )
    await table.insert(
        _row_params(
            kafka_offset=3, attempts=0, state="waiting", due_at=to_datetime(0), key_hash=None
        )
    )
    waiting = await table.claim("shop", 0, 10, 60, "me", ["product"])
    assert [row["kafka_offset"] for row in waiting] == [3]
    clock.advance(10.0)
    [head] = await table.claim("shop", 1, 10, 60, "me", ["product"])
    assert await table.claim("shop", 0, 10, 60, "other", ["product"]) == []
    assert await table.write(Outcome(succeeded=[head["id"]]), "me", 1) == 1
    [follower] = await table.claim("shop", 0, 10, 60, "other", ["product"])
    assert follower["kafka_offset"] == 2
    assert await table.unsettled_keys("shop", "product", 0) == {b"k"}


async def test_a_redelivered_message_waits_behind_its_own_row() -> None:
    """Two rows at one offset (a redelivery stored as waiting): the later id waits."""
    clock = VirtualClock(start=10.0)
    table = MemoryRetryTable(clock)
    await table.insert(_row_params(kafka_offset=1, due_at=to_datetime(0), key_hash=7))
    await table.insert(
        _row_params(kafka_offset=1, attempts=0, state="waiting", due_at=to_datetime(0), key_hash=7)
    )
    assert await table.claim("shop", 0, 10, 60, "me", ["product"]) == []
    [first] = await table.claim("shop", 1, 10, 60, "me", ["product"])
    assert await table.write(Outcome(succeeded=[first["id"]]), "me", 1) == 1
    [again] = await table.claim("shop", 0, 10, 60, "me", ["product"])
    assert again["kafka_offset"] == 1 and again["id"] != first["id"]
