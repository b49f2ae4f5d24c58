"""Record batches for the unit tests: as producers write them, header names of any bytes."""

from __future__ import annotations

import struct
from typing import Any

from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

Header = tuple[str, bytes | None]
Row = tuple[bytes | None, bytes | None, list[Header]]


class RawName(str):
    """A header name that aiokafka's pure-Python batch builder writes as ``raw``, any bytes."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def built(rows: list[Row], compression: int = 0, base: int = 0, **producer: Any) -> bytes:
    """A batch as a producer writes it, with offsets from ``base``."""
    builder = _DefaultRecordBatchBuilderPy(
        2,
        compression,
        producer.get("transactional", 0),
        producer.get("producer_id", -1),
        0,
        0,
        1 << 20,
    )
    for delta, (key, value, headers) in enumerate(rows):
        builder.append(delta, 1_700_000_000_000 + delta, key, value, headers)
    data = builder.build()
    struct.pack_into(">q", data, 0, base)
    return bytes(data)


def varint(number: int) -> bytes:
    """Zigzag varint encoding."""
    raw = (number << 1) ^ (number >> 63)
    out = bytearray()
    while True:
        byte = raw & 0x7F
        raw >>= 7
        if raw:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def hand_made(body: bytes, count: int) -> bytes:
    """An uncompressed batch around hand-made record bytes (CRC left zero)."""
    length = 49 + len(body)
    header = struct.pack(
        ">qiibIhiqqqhii", 0, length, 0, 2, 0, 0, count - 1, 0, 0, -1, -1, -1, count
    )
    return header + body


def record(payload: bytes) -> bytes:
    """Record bytes with their length prefix."""
    return varint(len(payload)) + payload
