"""Dead letters as the command line prints them: table rows, JSON, in full (no services)."""

from __future__ import annotations

import json

from kafka_retry import Provenance
from kafka_retry._cli._entries import entry_json, list_lines, show_lines
from kafka_retry.deadletter import DeadLetterEntry

NOW = 1_714_564_800_000  # 2024-05-01T12:00:00Z

ORIGIN = Provenance(
    attempts=3,
    original_topic="orders",
    original_partition=1,
    original_offset=42,
    original_timestamp=NOW - 5000,
    group="shop",
    failed_at=NOW,
    due_at=NOW,
    error_type="builtins.ValueError",
    error_message="bad\nline",
)
TEXT = DeadLetterEntry(
    id="0:17",
    main_topic="orders",
    source="deadLetter.shop.orders",
    key=b"order-1",
    value=b'{"id": 1}\nsecond line',
    headers=(("trace", b"abc"), ("bin", b"\xff"), ("null", None)),
    timestamp=NOW - 5000,
    dead_lettered_at=NOW,
    provenance=ORIGIN,
)
BINARY = DeadLetterEntry(
    id="42",
    main_topic="orders",
    source="public.kafka_consumer_retries",
    key=None,
    value=b"\x00\xff\xfe",
    headers=(),
    timestamp=-1,
    dead_lettered_at=NOW,
    replayed_at=NOW + 1000,
    replayed_to="orders",
)


def test_list_table() -> None:
    """One row per dead letter; errors on one line; replay column only when asked."""
    lines = list_lines([TEXT, BINARY], show_replayed=False, width=None)
    assert lines[0].split() == ["TOPIC", "ID", "DEAD-LETTERED", "ATTEMPTS", "KEY", "ERROR"]
    assert lines[1].split()[:5] == ["orders", "0:17", "2024-05-01", "12:00:00Z", "3"]
    assert lines[1].endswith("builtins.ValueError: bad\\nline")
    assert lines[2].split()[-3:] == ["-", "(null)", "-"]
    replayed = list_lines([BINARY], show_replayed=True, width=None)
    assert "REPLAYED" in replayed[0]
    assert "2024-05-01 12:00:01Z" in replayed[1]


def test_list_table_fits_the_terminal() -> None:
    """On a narrow terminal the error column is cut, not wrapped."""
    lines = list_lines([TEXT], show_replayed=False, width=70)
    assert max(len(line) for line in lines) <= 70
    assert lines[1].endswith("…")


def test_json_is_lossless_and_parseable() -> None:
    """JSON keeps every byte: text where it decodes, hex where it does not."""
    data = json.loads(json.dumps([entry_json(TEXT), entry_json(BINARY)]))
    first, second = data
    assert first["id"] == "0:17"
    assert first["key"] == {"text": "order-1"}
    assert first["headers"] == [["trace", {"text": "abc"}], ["bin", {"hex": "ff"}], ["null", None]]
    assert first["original"] == {"topic": "orders", "partition": 1, "offset": 42, "group": "shop"}
    assert first["dead_lettered_at"] == "2024-05-01T12:00:00.000Z"
    assert first["replayed_at"] is None
    assert second["value"] == {"hex": "00fffe"}
    assert second["key"] is None
    assert second["timestamp"] is None
    assert (second["replayed_to"], second["attempts"], second["original"]) == ("orders", None, None)


def test_show_text_value() -> None:
    """A text value prints as its lines; headers one per line."""
    text = "\n".join(show_lines(TEXT))
    assert "dead letter   orders 0:17  (in deadLetter.shop.orders)" in text
    assert "attempts      3" in text
    assert "original      orders partition 1 offset 42" in text
    assert "  trace: abc\n  bin: 0xff\n  null: null" in text
    assert 'value         21 bytes, UTF-8 text\n  {"id": 1}\n  second line' in text
    assert "replayed      no" in text


def test_show_binary_value() -> None:
    """A binary value prints as a hex dump; missing provenance says so."""
    text = "\n".join(show_lines(BINARY))
    assert "value         3 bytes, binary (hex)\n  00000000  00 ff fe" in text
    assert "key           null" in text
    assert "error         unknown (no provenance headers)" in text
    assert "replayed      2024-05-01 12:00:01Z to orders" in text


def test_a_header_name_that_was_not_utf8_prints_escaped() -> None:
    """show and --json write such a name as \\xNN text, never failing on a UTF-8 stdout."""
    name = b"\xff-id".decode("utf-8", "surrogateescape")
    entry = DeadLetterEntry(
        id="1",
        main_topic="orders",
        source="public.kafka_consumer_retries",
        key=None,
        value=b"v",
        headers=((name, b"1"),),
        timestamp=-1,
        dead_lettered_at=NOW,
    )
    shown = "\n".join(show_lines(entry))
    assert "  \\xff-id: 1" in shown
    shown.encode("utf-8")
    written = json.dumps(entry_json(entry), ensure_ascii=False)
    assert json.loads(written.encode("utf-8"))["headers"] == [["\\xff-id", {"text": "1"}]]
