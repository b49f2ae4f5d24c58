"""Draws tracing-trace.svg: the spans of one retried message, as a consumer really made them.

Runs a consumer with ``tracing=True`` against the Kafka broker of
``KAFKA_BOOTSTRAP_SERVERS`` (``python -m kafka_retry.devstack up`` starts one),
publishes a record with a producer's trace context whose handler fails once,
exports the spans in memory and draws them as a waterfall, each bar where and
as long as its span was (a bar is at least a few pixels wide), the link of the
retry to the failed attempt as a dashed arrow.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python docs/images/tracing-trace.py
"""

from __future__ import annotations

import asyncio
import os
import uuid
from html import escape
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from kafka_retry import Config, Consumer, Message

OUT = Path(__file__).with_suffix(".svg")
WIDTH, LEFT, ROW, TOP = 940, 330, 44, 64
PLOT = WIDTH - LEFT - 40


async def record_spans(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    shop = trace.get_tracer("shop")
    with shop.start_as_current_span(f"publish {topic}", kind=trace.SpanKind.PRODUCER):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            headers = [(name, value.encode()) for name, value in carrier.items()]
            await producer.send_and_wait(topic, b"lamp", key=b"42", headers=headers)
        finally:
            await producer.stop()
    done = asyncio.Event()

    async def index(message: Message) -> None:
        if message.attempt == 1:
            raise ConnectionError("search API unreachable")
        done.set()

    config = Config(
        bootstrap_servers=bootstrap,
        group="algolia",
        topics=[topic],
        retry_intervals=[1],
        tracing=True,
        commit_interval=0.2,
    )
    async with Consumer(config, {topic: index}):
        await done.wait()
        await asyncio.sleep(0.2)  # the last span ends just after the handler returns


def label(span: ReadableSpan, topic: str) -> tuple[str, str]:
    attributes = span.attributes or {}
    name = span.name.replace(topic, "product")  # a fresh topic per run, drawn as "product"
    detail = span.kind.name
    if "kafka_retry.attempt" in attributes:
        detail += f" · attempt {attributes['kafka_retry.attempt']}"
    if span.kind.name == "CONSUMER":
        detail += f" · tier {attributes['kafka_retry.tier']}"
    return name, detail


def draw(spans: list[ReadableSpan], topic: str) -> str:
    spans = sorted(spans, key=lambda span: span.start_time or 0)
    start = min(span.start_time or 0 for span in spans)
    end = max(span.end_time or 0 for span in spans)
    scale = PLOT / (end - start)
    bars: dict[int, tuple[float, float]] = {}  # span id: where its bar ends, its row
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{TOP + ROW * len(spans) + 40}" font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{WIDTH}" height="{TOP + ROW * len(spans) + 40}" fill="white"/>',
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" '
        'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#6a4c93"/></marker></defs>',
        '<text x="16" y="26" font-size="15" font-weight="bold">One trace: the producer, '
        "a failed attempt, its hand-off to retry1, the retry that succeeded</text>",
        f'<text x="{LEFT}" y="50" font-size="11" fill="#555">0 s</text>',
        f'<text x="{LEFT + PLOT}" y="50" font-size="11" fill="#555" text-anchor="end">'
        f"{(end - start) / 1e9:.2f} s</text>",
    ]
    for index, span in enumerate(spans):
        assert span.context is not None
        y = TOP + index * ROW
        x = LEFT + ((span.start_time or 0) - start) * scale
        width = max(5.0, ((span.end_time or 0) - (span.start_time or 0)) * scale)
        failed = span.status.status_code == StatusCode.ERROR
        colour = "#d1495b" if failed else ("#2e86ab" if span.kind.name != "CONSUMER" else "#3c9d5d")
        depth = 0 if span.parent is None else 1 if span.name.startswith("process") else 2
        name, detail = label(span, topic)
        parts.append(
            f'<text x="{16 + depth * 14}" y="{y + 15}" font-size="13">{escape(name)}</text>'
            f'<text x="{16 + depth * 14}" y="{y + 31}" font-size="11" fill="#555">'
            f"{escape(detail)}{' · ERROR' if failed else ''}</text>"
            f'<line x1="{LEFT}" y1="{y + 36}" x2="{LEFT + PLOT}" y2="{y + 36}" stroke="#eee"/>'
            f'<rect x="{x:.1f}" y="{y + 8}" width="{width:.1f}" height="18" rx="3" '
            f'fill="{colour}"/>'
        )
        note = f"{((span.end_time or 0) - (span.start_time or 0)) / 1e6:.1f} ms"
        if any(event.name == "exception" for event in span.events):
            note += " · exception: ConnectionError"
        right = x > LEFT + PLOT * 0.7  # near the end: the note goes left of the bar
        parts.append(
            f'<text x="{x - 6 if right else x + width + 6:.1f}" y="{y + 22}" font-size="11" '
            f'fill="{colour}" text-anchor="{"end" if right else "start"}">{escape(note)}</text>'
        )
        bars[span.context.span_id] = (x + width, y)
        for link in span.links:
            if link.context.span_id in bars:
                end_x, source = bars[link.context.span_id]
                # From the top of the retry's bar to the bottom of the failed one, between the rows.
                parts.append(
                    f'<path d="M{x + 2:.1f},{y + 6} C{x - 60:.1f},{source + 36} {end_x + 60:.1f},'
                    f'{source + 40} {end_x - 1:.1f},{source + 29}" fill="none" stroke="#6a4c93" '
                    'stroke-dasharray="5,4" stroke-width="1.5" marker-end="url(#arrow)"/>'
                    f'<text x="{(x + end_x) / 2:.1f}" y="{source + 78}" font-size="11" '
                    'fill="#6a4c93">link: attempt 2 → the failed attempt 1</text>'
                )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    topic = f"product-{uuid.uuid4().hex[:6]}"
    asyncio.run(record_spans(os.environ["KAFKA_BOOTSTRAP_SERVERS"], topic))
    OUT.write_text(draw(list(exporter.get_finished_spans()), topic), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
