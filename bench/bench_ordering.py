"""Ordering modes on one partition: ``partition`` vs ``key`` vs ``none``.

10,000 records on one partition with 1,000 distinct keys; the handler awaits
5 ms; ``Config(ordering=…, max_in_flight=100)``. ``partition`` handles one
record at a time, so it is measured over its first ``--limit`` seconds (the
rate is steady); the others over every record::

    python -m bench.bench_ordering --bootstrap 127.0.0.1:9092 --kind kafka --ordering key
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from bench._common import (
    GROUP_TIMEOUTS,
    Broker,
    Meter,
    broker_of,
    create_topic,
    distinct_keys,
    emit,
    fresh_name,
    padded,
    print_rate,
    produce,
    scenario_parser,
    throughput_result,
    within,
)
from kafka_retry import Config, Consumer, Message


async def keyed_topic(broker: Broker, messages: int, keys: int) -> str:
    """A new one-partition topic of ``messages`` records over ``keys`` keys."""
    topic = fresh_name("ordering")
    await create_topic(broker.bootstrap, topic, 1)
    await produce(broker.bootstrap, topic, messages, 1, padded(200), distinct_keys(keys))
    return topic


async def measure(
    broker: Broker, topic: str, ordering: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Consume ``topic`` with one ordering mode and a sleeping handler."""
    config = Config(
        bootstrap_servers=broker.bootstrap,
        group=fresh_name("ordering"),
        topics=[topic],
        retry_intervals=[60],
        idempotence=broker.idempotence,
        ordering=ordering,  # type: ignore[arg-type]
        max_in_flight=args.max_in_flight,
        session_timeout_ms=GROUP_TIMEOUTS["session_timeout_ms"],
        rebalance_timeout_ms=GROUP_TIMEOUTS["rebalance_timeout_ms"],
        drain_timeout=2.0,  # the rebalance timeout must cover the drain
    )
    limit = args.limit if ordering == "partition" else None
    meter = Meter(args.messages, limit)
    delay = args.handler_ms / 1000

    async def handler(message: Message) -> None:
        await asyncio.sleep(delay)
        meter.hit()

    async with Consumer(config, {topic: handler}):
        await meter.done.wait()
    print_rate(f"ordering={ordering} on {broker.kind}", meter)
    return throughput_result(
        f"ordering-{ordering}", broker, meter, max_in_flight=args.max_in_flight
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ordering", choices=["partition", "key", "none"], action="append", dest="orderings"
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--handler-ms", type=float, default=5.0)
    parser.add_argument("--max-in-flight", type=int, default=100)
    parser.add_argument("--limit", type=float, default=8.0, help="seconds measured of partition")
    parser.add_argument("--topic", help="an existing one-partition topic of --messages records")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to give up after")
    return parser.parse_args(argv)


async def main_async(argv: list[str]) -> None:
    args = parse_args(argv)
    broker = broker_of(args)
    topic = args.topic or await keyed_topic(broker, args.messages, args.keys)
    for ordering in args.orderings or ["partition", "key", "none"]:
        emit(await within(args.timeout, measure(broker, topic, ordering, args)))


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1:]))
