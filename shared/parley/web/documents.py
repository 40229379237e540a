"""Reading a request's PDFs off the event loop, once the request is admitted.

The text is read by core/pdf.py's `pdf_texts` within the settings' limits (PARLEY_PDF_*), in a
small pool of threads of its own (PARLEY_PDF_THREADS; more requests wait their turn), so that a
PDF never holds the event loop nor the threads that store calls use. A client that leaves stops
the reading at the next operator.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

from starlette.requests import Request

from ..core.pdf import pdf_texts
from .services import Services
from .upstream import unless_client_leaves

__all__ = ["read_pdfs"]

_pools: dict[int, ThreadPoolExecutor] = {}  # by size: one per process (tests build stacks of several sizes)


def _pool(threads: int) -> ThreadPoolExecutor:
    threads = max(1, threads)
    pool = _pools.get(threads)
    if pool is None:
        pool = _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="parley-pdf")
    return pool


async def read_pdfs(request: Request, services: Services, sources: Mapping[str, str]) -> dict[str, str]:
    """The text of each PDF of `sources` (path → base64 data), read in a PDF thread. Raises the
    400 or 413 of a PDF past the limits, or ClientDisconnected when the client leaves."""
    if not sources:
        return {}
    settings = services.settings
    stop = threading.Event()
    reading = asyncio.get_running_loop().run_in_executor(
        _pool(settings.pdf_threads), pdf_texts, dict(sources), settings.pdf_limits, stop
    )
    try:
        return await unless_client_leaves(request, reading)
    finally:
        stop.set()  # a reading still running (its client left) stops at its next operator
