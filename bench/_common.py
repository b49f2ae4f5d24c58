"""What every benchmark shares: the broker under test, topics, producing records, timing.

Each scenario module runs as its own process (``python -m bench.<module> …``),
prints what it measured for a reader, and ends with one line
``RESULT {json}`` that :mod:`bench.run` collects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

#: Group timings every client in a benchmark uses. Tansu completes a join only
#: after the session and rebalance timeouts allow, so long defaults cost
#: seconds per join there; Apache Kafka is indifferent to them.
GROUP_TIMEOUTS: dict[str, int] = {
    "session_timeout_ms": 6000,
    "rebalance_timeout_ms": 4000,
    "heartbeat_interval_ms": 1000,
}

RESULT_PREFIX = "RESULT "

T = TypeVar("T")

KeyOf = Callable[[int], bytes | None]
ValueOf = Callable[[int], bytes]


@attrs.frozen
class Broker:
    """The broker a scenario runs against.

    Attributes:
        bootstrap: ``host:port``.
        kind: ``kafka`` (Apache Kafka) or ``tansu``.
    """

    bootstrap: str
    kind: str

    @property
    def idempotence(self) -> bool:
        """Whether producers may be idempotent (Tansu hands out no producer ids)."""
        return self.kind != "tansu"


def fresh_name(what: str) -> str:
    """A topic or group name no earlier run used (the brokers are shared)."""
    return f"bench-{what}-{uuid.uuid4().hex[:10]}"


def scenario_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every scenario takes: the broker."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--kind", choices=["kafka", "tansu"], required=True)
    return parser


def broker_of(args: argparse.Namespace) -> Broker:
    """The :class:`Broker` named by the common options."""
    return Broker(bootstrap=args.bootstrap, kind=args.kind)


def emit(result: dict[str, Any]) -> None:
    """Print the result line :mod:`bench.run` parses."""
    print(RESULT_PREFIX + json.dumps(result, sort_keys=True), flush=True)


def meter_of(args: argparse.Namespace) -> Meter:
    """A :class:`Meter` for ``--messages`` and ``--limit``."""
    return Meter(args.messages, args.limit)


async def within(seconds: float, work: Awaitable[T]) -> T:
    """Await ``work``, giving up after ``seconds``.

    Raises:
        TimeoutError: ``work`` took longer.
    """
    async with asyncio.timeout(seconds):
        return await work


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` (replication 1)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def padded(size: int) -> ValueOf:
    """Values of ``size`` bytes, all alike."""
    value = b"x" * size
    return lambda _index: value


def no_key(_index: int) -> bytes | None:
    """Records without a key."""
    return None


def distinct_keys(keys: int) -> KeyOf:
    """Record ``i`` gets key ``i % keys``."""
    return lambda index: b"key-%d" % (index % keys)


async def produce(
    bootstrap: str,
    topic: str,
    count: int,
    partitions: int,
    value_of: ValueOf,
    key_of: KeyOf = no_key,
) -> float:
    """Write ``count`` records round-robin over ``partitions``; return the seconds it took.

    Records go in large explicit batches: building one record per ``send()``
    would make producing take longer than the consuming it prepares.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=5,
        max_batch_size=512 * 1024,
        enable_idempotence=False,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        await producer.partitions_for(topic)
        await _produce_batches(producer, topic, count, partitions, value_of, key_of)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _produce_batches(
    producer: AIOKafkaProducer,
    topic: str,
    count: int,
    partitions: int,
    value_of: ValueOf,
    key_of: KeyOf,
) -> None:
    batches = [producer.create_batch() for _ in range(partitions)]
    pending: list[asyncio.Future[Any]] = []
    for index in range(count):
        partition = index % partitions
        key, value = key_of(index), value_of(index)
        if batches[partition].append(key=key, value=value, timestamp=None) is None:
            pending.append(
                await producer.send_batch(batches[partition], topic, partition=partition)
            )
            batches[partition] = producer.create_batch()
            batches[partition].append(key=key, value=value, timestamp=None)
            # A bounded backlog of unacknowledged batches keeps a million records
            # from sitting in this process at once.
            if len(pending) >= 64:
                await asyncio.gather(*pending)
                pending.clear()
    for partition, batch in enumerate(batches):
        if batch.record_count():
            pending.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*pending)


