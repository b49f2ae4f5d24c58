"""What a console request asks for, parsed and checked: filters, pages, selections. Pure.

Every refusal is a :class:`BadRequest` naming the field, which the API turns
into a 400 answer: nothing a client sends makes the console fail otherwise.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import attrs

from kafka_retry.config import Config
from kafka_retry.deadletter import DeadLetterQuery, ReplayTarget
from kafka_retry.deadletter._model import parse_kafka_id, parse_row_id
from kafka_retry.errors import DeadLetterError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "BadRequest",
    "Listing",
    "OrderKey",
    "Selection",
    "decode_cursor",
    "encode_cursor",
    "order_key",
    "parse_listing",
    "parse_selection",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Long enough for any id list an operator selects on a page; bounds the work of one request.
_MAX_IDS = 10_000
_MAX_TEXT = 1000

#: Where a dead letter sorts in a listing: (topic or "", partition or row id, offset).
OrderKey = tuple[str, int, int]


class BadRequest(Exception):
    """Raised when a request field is malformed; the API answers 400.

    Attributes:
        field: The offending field, as the client spells it.
        reason: Why it was refused.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@attrs.frozen
class Listing:
    """A page of dead letters: the filters, and where the page starts.

    Attributes:
        query: The store query (topics, time, error text, replayed).
        key: Only dead letters with this key (UTF-8 text), when given.
        group: Only dead letters with this failure fingerprint, when given.
        limit: At most this many items.
        after: The page starts after this position (from the cursor).
    """

    query: DeadLetterQuery
    key: bytes | None = None
    group: str | None = None
    limit: int = DEFAULT_LIMIT
    after: OrderKey | None = None


@attrs.frozen
class Selection:
    """The dead letters a replay or purge acts on, and how.

    Attributes:
        topic: The main topic.
        ids: The chosen ids (stable ids), when chosen by id.
        group: The failure fingerprint, when chosen by group.
        everything: Every dead letter of the topic.
        dry_run: Only count.
        target: Where replays go.
        rate: At most this many replays per second, when given.
    """

    topic: str
    ids: tuple[str, ...] = ()
    group: str | None = None
    everything: bool = False
    dry_run: bool = False
    target: ReplayTarget = attrs.field(factory=ReplayTarget)
    rate: float | None = None


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > _MAX_TEXT:
        raise BadRequest(name, f"at most {_MAX_TEXT} characters")
    return value.strip()


