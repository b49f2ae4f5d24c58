"""Where the main tier's time goes: cProfile over the measured window only.

The profiler is switched on at the first handled message and off at the last,
so group joins and shutdown do not dilute the figures. cProfile's per-call
overhead inflates functions called per message relative to C code; read the
shares next to a sampling profile (``py-spy record -f raw``) of the same run::

    python -m bench.bench_profile --bootstrap 127.0.0.1:9092 --kind kafka --out main.pstats
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sys
from typing import Any

from bench._common import (
    Broker,
    Meter,
    add_records_options,
    broker_of,
    emit,
    meter_of,
    print_rate,
    records_topic,
    scenario_parser,
    within,
)
from bench.bench_main_tier import config_for
from kafka_retry import Config, Consumer, Message

#: Paths whose functions the report lists.
PACKAGES = ("kafka_retry", "aiokafka", "asyncio")


async def profile(config: Config, meter: Meter) -> cProfile.Profile:
    """Consume with a no-op handler, profiling from the first to the last message."""
    profiler = cProfile.Profile()

    async def no_op(message: Message) -> None:
        if meter.count == 0:
            profiler.enable()
        meter.hit()
        if meter.done.is_set():
            profiler.disable()

    async with Consumer(config, {config.topics[0]: no_op}):
        await meter.done.wait()
    return profiler


def top(stats: pstats.Stats, key: str, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` functions of :data:`PACKAGES` with the largest ``key`` time."""
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []
    for (path, line, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        calls, _primitive, own, cumulative, _callers = entry
        package = next((p for p in PACKAGES if f"/{p}/" in path), None)
        if package is not None:
            short = path[path.index(f"/{package}/") + 1 :]
        elif path.startswith("<attrs generated") and "kafka_retry." in path:
            short = path  # __init__ and friends that attrs writes for our records
        else:
            continue
        rows.append(
            {
                "function": f"{short}:{line}({name})",
                "calls": calls,
                "own_s": round(own, 4),
                "cumulative_s": round(cumulative, 4),
                "own_share": round(own / total, 4),
                "cumulative_share": round(cumulative / total, 4),
            }
        )
    field = "own_s" if key == "own" else "cumulative_s"
    rows.sort(key=lambda row: row[field], reverse=True)
    return rows[:limit]


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"{'own':>7} {'cum':>7} {'calls':>9}  function")
    for row in rows:
        own, cumulative = row["own_share"], row["cumulative_share"]
        print(f"{own:>7.1%} {cumulative:>7.1%} {row['calls']:>9}  {row['function']}")


async def main_async(argv: list[str]) -> None:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    add_records_options(parser, 200_000)
    parser.add_argument("--metrics", choices=["on", "off"], default="off")
    parser.add_argument("--out", help="also write the raw pstats here")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    broker: Broker = broker_of(args)
    topic = await records_topic(broker, args)
    meter = meter_of(args)
    profiler = await within(
        args.timeout, profile(config_for(broker, topic, args.metrics == "on"), meter)
    )
    print_rate(f"kafka-retry under cProfile on {broker.kind}", meter)
    if args.out:
        profiler.dump_stats(args.out)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    by_own, by_cumulative = top(stats, "own", args.top), top(stats, "cumulative", args.top)
    print_table("by own time (share of profiled time)", by_own)
    print_table("by cumulative time", by_cumulative)
    emit(
        {
            "scenario": "profile",
            "broker": broker.kind,
            "messages": meter.measured,
            "rate_under_profiler": round(meter.rate, 1),
            "by_own": by_own,
            "by_cumulative": by_cumulative,
        }
    )


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1:]))
