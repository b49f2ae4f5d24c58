"""Latency from produce to handler start at a steady rate (default 5,000 messages/s).

The consumer joins first; then a separate producer process sends at the
given rate, each value starting with the wall-clock nanoseconds of its
``send()`` call and its sequence number. The handler subtracts that from the
clock when it starts. The first ``--warmup`` seconds of messages are left out
(connections, first fetches). ``--system raw`` measures a bare aiokafka loop
the same way, the floor for the figure::

    python -m bench.bench_latency --bootstrap 127.0.0.1:9092 --kind kafka --system kafka-retry
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench._common import (
    GROUP_TIMEOUTS,
    Broker,
    broker_of,
    create_topic,
    emit,
    fresh_name,
    scenario_parser,
    within,
)
from kafka_retry import Config, Consumer, Message

_TICK = 0.001


def stamp(sequence: int, size: int) -> bytes:
    """A value of ``size`` bytes: send time (ns), sequence number, padding."""
    head = time.time_ns().to_bytes(8, "big") + sequence.to_bytes(8, "big")
    return head + b"x" * (size - len(head))


class Latencies:
    """Collects handler-start latencies of messages sent after the warm-up."""

    def __init__(self, expected: int, skip: int) -> None:
        self.expected = expected
        self.skip = skip
        self.seen = 0
        self.samples_ns: list[int] = []
        self.done = asyncio.Event()

    def record(self, value: bytes) -> None:
        """Note one message whose handler starts now."""
        now = time.time_ns()
        if int.from_bytes(value[8:16], "big") >= self.skip:
            self.samples_ns.append(now - int.from_bytes(value[:8], "big"))
        self.seen += 1
        if self.seen >= self.expected:
            self.done.set()

    def summary(self) -> dict[str, float]:
        """Percentiles in milliseconds."""
        ordered = sorted(self.samples_ns)
        cuts = statistics.quantiles(ordered, n=1000, method="inclusive")

        def ms(ns: float) -> float:
            return round(ns / 1e6, 3)

        return {
            "p50_ms": ms(cuts[499]),
            "p90_ms": ms(cuts[899]),
            "p99_ms": ms(cuts[989]),
            "p999_ms": ms(cuts[998]),
            "max_ms": ms(ordered[-1]),
            "samples": len(ordered),
        }


async def produce_steadily(bootstrap: str, topic: str, rate: float, count: int, size: int) -> float:
    """Send ``count`` records at ``rate`` per second; return the rate achieved."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, enable_idempotence=False)
    await producer.start()
    try:
        await producer.partitions_for(topic)
        started = time.perf_counter()
        sent = 0
        while sent < count:
            # Catch up to the schedule, then yield; a late tick sends a burst,
            # so the average rate holds even when the loop is delayed.
            due = min(count, int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                await producer.send(topic, stamp(sent, size))
                sent += 1
            await asyncio.sleep(_TICK)
        elapsed = time.perf_counter() - started
        await producer.flush()
    finally:
        await producer.stop()
    return count / elapsed


async def run_producer(args: argparse.Namespace) -> None:
    """The producer process: send, then report the rate achieved."""
    achieved = await produce_steadily(args.bootstrap, args.topic, args.rate, args.count, args.size)
    print(f"produced {args.count:,} at {achieved:,.0f} msg/s", file=sys.stderr)


async def spawn_producer(args: argparse.Namespace, topic: str, count: int) -> None:
    """Run the producer in its own process (its own CPU share and event loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_latency",
        "--bootstrap",
        args.bootstrap,
        "--kind",
        args.kind,
        "--role",
        "producer",
        "--topic",
        topic,
        "--count",
        str(count),
        "--rate",
        str(args.rate),
        "--size",
        str(args.size),
    )
    if await process.wait() != 0:
        raise RuntimeError("the producer process failed")


async def with_kafka_retry(broker: Broker, topic: str, latencies: Latencies, start: Any) -> None:
    """Consume with kafka-retry (default settings) while ``start`` produces."""
    config = Config(
        bootstrap_servers=broker.bootstrap,
        group=fresh_name("latency"),
        topics=[topic],
        retry_intervals=[60],
        idempotence=broker.idempotence,
        session_timeout_ms=GROUP_TIMEOUTS["session_timeout_ms"],
        rebalance_timeout_ms=GROUP_TIMEOUTS["rebalance_timeout_ms"],
        drain_timeout=2.0,  # the rebalance timeout must cover the drain
    )

    async def handler(message: Message) -> None:
        assert message.value is not None
        latencies.record(message.value)

    async with Consumer(config, {topic: handler}):
        producing = asyncio.create_task(start)
        await latencies.done.wait()
        await producing


async def with_raw(broker: Broker, topic: str, latencies: Latencies, start: Any) -> None:
    """Consume with a bare aiokafka loop (commit per batch) while ``start`` produces."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=fresh_name("latency-raw"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMEOUTS,
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        producing = asyncio.create_task(start)
        while not latencies.done.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    latencies.record(record.value)
            if batches:
                await consumer.commit()
        await producing
    finally:
        await consumer.stop()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Create a topic, join, produce steadily, collect latencies."""
    broker = broker_of(args)
    topic = fresh_name("latency")
    await create_topic(broker.bootstrap, topic, args.partitions)
    count = round(args.rate * args.seconds)
    latencies = Latencies(count, skip=round(args.rate * args.warmup))
    consume = with_raw if args.system == "raw" else with_kafka_retry
    await consume(broker, topic, latencies, spawn_producer(args, topic, count))
    result = {
        "scenario": f"latency-{args.system}",
        "broker": broker.kind,
        "rate": args.rate,
        "messages": count,
        **latencies.summary(),
    }
    print(
        f"{args.system} on {broker.kind} at {args.rate:,.0f} msg/s: p50 {result['p50_ms']} ms,"
        f" p99 {result['p99_ms']} ms, max {result['max_ms']} ms ({result['samples']:,} samples)"
    )
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--system", choices=["kafka-retry", "raw"], default="kafka-retry")
    parser.add_argument("--rate", type=float, default=5000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to produce")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds left out at the start")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--size", type=int, default=200, help="value bytes")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to give up after")
    parser.add_argument("--role", choices=["consumer", "producer"], default="consumer")
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def main_async(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.role == "producer":
        await run_producer(args)
    else:
        emit(await within(args.timeout, measure(args)))


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1:]))
