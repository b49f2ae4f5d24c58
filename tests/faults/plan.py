"""What each message's handler does on each attempt, shared by the worker and the checks.

Every produced message carries its id in the ``fid`` header. The handler looks
up the id's :class:`Behaviour` in a named plan and appends one ledger line per
call (``id``, attempt, outcome, digest of what it saw, time) before it returns
or raises, so the test can tell afterwards exactly what happened to each id.
Plans are pure functions of the id: the worker and the test agree without
talking to each other.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence

import attrs

from kafka_retry import Message

__all__ = [
    "ID_HEADER",
    "INTERVALS",
    "ORDERED_KEYS",
    "Act",
    "Behaviour",
    "LedgerLine",
    "Record",
    "behaviour",
    "digest",
    "ordered_key",
    "records",
]

#: The header that carries a message's id (decimal ASCII).
ID_HEADER = "fid"
#: Retry intervals of every worker: three attempts in all, due soon.
INTERVALS = (0.5, 1.0)
#: Attempts before a failing message is dead-lettered.
MAX_ATTEMPTS = 1 + len(INTERVALS)

PLANS = ("standard", "timeouts", "interrupts", "poison", "storm", "ordered")
#: The ordered plan: ids share this many keys (id modulo), and run with ordered retries.
ORDERED_KEYS = 97


class Act(enum.Enum):
    """What the handler does on one attempt; the value is the ledger outcome."""

    OK = "ok"
    #: Succeeds and returns a value that is not None (counts as success).
    VALUE = "value"
    FAIL = "fail"
    #: Raises NonRetryableError: dead letter at once.
    FATAL = "fatal"
    #: Sleeps far past the handler timeout.
    HANG = "hang"
    #: Cancels itself (awaits a cancelled inner task).
    CANCEL = "cancel"
    #: Raises KeyboardInterrupt the first time, then succeeds.
    INTERRUPT = "interrupt"
    #: Raises a plain BaseException subclass the first time, then succeeds.
    ABORT = "abort"


SUCCESS = frozenset({Act.OK, Act.VALUE, Act.INTERRUPT, Act.ABORT})
#: Acts that end the process once; the redelivered call then succeeds.
ONCE = frozenset({Act.INTERRUPT, Act.ABORT})


@attrs.frozen
class Behaviour:
    """The acts of one id, per attempt (the last one repeats).

    Attributes:
        acts: ``acts[k - 1]`` is what attempt ``k`` does.
    """

    acts: tuple[Act, ...]

    def act(self, attempt: int) -> Act:
        """What attempt ``attempt`` (1-based) does."""
        return self.acts[min(attempt, len(self.acts)) - 1]

    @property
    def dead_letter(self) -> bool:
        """Whether the id ends in the dead letter rather than handled successfully."""
        return self.final_attempt[1]

    @property
    def final_attempt(self) -> tuple[int, bool]:
        """``(attempt that ends the id, whether it ends in the dead letter)``."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            act = self.act(attempt)
            if act in SUCCESS:
                return attempt, False
            if act is Act.FATAL:
                return attempt, True
        return MAX_ATTEMPTS, True

    @property
    def planned_calls(self) -> int:
        """Handler calls without faults: one per attempt, plus a second for an interruption."""
        last, _ = self.final_attempt
        return last + sum(1 for k in range(1, last + 1) if self.act(k) in ONCE)


_STANDARD = (
    *[Behaviour((Act.OK,))] * 6,
    Behaviour((Act.FAIL, Act.OK)),
    Behaviour((Act.FAIL, Act.FAIL, Act.OK)),
    Behaviour((Act.FAIL,)),
    Behaviour((Act.FATAL,)),
)
_TIMEOUTS = (
    Behaviour((Act.HANG, Act.OK)),
    Behaviour((Act.CANCEL, Act.OK)),
    Behaviour((Act.VALUE,)),
    Behaviour((Act.HANG,)),
    Behaviour((Act.CANCEL,)),
    Behaviour((Act.OK,)),
    Behaviour((Act.FAIL, Act.OK)),
    Behaviour((Act.OK,)),
)
#: The ids of the interrupts plan that end the worker process once.
INTERRUPTS = {
    3: Behaviour((Act.INTERRUPT,)),
    10: Behaviour((Act.FAIL, Act.INTERRUPT)),
    17: Behaviour((Act.ABORT,)),
}
#: Every first attempt fails, every retry succeeds: all of the main tier's work is hand-offs.
_STORM = Behaviour((Act.FAIL, Act.OK))
_POISON = (
    Behaviour((Act.OK,)),
    Behaviour((Act.FAIL, Act.FAIL, Act.OK)),
    Behaviour((Act.FAIL,)),
    Behaviour((Act.FATAL,)),
)


def behaviour(plan: str, fid: int) -> Behaviour:
    """The behaviour of id ``fid`` under ``plan``.

    ``standard``: 60 % succeed, 10 % succeed on retry 1, 10 % on retry 2,
    10 % always fail, 10 % are non-retryable. ``timeouts``: hangs past the
    handler timeout, self-cancellation, a returned value. ``interrupts``: the
    standard plan with three process-ending interruptions. ``poison``: each odd
    record in four behaviours. ``storm``: every first attempt fails, every
    first retry succeeds. ``ordered``: the standard plan, ids sharing
    :data:`ORDERED_KEYS` keys, on ordered retries.

    Raises:
        ValueError: ``plan`` is not one of :data:`PLANS`.
    """
    if plan in ("standard", "ordered"):
        return _STANDARD[fid % len(_STANDARD)]
    if plan == "timeouts":
        return _TIMEOUTS[fid % len(_TIMEOUTS)]
    if plan == "interrupts":
        return INTERRUPTS.get(fid) or _STANDARD[fid % len(_STANDARD)]
    if plan == "poison":
        return _POISON[fid % len(_POISON)]
    if plan == "storm":
        return _STORM
    raise ValueError(f"unknown plan {plan!r}")


