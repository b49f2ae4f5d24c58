"""Topic configs of retry and dead-letter topics, derived from their main topic's.

A forwarded record keeps its original timestamp, and Kafka deletes a segment
once its newest timestamp is older than ``retention.ms``. A retry topic kept
for less time than its main topic would therefore delete an old record (one a
new group reads from the start of a 30-day topic, say) as soon as it lands,
and the retry tier would skip it without a word. So a retry topic keeps
records for its main topic's ``retention.ms`` plus the waits up to its tier,
and at least its ``retention.bytes``; a dead-letter topic keeps them for
``Config.dead_letter_retention_ms`` (default: forever), with no size bound.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from kafka_retry.config import Config
from kafka_retry.topology import TopicChain

__all__ = [
    "MAIN_TOPIC_CONFIGS",
    "RETENTION_CONFIGS",
    "describe_topic_configs",
    "new_topic_configs",
    "retention_shortfalls",
    "wanted_retention",
]

log = logging.getLogger("kafka_retry")

MAX_BYTES = "max.message.bytes"
RETENTION_MS = "retention.ms"
RETENTION_BYTES = "retention.bytes"
RETENTION_CONFIGS = (RETENTION_MS, RETENTION_BYTES)
#: What is read from a main topic to create its retry and dead-letter topics.
MAIN_TOPIC_CONFIGS = (MAX_BYTES, *RETENTION_CONFIGS)
#: Kafka's value for "no limit" of both retention settings.
UNLIMITED = -1
_HEADROOM = 16 * 1024

TopicConfigs = dict[str, dict[str, int]]


async def describe_topic_configs(
    admin: Any, topics: Iterable[str], names: Iterable[str]
) -> TopicConfigs:
    """The integer values of config ``names`` of each of ``topics``, as the broker tells them.

    Brokers that do not answer DescribeConfigs (or refuse it: ACLs) tell
    nothing; the topics are then created with the broker's defaults.
    """
    topics, names = list(topics), list(names)
    if not topics:
        return {}
    wanted = dict.fromkeys(names)
    resources = [ConfigResource(ConfigResourceType.TOPIC, t, wanted) for t in topics]
    try:
        responses = await admin.describe_configs(resources)
    except (KafkaError, AttributeError, NotImplementedError) as exc:
        log.info("cannot read %s of %s: %s", ", ".join(names), ", ".join(topics), exc)
        return {}
    found: TopicConfigs = {}
    for response in responses:
        for code, _message, _kind, topic, entries in response.resources:
            for entry in entries if code == 0 else ():
                if entry[0] in wanted and _is_integer(entry[1]):
                    found.setdefault(topic, {})[entry[0]] = int(entry[1])
    return found


def _is_integer(text: object) -> bool:
    return isinstance(text, str) and text.removeprefix("-").isdigit()


def wanted_retention(config: Config, main: Mapping[str, int], tier: int | None) -> dict[str, int]:
    """The least retention a topic of the chain needs: tier ``tier``, or None for the dead letter.

    Args:
        config: The consumer's settings (retry intervals, dead-letter retention).
        main: What the main topic's configs are known to be.
        tier: The retry tier (1-based), or None for the dead-letter topic.
    """
    if tier is None:
        keep = config.dead_letter_retention_ms
        return {RETENTION_MS: UNLIMITED if keep is None else keep, RETENTION_BYTES: UNLIMITED}
    wanted: dict[str, int] = {}
    main_ms = main.get(RETENTION_MS)
    if main_ms is not None:
        waits = math.ceil(sum(config.retry_intervals[:tier]) * 1000)
        wanted[RETENTION_MS] = UNLIMITED if main_ms < 0 else main_ms + waits
    if RETENTION_BYTES in main:
        wanted[RETENTION_BYTES] = main[RETENTION_BYTES]
    return wanted


def new_topic_configs(config: Config, main: Mapping[str, int], tier: int | None) -> dict[str, str]:
    """The ``topic_configs`` of a new topic of the chain (see :func:`wanted_retention`).

    ``max.message.bytes`` is the main topic's plus room for the provenance
    headers, so any record the main topic took can be forwarded (uncompressed).
    """
    configs = {name: str(value) for name, value in wanted_retention(config, main, tier).items()}
    if MAX_BYTES in main:
        # A forwarded record is its main record plus provenance headers: the error
        # text (up to 4 bytes per character), the group and a few numbers and names.
        room = _HEADROOM + 4 * config.error_max_length + len(config.group.encode())
        configs[MAX_BYTES] = str(main[MAX_BYTES] + room)
    return configs


def _keeps(value: int) -> float:
    return math.inf if value < 0 else value


def retention_shortfalls(
    config: Config, chain: TopicChain, main: Mapping[str, int], existing: TopicConfigs
) -> list[str]:
    """One sentence per existing topic of ``chain`` that keeps records for less than it needs."""
    tiers: list[tuple[str, int | None]] = [
        *((name, number) for number, name in enumerate(chain.retries, start=1)),
        (chain.dead_letter, None),
    ]
    found = []
    for topic, tier in tiers:
        has = existing.get(topic, {})
        for name, needed in wanted_retention(config, main, tier).items():
            if name in has and _keeps(has[name]) < _keeps(needed):
                found.append(
                    f"topic {topic} has {name}={has[name]}, less than the {needed} it needs"
                    f" ({_why(tier)}): records may be deleted before they are"
                    f" {'retried' if tier else 'replayed'}; raise it"
                    f" (kafka-configs.sh --alter --entity-type topics --entity-name {topic}"
                    f" --add-config {name}={needed})"
                )
    return found


def _why(tier: int | None) -> str:
    if tier is None:
        return "dead letters are kept until replayed or purged; see dead_letter_retention_ms"
    return f"the main topic's retention plus the waits up to retry tier {tier}"
