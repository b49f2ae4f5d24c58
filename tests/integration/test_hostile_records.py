"""Records a hostile or careless producer may write: huge, header-heavy, with forged provenance.

The consumer must neither crash, nor retry forever, nor park a partition for
centuries: forged provenance headers are untrusted input, and a header name
that is not UTF-8 is delivered, not fatal (see ``docs/advanced/security.md``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from kafka_retry import Consumer, ConsumerState, DatabaseConfig, Message
from kafka_retry.message import (
    H_ATTEMPTS,
    H_DUE_AT,
    H_ERROR_MESSAGE,
    H_ERROR_TYPE,
    H_FAILED_AT,
    H_GROUP,
    H_OFFSET,
    H_PARTITION,
    H_TIMESTAMP,
    H_TOPIC,
    HEADER_PREFIX,
)
from tests.record_batches import RawName

from .support import Header, config_for, create_topics, eventually, fresh, produce, read_all

pytestmark = pytest.mark.integration

YEAR_9999_MS = 253_402_300_799_000
DELAY = 1.0
# A retry must be handled within its tier delay of being first seen; joining
# the group and fetching add a few seconds on a loaded machine.
SLACK = 8.0
BIG_TOPIC_BYTES = 4 * 1024 * 1024


class Recorder:
    """Records each call with its wall-clock time; fails while ``fail(message)`` says so."""

    def __init__(self, fail: Any = None) -> None:
        self.calls: list[Message] = []
        self.times: list[float] = []
        self._fail = fail

    async def __call__(self, message: Message) -> None:
        self.calls.append(message)
        self.times.append(time.time())
        if self._fail is not None and self._fail(message):
            raise RuntimeError(f"attempt {message.attempt} fails")

    def keys(self, attempt: int) -> list[bytes]:
        return [m.key or b"" for m in self.calls if m.attempt == attempt]


def provenance(topic: str, group: str, **forged: bytes) -> list[Header]:
    """Well-formed provenance headers of a first failure, with ``forged`` fields replaced."""
    now = str(int(time.time() * 1000)).encode()
    fields = {
        H_ATTEMPTS: b"1",
        H_TOPIC: topic.encode(),
        H_PARTITION: b"0",
        H_OFFSET: b"0",
        H_TIMESTAMP: now,
        H_GROUP: group.encode(),
        H_FAILED_AT: now,
        H_DUE_AT: now,
        H_ERROR_TYPE: b"RuntimeError",
        H_ERROR_MESSAGE: b"forged",
    }
    fields.update({HEADER_PREFIX + name.replace("_", "-"): value for name, value in forged.items()})
    return list(fields.items())


def only_ours(headers: Any) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for name, value in headers:
        if name.startswith(HEADER_PREFIX):
            found.setdefault(name, []).append(value)
    return found


async def test_forged_provenance_on_a_retry_topic_is_not_trusted(kafka_service: Any) -> None:
    """Forged attempts and due times change neither the attempt nor the wait (one delay)."""
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh("forge")
    await create_topics(bootstrap, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[DELAY, DELAY])
    retry1 = config.topic_chain(topic)[1]
    await create_topics(bootstrap, *config.topic_chain(topic)[1:])
    group = config.group
    forged = [
        (b"due-9999", provenance(topic, group, due_at=str(YEAR_9999_MS).encode())),
        (b"due-overflow", provenance(topic, group, due_at=b"9" * 40)),
        (b"attempt-minus-1", provenance(topic, group, attempts=b"-1")),
        (b"attempt-abc", provenance(topic, group, attempts=b"abc")),
        (b"attempt-million", provenance(topic, group, attempts=b"1000000")),
        (b"failed-in-9999", provenance(topic, group, failed_at=str(YEAR_9999_MS).encode())),
    ]
    # Another header after the forged ones must not be mistaken for provenance.
    records = [(key, b"v", [*headers, ("app", b"kept")]) for key, headers in forged]
    produced_at = time.time()
    await produce(bootstrap, retry1, records)
    # attempt-million fails again: it must go on to retry2 (attempt 3), not off the chain.
    handler = Recorder(fail=lambda m: m.key == b"attempt-million" and m.attempt == 2)
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == len(records) + 1, within=3 * SLACK)
    assert sorted(handler.keys(2)) == sorted(key for key, _ in forged)
    assert handler.keys(3) == [b"attempt-million"]
    for message, handled_at in zip(handler.calls, handler.times, strict=True):
        assert handled_at - produced_at < DELAY * message.attempt + SLACK
        assert message.headers == (("app", b"kept"),)
    by_key = {m.key: m for m in handler.calls if m.attempt == 2}
    assert by_key[b"attempt-abc"].provenance is None  # malformed: ignored
    assert by_key[b"attempt-minus-1"].provenance is None
    retried = next(m for m in handler.calls if m.attempt == 3)
    assert retried.provenance is not None
    assert retried.provenance.attempts == 2


async def test_forged_provenance_on_a_main_topic_is_replaced(kafka_service: Any) -> None:
    """Provenance headers on a first delivery are dropped; the retry carries fresh ones."""
    await _forged_on_main(kafka_service, {})


async def test_forged_provenance_on_a_main_topic_is_ignored_by_postgres(
    kafka_service: Any, database_url: str, db_schema: str
) -> None:
    """The postgres backend schedules by its own clock, whatever the headers claimed."""
    database = DatabaseConfig.from_url(database_url, schema=db_schema)
    await _forged_on_main(kafka_service, {"retry_backend": "postgres", "database": database})


async def _forged_on_main(kafka_service: Any, fields: dict[str, Any]) -> None:
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh("forgemain")
    await create_topics(bootstrap, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[DELAY], **fields)
    headers = provenance(
        "evil", "evil", attempts=b"-1", due_at=str(YEAR_9999_MS).encode(), error_message=b"x"
    )
    await produce(bootstrap, topic, [(b"k", b"v", [("app", b"1"), *headers])])
    handler = Recorder(fail=lambda m: m.attempt == 1)
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 2, within=2 * SLACK)
    first, retry = handler.calls
    assert (first.attempt, first.provenance, first.headers) == (1, None, (("app", b"1"),))
    assert retry.attempt == 2
    assert retry.headers == (("app", b"1"),)
    assert retry.provenance is not None
    assert retry.provenance.attempts == 1
    assert retry.provenance.original_topic == topic
    assert retry.provenance.due_at == retry.provenance.failed_at + round(DELAY * 1000)
    assert handler.times[1] - handler.times[0] < DELAY + SLACK
    if config.retry_backend == "kafka":
        (record,) = await read_all(bootstrap, config.topic_chain(topic)[1], 1)
        ours = only_ours(record.headers)
        assert ours[H_ATTEMPTS] == [b"1"]  # replaced, not repeated
        assert all(len(values) == 1 for values in ours.values())


async def _create_big_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(BIG_TOPIC_BYTES)}
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=config)])
    finally:
        await admin.close()


def big_records() -> list[tuple[bytes, bytes | None, list[Header]]]:
    """A 1 MiB key, a 100 KB header value, 10,000 headers, a 32 KB header name."""
    many: list[Header] = [(f"h{i}", str(i).encode()) for i in range(10_000)]
    return [
        (b"K" * (1024 * 1024), b"big key", []),
        (b"wide-header", b"v", [("blob", bytes(range(256)) * 400)]),
        (b"many-headers", b"v", many),
        (b"long-name", None, [("n" * 32 * 1024, None), ("after", b"")]),
    ]


async def test_huge_records_survive_a_retry_byte_exact(kafka_service: Any) -> None:
    """Near-megabyte keys and header-heavy records go through a retry topic unchanged."""
    await _huge_round_trip(kafka_service, {})


async def test_huge_records_survive_a_postgres_retry_byte_exact(
    kafka_service: Any, database_url: str, db_schema: str
) -> None:
    """The same records go through the retry table unchanged."""
    database = DatabaseConfig.from_url(database_url, schema=db_schema)
    await _huge_round_trip(kafka_service, {"retry_backend": "postgres", "database": database})


async def _huge_round_trip(kafka_service: Any, fields: dict[str, Any]) -> None:
    if kafka_service.kind == "tansu":
        pytest.skip("Tansu does not take per-topic max.message.bytes")
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh("huge")
    await _create_big_topic(bootstrap, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[0.5], **fields)
    records = big_records()
    await _produce_big(bootstrap, topic, records)
    handler = Recorder(fail=lambda m: m.attempt == 1)
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 2 * len(records), within=4 * SLACK)
    retried = {m.key: m for m in handler.calls if m.attempt == 2}
    for key, value, headers in records:
        message = retried[key]
        assert (message.value, list(message.headers)) == (value, headers)


async def _produce_big(bootstrap: str, topic: str, records: Any) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=BIG_TOPIC_BYTES
    )
    await producer.start()
    try:
        for key, value, headers in records:
            await (await producer.send(topic, key=key, value=value, headers=headers))
    finally:
        await producer.stop()


async def test_record_too_large_for_its_retry_topic_is_dead_lettered(kafka_service: Any) -> None:
    """A retry topic that can never take the record sends it to the dead letter, saying why."""
    if kafka_service.kind == "tansu":
        pytest.skip("Tansu does not enforce max.message.bytes")
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh("toolarge")
    await create_topics(bootstrap, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[DELAY])
    retry1, dead = config.topic_chain(topic)[1:]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        small = {"max.message.bytes": str(64 * 1024)}
        await admin.create_topics([NewTopic(retry1, 1, 1, topic_configs=small)])
    finally:
        await admin.close()
    await produce(bootstrap, topic, [(b"k", b"x" * 200_000, [("app", b"1")])])
    handler = Recorder(fail=lambda m: True)
    async with Consumer(config, {topic: handler}):
        found = await read_all(bootstrap, dead, 1, within=3 * SLACK)
    assert len(handler.calls) == 1
    (record,) = found
    assert (record.key, record.value) == (b"k", b"x" * 200_000)
    ours = only_ours(record.headers)
    assert b"too large" in ours[H_ERROR_MESSAGE][0]
    assert retry1.encode() in ours[H_ERROR_MESSAGE][0]
    assert ours[H_ATTEMPTS] == [b"1"]


BAD_NAME = b"\xff\xfe-name"
#: How a handler sees it: the bytes decoded with surrogateescape.
LENIENT_NAME = BAD_NAME.decode("utf-8", "surrogateescape")
#: How a retry or dead-letter topic carries it: undecodable bytes as \xNN text.
ESCAPED_NAME = "\\xff\\xfe-name"
BAD_VALUE = b"\x00\xff bad value"


def bad_name_rows() -> list[tuple[bytes, bytes, list[Header]]]:
    """A good record, one with a header name that is not UTF-8, another good one."""
    return [
        (b"before", b"v1", [("app", b"1")]),
        (b"bad", BAD_VALUE, [(RawName(BAD_NAME), b"hv"), ("app", b"2")]),
        (b"after", b"v3", []),
    ]


async def _produce_one_batch(
    bootstrap: str, topic: str, rows: list[tuple[bytes, bytes, list[Header]]], compression: int
) -> None:
    """Produce ``rows`` as one record batch (so one fetch), header names as raw bytes.

    aiokafka's producer encodes names as strict UTF-8 in C; its pure-Python
    builder calls ``name.encode()``, which a :class:`RawName` answers with any bytes.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        batch = producer.create_batch()
        batch._builder = _DefaultRecordBatchBuilderPy(2, compression, 0, -1, -1, 0, 1 << 20)
        for key, value, headers in rows:
            batch.append(key=key, value=value, timestamp=None, headers=headers)
        batch.close()
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


