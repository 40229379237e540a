"""Work that runs after, or beside, the response: usage writes and cache refreshes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

__all__ = ["drain", "in_background", "refresh_in_background"]

logger = logging.getLogger("parley.background")

_background: set[asyncio.Task[Any]] = set()


def in_background(work: Any) -> None:
    """Run `work` (a coroutine) without waiting for it; `drain` waits for all of it at shutdown."""
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _refresh(read: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        await asyncio.to_thread(read, *args)
    except Exception as error:  # the cached entry stays until it expires; then a request reads it
        logger.warning("cache refresh failed (%s); the cached entry is used until it expires", type(error).__name__)


def refresh_in_background(read: Callable[..., Any], *args: Any) -> None:
    """Re-read a cached entry that is due for it (ExpiringCache.due), off the request's path:
    `read` stores what it reads in its cache, so an entry in steady use never expires under a
    request."""
    in_background(_refresh(read, args))


async def drain() -> None:
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
