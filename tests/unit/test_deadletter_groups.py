"""Failure fingerprints and groups: errors that differ only in numbers, ids and quotes group."""

from __future__ import annotations

import attrs
import pytest

from kafka_retry import Provenance
from kafka_retry.deadletter import (
    DeadLetterEntry,
    failure_fingerprint,
    fingerprint_of,
    group_entries,
    stable_id,
)

NOW = 1_714_564_800_000


def entry(number: int, error_type: str, message: str, *, at: int = NOW) -> DeadLetterEntry:
    """A Kafka dead letter at offset ``number`` that failed with ``error_type: message``."""
    origin = Provenance(
        attempts=3,
        original_topic="orders",
        original_partition=0,
        original_offset=number,
        original_timestamp=at - 10,
        group="shop",
        failed_at=at,
        due_at=at,
        error_type=error_type,
        error_message=message,
    )
    return DeadLetterEntry(
        id=f"0:{number}",
        main_topic="orders",
        source="deadLetter.shop.orders",
        key=None,
        value=b"v",
        headers=(),
        timestamp=at - 10,
        dead_lettered_at=at,
        provenance=origin,
    )


def test_numbers_are_masked() -> None:
    """Orders and durations vary; the fingerprint does not."""
    prints = {
        failure_fingerprint("TimeoutError", f"order {n} timed out after {m} ms")
        for n, m in [(1, 250), (17, 3000), (123456, 7)]
    }
    assert prints == {"TimeoutError: order <n> timed out after <n> ms"}
    assert failure_fingerprint("E", "took 1.5s, retry -3") == "E: took <n>s, retry <n>"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("user 'bob' not found", "user '<str>' not found"),
        ('field "price" is missing', 'field "<str>" is missing'),
        ("id 3f2a9c1e-1111-2222-3333-444455556666 gone", "id <uuid> gone"),
        ("id 3F2A9C1E111122223333444455556666 gone", "id <uuid> gone"),
        ("object 0x7f3a2b10 freed", "object <hex> freed"),
        ("digest 9f86d081884c7d65 mismatch", "digest <hex> mismatch"),
        ("broker 10.0.0.1:9092 down", "broker <n> down"),
    ],
)
def test_ids_and_quoted_values_are_masked(message: str, expected: str) -> None:
    """UUIDs, hex ids, quoted values and addresses are masked."""
    assert failure_fingerprint("builtins.KeyError", message) == f"builtins.KeyError: {expected}"


def test_words_and_names_with_digits_stay() -> None:
    """Words (even hex-looking ones) and names such as retry1 or utf8 are kept."""
    text = "retry1 of order-7 failed: utf8 codec, accepted by deadbeef"
    assert failure_fingerprint("E", text) == (
        "E: retry1 of order-<n> failed: utf8 codec, accepted by deadbeef"
    )


def test_whitespace_type_and_empty_message() -> None:
    """Whitespace collapses; a missing type is 'unknown'; an empty message leaves the type."""
    assert failure_fingerprint(" E ", "a \n\t b") == "E: a b"
    assert failure_fingerprint("", "") == "unknown"
    assert failure_fingerprint("E", "  ") == "E"


def test_group_entries_counts_and_bounds() -> None:
    """Groups count their members, the replayed ones, and the first and last failure."""
    entries = [
        entry(1, "TimeoutError", "order 1 timed out after 250 ms", at=NOW + 5),
        entry(2, "TimeoutError", "order 2 timed out after 900 ms", at=NOW),
        entry(3, "ValueError", "bad 'x'"),
        attrs.evolve(
            entry(4, "TimeoutError", "order 4 timed out after 1 ms", at=NOW + 9),
            replayed_at=NOW + 20,
            replayed_to="orders",
        ),
    ]
    timeouts, values = group_entries(entries)
    assert (timeouts.fingerprint, timeouts.count, timeouts.replayed) == (
        "TimeoutError: order <n> timed out after <n> ms",
        3,
        1,
    )
    assert (timeouts.first, timeouts.last, timeouts.topics) == (NOW, NOW + 9, ("orders",))
    assert timeouts.example == "order 1 timed out after 250 ms"
    assert (values.fingerprint, values.count, values.error_type) == (
        "ValueError: bad '<str>'",
        1,
        "ValueError",
    )


def test_stable_ids_and_entries_without_provenance() -> None:
    """Kafka positions are qualified by topic, row ids are kept; no provenance is 'unknown'."""
    kafka = entry(7, "E", "m")
    assert stable_id(kafka) == "orders:0:7"
    assert stable_id(attrs.evolve(kafka, id="42")) == "42"
    assert fingerprint_of(attrs.evolve(kafka, provenance=None)) == "unknown"