def digest(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    timestamp: int,
) -> str:
    """A short fingerprint of a record's key, value, headers and timestamp.

    Null and empty differ, and so does every byte and header order.
    """
    hasher = hashlib.sha256()

    def part(data: bytes | None) -> None:
        if data is None:
            hasher.update(b"N")
        else:
            hasher.update(b"B%d:" % len(data))
            hasher.update(data)

    part(key)
    part(value)
    for name, header_value in headers:
        part(name.encode("utf-8", "surrogateescape"))
        part(header_value)
    hasher.update(b"T%d" % timestamp)
    return hasher.hexdigest()[:16]


def message_digest(message: Message) -> str:
    """:func:`digest` of what a handler got."""
    return digest(message.key, message.value, message.headers, message.timestamp)


def message_id(headers: Sequence[tuple[str, bytes | None]]) -> int | None:
    """The id in the ``fid`` header, or None when absent or not a number."""
    for name, value in headers:
        if name == ID_HEADER and value is not None and value.isdigit():
            return int(value)
    return None


@attrs.frozen
class LedgerLine:
    """One handler call, as the worker appends it to its ledger file.

    Attributes:
        fid: The message id (-1 when the message had none).
        attempt: The attempt number the handler saw.
        outcome: An :class:`Act` value, or ``corrupt`` when the payload was wrong.
        digest: :func:`digest` of what the handler saw.
        at: When the call wrote the line (epoch seconds).
    """

    fid: int
    attempt: int
    outcome: str
    digest: str
    at: float

    def encode(self) -> bytes:
        """The tab-separated line, newline included."""
        return (
            f"{self.fid}\t{self.attempt}\t{self.outcome}\t{self.digest}\t{self.at:.3f}\n".encode()
        )

    @classmethod
    def decode(cls, line: bytes) -> LedgerLine:
        """Parse a line written by :meth:`encode` (without its newline).

        Raises:
            ValueError: The line is malformed.
        """
        fid, attempt, outcome, fingerprint, at = line.decode().split("\t")
        return cls(int(fid), int(attempt), outcome, fingerprint, float(at))


@attrs.frozen
class Record:
    """A message to produce, and what every tier must hand over unchanged.

    Attributes:
        fid: Its id (also in the ``fid`` header).
        key: The key (None: a null key).
        value: The value (None: a null value).
        headers: The headers, the id's included.
        timestamp: The record timestamp, epoch milliseconds.
    """

    fid: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int

    @property
    def digest(self) -> str:
        """:func:`digest` of the record as produced."""
        return digest(self.key, self.value, self.headers, self.timestamp)


#: One megabyte, under the broker's default ``message.max.bytes`` with room for
#: the provenance headers that the retry topics add.
ONE_MB = 1_000_000
_ODD_BYTES = b"\xff\xfe\x00\x80\xc3\x28 not utf-8 \xed\xa0\x80"
_DUPLICATES: tuple[tuple[str, bytes | None], ...] = (
    ("dup", b"first"),
    ("dup", b"\x00\xff second"),
    ("dup", None),
    ("dup", b""),
    ("ключ", _ODD_BYTES),
)


def _poison(
    kind: int, fid: int
) -> tuple[bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]:
    """Key, value and extra headers of poison kind ``kind``."""
    key = b"key-%d" % fid
    if kind == 0:
        return key, b"", ()
    if kind == 1:
        return key, None, ()
    if kind == 2:
        return None, b"value with a null key", ()
    if kind == 3:
        return key, bytes(range(256)) * (ONE_MB // 256) + b"\x00" * (ONE_MB % 256), ()
    if kind == 4:
        return _ODD_BYTES, _ODD_BYTES * 3, ()
    if kind == 5:
        return key, b"duplicate header names", _DUPLICATES
    return None, None, _DUPLICATES


#: Poison kinds: empty value, null value, null key, 1 MB value, non-UTF-8 key and
#: value, duplicate header names, and all the odd ones at once.
POISON_KINDS = 7


def ordered_key(fid: int) -> bytes:
    """The key of id ``fid`` in the ordered plan."""
    return b"key-%d" % (fid % ORDERED_KEYS)


def records(plan: str, count: int, base_ms: int, padding: int = 64) -> list[Record]:
    """The messages of a run: ids ``0 .. count - 1`` (``poison``: every kind in every behaviour).

    Values carry ``padding`` filler bytes. Timestamps are ``base_ms + id``, so
    that the test knows them without asking the broker.
    """
    if plan == "poison":
        count = POISON_KINDS * len(_POISON)
    made = []
    for fid in range(count):
        id_header = (ID_HEADER, str(fid).encode())
        if plan == "poison":
            key, value, extra = _poison(fid // len(_POISON), fid)
            headers = (*extra[:2], id_header, *extra[2:])
        else:
            key, value, headers = (
                ordered_key(fid) if plan == "ordered" else str(fid).encode(),
                b"value-%d-" % fid + b"x" * padding,
                (id_header,),
            )
        made.append(Record(fid, key, value, headers, base_ms + fid))
    return made
