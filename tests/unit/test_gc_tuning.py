"""While a consumer runs the collector is tuned (frozen startup objects, a larger
threshold); the threshold is put back at stop; ``tune_gc=False`` leaves it alone.

The collector is process-wide: the consumer cases run in a fresh interpreter,
and the module cases put the collector back as they found it.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from kafka_retry.runtime._gc import THRESHOLD, GcTuning

_SCRIPT = """
import asyncio, gc
from kafka_retry import Config, Consumer
from kafka_retry.testing import TestConsumer

seen = []


async def noop(message):
    seen.append((gc.get_threshold()[0], gc.get_freeze_count() > 0))


async def main():
    config = Config(
        bootstrap_servers="memory:9092", group="g", topics=["t"], metrics=False, {options}
    )
    consumer = Consumer(config, handlers={{"t": noop}})
    async with TestConsumer(consumer) as t:
        await t.publish("t", b"x")
        await t.drain()


gc.set_threshold(900, 11, 12)
asyncio.run(main())
print(f"running={{seen[0]}} after={{gc.get_threshold()}} frozen={{gc.get_freeze_count() > 0}}")
"""


def _run(options: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT.format(options=options))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_consumer_tunes_while_running_and_puts_the_threshold_back() -> None:
    """A running consumer has frozen startup objects and the larger threshold; stopped, not."""
    assert _run() == f"running=({THRESHOLD}, True) after=(900, 11, 12) frozen=False"


def test_tune_gc_false_leaves_the_collector_alone() -> None:
    """With tune_gc=False nothing is frozen and the threshold stays."""
    assert _run("tune_gc=False") == "running=(900, False) after=(900, 11, 12) frozen=False"


@pytest.fixture
def collector() -> Iterator[None]:
    found = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*found)


@pytest.mark.usefixtures("collector")
def test_last_holder_puts_the_threshold_back() -> None:
    """Two consumers: the tuning lasts until both released it; apply and release are idempotent."""
    gc.set_threshold(700, 10, 10)
    first, second = GcTuning(), GcTuning()
    first.apply()
    first.apply()
    second.apply()
    assert gc.get_threshold() == (THRESHOLD, 10, 10)
    assert gc.get_freeze_count() > 0
    first.release()
    first.release()
    assert gc.get_threshold() == (THRESHOLD, 10, 10)
    second.release()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0  # its own freeze is undone: cycles are collectable again


@pytest.mark.usefixtures("collector")
def test_a_freeze_made_before_is_kept() -> None:
    """A pre-fork server's freeze is not the consumer's to undo."""
    gc.freeze()
    tuning = GcTuning()
    tuning.apply()
    tuning.release()
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("collector")
def test_a_threshold_the_application_changed_is_kept() -> None:
    """A threshold set while the consumer ran is not overwritten at its stop."""
    gc.set_threshold(700, 10, 10)
    tuning = GcTuning()
    tuning.apply()
    gc.set_threshold(2_000, 10, 10)
    tuning.release()
    assert gc.get_threshold() == (2_000, 10, 10)


@pytest.mark.parametrize("first", [0, THRESHOLD * 2])
@pytest.mark.usefixtures("collector")
def test_a_larger_or_disabled_threshold_is_not_lowered(first: int) -> None:
    """A threshold above ours, or 0 (automatic collection off), stays as it is."""
    gc.set_threshold(first, 10, 10)
    tuning = GcTuning()
    tuning.apply()
    assert gc.get_threshold() == (first, 10, 10)
    tuning.release()
    assert gc.get_threshold() == (first, 10, 10)
