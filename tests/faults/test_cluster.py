"""DESIGN §2 on a 3-node cluster: the node leading the busiest partitions crashes mid-run.

Every topic keeps 3 copies and takes writes while 2 are in sync
(``min.insync.replicas=2``), so losing one node must cost no message: the
consumer's clients move to the new leaders and the consumer keeps its group.
Each run's line adds the node killed (and whether it was the group
coordinator), ``elected`` (seconds from the kill until no partition of the
runs has it as leader), ``recover`` (until a message of a partition it led,
never handled before, is handled from a new leader), ``stall`` (the longest
time without handling on those partitions) and ``longest_pause`` (in all
handling), the last two until a second after the recovery.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from tests.faults import stores
from tests.faults.harness import Fault, FaultRun
from tests.faults.services import Cluster, Services, Worker
from tests.faults.test_faults import at_once, both_backends, conclude, paced

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

_PARTITIONS = 6
# What the consumer logs when a tier gets partitions.
_ASSIGNED = re.compile(r" tier (\S+) assigned ")
_OFFSETS = "__consumer_offsets"
# Bounds on waits that must end (not timing thresholds): a failover or a
# rejoin that takes longer than this is a hang.
_FAILOVER_WITHIN = 90.0
_REJOIN_WITHIN = 120.0
# Longer than the 9 s after which the controller fences a silent broker
# (broker.session.timeout.ms): until then the group coordinator's writes wait
# for the dead copy, and heartbeats were seen failing for seconds, so a shorter
# session risks evicting members, which is not what this scenario is about.
_SESSION_TIMEOUT_MS = 15_000


def main_partition(fid: int) -> int:
    """The main-topic partition of id ``fid``: the producer's default partitioner on its key."""
    return int(murmur2(str(fid).encode()) & 0x7FFFFFFF) % _PARTITIONS


def stall_on(run: FaultRun, partitions: set[int], start: float, end: float) -> float:
    """The longest time between ``start`` and ``end`` without a call for an id of ``partitions``."""
    times = sorted(
        c.line.at
        for c in run.ledger.calls
        if start <= c.line.at <= end and main_partition(c.line.fid) in partitions
    )
    if not times:
        return end - start
    return max(later - earlier for earlier, later in itertools.pairwise([start, *times]))


async def elected(bootstrap: str, topics: Sequence[str], node: int, since: float) -> float:
    """Wait until ``node`` leads no partition of ``topics``; return the seconds since ``since``."""
    deadline = time.monotonic() + _FAILOVER_WITHIN
    while True:
        try:
            where = await stores.placements(bootstrap, topics)
        except KafkaError:
            where = {}  # the admin client asked the dead node: ask again
        if where and all(at.leader not in (node, -1) for at in where.values()):
            return time.time() - since
        assert time.monotonic() < deadline, f"node {node} still leads, or no leader, after the kill"
        await asyncio.sleep(0.1)


def first_new_on(run: FaultRun, moment: float, partitions: set[int]) -> float:
    """Seconds from ``moment`` until an id of ``partitions`` not handled before it is handled."""
    calls = run.ledger.calls
    before = {c.line.fid for c in calls if c.line.at < moment}
    times = [
        c.line.at
        for c in calls
        if c.line.at >= moment
        and c.line.fid not in before
        and main_partition(c.line.fid) in partitions
    ]
    return min(times) - moment if times else math.inf


def ready(worker: Worker) -> Callable[[], bool]:
    """Whether ``worker``'s consumer is ready."""
    return lambda: worker.ready


def handled_anew(run: FaultRun, moment: float, partitions: set[int]) -> Callable[[], bool]:
    """Whether an id of ``partitions`` new since ``moment`` was handled (or none is left)."""
    ids = {r.fid for r in run.records if main_partition(r.fid) in partitions}
    return lambda: first_new_on(run, moment, partitions) < math.inf or ids <= run.ledger.seen


async def busiest_leader(bootstrap: str, runs: Sequence[FaultRun]) -> int:
    """The node leading the partitions with the most records not yet committed, over all runs."""
    groups = [pair for run in runs for pair in run.groups]
    behind = await stores.lags(bootstrap, groups)
    where = await stores.placements(bootstrap, sorted({tp.topic for tp in behind}))
    load: collections.Counter[int] = collections.Counter()
    for tp, records in behind.items():
        load[where[tp].leader] += records
    return load.most_common(1)[0][0]


def led_by(placements: dict[TopicPartition, stores.Placement], topic: str, node: int) -> set[int]:
    """The partitions of ``topic`` that ``node`` leads."""
    return {
        tp.partition for tp, at in placements.items() if tp.topic == topic and at.leader == node
    }


