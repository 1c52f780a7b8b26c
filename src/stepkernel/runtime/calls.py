"""Calling user code, sync or ``async def``, and recording what it raised."""

from __future__ import annotations

import asyncio
import inspect
import threading
import traceback
from collections.abc import Callable
from typing import Any

from stepkernel.domain.records import ErrorInfo

_local = threading.local()


def _loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def call_user(fn: Callable[..., Any], *args: Any) -> Any:
    """Call *fn*; if it returns an awaitable, run it to completion on this thread's loop.

    Called from inside a running event loop (an ``async`` application calling
    ``invoke_now``), the coroutine runs on a private loop in a helper thread.
    """
    result = fn(*args)
    if not inspect.isawaitable(result):
        return result
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _loop().run_until_complete(_await(result))
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(_await(result))
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=runner, name="stepkernel-async")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


async def _await(awaitable: Any) -> Any:
    return await awaitable


def error_info(exc: BaseException) -> ErrorInfo:
    """Type, message and traceback text of *exc*."""
    return ErrorInfo(
        type=type(exc).__qualname__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc))[-4000:],
    )
