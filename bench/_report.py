"""Turning the collected results into medians, ratios and a Markdown report."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

Result = dict[str, Any]
Select = Callable[[Result], bool]

BROKER_NAMES = {"kafka": "Apache Kafka", "tansu": "Tansu"}


@attrs.frozen
class Row:
    """One line of the figures table: which results, which field, how to print it."""

    section: str
    label: str
    select: Select
    field: str
    unit: str
    digits: int = 0


def scenario(name: str, **equal: Any) -> Select:
    """Results of ``name`` whose fields equal ``equal``."""
    return lambda r: r.get("scenario") == name and all(r.get(k) == v for k, v in equal.items())


def _rate_rows() -> list[Row]:
    throughput = "Throughput, 200-byte records on 6 partitions, no-op handler"
    return [
        Row(
            throughput, "raw aiokafka (getmany, commit per batch)", scenario("raw"), "rate", "msg/s"
        ),
        Row(
            throughput,
            "FastStream, default ack policy (ACK_FIRST: auto-commit)",
            scenario("faststream-default"),
            "rate",
            "msg/s",
        ),
        Row(
            throughput,
            "FastStream, ack after handler (AckPolicy.ACK)",
            scenario("faststream-ack"),
            "rate",
            "msg/s",
        ),
        Row(
            throughput,
            "kafka-retry main tier, metrics off",
            scenario("kafka-retry-metrics-off"),
            "rate",
            "msg/s",
        ),
        Row(
            throughput,
            "kafka-retry main tier, metrics on (default)",
            scenario("kafka-retry-metrics-on"),
            "rate",
            "msg/s",
        ),
        Row(
            throughput,
            "kafka-retry main tier, batch handler of 500, metrics off",
            scenario("kafka-retry-batch-metrics-off"),
            "rate",
            "msg/s",
        ),
        Row(
            throughput,
            "kafka-retry main tier, batch handler of 500, metrics on",
            scenario("kafka-retry-batch-metrics-on"),
            "rate",
            "msg/s",
        ),
        Row(
            throughput,
            "kafka-retry main tier, batch handler of 100, metrics on",
            scenario("kafka-retry-batch100-metrics-on"),
            "rate",
            "msg/s",
        ),
        # Below 1.0 the consumer waited on the broker part of the window.
        Row(throughput, "CPU busy share: raw aiokafka", scenario("raw"), "cpu_share", "", 2),
        Row(
            throughput,
            "CPU busy share: kafka-retry, metrics off",
            scenario("kafka-retry-metrics-off"),
            "cpu_share",
            "",
            2,
        ),
    ]


def _exactly_once_rows() -> list[Row]:
    section = "exactly_once (Kafka backend, one transaction per tier and commit interval)"
    return [
        Row(
            section, "main tier, no failures", scenario("kafka-retry-exactly-once"), "rate", "msg/s"
        ),
        *(
            Row(section, f"storm: {label}", scenario("retry-tier-exactly-once"), field, "msg/s")
            for label, field in (
                ("failures handled", "failed_rate"),
                ("forwarded to retry1 (read_committed)", "forwarded_rate"),
                ("retries handled", "retried_rate"),
            )
        ),
    ]


def _retry_rows() -> list[Row]:
    kafka = "Kafka retry tier: every message fails once, interval 1 s"
    postgres = "PostgreSQL retry tier, batch 250"
    return [
        Row(
            kafka,
            "main tier: failures handled (hand-offs queue behind)",
            scenario("retry-tier"),
            "failed_rate",
            "msg/s",
        ),
        Row(kafka, "forwarded to retry1", scenario("retry-tier"), "forwarded_rate", "msg/s"),
        Row(kafka, "retries handled", scenario("retry-tier"), "retried_rate", "msg/s"),
        Row(
            kafka,
            "earliest retry after its failure",
            scenario("retry-tier"),
            "retry_after_failure_ms_min",
            "ms",
        ),
        Row(
            postgres,
            "rows claimed, handled and marked done",
            scenario("postgres-tier"),
            "rate",
            "rows/s",
        ),
    ]


def _latency_rows() -> list[Row]:
    section = "Latency, produce to handler start, steady 5,000 msg/s"
    rows = []
    for system, label in (("raw", "raw aiokafka"), ("kafka-retry", "kafka-retry")):
        for field in ("p50_ms", "p99_ms"):
            name = f"{label} {field.split('_')[0]}"
            rows.append(Row(section, name, scenario(f"latency-{system}"), field, "ms", 1))
    return rows


def _scaling_rows() -> list[Row]:
    rows = []
    for ordering in ("partition", "key"):
        section = f"Scaling, handler awaits 2 ms, 6 partitions, ordering={ordering}"
        for processes in (1, 2, 3):
            select = scenario(f"scaling-{ordering}", processes=processes)
            rows.append(Row(section, f"{processes} process(es)", select, "rate", "msg/s"))
    return rows


def _ordering_rows() -> list[Row]:
    section = "Ordering modes, 1 partition, 1,000 keys, handler awaits 5 ms, max_in_flight=100"
    return [
        Row(section, f"ordering={mode}", scenario(f"ordering-{mode}"), "rate", "msg/s")
        for mode in ("partition", "key", "none")
    ]


def _memory_rows() -> list[Row]:
    rows = []
    for ordering in ("partition", "key"):
        section = (
            f"Memory with a large backlog (see notes), handler awaits 1 ms, ordering={ordering}"
        )
        select = scenario(f"memory-{ordering}")
        rows += [
            Row(section, "RSS before the consumer", select, "rss_before_mib", "MiB"),
            Row(section, "RSS once joined", select, "rss_start_mib", "MiB"),
            Row(section, "RSS peak", select, "rss_peak_mib", "MiB"),
            Row(section, "RSS at the end", select, "rss_end_mib", "MiB"),
            Row(
                section,
                "growth over the 2nd half",
                select,
                "second_half_growth_mib_per_min",
                "MiB/min",
                1,
            ),
            Row(section, "messages handled meanwhile", select, "handled", "msgs"),
        ]
    return rows


def _storm_rows() -> list[Row]:
    section = "Failure storm: every call fails, retry_intervals=[3600]"
    return [
        Row(
            section,
            "success path (same consumer)",
            scenario("storm-success-kafka"),
            "rate",
            "msg/s",
        ),
        Row(section, "hand-offs to retry1, acknowledged", scenario("storm-kafka"), "rate", "msg/s"),
        Row(
            section,
            "bare aiokafka consume → send_batch with the same headers (the ceiling)",
            scenario("storm-pipeline-kafka"),
            "rate",
            "msg/s",
        ),
        Row(
            section,
            "hand-offs to the table, committed",
            scenario("storm-postgres"),
            "rate",
            "rows/s",
        ),
    ]


ROWS: list[Row] = [
    *_rate_rows(),
    *_storm_rows(),
    *_retry_rows(),
    *_exactly_once_rows(),
    *_latency_rows(),
    *_scaling_rows(),
    *_ordering_rows(),
    *_memory_rows(),
]


@attrs.frozen
class Ratio:
    """A ratio of two scenarios' rates, taken round by round (same round, same conditions)."""

    label: str
    numerator: str
    denominator: str
    target: float | None = None


