"""Start one chat gateway: `python3 server.py --help` lists every option. With
`--workers N` this process supervises N gateway processes on the same ports
(gateway/workers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import sys

from gateway.settings import Settings
from gateway.workers import Worker, supervise


def _raise_fd_limit() -> None:
    """Each connection is a file descriptor; use all the system allows us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _spare(worker: Worker) -> Worker | None:
    """A spare of --workers: import all a gateway runs on, then wait to be a worker (one
    died); what is left of its start is the gateway's own (gateway/workers.py)."""
    with contextlib.suppress(ImportError):  # uvloop is in requirements.txt
        import uvloop  # noqa: F401

    import gateway.server  # noqa: F401

    return worker.wait_for_number()


def main(argv: list[str] | None = None) -> int:
    worker = Worker.take()  # set when a supervisor started this process
    settings = Settings.from_args(argv)
    if worker is not None and worker.spare:
        worker = _spare(worker)
        if worker is None:
            return 0  # the supervisor stops
    who = f"worker={worker.number} " if worker is not None else ""
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s %(name)s {who}%(message)s",
    )
    if worker is None and settings.workers:
        return supervise(sys.argv[1:] if argv is None else argv, settings)
    if worker is not None and worker.orphaned():
        return 0  # the supervisor died while this process started: nobody to serve for
    _raise_fd_limit()
    from gateway.server import run  # not in the supervisor: it only starts processes

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in requirements.txt
        return asyncio.run(run(settings, worker))
    return uvloop.run(run(settings, worker))


if __name__ == "__main__":
    sys.exit(main())
