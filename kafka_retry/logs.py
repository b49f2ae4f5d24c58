"""JSON lines for the ``kafka_retry`` logger (or any other): one object per record.

kafka-retry logs through stdlib :mod:`logging` to the ``kafka_retry`` logger,
with context in ``extra`` fields: ``topic``, ``partition``, ``offset``,
``attempt``, ``tier``, ``main_topic``, ``error_type``. :class:`JsonFormatter`
puts every such field (and the ones your own code passes) beside the message::

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.getLogger("kafka_retry").addHandler(handler)

No password reaches these records: settings hide secrets from their reprs, and
connection errors name ``host:port`` only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

__all__ = ["JsonFormatter"]

# Everything a bare LogRecord has; any other attribute came from ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time, level, logger, message, extra fields.

    ``time`` is ISO 8601 in UTC with milliseconds. An exception's traceback is
    in ``exc_info``. Values JSON cannot hold are written as their ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object, without a newline."""
        moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
        line: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                line.setdefault(name, value)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)
