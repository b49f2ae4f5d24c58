"""A failure storm: every handler call fails; hand-offs per second against the success path.

One topic of 200-byte records on 6 partitions is read, round after round, by
two consumers of fresh groups that differ only in their handler: a no-op
(the success path) and one that always raises (``retry_intervals=[3600]``, so
nothing comes back). The storm's rate is that of *hand-offs acknowledged*:
records that reached the retry topic (Kafka backend, read as end offsets) or
committed rows of the retry table (PostgreSQL backend), from the first failed
call until all of them are stored. Reported: both rates per round and their
ratio, median over the rounds.

With the Kafka backend each round also measures the ceiling of any hand-off
in one process: a bare aiokafka loop that reads the same records and writes
each, with the same ten provenance headers, to a topic of as many partitions
through ``create_batch()`` and pipelined ``send_batch()`` (one batch in flight
per partition while the next fills), committing what was acknowledged. No
handler, no error, no bookkeeping: the storm can come near it, never above::

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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench._common import (
    GROUP_TIMEOUTS,
    Broker,
    Meter,
    add_records_options,
    broker_of,
    create_topic,
    emit,
    fresh_name,
    records_topic,
    scenario_parser,
    within,
)
from kafka_retry import Config, Consumer, DatabaseConfig, Message
from kafka_retry.message import provenance_headers


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


async def _pipeline(
    source: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    target: str,
    group: str,
    first: list[float],
) -> None:
    """Read, append to one open batch per partition, send, commit what was acknowledged."""
    sent: asyncio.Queue[tuple[list[asyncio.Future[Any]], dict[TopicPartition, int]]]
    sent = asyncio.Queue(maxsize=64)

    async def commit_acknowledged() -> None:
        while True:
            deliveries, offsets = await sent.get()
            await asyncio.gather(*deliveries)
            await source.commit(offsets)

    committer = asyncio.create_task(commit_acknowledged())
    try:
        while True:
            fetched = await source.getmany(timeout_ms=200)
            if fetched and not first:
                first.append(time.perf_counter())
            deliveries: list[asyncio.Future[Any]] = []
            for tp, records in fetched.items():
                batch = producer.create_batch()
                for record in records:
                    now = int(time.time() * 1000)
                    headers = provenance_headers(
                        1, tp.topic, tp.partition, record.offset, record.timestamp, group,
                        now, now + 3_600_000, "Down", "",
                    )  # fmt: skip
                    if batch.append(
                        key=record.key, value=record.value, timestamp=None, headers=headers
                    ) is None:  # fmt: skip
                        deliveries.append(
                            await producer.send_batch(batch, target, partition=tp.partition)
                        )
                        batch = producer.create_batch()
                        batch.append(
                            key=record.key, value=record.value, timestamp=None, headers=headers
                        )
                deliveries.append(await producer.send_batch(batch, target, partition=tp.partition))
            if fetched:
                ends = {tp: records[-1].offset + 1 for tp, records in fetched.items()}
                await sent.put((deliveries, ends))
    finally:
        committer.cancel()


async def pipeline_rate(broker: Broker, topic: str, args: Any) -> float:
    """Records per second that the bare consume → send_batch loop hands on, acknowledged."""
    target = fresh_name("storm-pipeline")
    await create_topic(broker.bootstrap, target, args.partitions)
    group = fresh_name("storm-pipeline")
    source = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMEOUTS,
    )
    # The forwarder's producer settings (acks=all, a 2 ms linger, batches up to 1 MiB).
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap,
        enable_idempotence=broker.idempotence,
        acks="all",
        linger_ms=2,
        max_batch_size=1024 * 1024,
        max_request_size=16 * 1024 * 1024,
    )
    await producer.start()
    await source.start()
    stored = await _kafka_stored(broker.bootstrap, target, args.partitions)
    first: list[float] = []
    loop = asyncio.create_task(_pipeline(source, producer, target, group, first))
    try:
        # The store is outside this process, as in storm_rate: polled the same way.
        while (count := await stored()) < args.messages:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        done = time.perf_counter()
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await stored.close()  # type: ignore[attr-defined]
        await source.stop()
        await producer.stop()
    return count / (done - first[0])


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
        rates = {"success": success, "storm": storm}
        if args.backend == "kafka":
            rates["pipeline"] = await pipeline_rate(broker, topic, args)
        rounds.append({**rates, "ratio": storm / success})
        # One result per rate and round: bench.run's report takes the ratio round by round.
        for what, rate in rates.items():
            name = f"storm-{args.backend}" if what == "storm" else f"storm-{what}-{args.backend}"
            emit({"scenario": name, "broker": broker.kind, "rate": round(rate), "round": number})
        ceiling = ""
        if "pipeline" in rates:
            pipeline = rates["pipeline"]
            ceiling = (
                f"; bare pipeline {pipeline:,.0f}/s ({pipeline / success:.2f} of success,"
                f" storm at {storm / pipeline:.2f} of it)"
            )
        print(
            f"round {number}: success {success:,.0f}/s, storm ({args.backend}) {storm:,.0f}/s,"
            f" ratio {storm / success:.2f}{ceiling}"
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
