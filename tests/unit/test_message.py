"""Provenance headers: round trip, replacement per tier, forged values ignored."""

from __future__ import annotations

import pytest

from kafka_retry import Message, Provenance
from kafka_retry.message import (
    H_ATTEMPTS,
    H_DUE_AT,
    HEADER_PREFIX,
    decode_provenance,
    split_headers,
    with_provenance,
)

PROVENANCE = Provenance(
    attempts=2,
    original_topic="product",
    original_partition=3,
    original_offset=42,
    original_timestamp=1_700_000_000_000,
    group="algolia",
    failed_at=1_700_000_100_000,
    due_at=1_700_000_160_000,
    error_type="ValueError",
    error_message="bad ünïcode",
)


def test_round_trip() -> None:
    """Encoded provenance decodes to the same record."""
    _, ours = split_headers(PROVENANCE.to_headers())
    assert decode_provenance(ours) == PROVENANCE


def test_original_headers_kept_in_order_with_duplicates() -> None:
    """Original headers keep order, duplicates and null values; ours are split off."""
    original = [("h", b"1"), ("h", b"2"), ("n", None), ("x", b"\xff")]
    kept, ours = split_headers(with_provenance(original, PROVENANCE))
    assert list(kept) == original
    assert set(ours) <= {name for name, _ in PROVENANCE.to_headers()}


def test_earlier_tier_headers_replaced_not_repeated() -> None:
    """Re-encoding after another failure does not grow the header list."""
    first = with_provenance([("h", b"1")], PROVENANCE)
    kept, _ = split_headers(first)
    second = with_provenance(kept, PROVENANCE)
    assert len(second) == len(first)
    assert sum(name == H_ATTEMPTS for name, _ in second) == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (H_ATTEMPTS, b"-1"),
        (H_ATTEMPTS, b"abc"),
        (H_DUE_AT, b"99999999999999999999999"),
        (H_DUE_AT, b"\xff\xfe"),
    ],
)
def test_forged_fields_make_provenance_untrusted(name: str, value: bytes) -> None:
    """A malformed or out-of-range field means no provenance, not a crash."""
    _, ours = split_headers(PROVENANCE.to_headers())
    ours[name] = value
    assert decode_provenance(ours) is None


def test_missing_fields_mean_no_provenance() -> None:
    """Records produced by others (no headers of ours) have no provenance."""
    assert decode_provenance({}) is None


def test_message_header_lookup() -> None:
    """Message.header returns the last value of a name."""
    message = Message(
        topic="t",
        partition=0,
        offset=0,
        key=None,
        value=None,
        headers=(("h", b"1"), ("h", b"2")),
        timestamp=0,
        main_topic="t",
    )
    assert message.header("h") == b"2"
    assert message.header("nope") is None
    assert HEADER_PREFIX == "kafka-retry-"
