"""A task cancelled in the loop turn its Redis reply arrives in stays cancelled.

Python 3.11's `asyncio.wait_for` returns the result instead when the cancel and the reply
meet; a gateway's presence loop outlived its shutdown that way, and the process never
exited (docs/PERFORMANCE.md, "A shutdown that never ended"). Real Redis, real pipeline;
the test only chooses the moment: the cancel is made by the reply's own arrival.
"""

from __future__ import annotations

import asyncio

import pytest

from store.resp import RespPipeline


async def test_a_cancel_that_comes_with_the_reply_is_not_lost(redis_url: str) -> None:
    pipe = RespPipeline(redis_url)
    try:
        assert await pipe.execute([("PING",)]) == ["PONG"]  # connected
        proto = pipe._proto
        assert proto is not None
        task = asyncio.create_task(pipe.execute([("PING",)]))
        received = proto.data_received

        def reply_then_cancel(data: bytes) -> None:  # the cancel comes with the reply:
            received(data)  # the reply is set on the task's future, and before the task
            task.cancel()  # runs again, somebody cancels it (a shutdown, say)

        proto.data_received = reply_then_cancel  # type: ignore[method-assign]
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        proto.data_received = received  # type: ignore[method-assign]
        assert await pipe.execute([("PING",)]) == ["PONG"]  # and the pipeline still works
    finally:
        pipe.close()