@attrs.define
class Meter:
    """Counts handled messages; the window runs from the first to the ``expected``-th.

    With a ``limit`` the window closes that many seconds after the first message
    if not all arrived by then: slow systems are measured over a sample, not the
    whole topic. Only a few clock reads per run, so measuring costs every system
    under test the same few nanoseconds per message.
    """

    expected: int
    limit: float | None = None
    count: int = 0
    #: Messages inside the window (frozen when it closes).
    measured: int = 0
    first: float = 0.0
    last: float = 0.0
    #: Process CPU seconds at the window's ends: below the window's length means
    #: the consumer waited (on the broker, say) rather than worked.
    cpu_first: float = 0.0
    cpu_last: float = 0.0
    done: asyncio.Event = attrs.field(factory=asyncio.Event)

    def hit(self) -> None:
        """One message handled."""
        count = self.count + 1
        self.count = count
        if count == 1:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()
            if self.limit is not None:
                asyncio.get_running_loop().call_later(self.limit, self.close)
        if count == self.expected:
            self.close()

    def close(self) -> None:
        """End the window now (once)."""
        if not self.done.is_set():
            self.last = time.perf_counter()
            self.cpu_last = time.process_time()
            self.measured = self.count
            self.done.set()

    @property
    def seconds(self) -> float:
        """Length of the window."""
        return self.last - self.first

    @property
    def rate(self) -> float:
        """Messages per second over the window."""
        return self.measured / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        """Process CPU time over the window's length (1.0 = one core busy throughout)."""
        return (self.cpu_last - self.cpu_first) / self.seconds if self.seconds > 0 else 0.0


def throughput_result(scenario: str, broker: Broker, meter: Meter, **extra: Any) -> dict[str, Any]:
    """The result record of a throughput measurement."""
    return {
        "scenario": scenario,
        "broker": broker.kind,
        "messages": meter.measured,
        "seconds": round(meter.seconds, 4),
        "rate": round(meter.rate, 1),
        "cpu_share": round(meter.cpu_share, 2),
        **extra,
    }


def print_rate(label: str, meter: Meter) -> None:
    """One human line for a throughput measurement."""
    print(
        f"{label}: {meter.measured:,} messages in {meter.seconds:.2f}s = {meter.rate:,.0f} msg/s"
        f" (CPU busy {meter.cpu_share:.0%} of the window)"
    )


def add_records_options(parser: argparse.ArgumentParser, messages: int) -> None:
    """Options of the throughput scenarios: which records to consume."""
    parser.add_argument(
        "--topic", help="an existing topic holding --messages records (default: produce a new one)"
    )
    parser.add_argument("--messages", type=int, default=messages)
    parser.add_argument("--partitions", type=int, default=6, help="of a new topic")
    parser.add_argument("--size", type=int, default=200, help="value bytes, for a new topic")
    parser.add_argument(
        "--limit", type=float, help="measure at most this many seconds after the first message"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to give up after")


async def records_topic(broker: Broker, args: argparse.Namespace) -> str:
    """The topic named by ``--topic``, or a new one filled with ``--messages`` records."""
    if args.topic:
        return str(args.topic)
    topic = fresh_name("records")
    await create_topic(broker.bootstrap, topic, args.partitions)
    seconds = await produce(
        broker.bootstrap, topic, args.messages, args.partitions, padded(args.size)
    )
    print(f"produced {args.messages:,} records to {topic} in {seconds:.1f}s")
    return topic
