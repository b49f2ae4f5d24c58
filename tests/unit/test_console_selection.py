"""What console requests may ask for: filters, cursors, selections; bad input names its field."""

from __future__ import annotations

import pytest

from kafka_retry import Config
from kafka_retry.console._selection import (
    MAX_LIMIT,
    BadRequest,
    decode_cursor,
    encode_cursor,
    order_key,
    parse_listing,
    parse_selection,
)

CONFIG = Config(
    bootstrap_servers="localhost:9092",
    group="shop",
    topics=["orders", "prices"],
    retry_intervals=[60, 120],
)


def test_cursor_round_trip_and_refusals() -> None:
    """A cursor decodes to the position it was made from; anything else is refused."""
    for key in [("orders", 0, 17), ("", 42, 0)]:
        assert decode_cursor(encode_cursor(key)) == key
    for bad in ["", "!!!", "bnVsbA", encode_cursor(("x", 1, 2))[:-2] + "zz"]:
        with pytest.raises(BadRequest) as caught:
            decode_cursor(bad)
        assert caught.value.field == "cursor"


def test_listing_filters() -> None:
    """Topic, times (ISO or epoch ms), error, key, replayed and limit are read and checked."""
    listing = parse_listing(
        CONFIG,
        {
            "topic": "orders",
            "since": "2024-05-01T12:00Z",
            "until": "1714564900000",
            "error": " timed out ",
            "key": "order-1",
            "replayed": "false",
            "limit": "20",
        },
    )
    assert listing.query.topics == ("orders",)
    assert (listing.query.since, listing.query.until) == (1_714_564_800_000, 1_714_564_900_000)
    assert (listing.query.error, listing.key, listing.query.replayed) == (
        "timed out",
        b"order-1",
        False,
    )
    assert listing.limit == 20
    assert parse_listing(CONFIG, {}).query.replayed is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": str(MAX_LIMIT + 1)}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "9" * 40}, "limit"),
        ({"topic": "nope"}, "topic"),
        ({"since": "soon"}, "since"),
        ({"replayed": "maybe"}, "replayed"),
        ({"error": "x" * 5000}, "error"),
    ],
)
def test_listing_refusals_name_the_field(params: dict[str, str], field: str) -> None:
    """Each malformed parameter is refused with its name."""
    with pytest.raises(BadRequest) as caught:
        parse_listing(CONFIG, params)
    assert caught.value.field == field


def test_selection_qualifies_kafka_ids() -> None:
    """Kafka ids get their topic; a tier and a rate are read."""
    chosen = parse_selection(
        CONFIG, {"topic": "orders", "ids": ["0:3", "orders:1:4"], "to_tier": 2, "rate": 10}
    )
    assert chosen.ids == ("orders:0:3", "orders:1:4")
    assert (chosen.target.tier, chosen.rate, chosen.dry_run) == (2, 10.0, False)
    group = parse_selection(CONFIG, {"topic": "orders", "group": "E: x", "dry_run": True})
    assert (group.group, group.dry_run, group.ids) == ("E: x", True, ())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (None, "body"),
        ({"ids": ["0:1"]}, "topic"),
        ({"topic": "orders"}, "ids"),
        ({"topic": "orders", "ids": [], "all": True}, "ids"),
        ({"topic": "orders", "ids": ["prices:0:1"]}, "ids"),
        ({"topic": "orders", "ids": ["12"]}, "ids"),
        ({"topic": "orders", "ids": [7]}, "ids"),
        ({"topic": "orders", "all": True, "to_tier": 3}, "to_tier"),
        ({"topic": "orders", "all": True, "to_tier": True}, "to_tier"),
        ({"topic": "orders", "all": True, "rate": float("inf")}, "rate"),
        ({"topic": "orders", "all": True, "dry_run": 1}, "dry_run"),
        ({"topic": "orders", "group": ""}, "group"),
    ],
)
def test_selection_refusals_name_the_field(body: object, field: str) -> None:
    """Each malformed selection is refused with the field at fault."""
    with pytest.raises(BadRequest) as caught:
        parse_selection(CONFIG, body)
    assert caught.value.field == field


def test_order_keys() -> None:
    """Row ids sort by number; Kafka ids by topic, partition, offset; huge ones are refused."""
    assert order_key("42") == ("", 42, 0)
    assert order_key("orders:1:7") == ("orders", 1, 7)
    for bad in ["", "x", f"t:0:{2**63}", "t:99999999999:0"]:
        with pytest.raises(BadRequest):
            order_key(bad)