def parse_time(text: str, field: str) -> int:
    """Epoch milliseconds of an ISO 8601 time (UTC unless it says otherwise) or of a number.

    Raises:
        BadRequest: Neither form.
    """
    if text.isdigit() and len(text) <= 15:
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            field, f"expected an ISO 8601 time like 2024-05-01T12:00Z or epoch ms, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def check_topic(config: Config, topic: str | None, *, required: bool) -> str | None:
    """``topic`` if it is one of ``config.topics``.

    Raises:
        BadRequest: Missing though required, or not a configured topic.
    """
    if topic is None:
        if required:
            raise BadRequest("topic", f"required: one of {', '.join(config.topics)}")
        return None
    if topic not in config.topics:
        raise BadRequest(
            "topic", f"{topic!r} is not a configured topic ({', '.join(config.topics)})"
        )
    return topic


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or len(text) > 6 or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest("limit", f"must be a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


def _replayed(text: str | None) -> bool | None:
    if text is None:
        return None
    choices = {"true": True, "false": False}
    if text.lower() not in choices:
        raise BadRequest("replayed", f"must be true or false, got {text!r}")
    return choices[text.lower()]


def parse_listing(config: Config, params: Mapping[str, str]) -> Listing:
    """The listing that query parameters ask for.

    Raises:
        BadRequest: A parameter is malformed.
    """
    topic = check_topic(config, _text(params, "topic"), required=False)
    since, until = _text(params, "since"), _text(params, "until")
    key = _text(params, "key")
    cursor = _text(params, "cursor")
    query = DeadLetterQuery(
        topics=() if topic is None else (topic,),
        since=None if since is None else parse_time(since, "since"),
        until=None if until is None else parse_time(until, "until"),
        error=_text(params, "error"),
        replayed=_replayed(_text(params, "replayed")),
    )
    return Listing(
        query=query,
        key=None if key is None else key.encode(),
        group=_text(params, "group"),
        limit=_limit(_text(params, "limit")),
        after=None if cursor is None else decode_cursor(cursor),
    )


def order_key(stable_id: str) -> OrderKey:
    """Where the dead letter ``stable_id`` sorts: by topic, partition, offset; or by row id.

    Raises:
        BadRequest: Not a dead-letter id.
    """
    text = stable_id.strip()
    try:
        if text.isdigit():
            return ("", parse_row_id(text), 0)
        found = parse_kafka_id(text)
    except DeadLetterError as exc:
        raise BadRequest("id", str(exc)) from None
    if found.partition >= 2**31 or found.offset >= 2**63:
        raise BadRequest("id", f"{text!r}: partition or offset out of range")
    return (found.topic or "", found.partition, found.offset)


def encode_cursor(key: OrderKey) -> str:
    """The opaque cursor of the page that starts after ``key``."""
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> OrderKey:
    """The position an :func:`encode_cursor` cursor stands for.

    Raises:
        BadRequest: Not a cursor this console made.
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        topic, first, second = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest("cursor", "not a cursor from a previous answer's next") from None
    if not (isinstance(topic, str) and _whole(first) and _whole(second)):
        raise BadRequest("cursor", "not a cursor from a previous answer's next")
    return (topic, first, second)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


_FIELDS = frozenset({"topic", "ids", "group", "all", "dry_run", "to_tier", "rate"})


def parse_selection(config: Config, body: object) -> Selection:
    """The replay or purge a JSON body asks for.

    Raises:
        BadRequest: Not an object, an unknown or malformed field, or not exactly
            one of ``ids``, ``group`` and ``all``.
    """
    if not isinstance(body, dict):
        raise BadRequest("body", "expected a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(unknown[0], f"unknown field (expected {', '.join(sorted(_FIELDS))})")
    topic = body.get("topic")
    if not isinstance(topic, str):
        raise BadRequest("topic", f"required: one of {', '.join(config.topics)}")
    check_topic(config, topic, required=True)
    ids = _ids(config, topic, body.get("ids"))
    group = _optional_text(body, "group")
    everything = _flag(body, "all")
    if (bool(ids) or "ids" in body) + (group is not None) + everything != 1:
        raise BadRequest("ids", "give exactly one of ids, group and all")
    return Selection(
        topic=topic,
        ids=ids,
        group=group,
        everything=everything,
        dry_run=_flag(body, "dry_run"),
        target=ReplayTarget(_tier(config, body.get("to_tier"))),
        rate=_rate(body.get("rate")),
    )


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(name, f"must be true or false, got {value!r}")
    return value


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        raise BadRequest(name, f"must be a non-empty string of at most {_MAX_TEXT} characters")
    return value


def _ids(config: Config, topic: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest("ids", "must be a list of dead-letter ids (strings)")
    if not value or len(value) > _MAX_IDS:
        raise BadRequest("ids", f"must hold 1 to {_MAX_IDS} ids")
    ids = []
    for item in value:
        try:
            found = order_key(item)
        except BadRequest as exc:
            raise BadRequest("ids", exc.reason) from None
        if config.retry_backend == "kafka":
            if item.strip().isdigit() or found[0] not in ("", topic):
                raise BadRequest("ids", f"{item!r} is not a dead letter of topic {topic!r}")
            ids.append(f"{topic}:{found[1]}:{found[2]}")
        else:
            if found[0]:
                raise BadRequest("ids", f"{item!r} is not a row id of the postgres backend")
            ids.append(str(found[1]))
    return tuple(ids)


def _tier(config: Config, value: object) -> int | None:
    if value is None:
        return None
    tiers = len(config.retry_intervals)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= tiers:
        reason = f"must be a retry tier from 1 to {tiers}" if tiers else "there are no retry tiers"
        raise BadRequest("to_tier", f"{reason}, got {value!r}")
    return value


def _rate(value: object) -> float | None:
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise BadRequest("rate", f"must be a number of messages per second above 0, got {value!r}")
    return float(value)
