"""aiokafka's fetcher, hooked: a batch with a header name not in UTF-8 is re-read, not fatal."""

from __future__ import annotations

import types
from collections.abc import Callable, Collection
from typing import Any

import pytest
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords, _MemoryRecordsPy
from aiokafka.structs import ConsumerRecord, TopicPartition

from kafka_retry.runtime import _lenient
from tests.record_batches import RawName, Row, built

TP = TopicPartition("t", 0)
BAD = b"\xff\xfe-name"
LENIENT = BAD.decode("utf-8", "surrogateescape")
READ_COMMITTED = 1
#: What aiokafka's reader raises for such a name: with its C extensions, then without.
STRICT_FAILURE = (UnicodeDecodeError, CorruptRecordException)


@pytest.fixture(autouse=True)
def installed() -> None:
    assert _lenient.install()


def rows(*keys: bytes, bad: Collection[bytes] = ()) -> list[Row]:
    """One row per key; those in ``bad`` carry a header name that is not UTF-8."""
    return [(key, b"v-" + key, [(RawName(BAD), b"h")] if key in bad else []) for key in keys]


def reader(
    fetched: bytes,
    offset: int = 0,
    *,
    memory_records: Callable[[bytes], Any] | None = None,
    isolation: int = 0,
    **deserializers: Any,
) -> Any:
    """A PartitionRecords as aiokafka's fetcher makes one for a fetch at ``offset``."""
    records = (memory_records or fetcher.MemoryRecords)(fetched)
    return fetcher.PartitionRecords(
        TP,
        records,
        [],
        offset,
        deserializers.get("key"),
        deserializers.get("value"),
        True,
        isolation,
    )


def keys(found: list[ConsumerRecord]) -> list[bytes]:
    return [record.key for record in found]


def test_install_is_idempotent() -> None:
    """A second install changes nothing and reports the same."""
    next_method = fetcher.PartitionRecords.__next__
    assert _lenient.install()
    assert fetcher.PartitionRecords.__next__ is next_method


def test_the_bad_record_and_its_neighbours_in_one_batch_all_arrive() -> None:
    """Records before and after the bad one are returned once, in order; the position moves past."""
    fetched = built(rows(b"a", b"b", b"c", bad={b"b"}), base=10) + built(rows(b"d"), base=13)
    records = reader(fetched, 10)
    found = list(records)
    assert keys(found) == [b"a", b"b", b"c", b"d"]
    assert [r.offset for r in found] == [10, 11, 12, 13]
    assert found[1].headers == ((LENIENT, b"h"),)
    assert found[1].value == b"v-b"
    assert found[1].topic == "t"
    assert records.next_fetch_offset == 14


def test_a_fetch_from_after_the_bad_record_skips_it() -> None:
    """After a commit past it, a fetch of the same batch returns only the later records."""
    fetched = built(rows(b"a", b"b", b"c", bad={b"b"}), base=10) + built(rows(b"d"), base=13)
    assert keys(list(reader(fetched, 12))) == [b"c", b"d"]
    assert keys(list(reader(fetched, 11))) == [b"b", b"c", b"d"]
    assert keys(list(reader(fetched, 13))) == [b"d"]


def test_many_bad_batches_in_one_fetch() -> None:
    """Every bad batch is re-read once; the good ones between stay with aiokafka."""
    batches = [
        built(rows(b"%d" % n, bad=[b"%d" % n] if n % 3 else []), base=n) for n in range(3000)
    ]
    found = list(reader(b"".join(batches)))
    assert [r.offset for r in found] == list(range(3000))
    assert all(r.headers == ((LENIENT, b"h"),) for r in found if r.offset % 3)


def test_a_compressed_batch() -> None:
    """A gzip batch is decompressed before it is re-read."""
    fetched = built(rows(b"a", b"b", b"c", bad={b"b"}), compression=1)
    found = list(reader(fetched))
    assert keys(found) == [b"a", b"b", b"c"]
    assert found[1].headers == ((LENIENT, b"h"),)