@pytest.mark.parametrize("compression", [0, 1], ids=["uncompressed", "gzip"])
async def test_header_name_not_utf8_is_handled_with_its_batch(
    kafka_service: Any, compression: int
) -> None:
    """The record arrives with the name decoded leniently; its neighbours too; none again later."""
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh("badname")
    await create_topics(bootstrap, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[DELAY])
    await _produce_one_batch(bootstrap, topic, bad_name_rows(), compression)
    handler = Recorder()
    async with Consumer(config, {topic: handler}) as consumer:
        await eventually(lambda: len(handler.calls) == 3, within=SLACK)
        await produce(bootstrap, topic, [(b"later", b"v4", [])])
        await eventually(lambda: len(handler.calls) == 4, within=SLACK)
        assert consumer.state is ConsumerState.RUNNING
    assert handler.keys(1) == [b"before", b"bad", b"after", b"later"]
    bad = handler.calls[1]
    assert (bad.key, bad.value, bad.offset) == (b"bad", BAD_VALUE, 1)
    assert bad.headers == ((LENIENT_NAME, b"hv"), ("app", b"2"))
    assert bad.headers[0][0].encode("utf-8", "surrogateescape") == BAD_NAME

    # Restarted in the same group: the offsets were committed past all four.
    again = Recorder()
    async with Consumer(config, {topic: again}):
        await produce(bootstrap, topic, [(b"after-restart", b"v5", [])])
        await eventually(lambda: len(again.calls) == 1, within=SLACK)
    assert again.keys(1) == [b"after-restart"]


