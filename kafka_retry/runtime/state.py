"""Where a consumer is in its life (its own module: health and metrics need no consumer)."""

from __future__ import annotations

import enum

__all__ = ["ConsumerState"]


class ConsumerState(enum.Enum):
    """Where a :class:`Consumer` is in its life; it only moves forward."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