def test_the_pure_python_reader_is_hooked_too() -> None:
    """aiokafka without its C extensions wraps the error; the batch is re-read all the same."""
    kept = _lenient._keeping(_MemoryRecordsPy)
    fetched = built(rows(b"a", b"b", bad={b"b"}))
    found = list(reader(fetched, memory_records=kept))
    assert keys(found) == [b"a", b"b"]
    assert found[1].headers == ((LENIENT, b"h"),)


def test_a_deserializer_error_is_not_mistaken_for_a_header_name() -> None:
    """A value deserializer's UnicodeDecodeError propagates, once, as aiokafka raised it."""
    fetched = built([(b"a", b"\xff", [])]) + built(rows(b"b", bad={b"b"}), base=1)
    records = reader(fetched, value=lambda v: v.decode())
    with pytest.raises(UnicodeDecodeError) as caught:
        list(records)
    assert "deserializer" in " ".join(caught.value.__notes__)


def test_bytes_not_kept_propagate_the_error() -> None:
    """Records not made by the hooked factory cannot be re-read: the error says why."""
    records = reader(built(rows(b"a", bad={b"a"})), memory_records=MemoryRecords)
    with pytest.raises(STRICT_FAILURE) as caught:
        list(records)
    assert "not kept" in " ".join(caught.value.__notes__)


def test_read_committed_transactional_batch_is_not_guessed() -> None:
    """Under read_committed an aborted batch may have been skipped: no guess is made."""
    fetched = built(rows(b"a", bad={b"a"}), transactional=1, producer_id=5)
    records = reader(fetched, isolation=READ_COMMITTED)
    with pytest.raises(STRICT_FAILURE) as caught:
        list(records)
    assert "read_committed" in " ".join(caught.value.__notes__)


def test_read_uncommitted_transactional_batch_is_re_read() -> None:
    """Under read_uncommitted every batch is iterated, transactional or not."""
    fetched = built(rows(b"a", b"b", bad={b"a"}), transactional=1, producer_id=5)
    assert keys(list(reader(fetched))) == [b"a", b"b"]


def _partition_records(next_body: Callable[[Any], Any]) -> type:
    class PartitionRecords:
        def __init__(self) -> None:
            self._tp = self._records = self.next_fetch_offset = None
            self._records_iterator = self._unpack_records()
            self._isolation_level = self._key_deserializer = self._value_deserializer = None

        __next__ = next_body

        def _unpack_records(self) -> Any:
            return iter(())

        def _consumer_record(self) -> None:
            return None

    return PartitionRecords


def _same_next(self: Any) -> Any:
    try:
        return next(self._records_iterator)
    except StopIteration:
        self._records_iterator = None
        raise


def _other_next(self: Any) -> Any:
    return self._records_iterator.send(None)


def test_internals_as_expected_are_accepted() -> None:
    """An aiokafka fetcher shaped like 0.14's passes the check."""
    module = types.SimpleNamespace(
        MemoryRecords=MemoryRecords,
        PartitionRecords=_partition_records(_same_next),
        READ_UNCOMMITTED=0,
    )
    assert _lenient._missing(module) == []


@pytest.mark.parametrize(
    ("fields", "reported"),
    [
        ({"PartitionRecords": _partition_records(_other_next)}, "__next__ (changed)"),
        ({"PartitionRecords": None}, "fetcher.PartitionRecords"),
        ({"MemoryRecords": None}, "fetcher.MemoryRecords"),
        ({"READ_UNCOMMITTED": "0"}, "fetcher.READ_UNCOMMITTED"),
    ],
)
def test_changed_internals_are_reported(fields: dict[str, Any], reported: str) -> None:
    """Each internal the hook relies on is checked before anything is changed."""
    module = types.SimpleNamespace(
        **{
            "MemoryRecords": MemoryRecords,
            "PartitionRecords": _partition_records(_same_next),
            "READ_UNCOMMITTED": 0,
            **fields,
        }
    )
    assert any(reported in item for item in _lenient._missing(module))
