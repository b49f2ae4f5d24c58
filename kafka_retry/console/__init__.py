"""The dead-letter console: a web page and a JSON API to mount in a FastAPI or Starlette app.

::

    from fastapi import Depends, FastAPI
    from kafka_retry.console import console_app

    app = FastAPI()
    app.mount("/dlq", console_app(config, dependencies=[Depends(require_operator)]))

The page (``/``) shows dead letters by topic and failure group, one dead letter
in full, and replays or purges a selection after a dry run and a confirmation.
The API (``/api/...``) is documented in ``docs/operations.md``. Both work on
either retry backend through :mod:`kafka_retry.deadletter`. Needs the
``fastapi`` extra (``pip install 'kafka-retry[fastapi]'``), imported only when
:func:`console_app` is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from kafka_retry.config import Config
from kafka_retry.deadletter import open_dead_letters
from kafka_retry.errors import ConfigError

__all__ = ["console_app"]

# A console request waits on its answer: a broker that is down fails it fast
# instead of holding it for the consumer's whole connection bound.
_CONNECT_ATTEMPTS = 2


def console_app(
    config: Config, *, read_only: bool = False, dependencies: Sequence[Any] = ()
) -> Any:
    """The console for ``config``'s dead letters, as an ASGI application (a FastAPI app).

    Args:
        config: The consumer's settings: servers, group, topics, backend, database.
        read_only: Refuse replays and purges (403); dry-run replays still answer.
        dependencies: FastAPI dependencies run before every request, page and
            API alike: the host application's authentication. Callables are
            wrapped in ``Depends``; ``Depends(...)`` objects are taken as they are.

    Returns:
        A FastAPI application; mount it with ``app.mount("/dlq", ...)``.

    Raises:
        ConfigError: The postgres backend without database settings, or FastAPI
            is not installed.
    """
    try:
        from kafka_retry.console._app import build_app
    except ImportError as exc:
        raise ConfigError(
            "console", f"needs the fastapi extra: pip install 'kafka-retry[fastapi]' ({exc})"
        ) from exc
    fast = attrs.evolve(config, connect_attempts=min(config.connect_attempts, _CONNECT_ATTEMPTS))
    open_dead_letters(fast)  # settings errors now, not at the first request
    return build_app(fast, read_only=read_only, dependencies=tuple(dependencies))
