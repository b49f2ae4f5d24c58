"""Forwarding a message whose header name was not UTF-8: the name is escaped, never fatal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from kafka_retry import Message
from kafka_retry.message import HEADER_PREFIX, producible_headers
from kafka_retry.retry.base import Failure
from kafka_retry.retry.kafka import KafkaForwarder
from kafka_retry.topology import build_chain, default_topic_name

CHAIN = build_chain("g", "t", 1, default_topic_name)
LENIENT = b"\xff\xfe-name".decode("utf-8", "surrogateescape")
HEADERS = ((LENIENT, b"h"), ("app", b"1"), ("ünï", None))
ESCAPED = [("\\xff\\xfe-name", b"h"), ("app", b"1"), ("ünï", None)]


class EncodingProducer:
    """Writes each record into a batch like aiokafka's producer (strict UTF-8 names)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def _acked(self) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send(self, topic: str, **record: Any) -> asyncio.Future[None]:
        batch = self.create_batch()
        batch.append(
            key=record["key"],
            value=record["value"],
            timestamp=record["timestamp_ms"],
            headers=record["headers"],
        )
        return await self.send_batch(batch, topic, partition=0)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1 << 20, 0)

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        (written,) = DefaultRecordBatch(bytes(batch._build()))
        self.sent.append((topic, written))
        return self._acked()


class Clock:
    def time(self) -> float:
        return 1_700_000_000.0

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("no send should be retried")


def failure(key: bytes | None = b"k", value: bytes | None = b"v") -> Failure:
    message = Message("t", 0, 5, key, value, HEADERS, 1, "t", 1)
    return Failure(message, "ValueError", "boom", 1_700_000_000_000, "g", final=False)


def original(record: Any) -> list[tuple[str, bytes | None]]:
    return [(n, v) for n, v in record.headers if not n.startswith(HEADER_PREFIX)]


@pytest.mark.parametrize(("key", "value"), [(b"k", b"\x00\xff"), (None, None)])
async def test_a_retry_carries_the_name_escaped(key: bytes | None, value: bytes | None) -> None:
    """Undecodable bytes become ``\\xNN`` text; key, value and other headers are unchanged."""
    producer = EncodingProducer()
    forwarder = KafkaForwarder(producer, {"t": CHAIN}, (60.0,), Clock())  # type: ignore[arg-type]
    await forwarder.schedule(failure(key, value))
    [(topic, record)] = producer.sent
    assert topic == CHAIN.topics[1]
    assert (record.key, record.value) == (key, value)
    assert original(record) == ESCAPED


async def test_a_dead_letter_carries_the_name_escaped() -> None:
    """The dead-letter topic gets the same escaped name."""
    producer = EncodingProducer()
    forwarder = KafkaForwarder(producer, {"t": CHAIN}, (60.0,), Clock())  # type: ignore[arg-type]
    await forwarder.dead_letter(failure())
    [(topic, record)] = producer.sent
    assert topic == CHAIN.dead_letter
    assert original(record) == ESCAPED


def test_names_that_encode_are_left_alone() -> None:
    """ASCII and valid non-ASCII names pass unchanged (ASCII ones without a copy)."""
    ascii_only = (("a", b"1"), ("b", None))
    assert producible_headers(ascii_only) is ascii_only
    assert producible_headers((("ünï", b"1"),)) == (("ünï", b"1"),)


def test_a_lone_surrogate_no_decoding_made_is_escaped_too() -> None:
    """A name a handler built with any lone surrogate still encodes."""
    assert producible_headers((("a\ud800b", None),)) == (("a\\ud800b", None),)
