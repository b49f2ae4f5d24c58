"""The peer: FastStream's Kafka broker with a no-op subscriber, its logging off.

``--ack-policy default`` leaves FastStream's default (``ACK_FIRST``: aiokafka
auto-commits in the background, so a crash may lose messages it had taken);
``--ack-policy ack`` acknowledges each message after its handler returned,
the at-least-once setting comparable to kafka-retry::

    python -m bench.bench_faststream --bootstrap 127.0.0.1:9092 --kind kafka --ack-policy ack
"""

from __future__ import annotations

import asyncio
import logging
import sys
from importlib.metadata import version
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker

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

# FastStream's consume loop does not yield to the event loop while aiokafka
# holds fetched records, so a no-op subscriber starves the heartbeat for as
# long as a prefetch lasts (about 7 s here); a short group timeout would evict it
# from its group in the middle of the run.
_SESSION_TIMEOUT_MS = 30_000

# ACK_FIRST is what a subscriber gets when no policy is given (FastStream 0.7).
POLICIES = {"default": AckPolicy.ACK_FIRST, "ack": AckPolicy.ACK}


def make_broker(broker: Broker, topic: str, policy: AckPolicy, meter: Meter) -> KafkaBroker:
    """A FastStream broker whose one subscriber counts ``topic``'s messages."""
    kafka = KafkaBroker(broker.bootstrap, logger=None, log_level=logging.CRITICAL)

    async def handle(body: bytes) -> None:
        meter.hit()

    subscriber = kafka.subscriber(
        topic,
        group_id=fresh_name("faststream"),
        auto_offset_reset="earliest",
        ack_policy=policy,
        session_timeout_ms=_SESSION_TIMEOUT_MS,
        rebalance_timeout_ms=GROUP_TIMEOUTS["rebalance_timeout_ms"],
        heartbeat_interval_ms=GROUP_TIMEOUTS["heartbeat_interval_ms"],
    )
    subscriber(handle)
    return kafka


async def measure(broker: Broker, topic: str, policy_name: str, meter: Meter) -> dict[str, Any]:
    """Consume ``topic`` from the start with a fresh group under one ack policy."""
    kafka = make_broker(broker, topic, POLICIES[policy_name], meter)
    await kafka.start()
    try:
        await meter.done.wait()
    finally:
        await kafka.stop()
    print_rate(f"FastStream {version('faststream')} ack={policy_name} on {broker.kind}", meter)
    return throughput_result(f"faststream-{policy_name}", broker, meter)


async def main_async(argv: list[str]) -> None:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    add_records_options(parser, 200_000)
    parser.add_argument("--ack-policy", choices=sorted(POLICIES), default="default")
    args = parser.parse_args(argv)
    broker = broker_of(args)
    topic = await records_topic(broker, args)
    emit(await within(args.timeout, measure(broker, topic, args.ack_policy, meter_of(args))))


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1:]))
