"""Hand-offs without a task each: tickets shared by the failures of one batch."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from kafka_retry import Message
from kafka_retry.message import H_ATTEMPTS, H_OFFSET, with_provenance
from kafka_retry.retry._tickets import Ticket
from kafka_retry.retry.base import Failure
from kafka_retry.retry.kafka import KafkaForwarder
from kafka_retry.testing._clients import MemoryBatch
from kafka_retry.topology import build_chain, default_topic_name

CHAIN = build_chain("g", "t", 1, default_topic_name)
RETRY1, DEAD = CHAIN.topics[1], CHAIN.dead_letter


class Producer:
    """Accepts batches; the batch sends listed in ``fail`` (1-based) time out."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.fail = fail or set()
        self.batches = 0
        self.sent: list[tuple[str, bytes | None, list[Any]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> MemoryBatch:
        return MemoryBatch()

    async def send_batch(
        self, batch: MemoryBatch, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        self.batches += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.batches in self.fail:
            done.set_exception(KafkaTimeoutError())
            return done
        for _key, value, _timestamp, headers in batch.records:
            self.sent.append((topic, value, list(headers)))
        done.set_result(None)
        return done


class Clock:
    def time(self) -> float:
        return 1_700_000_000.0

    def call_later(self, delay: float, callback: Any) -> Any:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


def failure(offset: int, partition: int = 0, *, final: bool = False) -> Failure:
    message = Message("t", partition, offset, None, b"v%d" % offset, (("app", b"1"),), 1, "t")
    return Failure(message, "ValueError", "boom", 1_700_000_000_000, "g", final=final)


async def started(producer: Producer) -> KafkaForwarder:
    forwarder = KafkaForwarder(producer, {"t": CHAIN}, (60.0,), Clock())
    await forwarder.learn_partitions()
    return forwarder


async def test_failures_of_one_source_share_a_batch_and_its_future() -> None:
    """One future for the batch; done only after the broker acknowledged it."""
    producer = Producer()
    forwarder = await started(producer)
    futures = [forwarder.start(failure(n)) for n in range(5)]
    assert len(set(futures)) == 1
    assert not futures[0].done()
    await futures[0]
    assert [value for _, value, _ in producer.sent] == [b"v%d" % n for n in range(5)]


async def test_each_source_partition_has_its_own_future() -> None:
    """A stopping worker cancels its own ticket, never the one another worker waits on."""
    producer = Producer()
    forwarder = await started(producer)
    mine = forwarder.start(failure(1, partition=0))
    theirs = forwarder.start(failure(2, partition=0 + 6))  # same target partition, other source
    assert mine is not theirs
    mine.cancel()
    await theirs
    assert [value for _, value, _ in producer.sent] == [b"v1", b"v2"]


async def test_a_failed_batch_sends_each_of_its_records_again_before_the_future_is_done() -> None:
    """Done still means stored: after a timeout every record goes again, the ordinary way."""
    producer = Producer(fail={1})
    forwarder = await started(producer)
    future = forwarder.start(failure(1))
    assert forwarder.start(failure(2)) is future
    await future
    assert producer.batches > 1
    assert sorted(value or b"" for _, value, _ in producer.sent) == [b"v1", b"v2"]


async def test_headers_are_those_of_the_ordinary_path() -> None:
    """The original headers, then provenance, as with_provenance() writes them."""
    producer = Producer()
    forwarder = await started(producer)
    one = failure(7)
    await forwarder.start(one)
    [(topic, _value, headers)] = producer.sent
    assert topic == RETRY1
    expected = with_provenance(one.message.headers, one.provenance(1_700_000_060_000))
    assert headers == expected
    assert dict(headers)[H_OFFSET] == b"7" and dict(headers)[H_ATTEMPTS] == b"1"


async def test_a_final_failure_goes_to_the_dead_letter_topic() -> None:
    producer = Producer()
    forwarder = await started(producer)
    await forwarder.start(failure(3, final=True))
    assert [topic for topic, _, _ in producer.sent] == [DEAD]


async def test_a_ticket_given_up_stops_sending_again() -> None:
    """Cancelled by its holder (the drain timeout), a ticket resends nothing more."""
    loop = asyncio.get_running_loop()
    receipt: asyncio.Future[None] = loop.create_future()
    resends: list[int] = []
    blocked = asyncio.Event()
    stopped = asyncio.Event()

    async def resend(one: Failure) -> None:
        resends.append(one.message.offset)
        blocked.set()
        try:
            await asyncio.Event().wait()  # an outage that does not end
        except asyncio.CancelledError:
            stopped.set()
            raise

    ticket = Ticket(receipt, resend)
    ticket.failures.append(failure(1))
    receipt.set_exception(KafkaTimeoutError())
    await blocked.wait()
    ticket.future.cancel()
    await stopped.wait()
    assert resends == [1]
