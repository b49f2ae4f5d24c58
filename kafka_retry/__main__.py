"""``python -m kafka_retry``: the same as the ``kafka-retry`` command."""

from __future__ import annotations

import sys

from kafka_retry.cli import main

if __name__ == "__main__":
    sys.exit(main())