RATIOS: list[Ratio] = [
    Ratio("kafka-retry (metrics off) / raw aiokafka", "kafka-retry-metrics-off", "raw", 0.5),
    Ratio("kafka-retry (metrics on) / raw aiokafka", "kafka-retry-metrics-on", "raw", 0.5),
    Ratio(
        "kafka-retry (metrics off) / FastStream ack after handler",
        "kafka-retry-metrics-off",
        "faststream-ack",
        10,
    ),
    Ratio(
        "kafka-retry (metrics on) / FastStream ack after handler",
        "kafka-retry-metrics-on",
        "faststream-ack",
        10,
    ),
    Ratio(
        "kafka-retry (metrics on) / FastStream default (auto-commit)",
        "kafka-retry-metrics-on",
        "faststream-default",
    ),
    Ratio(
        "kafka-retry batch handler (metrics on) / raw aiokafka (issue #20)",
        "kafka-retry-batch-metrics-on",
        "raw",
        1.0,
    ),
    Ratio(
        "kafka-retry batch handler (metrics off) / raw aiokafka",
        "kafka-retry-batch-metrics-off",
        "raw",
        1.0,
    ),
    Ratio(
        "kafka-retry batch handler / per-message handler (metrics on)",
        "kafka-retry-batch-metrics-on",
        "kafka-retry-metrics-on",
    ),
    Ratio(
        "kafka-retry batch handler of 100 (metrics on) / raw aiokafka",
        "kafka-retry-batch100-metrics-on",
        "raw",
        1.0,
    ),
    Ratio(
        "kafka-retry batch handler of 100 / per-message handler (metrics on)",
        "kafka-retry-batch100-metrics-on",
        "kafka-retry-metrics-on",
    ),
    Ratio("ordering key / ordering partition (issue #7)", "ordering-key", "ordering-partition", 20),
    Ratio(
        "exactly_once / the same consumer without it (issue #19)",
        "kafka-retry-exactly-once",
        "kafka-retry-metrics-off",
        0.5,
    ),
    Ratio(
        "storm: hand-offs to retry topics / success path (issue #18)",
        "storm-kafka",
        "storm-success-kafka",
        0.5,
    ),
    Ratio(
        "storm: bare consume → send_batch pipeline / success path (the in-process ceiling)",
        "storm-pipeline-kafka",
        "storm-success-kafka",
    ),
    Ratio(
        "storm: hand-offs to retry topics / bare consume → send_batch pipeline",
        "storm-kafka",
        "storm-pipeline-kafka",
    ),
    Ratio(
        "storm: hand-offs to the retry table / success path (issue #18)",
        "storm-postgres",
        "storm-success-postgres",
        0.3,
    ),
]


