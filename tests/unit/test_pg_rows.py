"""Rows of the PostgreSQL backend: the byte-exact codec and the SQL text (no database)."""

from __future__ import annotations

import datetime as dt

import pytest

from kafka_retry import DatabaseConfig, Message, Provenance
from kafka_retry.retry._pg_rows import (
    Statements,
    chain_indices,
    clean_text,
    decode_headers,
    encode_headers,
    insert_params,
    row_message,
    to_datetime,
    to_epoch_ms,
)
from kafka_retry.retry.base import Failure

HEADERS = (
    ("trace", b"1"),
    ("trace", b"\x00\xff"),
    ("empty", b""),
    ("null", None),
    ("nul\x00name", b"x"),
    ("ünï", b"\xc3\x28"),
)


def message(attempt: int = 1, provenance: Provenance | None = None) -> Message:
    return Message(
        topic="orders",
        partition=3,
        offset=42,
        key=b"\xffkey",
        value=b"\x00\xfe not json",
        headers=HEADERS,
        timestamp=1_700_000_000_123,
        main_topic="orders",
        attempt=attempt,
        provenance=provenance,
    )


def test_headers_round_trip_byte_exact() -> None:
    """Duplicate, empty, null, NUL-named and non-ASCII headers survive encode and decode."""
    names, values = encode_headers(HEADERS)
    assert names[0] == names[1] == b"trace"
    assert values[3] is None
    assert decode_headers(names, values) == HEADERS


def test_no_headers_round_trip() -> None:
    """An empty header list is two empty arrays, and back (NULL arrays read as empty)."""
    assert encode_headers(()) == ((), ())
    assert decode_headers([], []) == ()
    assert decode_headers(None, None) == ()


def test_mismatched_header_arrays_are_refused() -> None:
    """Arrays of different lengths cannot be decoded silently."""
    with pytest.raises(ValueError, match="2 header names but 1 values"):
        decode_headers([b"a", b"b"], [b"1"])


@pytest.mark.parametrize("epoch_ms", [0, 1, -1, 1_795_787_364_017, 253_402_300_799_000])
def test_epoch_milliseconds_convert_exactly(epoch_ms: int) -> None:
    """Milliseconds to timestamptz and back lose nothing."""
    moment = to_datetime(epoch_ms)
    assert moment.tzinfo is not None
    assert to_epoch_ms(moment) == epoch_ms


def test_clean_text_replaces_what_postgres_refuses() -> None:
    """NUL and lone surrogates are replaced; other text is kept."""
    assert clean_text("ok ünï") == "ok ünï"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert "\udcff" not in clean_text("bad \udcff surrogate")


def test_insert_params_of_a_first_failure() -> None:
    """A main-tier failure is stored with its own position, attempts 1, and clean error text."""
    failure = Failure(message(), "ValueError", "boom\x00", 1_000, "group", final=False)
    params = insert_params(failure, "pending", 61_000)
    assert params[:6] == ("group", "orders", 3, 42, b"\xffkey", b"\x00\xfe not json")
    assert decode_headers(params[6], params[7]) == HEADERS  # type: ignore[arg-type]
    assert params[8:11] == (1_700_000_000_123, 1, "pending")
    assert params[11:13] == (to_datetime(61_000), to_datetime(1_000))
    assert params[13:] == ("ValueError", "boom\ufffd", None, None)


def test_insert_params_keep_the_original_position_of_a_retry() -> None:
    """A failure carrying provenance is stored under the original partition and offset."""
    origin = Provenance(2, "orders", 7, 99, 5, "group", 10, 20, "E", "e")
    retried = Message("retry1.g.orders", 0, 1, None, None, (), 5, "orders", 3, origin)
    params = insert_params(Failure(retried, "E", "e", 30, "group", True), "dead_lettered", 30)
    assert params[1:4] == ("orders", 7, 99)
    assert params[9:11] == (3, "dead_lettered")


def test_row_message_rebuilds_the_message_and_provenance() -> None:
    """A claimed row becomes attempt ``attempts + 1`` with the stored provenance."""
    names, values = encode_headers(HEADERS)
    row = {
        "id": 1,
        "main_topic": "orders",
        "kafka_partition": 3,
        "kafka_offset": 42,
        "message_key": None,
        "message_value": b"\xff",
        "header_names": names,
        "header_values": values,
        "message_timestamp": 5,
        "attempts": 2,
        "due_at": to_datetime(9_000),
        "failed_at": dt.datetime(1970, 1, 1, 0, 0, 8, tzinfo=dt.UTC),
        "last_error_type": "ValueError",
        "last_error": "boom",
        "last_span": None,
    }
    rebuilt = row_message(row, "group")
    assert (rebuilt.topic, rebuilt.partition, rebuilt.offset) == ("orders", 3, 42)
    assert (rebuilt.key, rebuilt.value, rebuilt.headers) == (None, b"\xff", HEADERS)
    assert (rebuilt.attempt, rebuilt.main_topic, rebuilt.timestamp) == (3, "orders", 5)
    assert rebuilt.provenance == Provenance(
        attempts=2,
        original_topic="orders",
        original_partition=3,
        original_offset=42,
        original_timestamp=5,
        group="group",
        failed_at=8_000,
        due_at=9_000,
        error_type="ValueError",
        error_message="boom",
    )
    span = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traced = row_message({**row, "last_span": span}, "group")
    assert traced.provenance is not None and traced.provenance.span == span
    forged = row_message({**row, "last_span": "00-not-a-span"}, "group")
    assert forged.provenance is not None and forged.provenance.span is None


def test_statements_use_the_quoted_table_and_bind_every_value() -> None:
    """Every statement names the quoted table; values appear only as $n placeholders."""
    sql = Statements.of(DatabaseConfig(schema="retries", table="jobs"))
    statements = [
        sql.insert,
        sql.claim,
        sql.due_in,
        sql.succeed,
        sql.fail,
        sql.extend,
        sql.release,
        sql.delete_succeeded,
        sql.counts,
        sql.dead_lettered_count,
    ]
    for statement in statements:
        assert '"retries"."jobs"' in statement
    assert "FOR UPDATE SKIP LOCKED" in sql.claim
    assert sql.insert.count("$") == 17


def keyed(partition: int, key: bytes | None, topic: str = "orders") -> Message:
    return Message(topic, partition, 0, key, None, (), 0, topic, 2)


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("partition", [[0, 2, 4], [1, 3], [5]]),
        ("key", [[0, 1], [2], [3], [4], [5]]),
        ("none", [[0], [1], [2], [3], [4], [5]]),
    ],
)
def test_batches_run_in_chains_as_the_ordering_says(
    ordering: str, expected: list[list[int]]
) -> None:
    """Rows of one partition (or key) run one after another; null keys are independent."""
    batch = [
        keyed(0, b"a"),
        keyed(1, b"a"),
        keyed(0, None),
        keyed(1, None),
        keyed(0, b"b"),
        keyed(0, b"a", topic="prices"),
    ]
    assert chain_indices(batch, ordering) == expected
