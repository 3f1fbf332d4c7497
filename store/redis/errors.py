"""Redis' errors as the contract's, in one place: what means "not reachable"
(`StoreUnavailable`), what is a refusal to write (`StoreRefused`), and the hot-path
connection's error replies raised as one of them."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any, TypeVar

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.contract import StoreNoReply, StoreRefused, StoreUnavailable
from store.resp import refusal

__all__ = ["UNAVAILABLE", "is_error", "mapped", "raised", "refused"]

T = TypeVar("T")

#: redis-py's exceptions that mean Redis is not reachable: the contract's StoreUnavailable.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)

#: Error replies that mean Redis cannot serve right now (loading its data, a script
#: running too long, no master): the contract's StoreUnavailable, as redis-py mapped them.
_NOT_NOW = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def refused(exc: Exception) -> StoreRefused | None:
    """A refusal to write as the contract's error (redis-py strips the OOM/READONLY
    prefix into the exception's class)."""
    if isinstance(exc, OutOfMemoryError | ReadOnlyError):
        return StoreRefused(f"{type(exc).__name__}: {exc}")
    return refusal(str(exc))


def is_error(reply: Any) -> bool:
    return isinstance(reply, BaseException | hiredis.ReplyError)


def raised(error: Any) -> Exception:
    """What a caller raises for an error reply of the hot-path connection: a refusal to
    write or a Redis that cannot serve now as the contract's errors, anything else as a
    ResponseError; an exception instance (a cluster node lost) as a copy of its own, so
    that the callers of one batch do not share one traceback."""
    if isinstance(error, hiredis.ReplyError):
        text = str(error)
        if text.startswith(_NOT_NOW):
            return StoreUnavailable(text)
        return refusal(text) or ResponseError(text)
    return copy.copy(error) if isinstance(error, Exception) else StoreUnavailable(str(error))


def mapped(
    raw: asyncio.Future[Any],
    convert: Callable[[Any], T],
    unconfirmed: Callable[[], T] | None = None,
) -> asyncio.Future[T]:
    """A future of `convert(raw's result)`, failing as raw fails, without a task; a request
    sent but unanswered (`StoreNoReply`) resolves to `unconfirmed()` when given."""
    out: asyncio.Future[T] = raw.get_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if out.done():
            return
        exc = f.exception()
        if isinstance(exc, StoreNoReply) and unconfirmed is not None:
            out.set_result(unconfirmed())
        elif exc is not None:
            out.set_exception(exc)
        else:
            try:
                out.set_result(convert(f.result()))
            except Exception as err:  # a reply of the wrong shape
                out.set_exception(err)

    raw.add_done_callback(done)
    return out
