"""Lenient re-reading of a fetched record batch that aiokafka failed to decode.

aiokafka decodes record header names as strict UTF-8. A name that is not
(librdkafka and Go clients can write one) makes its fetcher raise
``UnicodeDecodeError`` from ``getmany()``: the records of other partitions
drained by that call are lost to the caller while their positions have moved
on, and the partition fails again at every fetch, so the consumer is wedged.

:func:`install` makes aiokafka's fetcher recover instead, at no cost to batches
that decode: ``PartitionRecords.__next__`` is replaced by an equivalent that
also catches that error, re-reads the failed batch with
:func:`~kafka_retry.runtime._v2batch.parse_batch` (header names decoded with
``surrogateescape``), yields its records from the current position on, then
resumes aiokafka's own reading after that batch. To find the batch, the
fetcher's ``MemoryRecords`` keeps a reference to the fetched bytes (which it
holds anyway). Everything that touches aiokafka's internals is in this module.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import aiokafka
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException

from kafka_retry._direct import direct_messages
from kafka_retry.runtime._v2batch import LenientBatch, iter_batches, parse_batch

log = logging.getLogger("kafka_retry")

__all__ = ["install"]

# Where, in the fetched bytes, the next re-read looks from (after the last re-read batch).
_MARK = "_kafka_retry_reread_from"
# What aiokafka's PartitionRecords.__next__ refers to (as of 0.14); another
# body may mean other semantics, which the replacement would not keep.
_NEXT_NAMES = frozenset({"next", "_records_iterator", "StopIteration"})
# The PartitionRecords attributes it reads, all set in __init__.
_STATE_NAMES = frozenset(
    {
        "_tp",
        "_records",
        "next_fetch_offset",
        "_records_iterator",
        "_isolation_level",
        "_key_deserializer",
        "_value_deserializer",
    }
)
_READ_UNCOMMITTED = 0  # aiokafka's isolation level code, checked by install()
_installed: bool | None = None


class _DeclinedError(Exception):
    """Raised when a failed batch is not re-read: the error then propagates as raised."""


def _name_error(error: Exception) -> UnicodeDecodeError | None:
    # The C reader raises UnicodeDecodeError; the pure-Python one wraps it.
    for candidate in (error, error.__cause__):
        if isinstance(candidate, UnicodeDecodeError):
            return candidate
    return None


def _failed_batch(records: Any, error: UnicodeDecodeError) -> tuple[int, LenientBatch]:
    """The batch aiokafka's reader failed on, and the position after it in the fetched bytes.

    The reader decodes every record of every batch it iterates, even those before
    the fetch position, so the failed batch is the first one after the last
    re-read one with a header name that is not UTF-8: the name in ``error``.

    Raises:
        _DeclinedError: It cannot be told for sure.
        CorruptBatchError: A batch is malformed.
    """
    fetched = getattr(records._records, "fetched", None)
    if fetched is None:
        raise _DeclinedError("the fetched bytes were not kept")
    # The main tier's marker (see kafka_retry._direct) is the identity: it never raises.
    value_deserializer = records._value_deserializer
    if records._key_deserializer is not None or value_deserializer not in (None, direct_messages):
        raise _DeclinedError("a deserializer may have raised it")
    wanted = bytes(error.object)
    for end, view in iter_batches(fetched, getattr(records, _MARK, 0)):
        batch = parse_batch(view)
        if batch.is_control or not batch.undecodable:
            continue  # control batches are never iterated
        if batch.is_transactional and records._isolation_level != _READ_UNCOMMITTED:
            raise _DeclinedError("read_committed may have skipped it as aborted")
        if all(name != wanted for _, name in batch.undecodable):
            raise _DeclinedError(f"the first undecodable batch does not hold {wanted!r}")
        return end, batch
    raise _DeclinedError(f"no fetched batch holds the header name {wanted!r}")


def _deliver(records: Any, batch: LenientBatch) -> Iterator[Any]:
    """The batch's records from the current position on, as aiokafka's reader would yield."""
    for record in batch.records:
        if record.offset < records.next_fetch_offset:
            continue  # already returned, or before the fetch position
        consumer_record = records._consumer_record(records._tp, record)
        records.next_fetch_offset = record.offset + 1
        yield consumer_record
    records.next_fetch_offset = max(records.next_fetch_offset, batch.next_offset)


def _report(records: Any, batch: LenientBatch) -> None:
    tp = records._tp
    offsets = sorted({o for o, _ in batch.undecodable if o >= records.next_fetch_offset})
    if offsets:  # else the batch was re-read only to step over records before the position
        log.warning(
            "%s: records at offsets %s have a header name that is not valid UTF-8;"
            " handing them on with the name decoded with surrogateescape",
            tp,
            ", ".join(map(str, offsets)),
            extra={"topic": tp.topic, "partition": tp.partition},
        )


def _reread(records: Any, error: Exception) -> Iterator[Any]:
    """The iterator that replaces a PartitionRecords' failed one; re-raises ``error`` if none."""
    name_error = _name_error(error)
    if name_error is None:
        raise error
    try:
        end, batch = _failed_batch(records, name_error)
    except Exception as exc:
        reason = f"kafka-retry did not re-read the batch leniently: {exc}"
    else:
        setattr(records, _MARK, end)
        _report(records, batch)
        # aiokafka's own reader resumes after the batch: the buffer is past it.
        return itertools.chain(_deliver(records, batch), records._unpack_records())
    error.add_note(reason)
    raise error