async def check_replication(bootstrap: str, run: FaultRun) -> None:
    """Every topic of the run has 3 copies, and takes writes with 2 of them in sync."""
    topics = [run.topic] + (run.chain.topics[1:] if run.backend == "kafka" else [])
    where = await stores.placements(bootstrap, topics)
    assert {tp.topic for tp in where} == set(topics)
    for tp, at in where.items():
        assert len(at.replicas) == Cluster.SIZE, f"{tp} has replicas {at.replicas}"
    for topic in topics:
        assert await stores.topic_setting(bootstrap, topic, "min.insync.replicas") == "2", topic


async def all_in_sync(bootstrap: str, runs: Sequence[FaultRun]) -> None:
    """Wait until every partition of every run's topics has all its copies in sync again."""
    topics = [_OFFSETS, *(topic for run in runs for _group, topic in run.groups)]
    deadline = time.monotonic() + _REJOIN_WITHIN
    while True:
        where = await stores.placements(bootstrap, topics)
        lagging = [tp for tp, at in where.items() if len(at.isr) < Cluster.SIZE]
        if not lagging:
            return
        assert time.monotonic() < deadline, f"not in sync again: {lagging[:5]}"
        await asyncio.sleep(0.5)


async def test_leader_of_busiest_partitions_killed(
    fault_cluster: Cluster,
    fault_services: Services,
    fault_count: int,
    fault_random: random.Random,
    fault_report: list[str],
    tmp_path: Path,
) -> None:
    """SIGKILL of the busiest leader mid-run, then its restart: nothing lost, no consumer restart.

    Both backends run at once on the cluster with retries in flight; the
    consumers create their retry and dead-letter topics with
    ``replication_factor=3``. The node killed leads the most records not yet
    committed, over both runs' topics.
    """
    services = fault_cluster.on(fault_services)
    bootstrap = fault_cluster.bootstrap
    async with both_backends(
        services,
        tmp_path,
        scenario="leader killed (3 nodes)",
        count=fault_count,
        pace=paced(fault_count),
        # ~20 MB in all: the consumers cannot have fetched a partition whole before the kill.
        padding=max(64, 20_000_000 // fault_count),
        replication_factor=Cluster.SIZE,
        session_timeout_ms=_SESSION_TIMEOUT_MS,
    ) as runs:
        workers = [run.start_worker() for run in runs]
        for run, worker in zip(runs, workers, strict=True):
            await run.wait_for(ready(worker), 90.0, "the consumer to be ready")
            await check_replication(bootstrap, run)
        await at_once(*(run.wait_progress(fault_random.uniform(0.2, 0.4)) for run in runs))
        node = await busiest_leader(bootstrap, runs)
        placements = await stores.placements(bootstrap, [_OFFSETS, *(run.topic for run in runs)])
        coordinator = placements[TopicPartition(_OFFSETS, 0)].leader == node
        killed = time.time()
        await asyncio.to_thread(fault_cluster.kill, node)
        topics = [topic for run in runs for _group, topic in run.groups]
        election = await elected(bootstrap, topics, node, killed)
        # A run whose main topic the node did not lead is judged on all its partitions.
        lost = {
            run.backend: led_by(placements, run.topic, node) or set(range(_PARTITIONS))
            for run in runs
        }
        for run in runs:
            # The consumer handles again from the new leaders (not from what it had fetched).
            await run.wait_for(
                handled_anew(run, killed + election, lost[run.backend]),
                _FAILOVER_WITHIN,
                f"handling on the partitions node {node} led",
            )
            # Infinite (reported as such) if the consumer had fetched them all before.
            recovery = election + first_new_on(run, killed + election, lost[run.backend])
            run.faults.append(Fault(f"kill node {node}", killed, recovery))
        await asyncio.to_thread(fault_cluster.restart)
        verdicts = await at_once(*(run.finish() for run in runs))
        await all_in_sync(bootstrap, runs)
    for run, worker in zip(runs, workers, strict=True):
        assert run.workers == [worker], f"{run.backend}: the consumer was restarted by hand"
        assert worker.returncode == 0, f"{run.backend}: the consumer ended {worker.returncode}"
        # One assignment per tier: no member was evicted from its group and let in again.
        tiers = collections.Counter(_ASSIGNED.findall(worker.output()))
        assert tiers and set(tiers.values()) == {1}, f"{run.backend}: assignments {tiers}"
    role = "+coordinator" if coordinator else ""
    lines: list[str] = []
    try:
        conclude(zip(runs, verdicts, strict=True), lines)
    finally:
        for run, line in zip(runs, lines, strict=True):
            window = (killed, killed + min(run.faults[0].recovery, _FAILOVER_WITHIN) + 1.0)
            fault_report.append(
                f"{line} killed=node-{node}{role} elected={election:.1f}s "
                f"stall={stall_on(run, lost[run.backend], *window):.1f}s "
                f"longest_pause={run.ledger.longest_pause(*window):.1f}s"
            )
