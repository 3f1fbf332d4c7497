"""Start one chat gateway: `python3 server.py --help` lists every option."""

from __future__ import annotations

import asyncio
import logging
import sys

from gateway.server import run
from gateway.settings import Settings


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in requirements.txt
        asyncio.run(run(settings))
    else:
        uvloop.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