def _next(self: Any) -> Any:
    # aiokafka's PartitionRecords.__next__, plus the recovery: the happy path
    # costs what the original costs.
    while True:
        try:
            return next(self._records_iterator)
        except StopIteration:
            self._records_iterator = None
            raise
        except (UnicodeDecodeError, CorruptRecordException) as error:
            self._records_iterator = _reread(self, error)


def _missing(fetcher: Any) -> list[str]:
    """The aiokafka internals this hook relies on that are absent or changed."""
    missing: list[str] = []
    if not isinstance(getattr(fetcher, "MemoryRecords", None), type):
        missing.append("fetcher.MemoryRecords")
    records_type = getattr(fetcher, "PartitionRecords", None)
    if not isinstance(records_type, type):
        return [*missing, "fetcher.PartitionRecords"]
    methods: dict[str, Any] = dict(vars(records_type))
    for name in ("__init__", "__next__", "_unpack_records", "_consumer_record"):
        if not hasattr(methods.get(name), "__code__"):
            missing.append(f"PartitionRecords.{name}")
    if missing:
        return missing
    if getattr(fetcher, "READ_UNCOMMITTED", None) != _READ_UNCOMMITTED:
        missing.append("fetcher.READ_UNCOMMITTED")
    if set(methods["__next__"].__code__.co_names) != _NEXT_NAMES:
        missing.append("PartitionRecords.__next__ (changed)")
    if not set(methods["__init__"].__code__.co_names) >= _STATE_NAMES:
        missing.append("PartitionRecords state attributes")
    return missing


def _keeping(memory_records: type) -> Callable[[bytes], Any]:
    """A MemoryRecords factory whose instances keep the fetched bytes (one reference)."""
    kept = type("KeptMemoryRecords", (memory_records,), {"__slots__": ("fetched",)})

    def make(fetched: bytes) -> Any:
        records = kept(fetched)
        records.fetched = fetched
        return records

    make(b"")  # fails now, not in a fetch, if the type refuses subclasses
    return make


def install() -> bool:
    """Make aiokafka re-read leniently a fetched batch whose header names are not UTF-8.

    Process-wide and idempotent. When aiokafka's internals are not the ones
    this relies on, nothing is changed and a warning says so.

    Returns:
        Whether the lenient re-reading is active.
    """
    global _installed
    if _installed is not None:
        return _installed
    missing = _missing(fetcher)
    if not missing:
        try:
            factory = _keeping(fetcher.MemoryRecords)
        except TypeError as exc:
            missing.append(f"fetcher.MemoryRecords ({exc})")
    if missing:
        log.warning(
            "aiokafka %s: %s not as expected; a record whose header name is not valid"
            " UTF-8 will stop the consumer",
            aiokafka.__version__,
            ", ".join(missing),
        )
        _installed = False
        return False
    fetcher.MemoryRecords = factory
    fetcher.PartitionRecords.__next__ = _next
    _installed = True
    log.info(
        "lenient reading of header names that are not UTF-8 is active for every aiokafka"
        " consumer in this process (Config(lenient_header_names=False) leaves aiokafka as is)"
    )
    return True
