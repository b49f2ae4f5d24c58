"""``kafka-retry db status``: the waiting column of ordered retries."""

from __future__ import annotations

from kafka_retry._cli.db import status_json, status_rows
from kafka_retry.retry.table import TopicCounts


def test_status_shows_waiting_rows_before_the_tiers() -> None:
    """Waiting rows, and claimed ones (pending at attempts 0), fill the WAITING column."""
    counts = TopicCounts("g", "orders")
    for state, attempts, n in (("waiting", 0, 3), ("pending", 0, 1), ("pending", 1, 2)):
        counts.add(state, attempts, n)
    headers, rows = status_rows([counts])
    assert headers[:4] == ["GROUP", "TOPIC", "WAITING", "RETRY1"]
    assert rows == [["g", "orders", "4", "2", "0", "0", "0"]]
    assert status_json([counts], [])["topics"][0]["waiting"] == 3
