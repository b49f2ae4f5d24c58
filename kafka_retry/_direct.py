"""The main tier's fetcher builds each Message itself: no aiokafka ``ConsumerRecord`` in between.

aiokafka turns every fetched record into a ``ConsumerRecord`` (eleven fields)
that the main tier reads once to build the :class:`~kafka_retry.message.Message`
its handler gets, then drops: about a fifth of the main tier's time per
record. :func:`install` wraps ``PartitionRecords._consumer_record`` so that a
consumer whose value deserializer is :func:`direct_messages` gets, for a
record without headers, the Message the main tier would build from it
(``attempt`` 1, ``main_topic`` its own topic). Records with headers, and every
other aiokafka consumer of the process, go through aiokafka's code as
before: the wrapper asks one identity question first. A Message has the
attributes of a ConsumerRecord that the runtime reads (``topic``,
``partition``, ``offset``, ``key``, ``value``, ``headers``, ``timestamp``), so
both kinds flow through the same code; the workers take a Message as it is.

Like :mod:`._lenient`, this touches aiokafka's internals in this module only,
and changes nothing when they are not the ones it was written against.
"""

from __future__ import annotations

import logging
from typing import Any

import aiokafka
from aiokafka.consumer import fetcher

from kafka_retry.message import plain_message

log = logging.getLogger("kafka_retry")

__all__ = ["direct_messages", "install"]

# What aiokafka's PartitionRecords._consumer_record reads (as of 0.14): the wrapper
# calls it for every record it does not build itself, with the same meaning.
_ORIGINAL_NAMES = frozenset(
    {
        "ConsumerRecord",
        "_key_deserializer",
        "_value_deserializer",
        "checksum",
        "headers",
        "key",
        "len",
        "offset",
        "partition",
        "timestamp",
        "timestamp_type",
        "topic",
        "tuple",
        "value",
    }
)
_installed: bool | None = None


def direct_messages(value: bytes | None) -> bytes | None:
    """The value deserializer that marks a main tier's consumer: the value as it is."""
    return value


def _wrap(original: Any) -> Any:
    def _consumer_record(self: Any, tp: Any, record: Any) -> Any:
        if self._value_deserializer is not direct_messages or self._key_deserializer is not None:
            return original(self, tp, record)
        if record.headers:
            # Headers are split and decoded by the dispatcher: a ConsumerRecord as before.
            return original(self, tp, record)
        topic = tp.topic
        return plain_message(
            topic, tp.partition, record.offset, record.key, record.value, record.timestamp, topic, 1
        )

    return _consumer_record


def install() -> bool:
    """Let consumers marked with :func:`direct_messages` get Messages from their fetcher.

    Process-wide and idempotent; other consumers are unaffected. When aiokafka's
    internals are not the ones this relies on, nothing is changed (the marked
    consumers then get ConsumerRecords and the runtime builds the Messages).

    Returns:
        Whether the fetcher builds Messages.
    """
    global _installed
    if _installed is not None:
        return _installed
    records_type = getattr(fetcher, "PartitionRecords", None)
    original = vars(records_type).get("_consumer_record") if records_type else None
    code = getattr(original, "__code__", None)
    if (
        code is None
        or code.co_varnames[: code.co_argcount] != ("self", "tp", "record")
        or set(code.co_names) != _ORIGINAL_NAMES
    ):
        log.info(
            "aiokafka %s: PartitionRecords._consumer_record not as expected;"
            " the main tier builds its Messages from aiokafka's records",
            aiokafka.__version__,
        )
        _installed = False
        return False
    records_type._consumer_record = _wrap(original)  # type: ignore[union-attr]
    _installed = True
    return True
