"""Scaling out: 1, 2, 3 … consumer processes in one group on 6 partitions.

Each worker process runs one kafka-retry consumer whose handler awaits 2 ms.
The workers join first (the group is Stable with every member) and only then
are the records produced, so no rebalance falls into the measured window,
which runs from the first message any worker handled to the last. Workers
report over stdout; the wall clock is shared by all processes of one machine::

    python -m bench.bench_scaling --bootstrap 127.0.0.1:9092 --kind kafka --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from bench._common import (
    GROUP_TIMEOUTS,
    Broker,
    broker_of,
    create_topic,
    distinct_keys,
    emit,
    fresh_name,
    no_key,
    padded,
    produce,
    scenario_parser,
    within,
)
from kafka_retry import Config, Consumer, Message

_REPORT_EVERY = 0.1


class Progress:
    """What a worker has handled: count and wall-clock bounds."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def hit(self) -> None:
        now = time.time()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now

    def line(self) -> str:
        return json.dumps({"count": self.count, "first": self.first, "last": self.last})


async def run_worker(args: argparse.Namespace) -> None:
    """One consumer process: join, say so, report progress until SIGTERM."""
    broker = broker_of(args)
    config = Config(
        bootstrap_servers=broker.bootstrap,
        group=args.group,
        topics=[args.topic],
        retry_intervals=[60],
        idempotence=broker.idempotence,
        ordering=args.ordering,
        session_timeout_ms=GROUP_TIMEOUTS["session_timeout_ms"],
        rebalance_timeout_ms=GROUP_TIMEOUTS["rebalance_timeout_ms"],
        drain_timeout=2.0,  # the rebalance timeout must cover the drain
    )
    progress = Progress()
    delay = args.handler_ms / 1000

    async def handler(message: Message) -> None:
        progress.hit()
        await asyncio.sleep(delay)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Consumer(config, {args.topic: handler}):
        print(json.dumps({"ready": True}), flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _REPORT_EVERY)
            print(progress.line(), flush=True)


async def group_stable(bootstrap: str, group: str, members: int) -> None:
    """Wait until ``group`` is Stable with ``members`` members."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while True:
            for response in await admin.describe_consumer_groups([group]):
                for _error, _name, state, _type, _protocol, found, *_ in response.groups:
                    if state == "Stable" and len(found) == members:
                        return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


class Worker:
    """A worker process seen from the orchestrator."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.ready = asyncio.Event()
        self.latest: dict[str, float] = {"count": 0, "first": 0.0, "last": 0.0}
        self.changed = asyncio.Event()

    async def follow(self) -> None:
        """Read the worker's lines until it exits."""
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            report = json.loads(raw)
            if report.get("ready"):
                self.ready.set()
            else:
                self.latest = report
                self.changed.set()


async def spawn(args: argparse.Namespace, topic: str, group: str) -> Worker:
    command = [sys.executable, "-m", "bench.bench_scaling", "--role", "worker"]
    command += ["--bootstrap", args.bootstrap, "--kind", args.kind, "--topic", topic]
    command += ["--group", group, "--ordering", args.ordering]
    command += ["--handler-ms", str(args.handler_ms)]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    return Worker(process)


async def wait_handled(workers: list[Worker], messages: int) -> None:
    """Wait until the workers together handled ``messages``."""
    while sum(w.latest["count"] for w in workers) < messages:
        waits = [asyncio.ensure_future(w.changed.wait()) for w in workers]
        _done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in pending:
            waiting.cancel()
        for worker in workers:
            worker.changed.clear()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the workers, wait for a stable group, produce, time the handling."""
    broker: Broker = broker_of(args)
    topic, group = fresh_name("scaling"), fresh_name("scaling")
    await create_topic(broker.bootstrap, topic, args.partitions)
    workers = [await spawn(args, topic, group) for _ in range(args.processes)]
    readers = [asyncio.create_task(w.follow()) for w in workers]
    try:
        await asyncio.gather(*(w.ready.wait() for w in workers))
        await group_stable(broker.bootstrap, group, args.processes)
        keys = distinct_keys(args.messages) if args.ordering == "key" else no_key
        await produce(broker.bootstrap, topic, args.messages, args.partitions, padded(200), keys)
        await wait_handled(workers, args.messages)
    finally:
        for worker in workers:
            if worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*(w.process.wait() for w in workers))
        await asyncio.gather(*readers, return_exceptions=True)
    first = min(w.latest["first"] for w in workers if w.latest["count"])
    last = max(w.latest["last"] for w in workers)
    rate = args.messages / (last - first)
    shares = [int(w.latest["count"]) for w in workers]
    print(
        f"{args.processes} process(es) on {broker.kind}, ordering={args.ordering},"
        f" handler {args.handler_ms} ms: {rate:,.0f} msg/s (per process: {shares})"
    )
    return {
        "scenario": f"scaling-{args.ordering}",
        "broker": broker.kind,
        "processes": args.processes,
        "messages": args.messages,
        "seconds": round(last - first, 4),
        "rate": round(rate, 1),
        "per_process": shares,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = scenario_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--messages", type=int, default=12_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--handler-ms", type=float, default=2.0)
    parser.add_argument("--ordering", choices=["partition", "key", "none"], default="partition")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to give up after")
    parser.add_argument("--role", choices=["orchestrator", "worker"], default="orchestrator")
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def main_async(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.role == "worker":
        await run_worker(args)
    else:
        emit(await within(args.timeout, measure(args)))


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1:]))
