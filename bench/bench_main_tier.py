"""kafka-retry's main tier with a no-op async handler, timed after the group joined.

The consumer has one retry tier (idle here, as in a healthy service) and
commits only what its handler finished, the at-least-once guarantee that
FastStream gives with ``ack_policy=ACK``. ``--handler batch`` measures a no-op
batch handler (``max_size`` 500, ``max_wait`` 0.05 s) instead::

    python -m bench.bench_main_tier --bootstrap 127.0.0.1:9092 --kind kafka --metrics off
    python -m bench.bench_main_tier --bootstrap 127.0.0.1:9092 --kind kafka --handler batch
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

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
from kafka_retry import Config, Consumer, Message


def config_for(
    broker: Broker,
    topic: str,
    metrics: bool,
    ordering: str = "partition",
    max_in_flight: int = 1000,
    exactly_once: bool = False,
) -> Config:
    """The consumer's settings: defaults, except what the broker and the group timing need."""
    return Config(
        bootstrap_servers=broker.bootstrap,
        group=fresh_name("main"),
        topics=[topic],
        retry_intervals=[60],
        idempotence=broker.idempotence,
        metrics=metrics,
        ordering=ordering,  # type: ignore[arg-type]
        max_in_flight=max_in_flight,
        exactly_once=exactly_once,
        session_timeout_ms=GROUP_TIMEOUTS["session_timeout_ms"],
        rebalance_timeout_ms=GROUP_TIMEOUTS["rebalance_timeout_ms"],
        drain_timeout=2.0,  # the rebalance timeout must cover the drain
    )


async def measure(
    broker: Broker, config: Config, meter: Meter, batch_size: int | None = None
) -> dict[str, Any]:
    """Consume the topic from the start with a no-op handler (a batch one with ``batch_size``)."""

    async def no_op(message: Message) -> None:
        meter.hit()

    async def no_op_batch(messages: list[Message]) -> None:
        hit = meter.hit
        for _ in messages:
            hit()

    topic = config.topics[0]
    consumer = Consumer(config)
    if batch_size is None:
        consumer.handler(topic)(no_op)
    else:
        consumer.batch_handler(topic, max_size=batch_size)(no_op_batch)
    async with consumer:
        await meter.done.wait()
    metrics = "on" if config.metrics else "off"
    kind = "message" if batch_size is None else f"batch of {batch_size}"
    label = f"kafka-retry ordering={config.ordering} {kind} metrics={metrics} on {broker.kind}"
    scenario = "kafka-retry"
    if batch_size is not None:  # the default max_size keeps the plain name
        scenario += "-batch" if batch_size == 500 else f"-batch{batch_size}"
    name = f"{scenario}-metrics-{metrics}"
    if config.exactly_once:
        label, name = f"{label} exactly_once", "kafka-retry-exactly-once"
    print_rate(label, meter)
    return throughput_result(name, broker, meter, ordering=config.ordering, batch_size=batch_size)


async def main_async(argv: list[str]) -> None:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    add_records_options(parser, 200_000)
    parser.add_argument("--metrics", choices=["on", "off"], default="off")
    parser.add_argument("--ordering", choices=["partition", "key", "none"], default="partition")
    parser.add_argument("--max-in-flight", type=int, default=1000)
    parser.add_argument("--handler", choices=["message", "batch"], default="message")
    parser.add_argument("--max-size", type=int, default=500, help="batch handler's max_size")
    parser.add_argument(
        "--exactly-once", action="store_true", help="offsets commit in each tier's transaction"
    )
    args = parser.parse_args(argv)
    broker = broker_of(args)
    topic = await records_topic(broker, args)
    config = config_for(
        broker, topic, args.metrics == "on", args.ordering, args.max_in_flight, args.exactly_once
    )
    batch_size = args.max_size if args.handler == "batch" else None
    emit(await within(args.timeout, measure(broker, config, meter_of(args), batch_size)))


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1:]))
