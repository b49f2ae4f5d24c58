"""The demo's shop and views, without services."""

from __future__ import annotations

import io
import json

import pytest

from kafka_retry import Message, NonRetryableError
from kafka_retry._cli._demo_app import Shop, Tally, expected, order_record
from kafka_retry._cli._demo_view import View, live_lines, plain_line, tier_table


def message(number: int, attempt: int = 1) -> Message:
    """Order ``number`` as a handler gets it on ``attempt``."""
    key, value, headers = order_record(number)
    return Message("orders", 0, number, key, value, tuple(headers), 0, "orders", attempt)


def test_default_run_is_designed_to_end_with_seven_dead_letters() -> None:
    """300 orders with two retry tiers: 293 handled, 7 dead-lettered (4 malformed, 3 poison)."""
    want = expected(300, 2)
    assert (want.handled, want.dead_lettered) == (293, 7)
    assert expected(300, 1).dead_lettered == 7 + 10  # every 28th needs a second retry
    assert expected(300, 0).dead_lettered == 7 + 42


async def test_shop_outcomes() -> None:
    """Good orders pass; the flaky upstream recovers; malformed and poison orders do not."""
    shop = Shop()
    await shop(message(1))
    with pytest.raises(ConnectionError):
        await shop(message(7))
    await shop(message(7, attempt=2))
    for attempt in (1, 2):
        with pytest.raises(ConnectionError):
            await shop(message(28, attempt))
    await shop(message(28, attempt=3))
    with pytest.raises(NonRetryableError):
        await shop(message(61))
    for attempt in (1, 2, 3):
        with pytest.raises(LookupError):
            await shop(message(97, attempt))
    assert shop.handled == {"order-00001", "order-00007", "order-00028"}
    assert json.loads(order_record(2)[1])["order_id"] == "order-00002"


def snapshot_after_run() -> Tally:
    """A tally of a finished default run."""
    tally = Tally(["main", "retry1", "retry2"])
    tally.produced = 300
    for tier, outcome, times in (
        ("main", "success", 251),
        ("main", "retry", 45),
        ("main", "dead_letter", 4),
        ("retry1", "success", 32),
        ("retry1", "retry", 13),
        ("retry2", "success", 10),
        ("retry2", "dead_letter", 3),
    ):
        record = tally.success_recorder(tier, "orders")
        for _ in range(times):
            if outcome == "success":
                record(0.001)
            else:
                tally.handled(tier, "orders", outcome)
    tally.handled("elsewhere", "orders", "retry")  # unknown tiers are ignored
    tally.success_recorder("elsewhere", "orders")(0.001)
    return tally


def test_views_and_table() -> None:
    """Counts per tier, what still waits, the live view and the plain line."""
    snapshot = snapshot_after_run().snapshot(handled=293)
    assert (snapshot.settled, snapshot.dead_lettered, snapshot.waiting) == (300, 7, 0)
    assert tier_table(snapshot, total=True) == [
        "TIER    HANDLED  RETRYING  DEAD-LETTERED",
        "main        251        45              4",
        "retry1       32        13              0",
        "retry2       10         0              3",
        "total       293        58              7",
    ]
    assert plain_line(snapshot, 300, 5.0).endswith(
        "settled 300/300: handled 293, retrying 0, dead-lettered 7"
    )
    assert live_lines(snapshot, 300, 5.0)[0].startswith("orders [" + "#" * 30 + "] 300/300")


def test_plain_view_prints_lines_and_live_view_redraws() -> None:
    """Not a terminal: plain lines; a terminal: the view is redrawn over itself."""
    snapshot = snapshot_after_run().snapshot(handled=293)
    plain = io.StringIO()
    view = View(plain, 300, live=False)
    view.update(snapshot, force=True)
    view.update(snapshot)  # within the second: nothing new
    assert plain.getvalue().count("\n") == 1
    assert "\x1b" not in plain.getvalue()
    live = io.StringIO()
    view = View(live, 300, live=True)
    view.update(snapshot)
    view.update(snapshot)
    lines = len(live_lines(snapshot, 300, 0))
    assert f"\x1b[{lines}F" in live.getvalue()
