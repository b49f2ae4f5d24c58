"""``kafka-retry console``: serve the dead-letter console (page and JSON API) with uvicorn.

Without ``--auth`` the console has no authentication of its own, so it serves
the loopback interface only; ``--auth MODULE:ATTRIBUTE`` names a FastAPI
dependency that guards every request, and then ``--host`` may be any address.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from typing import Any

from kafka_retry._cli._common import (
    Commands,
    database_options,
    kafka_options,
    load_config,
    verbosity,
)
from kafka_retry._cli.run import import_target
from kafka_retry.errors import ConfigError

_LOOPBACK = "127.0.0.1"


def register(commands: Commands) -> None:
    """Add ``console``."""
    console = commands.add_parser(
        "console",
        parents=[verbosity()],
        help="serve the dead-letter console (web page and JSON API)",
        description=(
            "Serve the dead-letter console: dead letters by topic and failure group, "
            "one in full, replay and purge after a dry run. Kafka and database settings "
            "come from the options or the environment. Needs the fastapi extra."
        ),
    )
    kafka_options(console)
    database_options(console)
    server = console.add_argument_group("server")
    server.add_argument("--port", type=int, default=8080, help="TCP port (0: any free one)")
    server.add_argument(
        "--host",
        default=_LOOPBACK,
        help=f"address to listen on ({_LOOPBACK}; others only with --auth)",
    )
    server.add_argument(
        "--auth",
        metavar="MODULE:ATTRIBUTE",
        help="a FastAPI dependency run before every request, e.g. myapp.auth:require_operator",
    )
    server.add_argument(
        "--read-only", action="store_true", help="show dead letters; refuse replays and purges"
    )
    console.set_defaults(handler=console_command)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, so a taken port is one clear error rather than a server log."""
    if not 0 <= port <= 65535:
        raise ConfigError("--port", f"must be 0 to 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError("--host", f"cannot listen on {host}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError("--port", f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def _app(args: argparse.Namespace) -> Any:
    try:
        from kafka_retry.console import console_app
    except ImportError as exc:  # pragma: no cover - the console module itself imports lazily
        raise ConfigError("console", f"cannot load the console: {exc}") from exc
    dependencies = [] if args.auth is None else [import_target(args.auth)]
    return console_app(load_config(args), read_only=args.read_only, dependencies=dependencies)


def console_command(args: argparse.Namespace) -> int:
    """Serve the console until SIGINT or SIGTERM."""
    if not _is_loopback(args.host) and args.auth is None:
        raise ConfigError(
            "--host",
            f"the console has no authentication of its own: it serves {_LOOPBACK} only "
            "unless --auth names a dependency that checks every request",
        )
    try:
        import uvicorn
    except ImportError:
        raise ConfigError(
            "console", "needs the fastapi extra: pip install 'kafka-retry[fastapi]'"
        ) from None
    app = _app(args)
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"kafka-retry console: http://{shown}:{port}/ (Ctrl-C stops it)", file=sys.stderr)
    sys.stderr.flush()
    level = {0: "warning", 1: "info"}.get(args.verbose, "debug")
    server = uvicorn.Server(uvicorn.Config(app, log_level=level, access_log=args.verbose > 0))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    logging.getLogger("kafka_retry.cli").debug("console stopped")
    return 0
