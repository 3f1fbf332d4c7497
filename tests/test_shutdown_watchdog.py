"""A stopping gateway whose shutdown never ends exits anyway, saying what it waited for
(gateway.server.exit_when_stuck). Nothing in the gateway hangs its shutdown any more
(tests/store/test_cancel.py was the last cause), so the hang is made here: a process runs
the watchdog on a loop where one task waits forever and another blocks the loop itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_STUCK = textwrap.dedent(
    """
    import asyncio, logging, sys, time
    from gateway.server import exit_when_stuck

    logging.basicConfig(stream=sys.stderr, level=logging.INFO)

    async def forever() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        asyncio.create_task(forever(), name="presence")
        exit_when_stuck(asyncio.get_running_loop(), {seconds})
        await asyncio.sleep(0)
        if {block}:
            time.sleep(60)  # the loop itself stuck: only a thread can end this
        await asyncio.sleep(60)

    asyncio.run(main())
    print("ended by itself")
    """
)


def _run_stuck(seconds: float, block: bool) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _STUCK.format(seconds=seconds, block=block)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done, time.monotonic() - start


def test_a_shutdown_waiting_forever_exits_and_names_the_task_it_waited_for() -> None:
    done, took = _run_stuck(1.0, block=False)
    assert done.returncode == 1, done.stderr
    assert "ended by itself" not in done.stdout
    assert 1.0 <= took < 20, took
    line = next(s for s in done.stderr.splitlines() if "event=shutdown_stuck" in s)
    assert "after=1.0" in line
    assert "presence: forever" in line  # the task and the coroutine it waits in


def test_a_loop_blocked_in_its_shutdown_is_ended_by_the_watchdog_thread() -> None:
    done, took = _run_stuck(1.0, block=True)
    assert done.returncode == 1, done.stderr
    assert "event=shutdown_stuck" in done.stderr
    assert took < 20, took


def test_a_shutdown_that_ends_in_time_is_not_cut_short() -> None:
    quick = textwrap.dedent(
        """
        import asyncio
        from gateway.server import exit_when_stuck

        async def main() -> None:
            exit_when_stuck(asyncio.get_running_loop(), 5.0)
            await asyncio.sleep(0.2)

        asyncio.run(main())
        print("ended by itself")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", quick], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "ended by itself" in done.stdout
    assert "shutdown_stuck" not in done.stderr
