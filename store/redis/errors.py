"""redis-py's errors as the contract's: what means "not reachable" (`StoreUnavailable`),
what is a refusal to write (`StoreRefused`); the hot-path connection's error replies are
mapped by the same tests in store/resp.py (`reply_error`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import hiredis
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.contract import StoreNoReply, StoreRefused, StoreUnavailable
from store.resp import cannot_serve_now, refusal

__all__ = ["UNAVAILABLE", "as_contract", "is_error", "mapped", "refused"]

T = TypeVar("T")

#: redis-py's exceptions that mean Redis is not reachable: the contract's StoreUnavailable
#: (redis-py raises LOADING as BusyLoadingError, a ConnectionError).
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)

#: redis-py raises these replies (store.resp.NOT_NOW) as their own classes, prefix stripped.
_NOT_NOW_CLASSES = (ClusterDownError, TryAgainError)


def refused(exc: Exception) -> StoreRefused | None:
    """A refusal to write as the contract's error (redis-py strips the OOM/READONLY
    prefix into the exception's class)."""
    if isinstance(exc, OutOfMemoryError | ReadOnlyError):
        return StoreRefused(f"{type(exc).__name__}: {exc}")
    return refusal(str(exc))


def as_contract(exc: ResponseError) -> Exception:
    """A redis-py error reply as the contract's error where it is one (a refusal to
    write, a Redis that cannot serve now), else itself."""
    # a pipeline's error names its command first: "Command # 1 (GET k) of pipeline
    # caused error: ('BUSY Redis is busy ...',)"
    reply = str(exc).rpartition("caused error: ")[2].lstrip("('\"")
    if isinstance(exc, _NOT_NOW_CLASSES) or cannot_serve_now(reply):
        return StoreUnavailable(str(exc) or type(exc).__name__)
    return refused(exc) or exc


def is_error(reply: Any) -> bool:
    return isinstance(reply, BaseException | hiredis.ReplyError)


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
