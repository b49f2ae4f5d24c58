"""exactly_once without a broker: settings, refusals, and the commit of a tier's transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from kafka_retry import Config, ConfigError, Consumer, DatabaseConfig, Message, SetupError
from kafka_retry._kafka import transactional_id
from kafka_retry._transaction import TierTransaction
from kafka_retry.runtime import _txcommit
from kafka_retry.runtime._txcommit import commit_in_transaction
from kafka_retry.testing import MemoryBroker, MemoryTransport, VirtualClock

TP = TopicPartition("t", 0)


def make(**overrides: Any) -> Config:
    fields: dict[str, Any] = {
        "bootstrap_servers": "k:9092",
        "group": "algolia",
        "topics": ["t"],
        "retry_intervals": [60],
        "exactly_once": True,
        "metrics": False,
    }
    return Config(**{**fields, **overrides})


def test_it_is_off_by_default_and_read_from_the_environment() -> None:
    """exactly_once defaults to False; KAFKA_EXACTLY_ONCE and KAFKA_INSTANCE_ID set it."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_GROUP": "g", "KAFKA_TOPICS": "t"}
    assert Config.from_env(env).exactly_once is False
    config = Config.from_env({**env, "KAFKA_EXACTLY_ONCE": "true", "KAFKA_INSTANCE_ID": "pod-0"})
    assert (config.exactly_once, config.instance_id) == (True, "pod-0")


def test_every_tier_reads_committed_records_only() -> None:
    """With exactly_once the isolation level of every tier is read_committed."""
    assert make().effective_isolation_level == "read_committed"
    assert make(exactly_once=False).effective_isolation_level == "read_uncommitted"


def test_transactional_ids_are_per_group_instance_and_tier() -> None:
    """<group>.<instance id>.<tier>: stable across restarts, distinct per tier."""
    config = make(instance_id="pod-0")
    assert transactional_id(config, "main") == "algolia.pod-0.main"
    assert transactional_id(config, "retry1") == "algolia.pod-0.retry1"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"retry_backend": "postgres", "database": DatabaseConfig()}, "exactly_once"),
        ({"idempotence": False}, "exactly_once"),
        ({"ordering": "key"}, "ordering"),
        ({"instance_id": " "}, "instance_id"),
    ],
)
def test_settings_it_cannot_work_with_are_config_errors(
    overrides: dict[str, Any], field: str
) -> None:
    """The postgres backend, no idempotence, unordered work or a blank instance id: refused."""
    with pytest.raises(ConfigError) as caught:
        make(**overrides)
    assert caught.value.field == field


async def test_the_in_memory_test_mode_refuses_it() -> None:
    """The in-memory broker has no transactions: a SetupError naming exactly_once at start."""
    clock = VirtualClock()
    broker = MemoryBroker(clock=clock)
    broker.create_topic("t")

    async def handle(message: Message) -> None: ...

    consumer = Consumer(make(), {"t": handle}, clock=clock, transport=MemoryTransport(broker))
    with pytest.raises(SetupError, match="exactly_once"):
        await consumer.run()


class Producer:
    """Records the transactional calls a tier's commit makes."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.calls.append(("offsets", dict(offsets), group_id))

    async def commit_transaction(self) -> None:
        await asyncio.sleep(0)  # a round trip to the coordinator: others run meanwhile
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.calls.append("abort")

    async def begin_transaction(self) -> None:
        self.calls.append("begin")


class Tier:
    """A tier's done positions, as the commit reads them."""

    name = "main"

    def __init__(self) -> None:
        self.done: dict[TopicPartition, int | None] = {TP: None}
        self.saved: dict[TopicPartition, int] = {}

    def moved(self, partitions: Any = None) -> dict[TopicPartition, int]:
        return {tp: p for tp, p in self.done.items() if p is not None and p != self.saved.get(tp)}

    def positions(self) -> dict[TopicPartition, int | None]:
        return dict(self.done)

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self.saved.update(offsets)


def message(offset: int) -> Message:
    return Message(topic="t", partition=0, offset=offset, key=None, value=b"", headers=(),
                   timestamp=0, main_topic="t")  # fmt: skip


async def test_a_commit_waits_for_the_hand_off_in_flight_and_covers_its_offset() -> None:
    """The transaction commits only once the forward is acked and its offset is done."""
    producer, tier = Producer(), Tier()
    transaction = TierTransaction(producer, "g", "g.pod.main")
    acked = asyncio.Event()

    async def hand_off() -> None:
        async with transaction.joined(message(4)):
            await acked.wait()
        tier.done[TP] = 5  # the worker marks the offset done after the send

    sending = asyncio.create_task(hand_off())
    await asyncio.sleep(0)
    committing = asyncio.create_task(commit_in_transaction(tier, transaction, final=False))
    await asyncio.sleep(0)
    assert producer.calls == []
    acked.set()
    await committing
    await sending
    assert producer.calls == [("offsets", {TP: 5}, "g"), "commit", "begin"]


async def test_a_hand_off_waits_while_a_commit_holds_the_transaction() -> None:
    """No hand-off joins a transaction being committed: it goes into the next one."""
    transaction = TierTransaction(Producer(), "g", "g.pod.main")
    joined = asyncio.Event()

    async def hand_off() -> None:
        async with transaction.joined(message(1)):
            joined.set()

    async with transaction.held():
        waiting = asyncio.create_task(hand_off())
        await asyncio.sleep(0)
        assert not joined.is_set()
    await waiting
    assert joined.is_set()


async def test_a_final_commit_aborts_a_transaction_whose_hand_offs_are_not_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On revoke or stop, a forward whose offset is not done is aborted with its transaction."""
    monkeypatch.setattr(_txcommit, "SETTLE_BOUND", 0.05)
    producer, tier = Producer(), Tier()
    transaction = TierTransaction(producer, "g", "g.pod.main")
    async with transaction.joined(message(7)):
        pass  # sent, but the hand-off was cancelled before its offset was done
    await commit_in_transaction(tier, transaction, final=False)
    assert producer.calls == []  # periodic: left for a later commit
    await commit_in_transaction(tier, transaction, final=True)
    assert producer.calls == ["abort", "begin"]
    assert transaction.sent == {}


async def test_two_commits_at_once_end_the_transaction_one_after_the_other() -> None:
    """A revoke's commit during the periodic one waits for it: never two ends of one transaction."""
    producer, tier = Producer(), Tier()
    transaction = TierTransaction(producer, "g", "g.pod.main")
    tier.done[TP] = 3
    await asyncio.gather(
        commit_in_transaction(tier, transaction, final=False),
        commit_in_transaction(tier, transaction, final=True),
    )
    assert producer.calls == [("offsets", {TP: 3}, "g"), "commit", "begin"]
