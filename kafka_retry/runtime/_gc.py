"""The garbage-collector settings a running consumer asks for (``Config.tune_gc``).

Consuming makes several container objects per record (aiokafka's record, the
Message, the batch's lists) that live until their batch is done. With
CPython's default thresholds a collection runs every 700 of them: the records
still queued survive it, are promoted, and are traversed again by each older
collection, while every object made at startup (modules, classes, the Kafka
clients) is traversed by each full one. A quarter of a no-op consumer's time
went to that.

While at least one consumer of the process runs, :class:`GcTuning` therefore

* freezes what exists when the consumer is ready (``gc.freeze()``, with no
  collection first: that would pause a large application, and a test suite
  at every consumer it starts): full collections no longer traverse it. Frozen objects are
  still freed by reference counting; only a cycle among them is not collected
  while frozen. When the last consumer stops they are unfrozen again (so a
  test suite that starts a consumer per test does not pile up uncollectable
  cycles), unless something else had frozen objects before (say a pre-fork
  server): undoing that one is not ours to do;
* raises the first-generation threshold to :data:`THRESHOLD` (never lowers it);
  when the last consumer stops, the threshold it found is put back, unless the
  application changed it meanwhile.

It is process-wide, as the collector is; ``Config(tune_gc=False)`` leaves the
collector alone.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("kafka_retry")

__all__ = ["THRESHOLD", "GcTuning"]

#: The first-generation threshold while a consumer runs: a collection per
#: ~100 batches of 500 records rather than one or two per batch.
THRESHOLD = 50_000

# Consumers holding the tuning, the thresholds found before the first, and the ones set.
_holders = 0
_found: tuple[int, int, int] | None = None
_set: tuple[int, int, int] | None = None
# Whether objects were frozen before ours: then the freeze is not ours to undo.
_frozen_before = False


class GcTuning:
    """One consumer's hold on the tuning: :meth:`apply` once ready, :meth:`release` at stop.

    Both are idempotent; the tuning lasts while any holder has applied and not
    released it.
    """

    def __init__(self) -> None:
        self._held = False

    def apply(self) -> None:
        """Freeze startup objects and raise the threshold (if this is the first holder)."""
        global _holders, _found, _set, _frozen_before
        if self._held:
            return
        self._held = True
        _holders += 1
        if _holders > 1:
            return
        _frozen_before = gc.get_freeze_count() > 0
        gc.freeze()
        found = gc.get_threshold()
        _found = found
        # A threshold of 0 means the application disabled automatic collection.
        if found[0] and found[0] < THRESHOLD:
            gc.set_threshold(THRESHOLD, found[1], found[2])
        _set = gc.get_threshold()
        log.info(
            "garbage collector tuned while consuming: %d startup objects frozen,"
            " first-generation threshold %d (Config(tune_gc=False) leaves it alone)",
            gc.get_freeze_count(),
            _set[0],
        )

    def release(self) -> None:
        """The last holder unfreezes (if the freeze was its own) and puts the threshold back.

        The threshold only if nobody changed it since.
        """
        global _holders, _found, _set
        if not self._held:
            return
        self._held = False
        _holders -= 1
        if _holders:
            return
        if not _frozen_before:
            gc.unfreeze()
        if _found is not None and gc.get_threshold() == _set:
            gc.set_threshold(*_found)
        _found = _set = None
