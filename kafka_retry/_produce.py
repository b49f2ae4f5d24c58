"""Sending one record with aiokafka, a record with neither key nor value included."""

from __future__ import annotations

from typing import Any

from kafka_retry.message import Header

__all__ = ["start_send"]


async def start_send(
    producer: Any,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[Header],
    timestamp: int | None,
    spread: int,
) -> Any:
    """Start sending one record; return the future of its acknowledgement.

    Args:
        producer: An aiokafka producer (or the in-memory one).
        topic: Where the record goes.
        key: Its key.
        value: Its value.
        headers: Its headers, in order.
        timestamp: Milliseconds since the epoch, or None for "now".
        spread: Picks the partition of a record without key and value
            (``spread`` modulo the partition count); others go where the
            producer's partitioner puts them.
    """
    if key is not None or value is not None:
        return await producer.send(
            topic, value=value, key=key, headers=headers, timestamp_ms=timestamp
        )
    # aiokafka's send() refuses a record without key and value, which Kafka
    # accepts (other clients produce them); a batch of its own takes it.
    partitions = sorted(await producer.partitions_for(topic))
    batch = producer.create_batch()
    batch.append(key=None, value=None, timestamp=timestamp, headers=headers)
    batch.close()
    partition = partitions[spread % len(partitions)]
    return await producer.send_batch(batch, topic, partition=partition)
