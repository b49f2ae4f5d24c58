"""The header-name hook is installed when a consumer starts, said once at INFO, and can be off.

The hook is process-wide, so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_SCRIPT = """
import asyncio, logging
from aiokafka.consumer import fetcher
from kafka_retry import Config, Consumer
from kafka_retry.testing import TestConsumer

original = fetcher.PartitionRecords.__next__
lines = []
handler = logging.Handler(logging.INFO)
handler.emit = lambda record: lines.append(record.getMessage())
logging.getLogger("kafka_retry").addHandler(handler)
logging.getLogger("kafka_retry").setLevel(logging.INFO)


async def noop(message):
    pass


async def main():
    for _ in range(2):
        config = Config(
            bootstrap_servers="memory:9092", group="g", topics=["t"], metrics=False, {options}
        )
        consumer = Consumer(config, handlers={{"t": noop}})
        async with TestConsumer(consumer) as t:
            await t.publish("t", b"x")
            await t.drain()


asyncio.run(main())
hooked = fetcher.PartitionRecords.__next__ is not original
said = sum("lenient reading of header names" in line for line in lines)
print(f"hooked={{hooked}} said={{said}}")
"""


def _run(options: str = "") -> str:
    script = _SCRIPT.format(options=options)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("options", ["", "lenient_header_names=True"])
def test_starting_a_consumer_installs_the_hook_and_says_so_once(options: str) -> None:
    """By default the hook is active once a consumer runs; two consumers log it once."""
    assert _run(options) == "hooked=True said=1"


def test_the_hook_can_be_turned_off() -> None:
    """With lenient_header_names=False aiokafka's fetcher is left as it is."""
    assert _run("lenient_header_names=False") == "hooked=False said=0"


def test_building_a_consumer_alone_installs_nothing() -> None:
    """Constructing (not running) a consumer does not touch aiokafka."""
    script = """
from aiokafka.consumer import fetcher
original = fetcher.PartitionRecords.__next__
from kafka_retry import Config, Consumer


async def noop(message):
    pass


Consumer(Config(bootstrap_servers="b:9092", group="g", topics=["t"]), handlers={"t": noop})
print(fetcher.PartitionRecords.__next__ is original)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "True", done.stderr
