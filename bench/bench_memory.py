"""Memory with a large backlog: does RSS stay flat while kafka-retry works through it?

Produces ``--messages`` (default 1,000,000) small records on 6 partitions,
then consumes them with a handler that awaits ``--handler-ms`` and samples this
process's resident set size (``VmRSS`` of ``/proc/self/status``) every
``--every`` seconds for ``--seconds``. Reported: RSS before the consumer
starts, once it joined, its peak, at the end, and the growth over the second
half of the run as a fitted slope (flat means close to zero)::

    python -m bench.bench_memory --bootstrap 127.0.0.1:9092 --kind kafka --ordering key

Large records (``--size 100000 --partitions 64``) show the byte bound
(``Config.max_buffered_bytes``); ``--max-buffered-bytes 1099511627776`` lifts it,
for a baseline in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from bench._common import (
    GROUP_TIMEOUTS,
    broker_of,
    create_topic,
    emit,
    fresh_name,
    padded,
    produce,
    scenario_parser,
    within,
)
from kafka_retry import Config, Consumer, Message


def rss_mib() -> float:
    """This process's resident set size now, in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def sample(samples: list[tuple[float, float]], every: float, started: float) -> None:
    """Append ``(seconds since start, RSS MiB)`` every ``every`` seconds until cancelled."""
    while True:
        samples.append((round(time.perf_counter() - started, 2), round(rss_mib(), 1)))
        await asyncio.sleep(every)


def summarize(before: float, samples: list[tuple[float, float]], handled: int) -> dict[str, Any]:
    """Start, peak, end and second-half growth of the sampled RSS."""
    values = [rss for _t, rss in samples]
    half = samples[len(samples) // 2 :]
    # A least-squares slope: the allocator's sawtooth would swing a two-point difference.
    slope = statistics.linear_regression([t for t, _ in half], [rss for _, rss in half]).slope
    growth = slope * 60
    return {
        "rss_before_mib": round(before, 1),
        "rss_start_mib": values[0],
        "rss_peak_mib": max(values),
        "rss_end_mib": values[-1],
        "second_half_growth_mib_per_min": round(growth, 2),
        "handled": handled,
        "samples": samples,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Produce the backlog, then consume it for ``--seconds`` while sampling RSS."""
    broker = broker_of(args)
    topic = args.topic
    if not topic:
        topic = fresh_name("backlog")
        await create_topic(broker.bootstrap, topic, args.partitions)
        seconds = await produce(
            broker.bootstrap, topic, args.messages, args.partitions, padded(args.size)
        )
        print(f"produced {args.messages:,} records in {seconds:.1f}s")
    config = Config(
        bootstrap_servers=broker.bootstrap,
        group=fresh_name("memory"),
        topics=[topic],
        retry_intervals=[60],
        idempotence=broker.idempotence,
        ordering=args.ordering,
        session_timeout_ms=GROUP_TIMEOUTS["session_timeout_ms"],
        rebalance_timeout_ms=GROUP_TIMEOUTS["rebalance_timeout_ms"],
        drain_timeout=2.0,  # the rebalance timeout must cover the drain
        **({"max_buffered_bytes": args.max_buffered_bytes} if args.max_buffered_bytes else {}),
    )
    handled = 0
    delay = args.handler_ms / 1000

    async def handler(message: Message) -> None:
        nonlocal handled
        await asyncio.sleep(delay)
        handled += 1

    before = rss_mib()
    samples: list[tuple[float, float]] = []
    async with Consumer(config, {topic: handler}):
        sampler = asyncio.create_task(sample(samples, args.every, time.perf_counter()))
        await asyncio.sleep(args.seconds)
        sampler.cancel()
    bound = "default" if not args.max_buffered_bytes else str(args.max_buffered_bytes)
    result = {
        "scenario": f"memory-{args.ordering}" + (f"-{args.size}B" if args.size > 1000 else ""),
        "value_bytes": args.size,
        "partitions": args.partitions,
        "max_buffered_bytes": bound,
        "broker": broker.kind,
        "backlog": args.messages,
        "seconds": args.seconds,
        **summarize(before, samples, handled),
    }
    print(
        f"ordering={args.ordering} on {broker.kind}, {args.size:,} B values,"
        f" max_buffered_bytes {bound}: handled {handled:,} of {args.messages:,};"
        f" RSS before {before:.0f} MiB, joined {result['rss_start_mib']:.0f},"
        f" peak {result['rss_peak_mib']:.0f}, end {result['rss_end_mib']:.0f} MiB;"
        f" second half {result['second_half_growth_mib_per_min']:+.1f} MiB/min"
    )
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="backlog size")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--size", type=int, default=100, help="value bytes")
    parser.add_argument("--topic", help="an existing backlog topic (skips producing)")
    parser.add_argument("--ordering", choices=["partition", "key", "none"], default="partition")
    parser.add_argument("--handler-ms", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to consume")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to give up after")
    parser.add_argument(
        "--max-buffered-bytes", type=int, default=0, help="Config.max_buffered_bytes (0: default)"
    )
    return parser.parse_args(argv)


async def main_async(argv: list[str]) -> None:
    args = parse_args(argv)
    emit(await within(args.timeout, measure(args)))


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1:]))
