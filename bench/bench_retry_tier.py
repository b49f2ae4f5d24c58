"""The Kafka retry tier: messages that fail once and succeed on their retry.

Every message fails on the main tier, is forwarded to ``retry1`` (due one
interval later) and succeeds there. Reported: main-tier failures handled per
second, failures forwarded per second (as a reader of the retry topic sees
them arrive), retries handled per second, and how long after its failure
each retry ran (never less than the interval). With ``--limit`` each rate is
taken over at most that many seconds, so the backlog need not drain::

    python -m bench.bench_retry_tier --bootstrap 127.0.0.1:9092 --kind kafka
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench._common import (
    GROUP_TIMEOUTS,
    Broker,
    Meter,
    add_records_options,
    broker_of,
    emit,
    fresh_name,
    records_topic,
    scenario_parser,
    within,
)
from kafka_retry import Config, Consumer, Message


class FailOnce(Exception):
    """What the handler raises on a message's first attempt."""


class Forwarded:
    """Reads the retry topic and counts what arrived, until all did or the window closed."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, isolation_level: str) -> None:
        self._reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, fetch_max_wait_ms=20, isolation_level=isolation_level
        )
        self._tps = [TopicPartition(topic, partition) for partition in range(partitions)]
        self.seen = 0
        self.at = 0.0

    async def count(self, expected: int, failed: Meter) -> None:
        """Count until ``expected`` arrived or ``failed``'s window (since its first) is over.

        Reading rather than asking for end offsets: Tansu answers ListOffsets
        with the number of batches, not of records.
        """
        reader = self._reader
        await reader.start()
        try:
            reader.assign(self._tps)
            await reader.seek_to_beginning()
            while self.seen < expected and not _over(failed):
                batches = await reader.getmany(timeout_ms=100)
                self.seen += sum(len(records) for records in batches.values())
                self.at = time.perf_counter()
        finally:
            await reader.stop()


def _over(meter: Meter) -> bool:
    if meter.limit is None or not meter.count:
        return False
    return time.perf_counter() - meter.first >= meter.limit


async def measure(
    broker: Broker,
    topic: str,
    partitions: int,
    messages: int,
    limit: float | None,
    interval: float,
    exactly_once: bool = False,
) -> dict[str, Any]:
    """Fail the records of ``topic`` (on ``partitions``) once each; time both tiers.

    With ``limit``, each rate is taken over at most that many seconds from the
    first event it counts, so a slow tier is sampled instead of waited out.
    """
    config = Config(
        bootstrap_servers=broker.bootstrap,
        group=fresh_name("retry"),
        topics=[topic],
        retry_intervals=[interval],
        idempotence=broker.idempotence,
        session_timeout_ms=GROUP_TIMEOUTS["session_timeout_ms"],
        rebalance_timeout_ms=GROUP_TIMEOUTS["rebalance_timeout_ms"],
        # Hand-offs still queued when the window closes are abandoned, not awaited.
        drain_timeout=2.0,
        exactly_once=exactly_once,
    )
    failed, retried = Meter(messages, limit), Meter(messages, limit)
    waited_ms: list[int] = []

    async def fail_once(message: Message) -> None:
        if message.attempt == 1:
            failed.hit()
            raise FailOnce
        retried.hit()
        if message.provenance is not None:
            waited_ms.append(int(time.time() * 1000) - message.provenance.failed_at)

    # Forwards count once committed: what the retry tier can read.
    isolation = config.effective_isolation_level
    forwarded = Forwarded(broker.bootstrap, config.topic_chain(topic)[1], partitions, isolation)
    async with Consumer(config, {topic: fail_once}):
        await forwarded.count(messages, failed)
        await retried.done.wait()
    result = {
        "scenario": "retry-tier-exactly-once" if exactly_once else "retry-tier",
        "broker": broker.kind,
        "messages": messages,
        "interval_s": interval,
        "failed": failed.measured,
        "failed_rate": round(failed.rate, 1),
        "forwarded": forwarded.seen,
        "forwarded_rate": round(forwarded.seen / (forwarded.at - failed.first), 1),
        "retried": retried.measured,
        "retried_rate": round(retried.rate, 1),
        "retry_after_failure_ms_min": min(waited_ms),
        "retry_after_failure_ms_p50": statistics.median(waited_ms),
    }
    print(
        f"retry tier{' exactly_once' if exactly_once else ''} on {broker.kind}:"
        f" failures handled at {failed.rate:,.0f}/s"
        f" ({failed.measured:,}), forwarded at {result['forwarded_rate']:,.0f}/s"
        f" ({forwarded.seen:,}), retried at {retried.rate:,.0f}/s ({retried.measured:,});"
        f" each retry ran {min(waited_ms)} ms (min) after its failure (interval {interval}s)"
    )
    return result


async def main_async(argv: list[str]) -> None:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    add_records_options(parser, 50_000)
    parser.add_argument("--interval", type=float, default=1.0, help="retry interval, seconds")
    parser.add_argument(
        "--exactly-once", action="store_true", help="hand-offs in each tier's transaction"
    )
    args = parser.parse_args(argv)
    broker = broker_of(args)
    topic = await records_topic(broker, args)
    emit(
        await within(
            args.timeout,
            measure(
                broker,
                topic,
                args.partitions,
                args.messages,
                args.limit,
                args.interval,
                args.exactly_once,
            ),
        )
    )


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1:]))
