"""Start one chat gateway: `python3 server.py --help` lists every option."""

from __future__ import annotations

import asyncio
import logging
import resource
import sys

from gateway.server import run
from gateway.settings import Settings


def _raise_fd_limit() -> None:
    """Each connection is a file descriptor; use all the system allows us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_args(argv)
    _raise_fd_limit()
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in requirements.txt
        return asyncio.run(run(settings))
    return uvloop.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
