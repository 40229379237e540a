"""Reading a request's PDFs off the event loop, once the request is admitted.

The text is read by core/pdf.py's `pdf_texts` within the settings' limits (PARLEY_PDF_*), in a
small pool of threads of its own (PARLEY_PDF_THREADS; more requests wait their turn, at most
PARLEY_PDF_MAX_WAITING of them: the next gets a 529), so that a PDF never holds the event loop
nor the threads that store calls use. A client that leaves stops the reading at the next operator.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

from starlette.requests import Request

from ..core.errors import OverloadedError
from ..core.pdf import pdf_texts
from .services import Services
from .upstream import unless_client_leaves

__all__ = ["read_pdfs"]


class _PdfPool:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="parley-pdf")
        self.readings = 0  # running or waiting for a thread (changed on the event loop only)


_pools: dict[int, _PdfPool] = {}  # by size: one per process (tests build stacks of several sizes)


def _pool(threads: int) -> _PdfPool:
    threads = max(1, threads)
    pool = _pools.get(threads)
    if pool is None:
        pool = _pools[threads] = _PdfPool(threads)
    return pool


async def read_pdfs(request: Request, services: Services, sources: Mapping[str, str]) -> dict[str, str]:
    """The text of each PDF of `sources` (path → base64 data), read in a PDF thread. Raises the
    400 or 413 of a PDF past the limits, or ClientDisconnected when the client leaves."""
    if not sources:
        return {}
    settings = services.settings
    pool = _pool(settings.pdf_threads)
    if pool.readings >= pool.threads + max(0, settings.pdf_max_waiting):
        raise OverloadedError("Parley is reading as many PDFs as it can take; try again shortly.")
    stop = threading.Event()
    pool.readings += 1
    reading = asyncio.get_running_loop().run_in_executor(
        pool.executor, pdf_texts, dict(sources), settings.pdf_limits, stop
    )
    reading.add_done_callback(lambda _: _done(pool))
    try:
        return await unless_client_leaves(request, reading)
    finally:
        stop.set()  # a reading still running (its client left) stops at its next operator


def _done(pool: _PdfPool) -> None:
    pool.readings -= 1