def spread(values: Sequence[float], digits: int) -> dict[str, Any]:
    """Median, min, max and count of ``values``."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": len(values),
    }


def row_figures(results: Iterable[Result], row: Row, broker: str) -> dict[str, Any] | None:
    """The spread of ``row``'s field over the results of ``broker``; None if none."""
    values = [
        float(r[row.field])
        for r in results
        if r.get("broker") == broker and row.field in r and row.select(r)
    ]
    return spread(values, row.digits) if values else None


def ratio_figures(results: Sequence[Result], ratio: Ratio, broker: str) -> dict[str, Any] | None:
    """The spread of ``ratio`` over the rounds in which both sides were measured."""
    by_round: dict[int, dict[str, float]] = {}
    for r in results:
        if r.get("broker") == broker and "rate" in r and "round" in r:
            by_round.setdefault(r["round"], {})[r["scenario"]] = float(r["rate"])
    values = [
        rates[ratio.numerator] / rates[ratio.denominator]
        for rates in by_round.values()
        if rates.get(ratio.numerator) and rates.get(ratio.denominator)
    ]
    return spread(values, 2) if values else None


def summarize(results: Sequence[Result], brokers: Sequence[str]) -> dict[str, Any]:
    """Every row and ratio, per broker."""
    return {
        "rows": [
            {
                "section": row.section,
                "label": row.label,
                "unit": row.unit,
                "digits": row.digits,
                **{b: row_figures(results, row, b) for b in brokers},
            }
            for row in ROWS
        ],
        "ratios": [
            {
                "label": ratio.label,
                "target": ratio.target,
                **{b: ratio_figures(results, ratio, b) for b in brokers},
            }
            for ratio in RATIOS
        ],
    }


def _cell(figures: dict[str, Any] | None, unit: str = "", digits: int = 0) -> str:
    if figures is None:
        return "n/a"

    def number(value: float) -> str:
        return f"{value:,.{digits}f}"

    text = f"**{number(figures['median'])}**{' ' + unit if unit else ''}"
    if figures["runs"] > 1:
        text += f" ({number(figures['min'])} to {number(figures['max'])}, n={figures['runs']})"
    return text


def _verdict(figures: dict[str, Any] | None, target: float | None) -> str:
    if figures is None or target is None:
        return ""
    return " ✅" if figures["median"] >= target else " ❌"


def markdown(
    summary: dict[str, Any],
    environment: dict[str, Any],
    brokers: Sequence[str],
    notes: Sequence[str],
    failures: Sequence[Result],
) -> str:
    """The report: environment, headline ratios, every figure, notes, failures."""
    names = [environment["brokers"].get(b, BROKER_NAMES[b]) for b in brokers]
    lines = [f"# kafka-retry benchmarks, {environment['date']}", ""]
    lines += [f"- {key}: {value}" for key, value in environment["labels"].items()]
    lines += ["", "## Headline ratios", "", "Medians of per-round ratios (both sides measured"]
    lines += ["in the same round, on the same records and broker).", ""]
    lines += ["| ratio | target | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for ratio in summary["ratios"]:
        target = "" if ratio["target"] is None else f"≥ {ratio['target']}"
        cells = [_cell(ratio[b], "", 2) + _verdict(ratio[b], ratio["target"]) for b in brokers]
        lines.append(f"| {ratio['label']} | {target} | " + " | ".join(cells) + " |")
    section = None
    for row in summary["rows"]:
        if row["section"] != section:
            section = row["section"]
            lines += ["", f"## {section}", "", "| | " + " | ".join(names) + " |"]
            lines.append("|---|" + "---|" * len(names))
        cells = [_cell(row[b], row["unit"], row["digits"]) for b in brokers]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: **median** (min to max, n = runs).", "", "## Notes", ""]
    lines += [f"- {note}" for note in notes]
    if failures:
        lines += ["", "## Failed measurements", ""]
        lines += [f"- {f['broker']} {f['scenario']}: {f['error']}" for f in failures]
    return "\n".join(lines) + "\n"
