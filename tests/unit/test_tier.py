"""KafkaTier's rebalance bookkeeping, on a stand-in for the aiokafka consumer."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from kafka_retry import Config, Message
from kafka_retry._clock import SystemClock
from kafka_retry.runtime.dispatch import Dispatcher
from kafka_retry.runtime.tier import KafkaTier

TP = TopicPartition("t", 0)


class IdleConsumer:
    """Takes the calls a tier makes outside its poll loop, and does nothing."""

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...


async def noop(message: Message) -> None: ...


def tier() -> KafkaTier:
    config = Config(bootstrap_servers="b:9092", group="g", topics=["t"], metrics=False)
    backend: Any = None
    dispatcher = Dispatcher(
        config=config,
        handlers={"t": noop},
        main_of={"t": "t"},
        attempt=1,
        retry=backend,
        dead_letters=backend,
        clock=SystemClock(),
    )
    return KafkaTier("main", config, IdleConsumer(), ["t"], dispatcher, None, SystemClock())


async def test_an_assignment_starts_a_worker_per_partition() -> None:
    """Partitions assigned while running are held, each with a worker."""
    running = tier()
    running.assign({TP})
    assert running.assignment == {TP}
    await running.revoke({TP})
    assert running.assignment == frozenset()


async def test_an_assignment_during_shutdown_starts_no_worker() -> None:
    """A rebalance that assigns partitions while the tier stops starts nothing to leak."""
    stopping = tier()
    stopping.request_stop()
    stopping.assign({TP})
    assert stopping.assignment == frozenset()
