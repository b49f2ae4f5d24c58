"""The limit: a bare aiokafka ``getmany`` loop, one awaited no-op per message.

Offsets are committed after every batch, so this is the cheapest at-least-once
consumer one can write with aiokafka; every other figure is read against it::

    python -m bench.bench_raw --bootstrap 127.0.0.1:9092 --kind kafka
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from bench._common import (
    GROUP_TIMEOUTS,
    Broker,
    Meter,
    add_records_options,
    broker_of,
    emit,
    fresh_name,
    meter_of,
    print_rate,
    records_topic,
    scenario_parser,
    throughput_result,
    within,
)


async def no_op(record: ConsumerRecord) -> None:
    """The handler: nothing to do."""


async def consume(consumer: AIOKafkaConsumer, meter: Meter) -> None:
    """Handle and commit batch after batch until the meter's window closed."""
    while not meter.done.is_set():
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                await no_op(record)
                meter.hit()
        if batches:
            await consumer.commit()


async def measure(broker: Broker, topic: str, meter: Meter) -> dict[str, Any]:
    """Consume ``topic`` from the start with a fresh group."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=fresh_name("raw"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMEOUTS,
    )
    await consumer.start()
    try:
        await consume(consumer, meter)
    finally:
        await consumer.stop()
    print_rate(f"raw aiokafka on {broker.kind}", meter)
    return throughput_result("raw", broker, meter)


async def main_async(argv: list[str]) -> None:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    add_records_options(parser, 200_000)
    args = parser.parse_args(argv)
    broker = broker_of(args)
    topic = await records_topic(broker, args)
    emit(await within(args.timeout, measure(broker, topic, meter_of(args))))


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1:]))