async def test_header_name_not_utf8_goes_through_retry_and_dead_letter(kafka_service: Any) -> None:
    """Retry and dead-letter topics carry the name as \\xNN text; key and value byte-exact."""
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh("badnameretry")
    await create_topics(bootstrap, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[DELAY])
    dead = config.topic_chain(topic)[-1]
    await _produce_one_batch(bootstrap, topic, bad_name_rows(), 0)
    handler = Recorder(fail=lambda m: m.key == b"bad")
    async with Consumer(config, {topic: handler}):
        found = await read_all(bootstrap, dead, 1, within=3 * SLACK)
    assert handler.keys(1) == [b"before", b"bad", b"after"]
    (retried,) = [m for m in handler.calls if m.attempt == 2]
    assert (retried.key, retried.value) == (b"bad", BAD_VALUE)
    assert retried.headers == ((ESCAPED_NAME, b"hv"), ("app", b"2"))
    (record,) = found
    assert (record.key, record.value) == (b"bad", BAD_VALUE)
    kept = [(name, value) for name, value in record.headers if not name.startswith(HEADER_PREFIX)]
    assert kept == [(ESCAPED_NAME, b"hv"), ("app", b"2")]
    ours = only_ours(record.headers)
    assert ours[H_ERROR_TYPE] == [b"RuntimeError"]
    assert ours[H_ATTEMPTS] == [b"2"]


