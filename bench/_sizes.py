"""How much work each benchmark scenario does."""

from __future__ import annotations

import attrs


@attrs.frozen
class Sizes:
    """How much work each scenario does; ``--quick`` shrinks it all.

    The throughput rounds give the headline ratios, so they get ``--runs``;
    every other scenario runs at most ``other_runs`` times to keep a full run
    of both brokers near ten minutes.
    """

    records: int = 1_000_000
    faststream_seconds: float = 5.0
    faststream_ack_seconds: float = 3.0
    other_runs: int = 2
    retry_messages: int = 50_000
    retry_seconds: float = 8.0
    postgres_rows: int = 30_000
    latency_seconds: float = 5.0
    scaling_messages: dict[str, int] = attrs.field(
        factory=lambda: {"partition": 6_000, "key": 30_000}
    )
    ordering_messages: int = 10_000
    ordering_partition_seconds: float = 4.0
    memory_backlog: int = 1_000_000
    memory_seconds: float = 30.0
    memory_orderings: tuple[str, ...] = ("partition", "key")
    memory_large_records: int = 6_400
    memory_large_seconds: float = 20.0
    storm_messages: int = 100_000
    storm_rows: int = 50_000


QUICK = Sizes(
    records=20_000,
    faststream_seconds=2.0,
    faststream_ack_seconds=2.0,
    other_runs=1,
    retry_messages=3_000,
    retry_seconds=3.0,
    postgres_rows=5_000,
    latency_seconds=3.0,
    scaling_messages={"partition": 3_000, "key": 10_000},
    ordering_messages=2_000,
    ordering_partition_seconds=2.0,
    memory_backlog=100_000,
    memory_seconds=10.0,
    storm_messages=5_000,
    storm_rows=5_000,
    memory_orderings=("partition",),
    memory_large_records=1_280,
    memory_large_seconds=8.0,
)
