"""A reader of Kafka record batches (magic 2) that decodes header names leniently.

Written from the Kafka record format for :mod:`kafka_retry.runtime._lenient`,
which uses it only for a fetched batch that aiokafka's strict reader failed on.
Header names that are not valid UTF-8 are decoded with ``surrogateescape``, so
``name.encode("utf-8", "surrogateescape")`` gives back their bytes.

Batch: baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic
int8, crc uint32, attributes int16, lastOffsetDelta int32, baseTimestamp int64,
maxTimestamp int64, producerId int64, producerEpoch int16, baseSequence int32,
recordCount int32, then the records (compressed as a whole when attributes say
so). Record: length varint, attributes int8, timestampDelta varlong,
offsetDelta varint, key and value (varint length, -1 for null), header count
varint, then per header a name (varint length) and a value (varint length, -1
for null). Varints are zigzag-encoded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import attrs
from aiokafka import codec

__all__ = ["CorruptBatchError", "LenientBatch", "LenientRecord", "iter_batches", "parse_batch"]

Header = tuple[str, bytes | None]

_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_LOG_OVERHEAD = struct.Struct(">qi")  # baseOffset, batchLength: common to every format
_MAGIC_AT = 16
_CODEC_MASK = 0x07
_LOG_APPEND_TIME = 0x08
_TRANSACTIONAL = 0x10
_CONTROL = 0x20


class CorruptBatchError(ValueError):
    """Raised when bytes do not hold a well-formed record batch of magic 2."""


@attrs.frozen
class LenientRecord:
    """One record of a leniently read batch, shaped like aiokafka's ``DefaultRecord``."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    checksum: None = None


@attrs.frozen
class LenientBatch:
    """A record batch read by :func:`parse_batch`.

    Attributes:
        base_offset: The offset of its first record.
        next_offset: The offset after its last one (``base + lastOffsetDelta + 1``).
        is_control: Whether it is a transaction marker batch.
        is_transactional: Whether it was written in a transaction.
        records: Its records in order.
        undecodable: ``(offset, name bytes)`` of each header name that is not UTF-8.
    """

    base_offset: int
    next_offset: int
    is_control: bool
    is_transactional: bool
    records: list[LenientRecord]
    undecodable: list[tuple[int, bytes]]


_DECODERS: dict[int, Callable[[bytes], bytes]] = {
    code: decode
    for code, name in (
        (1, "gzip_decode"),
        (2, "snappy_decode"),
        (3, "lz4_decode"),
        (4, "zstd_decode"),
    )
    if callable(decode := getattr(codec, name, None))
}


def _varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint (or varlong) at ``pos``; returns it and the position after it."""
    raw = shift = 0
    while True:
        if pos >= len(buf):
            raise CorruptBatchError("truncated varint")
        byte = buf[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptBatchError("varint longer than 10 bytes")


def _bytes(buf: memoryview | bytes, pos: int, what: str) -> tuple[bytes | None, int]:
    """A length-prefixed byte string (length -1: null)."""
    size, pos = _varint(buf, pos)
    if size == -1:
        return None, pos
    end = pos + size
    if size < 0 or end > len(buf):
        raise CorruptBatchError(f"{what} of {size} bytes does not fit its record")
    return bytes(buf[pos:end]), end


def _headers(buf: memoryview | bytes, pos: int) -> tuple[list[Header], list[bytes], int]:
    """The headers of a record; also the names that are not valid UTF-8."""
    count, pos = _varint(buf, pos)
    if count < 0:
        raise CorruptBatchError(f"negative header count {count}")
    headers: list[Header] = []
    undecodable: list[bytes] = []
    for _ in range(count):
        raw, pos = _bytes(buf, pos, "header name")
        if raw is None:
            raise CorruptBatchError("null header name")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            name = raw.decode("utf-8", "surrogateescape")
            undecodable.append(raw)
        value, pos = _bytes(buf, pos, "header value")
        headers.append((name, value))
    return headers, undecodable, pos


def _records_section(attributes: int, data: memoryview) -> memoryview | bytes:
    code = attributes & _CODEC_MASK
    if code == 0:
        return data
    decode = _DECODERS.get(code)
    if decode is None:
        raise CorruptBatchError(f"no decoder for compression codec {code}")
    return decode(bytes(data))


def parse_batch(data: bytes | bytearray | memoryview) -> LenientBatch:
    """Read one record batch of magic 2, decompressing it if needed.

    Header names that are not valid UTF-8 are decoded with ``surrogateescape``;
    everything else is read as aiokafka reads it. The CRC is not checked (the
    caller's strict reader checked it before failing).

    Raises:
        CorruptBatchError: The bytes are not one well-formed batch of magic 2.
        Exception: Whatever the codec raises for a corrupt compressed section.
    """
    view = memoryview(data)
    if len(view) < _BATCH_HEADER.size:
        raise CorruptBatchError(f"{len(view)} bytes are shorter than a batch header")
    fields = _BATCH_HEADER.unpack_from(view)
    base, length, _, magic, _, attributes, last_delta, first_ts, max_ts = fields[:9]
    count = fields[12]
    if magic != 2:
        raise CorruptBatchError(f"magic {magic}, not 2")
    if length != len(view) - _LOG_OVERHEAD.size:
        raise CorruptBatchError(f"batch length {length} for {len(view)} bytes")
    body = _records_section(attributes, view[_BATCH_HEADER.size :])
    if not 0 <= count <= len(body):  # every record takes at least one byte
        raise CorruptBatchError(f"record count {count} for {len(body)} bytes")
    timestamp_type = 1 if attributes & _LOG_APPEND_TIME else 0
    records: list[LenientRecord] = []
    undecodable: list[tuple[int, bytes]] = []
    pos = 0
    for _ in range(count):
        size, pos = _varint(body, pos)
        end = pos + size
        if size < 0 or end > len(body):
            raise CorruptBatchError(f"record of {size} bytes does not fit the batch")
        pos += 1  # record attributes: unused
        ts_delta, pos = _varint(body, pos)
        offset_delta, pos = _varint(body, pos)
        key, pos = _bytes(body, pos, "key")
        value, pos = _bytes(body, pos, "value")
        headers, names, pos = _headers(body, pos)
        if pos != end:
            raise CorruptBatchError(f"record declares {size} bytes but holds {size + pos - end}")
        timestamp = max_ts if timestamp_type else first_ts + ts_delta
        record = LenientRecord(base + offset_delta, timestamp, timestamp_type, key, value, headers)
        records.append(record)
        undecodable.extend((record.offset, name) for name in names)
    control, transactional = bool(attributes & _CONTROL), bool(attributes & _TRANSACTIONAL)
    return LenientBatch(base, base + last_delta + 1, control, transactional, records, undecodable)


def iter_batches(fetched: bytes | memoryview, start: int = 0) -> Iterator[tuple[int, memoryview]]:
    """Each complete batch of magic 2 in a fetched partition's bytes, from byte ``start`` on.

    Yields the position after the batch and the batch. Older message sets
    (magic 0 and 1) are stepped over: they have no headers. A fetch may end
    with a partial batch, which is left out.
    """
    view = memoryview(fetched)
    pos = start
    while pos + _BATCH_HEADER.size <= len(view):
        _, length = _LOG_OVERHEAD.unpack_from(view, pos)
        end = pos + _LOG_OVERHEAD.size + length
        if length < 0 or end > len(view):
            return
        if view[pos + _MAGIC_AT] == 2:
            yield end, view[pos:end]
        pos = end