async def test_header_name_not_utf8_survives_a_postgres_retry_byte_exact(
    kafka_service: Any, database_url: str, db_schema: str
) -> None:
    """The retry table keeps the name's bytes: the retry sees exactly what the first try saw."""
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh("badnamepg")
    await create_topics(bootstrap, topic)
    database = DatabaseConfig.from_url(database_url, schema=db_schema)
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[0.5],
        retry_backend="postgres",
        database=database,
    )
    await _produce_one_batch(bootstrap, topic, bad_name_rows(), 0)
    handler = Recorder(fail=lambda m: m.key == b"bad" and m.attempt == 1)
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 4, within=2 * SLACK)
    first, retried = [m for m in handler.calls if m.key == b"bad"]
    assert retried.attempt == 2
    assert (retried.key, retried.value, retried.headers) == (b"bad", BAD_VALUE, first.headers)
    assert first.headers == ((LENIENT_NAME, b"hv"), ("app", b"2"))


@pytest.mark.parametrize("compression", ["gzip", "snappy", "lz4", "zstd"])
async def test_batches_compressed_by_other_producers_are_read(
    kafka_service: Any, compression: str
) -> None:
    """Every codec Kafka producers use is decoded: such batches neither stop nor wedge the consumer.

    Java and librdkafka producers often compress with lz4, snappy or zstd;
    aiokafka decodes those only with its codec extras installed.
    """
    bootstrap = kafka_service.bootstrap_servers
    topic = fresh(f"codec-{compression}")
    await create_topics(bootstrap, topic)
    records: list[tuple[bytes, bytes, list[Header]]] = [
        (f"k{i}".encode(), b"\x00\xff" * 500 + bytes([i]), [("h", b"%d" % i)]) for i in range(20)
    ]
    await produce(bootstrap, topic, records, compression=compression)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[DELAY])
    handler = Recorder(fail=lambda m: m.attempt == 1 and m.key == b"k3")
    async with Consumer(config, {topic: handler}):
        await eventually(lambda: len(handler.calls) == 21, within=3 * SLACK)
    first = [(m.key, m.value, list(m.headers)) for m in handler.calls if m.attempt == 1]
    assert first == [(k, v, h) for k, v, h in records]
    assert handler.keys(2) == [b"k3"]
