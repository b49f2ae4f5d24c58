"""The command line's formatting: times, durations, bytes, tables, progress (no services)."""

from __future__ import annotations

import io

import pytest

from kafka_retry._cli._output import (
    Progress,
    bar,
    bytes_json,
    format_duration,
    format_time,
    hexdump,
    iso_time,
    one_line,
    parse_time,
    preview,
    table,
    truncate,
)
from kafka_retry.errors import ConfigError

NOW = 1_714_564_800_000  # 2024-05-01T12:00:00Z


def test_times_print_in_utc() -> None:
    """Times are UTC, whole seconds in tables and milliseconds in JSON."""
    assert format_time(NOW + 3_250) == "2024-05-01 12:00:03Z"
    assert iso_time(NOW + 3_250) == "2024-05-01T12:00:03.250Z"
    assert format_time(None) == "-"
    assert iso_time(None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - 30 * 60_000),
        ("2h", NOW - 2 * 3_600_000),
        ("1.5d", NOW - 36 * 3_600_000),
        ("2024-05-01T10:00Z", NOW - 2 * 3_600_000),
        ("2024-05-01T10:00:00+02:00", NOW - 4 * 3_600_000),
        ("2024-05-01", NOW - 12 * 3_600_000),
    ],
)
def test_parse_time_takes_ages_and_iso_times(text: str, expected: int) -> None:
    """Relative ages count back from now; ISO times without a zone are UTC."""
    assert parse_time(text, NOW) == expected


def test_parse_time_names_the_option() -> None:
    """A malformed time is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match="--until") as caught:
        parse_time("yesterday", NOW, "--until")
    assert caught.value.field == "--until"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "0.5s"), (5, "5s"), (60, "1m"), (90, "1m30s"), (3600, "1h"), (90061, "1d1h1m1s")],
)
def test_durations_are_short(seconds: float, text: str) -> None:
    """Durations read like 1m30s."""
    assert format_duration(seconds) == text


def test_bytes_show_as_text_or_hex() -> None:
    """UTF-8 shows as text, anything else as hex; null and control characters are visible."""
    assert preview(b"order-1") == "order-1"
    assert preview(b"\xff\x00") == "0xff00"
    assert preview(None) == "(null)"
    assert preview(b"a\nb") == "a\\nb"
    assert preview(b"x" * 50, 10) == "xxxxxxxxx…"
    assert bytes_json(b"text") == {"text": "text"}
    assert bytes_json(b"\xc3\x28") == {"hex": "c328"}
    assert bytes_json(None) is None
    assert one_line("a\tb\x1b") == "a\\tb\\x1b"


def test_hexdump_lines() -> None:
    """Sixteen bytes per line, with offsets and the printable characters."""
    lines = hexdump(bytes(range(60, 80)))
    assert lines[0].startswith("00000000  3c 3d 3e 3f")
    assert lines[0].endswith("|<=>?@ABCDEFGHIJK|")
    assert lines[1].startswith("00000010  4c 4d 4e 4f")
    assert lines[1].endswith("|LMNO|")
    assert hexdump(b"") == []


def test_table_aligns_and_cuts_the_flexible_column() -> None:
    """Columns align two spaces apart; numbers right; the flexible column fits the width."""
    lines = table(
        ["NAME", "N", "NOTE"],
        [["a", "1", "short"], ["bbb", "100", "a rather long note that will not fit"]],
        right=[1],
        flexible=2,
        width=30,
    )
    assert lines[0] == "NAME    N  NOTE"
    assert lines[1] == "a       1  short"
    assert lines[2] == "bbb   100  a rather long note…"
    assert all(len(line) <= 30 for line in lines)
    assert truncate("abc", 0) == ""


def test_progress_draws_only_on_a_terminal() -> None:
    """A pipe gets no progress bar; a terminal gets one redrawn in place."""
    pipe = io.StringIO()
    Progress("replaying", pipe)(5, 10)
    assert pipe.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = Progress("replaying", terminal)
    progress(5, 10)
    progress.close()
    assert terminal.getvalue() == "\r" + bar("replaying", 5, 10) + "\n"
    assert bar("x", 5, 10, size=10) == "x [#####-----] 5/10"
    assert bar("x", 0, 0, size=4) == "x [####] 0/0"
