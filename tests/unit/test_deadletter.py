"""Dead-letter tools without services: queries, ids, replayed records, the ledger codec, SQL."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from kafka_retry import DeadLetterError, Provenance
from kafka_retry.deadletter import (
    H_REPLAYED_AT,
    H_REPLAYED_FROM,
    DeadLetterEntry,
    DeadLetterQuery,
    ReplayTarget,
)
from kafka_retry.deadletter._clients import produce_all
from kafka_retry.deadletter._kafka_parts import destination
from kafka_retry.deadletter._model import parse_kafka_id, parse_row_id
from kafka_retry.deadletter._pg_sql import query_filter, states
from kafka_retry.deadletter._replay import (
    Mark,
    Outgoing,
    decode_mark,
    encode_mark,
    fingerprint,
    ledger_key,
    parse_ledger_key,
    replayed_record,
)
from kafka_retry.message import HEADER_PREFIX, decode_provenance, split_headers
from kafka_retry.topology import TopicChain

NOW = 1_714_564_800_000
ORIGIN = Provenance(
    attempts=3,
    original_topic="orders",
    original_partition=1,
    original_offset=42,
    original_timestamp=NOW - 5000,
    group="shop",
    failed_at=NOW - 1000,
    due_at=NOW - 1000,
    error_type="builtins.TimeoutError",
    error_message="upstream timed out",
)
ENTRY = DeadLetterEntry(
    id="0:17",
    main_topic="orders",
    source="deadLetter.shop.orders",
    key=b"k",
    value=b"\x00v",
    headers=(("trace", b"1"), ("trace", None)),
    timestamp=NOW - 5000,
    dead_lettered_at=NOW - 1000,
    provenance=ORIGIN,
)


def test_query_matches_time_error_and_replay_state() -> None:
    """Every given condition must hold; errors match in any case; replayed ones are opt-in."""
    assert DeadLetterQuery().matches(ENTRY)
    assert DeadLetterQuery(error="TIMED OUT").matches(ENTRY)
    assert DeadLetterQuery(error="timeouterror: up").matches(ENTRY)
    assert not DeadLetterQuery(error="refused").matches(ENTRY)
    assert DeadLetterQuery(since=NOW - 1000, until=NOW - 1000).matches(ENTRY)
    assert not DeadLetterQuery(since=NOW).matches(ENTRY)
    assert not DeadLetterQuery(until=NOW - 2000).matches(ENTRY)
    replayed = attrs.evolve(ENTRY, replayed_at=NOW, replayed_to="orders")
    assert not DeadLetterQuery().matches(replayed)
    assert DeadLetterQuery(replayed=True).matches(replayed)
    assert not DeadLetterQuery(replayed=True).matches(ENTRY)
    assert DeadLetterQuery(replayed=None).matches(replayed)
    assert DeadLetterQuery(topics="a", ids=[" 1:2 ", ""]).ids == ("1:2",)


def test_kafka_and_row_ids() -> None:
    """Kafka ids are [TOPIC:]PARTITION:OFFSET; row ids are positive numbers."""
    assert parse_kafka_id("3:17") == parse_kafka_id(":3:17")
    found = parse_kafka_id("orders:3:17")
    assert (found.topic, found.partition, found.offset) == ("orders", 3, 17)
    assert found.matches("orders", "deadLetter.g.orders", 3, 17)
    by_dead_letter_topic = parse_kafka_id("deadLetter.g.orders:3:17")
    assert by_dead_letter_topic.matches("orders", "deadLetter.g.orders", 3, 17)
    assert not found.matches("other", "deadLetter.g.other", 3, 17)
    for bad in ("17", "a:b", "t:1:x", "1:2:3:4", "-1:2"):
        with pytest.raises(DeadLetterError, match="kafka backend"):
            parse_kafka_id(bad)
    assert parse_row_id(" 42 ") == 42
    for bad in ("0", "x", "1:2", str(2**63)):
        with pytest.raises(DeadLetterError, match="postgres backend"):
            parse_row_id(bad)


def test_replayed_record_to_main_topic_drops_old_provenance() -> None:
    """Key, value, original headers and timestamp stay; old provenance goes; the origin is noted."""
    record = replayed_record(ENTRY, "orders", "deadLetter.shop.orders:0:17", NOW, None)
    assert (record.topic, record.key, record.value, record.timestamp) == (
        "orders",
        b"k",
        b"\x00v",
        NOW - 5000,
    )
    original, ours = split_headers(record.headers)
    assert original == ENTRY.headers
    assert ours == {
        H_REPLAYED_FROM: b"deadLetter.shop.orders:0:17",
        H_REPLAYED_AT: str(NOW).encode(),
    }
    assert decode_provenance(ours) is None  # not a retry of a failure
    assert all(name.startswith(HEADER_PREFIX) for name, _ in record.headers[2:])


def test_replayed_record_to_a_tier_is_due_now() -> None:
    """A replay to tier k carries provenance with attempts k, due now, the last error kept."""
    record = replayed_record(ENTRY, "retry2.shop.orders", "x:0:17", NOW, 2)
    _, ours = split_headers(record.headers)
    fresh = decode_provenance(ours)
    assert fresh == attrs.evolve(ORIGIN, attempts=2, due_at=NOW)
    bare = attrs.evolve(ENTRY, provenance=None, timestamp=-1)
    record = replayed_record(bare, "retry1.shop.orders", "x:0:17", NOW, 1)
    assert decode_provenance(split_headers(record.headers)[1]) is None
    assert record.timestamp is None


def test_destination_checks_the_tier() -> None:
    """Replays go to the main topic or an existing retry tier."""
    chain = TopicChain("orders", ("retry1.g.orders", "retry2.g.orders"), "deadLetter.g.orders")
    assert destination(chain, ReplayTarget()) == "orders"
    assert destination(chain, ReplayTarget(2)) == "retry2.g.orders"
    with pytest.raises(DeadLetterError, match="retry tier 3 does not exist"):
        destination(chain, ReplayTarget(3))
    with pytest.raises(DeadLetterError, match=">= 1"):
        ReplayTarget(0)
    assert ReplayTarget(2).name == "retry2"


def test_ledger_codec() -> None:
    """Marks round-trip; tombstones and garbage decode to None; keys are PARTITION:OFFSET."""
    mark = Mark(fingerprint(ENTRY), NOW, "orders")
    assert decode_mark(encode_mark(mark)) == mark
    assert decode_mark(None) is None
    assert decode_mark(b"{not json") is None
    assert decode_mark(b'{"at": 1}') is None
    assert parse_ledger_key(ledger_key(3, 17)) == (3, 17)
    assert parse_ledger_key(b"x:1") is None
    assert parse_ledger_key(None) is None


def test_fingerprint_tells_records_apart() -> None:
    """A different value or failure time at the same position is another dead letter."""
    assert fingerprint(ENTRY) == fingerprint(attrs.evolve(ENTRY, id="9:9"))
    assert fingerprint(ENTRY) != fingerprint(attrs.evolve(ENTRY, value=b"\x00w"))
    assert fingerprint(ENTRY) != fingerprint(attrs.evolve(ENTRY, dead_lettered_at=NOW))
    assert fingerprint(attrs.evolve(ENTRY, key=None)) != fingerprint(attrs.evolve(ENTRY, key=b""))


def test_sql_filter_binds_every_value() -> None:
    """The WHERE clause numbers its parameters; values never enter the SQL text."""
    query = DeadLetterQuery(ids=["7", "9"], since=NOW, until=NOW + 1, error="x' OR 1=1")
    where = query_filter("shop", ("orders",), query, states(False))
    assert where.sql == (
        "consumer_group = $1 AND state = ANY($2::text[]) AND main_topic = ANY($3::text[])"
        " AND id = ANY($4::bigint[]) AND failed_at >= $5 AND failed_at <= $6"
        " AND strpos(lower(last_error_type || ': ' || last_error), lower($7)) > 0"
    )
    assert where.params[:4] == ["shop", ["dead_lettered"], ["orders"], [7, 9]]
    assert where.params[-1] == "x' OR 1=1"
    assert states(True) == ["replayed"]
    assert states(None) == ["dead_lettered", "replayed"]
    with pytest.raises(DeadLetterError):
        query_filter("shop", (), DeadLetterQuery(ids=["0:1"]), states(None))


def test_a_header_name_that_was_not_utf8_is_replayed_escaped() -> None:
    """A name kept byte-exact in the table (read with surrogateescape) is producible on replay."""
    name = b"\xff\xfe-id".decode("utf-8", "surrogateescape")
    entry = attrs.evolve(ENTRY, headers=((name, b"1"), ("trace", b"2")))
    record = replayed_record(entry, "orders", "x:0:17", NOW, None)
    original, _ = split_headers(record.headers)
    assert original == (("\\xff\\xfe-id", b"1"), ("trace", b"2"))
    assert all(n.encode("utf-8") for n, _ in record.headers)  # what aiokafka's producer does


class FlakyProducer:
    """Acknowledges every record except ``b"nack"``; refuses to send ``b"refused"`` at all."""

    def __init__(self) -> None:
        self.sent: list[bytes | None] = []

    async def send(self, topic: str, **record: Any) -> asyncio.Future[None]:
        if record["value"] == b"refused":
            raise KafkaTimeoutError("no metadata")
        self.sent.append(record["value"])
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if record["value"] == b"nack":
            ack.set_exception(NotLeaderForPartitionError())
        else:
            ack.set_result(None)
        return ack


async def test_records_sent_before_a_failed_send_are_reported_acknowledged() -> None:
    """A failing send stops the rest; those sent before it and acked are named, to be marked."""
    values = [b"ok-0", b"nack", b"ok-2", b"refused", b"ok-4"]
    producer = FlakyProducer()
    sent = await produce_all(producer, [Outgoing("t", b"k", v, [], None) for v in values])
    assert producer.sent == [b"ok-0", b"nack", b"ok-2"]
    assert sent.acked == [0, 2]
    assert isinstance(sent.error, KafkaTimeoutError)
    with pytest.raises(KafkaTimeoutError):
        sent.raise_error()
