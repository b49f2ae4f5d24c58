"""The lenient record batch reader: reads what aiokafka reads, and header names it cannot."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from aiokafka import codec
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder

from kafka_retry.runtime._v2batch import CorruptBatchError, iter_batches, parse_batch
from tests.record_batches import RawName, Row, built, hand_made, record, varint

BAD = b"\xff\xfe-name"
#: What aiokafka's reader raises for such a name: with its C extensions, then without.
STRICT_FAILURE = (UnicodeDecodeError, CorruptRecordException)


GOOD_ROWS: list[Row] = [
    (b"k", b"v", [("app", b"1"), ("app", b"2")]),
    (None, None, [("", None), ("ünï", b"")]),
    (b"", b"\x00\xff", []),
]
CODECS = [0, 1] + [code for code, has in ((3, codec.has_lz4()), (4, codec.has_zstd())) if has]


def fields(record: Any) -> tuple[Any, ...]:
    return (record.offset, record.timestamp, record.timestamp_type, record.key, record.value,
            record.headers)  # fmt: skip


@pytest.mark.parametrize("compression", CODECS)
def test_reads_what_aiokafka_reads(compression: int) -> None:
    """Offsets, timestamps, keys, values and headers equal aiokafka's own reading."""
    data = built(GOOD_ROWS, compression, base=40)
    batch = parse_batch(data)
    strict = list(DefaultRecordBatch(data))
    got = [
        (r.offset, r.timestamp, r.timestamp_type, r.key, r.value, r.headers) for r in batch.records
    ]
    want = [(r.offset, r.timestamp, r.timestamp_type, r.key, r.value, r.headers) for r in strict]
    assert got == want
    assert (batch.base_offset, batch.next_offset, batch.undecodable) == (40, 43, [])
    assert not batch.is_control
    assert not batch.is_transactional


@pytest.mark.parametrize("compression", CODECS)
def test_header_name_not_utf8_is_decoded_with_surrogateescape(compression: int) -> None:
    """The name round-trips to its bytes; the record and its neighbours are intact."""
    rows: list[Row] = [
        (b"a", b"1", []),
        (b"b", b"2", [("ok", b"x"), (RawName(BAD), b"y"), (RawName(b"\xc3"), None)]),
        (b"c", b"3", [("ok", None)]),
    ]
    data = built(rows, compression, base=7)
    with pytest.raises(STRICT_FAILURE):
        list(DefaultRecordBatch(data))
    batch = parse_batch(data)
    assert [(r.offset, r.key, r.value) for r in batch.records] == [
        (7, b"a", b"1"),
        (8, b"b", b"2"),
        (9, b"c", b"3"),
    ]
    names = [name.encode("utf-8", "surrogateescape") for name, _ in batch.records[1].headers]
    assert names == [b"ok", BAD, b"\xc3"]
    assert [value for _, value in batch.records[1].headers] == [b"x", b"y", None]
    assert batch.undecodable == [(8, BAD), (8, b"\xc3")]


def test_log_append_time_gives_every_record_the_max_timestamp() -> None:
    """With the log-append-time attribute, timestamps are the batch's max timestamp."""
    data = bytearray(built(GOOD_ROWS))
    attributes = struct.unpack_from(">h", data, 21)[0]
    struct.pack_into(">h", data, 21, attributes | 0x08)
    struct.pack_into(">q", data, 35, 1_800_000_000_000)
    batch = parse_batch(data)
    assert {(r.timestamp, r.timestamp_type) for r in batch.records} == {(1_800_000_000_000, 1)}


def test_transactional_and_control_flags() -> None:
    """The attributes' transactional and control bits are reported."""
    data = bytearray(built(GOOD_ROWS, transactional=1, producer_id=5))
    assert parse_batch(data).is_transactional
    struct.pack_into(">h", data, 21, 0x30)
    assert parse_batch(data).is_control


def test_a_hand_made_batch_with_null_and_empty_fields() -> None:
    """The parser follows the format, not one producer's habits."""
    body = record(b"\x00" + varint(-5) + varint(0) + varint(-1) + varint(0) + varint(0))
    body += record(
        b"\x00" + varint(9) + varint(1) + varint(1) + b"k" + varint(-1) + varint(1)
        + varint(2) + b"\x80n" + varint(-1)
    )  # fmt: skip
    batch = parse_batch(hand_made(body, 2))
    first, second = batch.records
    assert (first.offset, first.timestamp, first.key, first.value, first.headers) == (
        0,
        -5,
        None,
        b"",
        [],
    )
    assert (second.offset, second.key, second.value) == (1, b"k", None)
    assert second.headers == [("\udc80n", None)]


# attributes, timestamp delta, offset delta, null key, null value, no headers
MINIMAL = b"\x00\x00\x00\x01\x01\x00"
MALFORMED = {
    "shorter than a batch header": hand_made(b"", 0)[:-1],
    "batch length": hand_made(record(MINIMAL), 1)[:-1],
    "record count": hand_made(record(MINIMAL), 100),
    "does not fit the batch": hand_made(varint(40) + MINIMAL, 1),
    "key of 9 bytes": hand_made(record(b"\x00\x00\x00" + varint(9) + b"k"), 1),
    "negative header count": hand_made(record(MINIMAL[:-1] + varint(-1)), 1),
    "null header name": hand_made(record(MINIMAL[:-1] + varint(1) + varint(-1)), 1),
    "longer than 10 bytes": hand_made(record(b"\x00" + b"\xff" * 11), 1),
    "declares 7 bytes but holds 6": hand_made(record(MINIMAL + b"\x00"), 1),
    "truncated varint": hand_made(record(b"\x00\x80"), 1),
}


@pytest.mark.parametrize(("reason", "data"), MALFORMED.items(), ids=list(MALFORMED))
def test_malformed_batches_are_refused(reason: str, data: bytes) -> None:
    """Every length is checked against the bytes that hold it."""
    with pytest.raises(CorruptBatchError, match=reason):
        parse_batch(data)


def test_magic_other_than_2_is_refused() -> None:
    """Only the v2 format is read."""
    data = bytearray(built(GOOD_ROWS))
    data[16] = 1
    with pytest.raises(CorruptBatchError, match="magic 1"):
        parse_batch(data)


def test_iter_batches_steps_over_old_message_sets_and_a_partial_tail() -> None:
    """Complete v2 batches are yielded with the position after each, from ``start`` on."""
    legacy = LegacyRecordBatchBuilder(1, 0, 1 << 20)
    legacy.append(0, 1_700_000_000_000, b"k", b"v")
    first, second = built(GOOD_ROWS, base=1), built(GOOD_ROWS, base=4)
    old = bytes(legacy.build())
    fetched = old + first + second + second[:30]
    found = [(end, parse_batch(view).base_offset) for end, view in iter_batches(fetched)]
    after_first = len(old) + len(first)
    assert found == [(after_first, 1), (after_first + len(second), 4)]
    assert [end for end, _ in iter_batches(fetched, after_first)] == [after_first + len(second)]
    assert list(iter_batches(b"")) == []
