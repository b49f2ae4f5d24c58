"""Run every benchmark on Apache Kafka and/or Tansu and write the report.

Each measurement runs as its own process (``python -m bench.<module>``) so
that one cannot warm up or slow down the next. Throughput systems are
interleaved round by round on the same records, so the ratios compare runs
made under the same conditions. Results go to ``bench/results/<date>.md``
and ``.json``::

    python -m bench.run                     # everything, both brokers
    python -m bench.run --broker kafka --quick
    python -m bench.run --only throughput --runs 5

Brokers and PostgreSQL: ``--kafka-bootstrap`` / ``$KAFKA_BOOTSTRAP_SERVERS``,
``--tansu-bootstrap`` and ``--database-url`` / ``$DATABASE_URL`` name running
ones; whatever is not named is started by the devstack in a private state
directory and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from bench import _environment, _report
from bench._common import RESULT_PREFIX, Broker, create_topic, fresh_name, padded, produce
from bench._sizes import QUICK, Sizes
from bench.bench_ordering import keyed_topic

SCENARIOS = (
    "throughput",
    "retry",
    "exactly_once",
    "postgres",
    "latency",
    "scaling",
    "ordering",
    "memory",
    "profile",
    "storm",
)
RESULTS = Path(__file__).parent / "results"


class Runner:
    """Runs scenario processes against one broker and collects their results."""

    def __init__(self, kind: str, bootstrap: str, logs: Path, timeout: float) -> None:
        self.kind = kind
        self.bootstrap = bootstrap
        self.logs = logs
        self.timeout = timeout
        self.results: list[dict[str, Any]] = []
        self._count = 0

    def run(self, module: str, *args: str, **tags: Any) -> list[dict[str, Any]]:
        """Run ``bench.<module>`` with ``args``; keep its results, tagged; record a failure."""
        self._count += 1
        log = self.logs / f"{self.kind}-{self._count:03d}-{module}.log"
        command = [sys.executable, "-m", f"bench.{module}", "--bootstrap", self.bootstrap]
        command += ["--kind", self.kind, *args]
        print(f"[{self.kind}] {module} {' '.join(args)}", flush=True)
        try:
            with log.open("w") as stderr:
                done = subprocess.run(
                    command, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=self.timeout
                )
            error = None if done.returncode == 0 else f"exit {done.returncode}, log {log}"
            output = done.stdout
        except subprocess.TimeoutExpired as exc:
            error, output = f"timed out after {self.timeout:.0f}s, log {log}", str(exc.stdout or "")
        found = [
            {**json.loads(line[len(RESULT_PREFIX) :]), **tags}
            for line in output.splitlines()
            if line.startswith(RESULT_PREFIX)
        ]
        for line in output.splitlines():
            if not line.startswith(RESULT_PREFIX):
                print(f"    {line}", flush=True)
        if error is not None:
            print(f"    FAILED: {error}", flush=True)
            found.append({"scenario": module, "broker": self.kind, "error": error, **tags})
        self.results += found
        return found


def records_topic(bootstrap: str, count: int, partitions: int = 6, size: int = 200) -> str:
    """A new topic of ``count`` records that several scenarios then read."""
    topic = fresh_name("records")

    async def fill() -> float:
        await create_topic(bootstrap, topic, partitions)
        return await produce(bootstrap, topic, count, partitions, padded(size))

    seconds = asyncio.run(fill())
    print(f"produced {count:,} records to {topic} in {seconds:.1f}s", flush=True)
    return topic


def throughput(runner: Runner, sizes: Sizes, runs: int) -> str:
    """Interleaved rounds: raw, FastStream (both policies), kafka-retry (metrics off/on), batch."""
    topic = records_topic(runner.bootstrap, sizes.records)
    common = ["--topic", topic, "--messages", str(sizes.records)]
    for round_ in range(runs):
        runner.run("bench_raw", *common, round=round_)
        for policy, seconds in (
            ("default", sizes.faststream_seconds),
            ("ack", sizes.faststream_ack_seconds),
        ):
            limit = ["--ack-policy", policy, "--limit", str(seconds)]
            runner.run("bench_faststream", *common, *limit, round=round_)
        for metrics in ("off", "on"):
            runner.run("bench_main_tier", *common, "--metrics", metrics, round=round_)
        for metrics, size in (("off", 500), ("on", 500), ("on", 100)):
            batch = ["--handler", "batch", "--max-size", str(size), "--metrics", metrics]
            runner.run("bench_main_tier", *common, *batch, round=round_)
    return topic


def retry(runner: Runner, sizes: Sizes, runs: int) -> None:
    args = ["--messages", str(sizes.retry_messages), "--limit", str(sizes.retry_seconds)]
    for round_ in range(runs):
        runner.run("bench_retry_tier", *args, round=round_)


def postgres(runner: Runner, sizes: Sizes, runs: int, database_url: str) -> None:
    rows = ["--database-url", database_url, "--rows", str(sizes.postgres_rows)]
    for round_ in range(runs):
        runner.run("bench_postgres_tier", *rows, "--batch-size", "250", round=round_)


def latency(runner: Runner, sizes: Sizes, runs: int) -> None:
    for round_ in range(runs):
        for system in ("raw", "kafka-retry"):
            seconds = ["--seconds", str(sizes.latency_seconds)]
            runner.run("bench_latency", "--system", system, *seconds, round=round_)


def scaling(runner: Runner, sizes: Sizes, runs: int) -> None:
    for ordering, messages in sizes.scaling_messages.items():
        for round_ in range(runs):
            for processes in (1, 2, 3):
                args = ["--processes", str(processes), "--ordering", ordering]
                runner.run("bench_scaling", *args, "--messages", str(messages), round=round_)


def ordering(runner: Runner, sizes: Sizes, runs: int) -> None:
    topic = _keyed_topic(runner.bootstrap, sizes.ordering_messages)
    common = ["--topic", topic, "--messages", str(sizes.ordering_messages)]
    common += ["--limit", str(sizes.ordering_partition_seconds)]
    for round_ in range(runs):
        for mode in ("partition", "key", "none"):
            runner.run("bench_ordering", *common, "--ordering", mode, round=round_)


def _keyed_topic(bootstrap: str, messages: int) -> str:
    # The broker kind only matters to consumers; producing is alike on both.
    return asyncio.run(keyed_topic(Broker(bootstrap, "kafka"), messages, 1_000))


def memory(runner: Runner, sizes: Sizes) -> None:
    topic = records_topic(runner.bootstrap, sizes.memory_backlog, size=100)
    for mode in sizes.memory_orderings:
        args = ["--topic", topic, "--messages", str(sizes.memory_backlog), "--ordering", mode]
        runner.run("bench_memory", *args, "--seconds", str(sizes.memory_seconds))
    # 100 KB records on 64 partitions: the byte bound, then without it (the baseline).
    count, partitions = sizes.memory_large_records, 64
    large = records_topic(runner.bootstrap, count, partitions=partitions, size=100_000)
    for bound in ("0", str(2**40)):
        runner.run(
            "bench_memory",
            *("--topic", large, "--messages", str(count), "--partitions", str(partitions)),
            *("--size", "100000", "--handler-ms", "500", "--max-buffered-bytes", bound),
            *("--seconds", str(sizes.memory_large_seconds)),
        )


def profile(runner: Runner, topic: str, sizes: Sizes) -> None:
    args = ["--topic", topic, "--messages", str(sizes.records), "--top", "15"]
    runner.run("bench_profile", *args)


def exactly_once(runner: Runner, sizes: Sizes, runs: int) -> None:
    """Interleaved rounds: the main tier and the retry tier without and with exactly_once."""
    topic = records_topic(runner.bootstrap, sizes.records)
    common = ["--topic", topic, "--messages", str(sizes.records)]
    retry = ["--messages", str(sizes.retry_messages), "--limit", str(sizes.retry_seconds)]
    for round_ in range(runs):
        runner.run("bench_main_tier", *common, round=round_)
        runner.run("bench_main_tier", *common, "--exactly-once", round=round_)
    for round_ in range(runs):
        runner.run("bench_retry_tier", *retry, round=round_)
        runner.run("bench_retry_tier", *retry, "--exactly-once", round=round_)


def storm(runner: Runner, sizes: Sizes, runs: int, database_url: str | None) -> None:
    """Every call fails: hand-offs per second against the same consumer's success path.

    Kafka backend always; the PostgreSQL backend when there is a database.
    """
    rounds = ["--rounds", str(runs)]
    runner.run("bench_storm", "--messages", str(sizes.storm_messages), *rounds)
    if database_url:
        table = ["--backend", "postgres", "--database-url", database_url]
        runner.run("bench_storm", "--messages", str(sizes.storm_rows), *table, *rounds)


def run_broker(
    runner: Runner, args: argparse.Namespace, sizes: Sizes, database_url: str | None
) -> None:
    """Every selected scenario on one broker."""
    wanted = set(args.only or SCENARIOS) - set(args.skip or ())
    topic = throughput(runner, sizes, args.runs) if "throughput" in wanted else None
    runs = min(args.runs, sizes.other_runs)
    if "profile" in wanted:
        profile(runner, topic or records_topic(runner.bootstrap, sizes.records), sizes)
    if "retry" in wanted:
        retry(runner, sizes, runs)
    if "exactly_once" in wanted and runner.kind != "tansu":  # Tansu has no transactions
        exactly_once(runner, sizes, args.runs)
    if "postgres" in wanted and database_url:
        postgres(runner, sizes, runs, database_url)
    if "latency" in wanted:
        latency(runner, sizes, runs)
    if "scaling" in wanted:
        scaling(runner, sizes, runs)
    if "ordering" in wanted:
        ordering(runner, sizes, runs)
    if "storm" in wanted:
        storm(runner, sizes, runs, database_url)
    if "memory" in wanted and (runner.kind == args.memory_broker or args.broker != "both"):
        memory(runner, sizes)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=["kafka", "tansu", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    parser.add_argument(
        "--runs", type=int, help="throughput rounds (default 3, quick 1); others run at most 2"
    )
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these")
    parser.add_argument("--skip", nargs="+", choices=SCENARIOS, help="leave these out")
    parser.add_argument("--kafka-bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    parser.add_argument("--tansu-bootstrap")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument(
        "--memory-broker",
        choices=["kafka", "tansu"],
        default="kafka",
        help="with --broker both, the memory scenario runs on this one only",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where reports go")
    parser.add_argument("--timeout", type=float, default=300.0, help="per measurement, seconds")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    return args


def _exit_on_sigterm() -> None:
    # SystemExit unwinds through the finally blocks that stop what was started
    # (and subprocess.run kills the measurement running then).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _exit_on_sigterm()
    sizes = QUICK if args.quick else Sizes()
    kinds = ["kafka", "tansu"] if args.broker == "both" else [args.broker]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kafka-retry-bench-") as scratch:
        services = _environment.Services(Path(scratch) / "devstack")
        try:
            bootstraps = services.brokers(kinds, args.kafka_bootstrap, args.tansu_bootstrap)
            database_url = services.database(args.database_url, needed=_wants_postgres(args))
            logs = Path(scratch) / "logs"
            logs.mkdir()
            results: list[dict[str, Any]] = []
            for kind in kinds:
                runner = Runner(kind, bootstraps[kind], logs, args.timeout)
                run_broker(runner, args, sizes, database_url)
                results += runner.results
            environment = _environment.describe(kinds, database_url)
        finally:
            services.stop()
    minutes = (time.perf_counter() - started) / 60
    write_reports(args, sizes, kinds, results, environment, minutes)
    return 1 if any("error" in r for r in results) else 0


def _wants_postgres(args: argparse.Namespace) -> bool:
    return bool({"postgres", "storm"} & (set(args.only or SCENARIOS) - set(args.skip or ())))


def write_reports(
    args: argparse.Namespace,
    sizes: Sizes,
    kinds: list[str],
    results: list[dict[str, Any]],
    environment: dict[str, Any],
    minutes: float,
) -> None:
    """Write ``<date>[-quick].md`` and ``.json`` under ``--out``; print the Markdown."""
    ok = [r for r in results if "error" not in r]
    failures = [r for r in results if "error" in r]
    summary = _report.summarize(ok, kinds)
    settings = {"runs": args.runs, "quick": args.quick, "sizes": attrs.asdict(sizes)}
    notes = _environment.notes(sizes, args.runs, minutes, args.quick)
    text = _report.markdown(summary, environment, kinds, notes, failures)
    stem = dt.date.today().isoformat() + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(text)
    document = {
        "environment": environment,
        "settings": settings,
        "summary": summary,
        "results": results,
    }
    (args.out / f"{stem}.json").write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(text)
    print(f"wrote {args.out / stem}.md and .json")


if __name__ == "__main__":
    sys.exit(main())
