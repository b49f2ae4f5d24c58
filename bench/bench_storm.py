"""A failure storm: every handler call fails; hand-offs per second against the success path.

One topic of 200-byte records on 6 partitions is read, round after round, by
two consumers of fresh groups that differ only in their handler: a no-op
(the success path) and one that always raises (``retry_intervals=[3600]``, so
nothing comes back). The storm's rate is that of *hand-offs acknowledged*:
records that reached the retry topic (Kafka backend, read as end offsets) or
committed rows of the retry table (PostgreSQL backend), from the first failed
call until all of them are stored. Reported: both rates per round and their
ratio, median over the rounds::

    python -m bench.bench_storm --bootstrap 127.0.0.1:9092 --kind kafka --rounds 3
    python -m bench.bench_storm --bootstrap 127.0.0.1:9092 --kind kafka --backend postgres \\
        --database-url postgresql://...
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
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
from kafka_retry import Config, Consumer, DatabaseConfig, Message


class Down(Exception):
    """What the storm's handler raises: the downstream is down."""


def _config(broker: Broker, topic: str, backend: str, database: DatabaseConfig | None) -> Config:
    return Config(
        bootstrap_servers=broker.bootstrap,
        group=fresh_name("storm"),
        topics=[topic],
        retry_intervals=[3600],
        retry_backend=backend,  # type: ignore[arg-type]
        database=database,
        idempotence=broker.idempotence,
        session_timeout_ms=GROUP_TIMEOUTS["session_timeout_ms"],
        rebalance_timeout_ms=GROUP_TIMEOUTS["rebalance_timeout_ms"],
        drain_timeout=2.0,
    )


async def success_rate(broker: Broker, topic: str, messages: int, backend: str, db: Any) -> float:
    """Messages per second of the no-op handler on the same consumer setup."""
    meter = Meter(messages)

    async def ok(message: Message) -> None:
        meter.hit()

    async with Consumer(_config(broker, topic, backend, db), {topic: ok}):
        await meter.done.wait()
    return meter.rate


async def _kafka_stored(
    bootstrap: str, topic: str, partitions: int
) -> Callable[[], Awaitable[int]]:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await reader.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    reader.assign(tps)

    async def stored() -> int:
        return sum((await reader.end_offsets(tps)).values())

    stored.close = reader.stop  # type: ignore[attr-defined]
    return stored


async def _table_stored(database: DatabaseConfig, url: str) -> Callable[[], Awaitable[int]]:
    connection = await asyncpg.connect(url)

    async def stored() -> int:
        return int(await connection.fetchval(f"SELECT count(*) FROM {database.qualified_table}"))

    stored.close = connection.close  # type: ignore[attr-defined]
    return stored


async def storm_rate(
    broker: Broker, topic: str, args: Any, database: DatabaseConfig | None
) -> float:
    """Hand-offs acknowledged per second while every call fails."""
    config = _config(broker, topic, args.backend, database)
    first: list[float] = []

    async def down(message: Message) -> None:
        if not first:
            first.append(time.perf_counter())
        raise Down

    async with Consumer(config, {topic: down}):
        if database is None:
            stored = await _kafka_stored(
                broker.bootstrap, config.topic_chain(topic)[1], args.partitions
            )
        else:
            stored = await _table_stored(database, args.database_url)
        try:
            # The store is outside this process: polling it is the only way to see it.
            while (count := await stored()) < args.messages:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            done = time.perf_counter()
        finally:
            await stored.close()  # type: ignore[attr-defined]
    return count / (done - first[0])


async def measure(broker: Broker, topic: str, args: Any) -> dict[str, Any]:
    """Alternate the success path and the storm for ``args.rounds`` rounds."""
    rounds: list[dict[str, float]] = []
    for number in range(1, args.rounds + 1):
        database = None
        if args.backend == "postgres":
            database = DatabaseConfig.from_url(
                args.database_url, schema=fresh_name("s").replace("-", "_")
            )
        success = await success_rate(broker, topic, args.messages, args.backend, database)
        storm = await storm_rate(broker, topic, args, database)
        rounds.append({"success": success, "storm": storm, "ratio": storm / success})
        # One result per rate and round: bench.run's report takes the ratio round by round.
        for name, rate in (
            (f"storm-success-{args.backend}", success),
            (f"storm-{args.backend}", storm),
        ):
            emit({"scenario": name, "broker": broker.kind, "rate": round(rate), "round": number})
        print(
            f"round {number}: success {success:,.0f}/s, storm ({args.backend}) {storm:,.0f}/s,"
            f" ratio {storm / success:.2f}"
        )
    ratios = [r["ratio"] for r in rounds]
    result = {
        "scenario": "storm",
        "broker": broker.kind,
        "backend": args.backend,
        "messages": args.messages,
        "rounds": rounds,
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }
    print(
        f"storm on {broker.kind}/{args.backend}: ratio median {result['ratio_median']}"
        f" (min {result['ratio_min']}, max {result['ratio_max']}) over {args.rounds} rounds"
    )
    return result


async def main_async(argv: list[str]) -> None:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    add_records_options(parser, 100_000)
    parser.add_argument("--backend", choices=("kafka", "postgres"), default="kafka")
    parser.add_argument("--database-url", help="PostgreSQL, for --backend postgres")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    broker = broker_of(args)
    topic = await records_topic(broker, args)
    emit(await within(args.timeout, measure(broker, topic, args)))


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1:]))
