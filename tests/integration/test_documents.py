"""PDFs, as a client and an operator notice them: the text reaches a text-only worker, reading it
never holds the event loop (GET /health answers meanwhile), it happens only once the request is
admitted (a refused key or limit costs no reading), and a PDF past the limits is a 400 (or 413)
naming the document, on /v1/messages (buffered and streamed) and on count_tokens.

A crafted PDF makes pypdf work hard: one page repeating a text-show sequence thousands of times
in a Flate stream of a few kilobytes (`crafted_pdf`).
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import threading
import zlib
from typing import Any, Iterator

import httpx
import pytest

import parley.web.documents
from parley.core.documents import estimate_pdf_tokens
from parley.core.errors import InvalidRequestError, RequestTooLargeError
from parley.core.metering import Limits
from parley.core.pdf import PdfLimits, pdf_texts
from parley.io.routes import Route, Worker
from parley.settings import Settings
from tests.fakeworker import FakeWorker
from tests.stack import RunningParley, parley_stack, tables_named

from .conftest import SAFETY_NET
from .helpers import HELLO, MODEL, WORKER_MODEL, assert_error, last_worker_body, pdf_of, request

MAX_OPERATORS = 50_000
MAX_TEXT_CHARS = 5_000
HEAVY_REPEATS = 20_000  # 100,000 operators: past MAX_OPERATORS
PDF_FIELD = "messages.0.content.1.source.data"


def crafted_pdf(repeats: int, pages: int = 1, show: bytes = b"x") -> bytes:
    """A PDF whose pages (sharing one content stream) repeat `BT /F1 12 Tf 10 10 Td (x) Tj ET`."""
    content = zlib.compress(b"BT /F1 12 Tf 10 10 Td (%s) Tj ET\n" % show * repeats, 9)
    kids = " ".join(f"{3 + page} 0 R" for page in range(pages)).encode()
    font, stream = 3 + pages, 4 + pages
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        *[
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R >> >> "
            b"/Contents %d 0 R >>" % (font, stream)
        ]
        * pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    return pdf_of(objects)


def b64(pdf: bytes) -> str:
    return base64.b64encode(pdf).decode()


def with_pdf(pdf: bytes, **overrides: Any) -> dict[str, Any]:
    """A request whose first message is a text block, then the PDF (so the PDF is content.1)."""
    document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(pdf)}}
    content = [{"type": "text", "text": "Read this:"}, document]
    return request(messages=[{"role": "user", "content": content}], **overrides)


# -- the stack: PDF limits small enough to reach quickly ----------------------------------------


@pytest.fixture(scope="module")
def stack(dynamodb: Any, worker: FakeWorker) -> Iterator[RunningParley]:
    settings = Settings(
        **tables_named("it-pdf"),
        worker_attempts=1,
        pdf_max_operators=MAX_OPERATORS,
        pdf_max_text_chars=MAX_TEXT_CHARS,
    )
    # tokenize=False: count_tokens is the estimate, which grows with the text read from the PDF
    text_worker = Worker(base_url=worker.base_url, model=WORKER_MODEL, tokenize=False)
    route = Route(model=MODEL, workers=(text_worker,), timeouts=SAFETY_NET)
    with parley_stack(dynamodb, settings, [route], account="pdf") as running:
        yield running


@pytest.fixture
def client_for(stack: RunningParley) -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def make(key: str | None = None) -> httpx.Client:
        made = httpx.Client(
            base_url=stack.url,
            headers={"x-api-key": key or stack.key, "anthropic-version": "2023-06-01"},
            timeout=30,
        )
        clients.append(made)
        return made

    yield make
    for made in clients:
        made.close()


class Readings:
    """pdf_texts as web/documents.py calls it, counted; `gate()` holds each reading at its start
    until `release` is set (the request is then parked in a PDF thread)."""

    def __init__(self) -> None:
        self.count = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def gate(self) -> None:
        self.release.clear()

    def __call__(self, *args: Any) -> dict[str, str]:
        self.count += 1
        self.started.set()
        assert self.release.wait(30), "the test never released the PDF reading"
        return pdf_texts(*args)


@pytest.fixture
def readings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Readings]:
    spy = Readings()
    monkeypatch.setattr(parley.web.documents, "pdf_texts", spy)
    yield spy
    spy.release.set()


# -- normal PDFs ----------------------------------------------------------------------------------


def test_a_pdf_reaches_a_text_only_worker_as_its_text(client_for, worker, readings):
    response = client_for().post("/v1/messages", json=with_pdf(crafted_pdf(3, show=b"Revenue grew")))
    assert response.status_code == 200, response.text
    sent = last_worker_body(worker)["messages"][0]["content"]
    assert sent.startswith("Read this:\n<document>\n") and "Revenue grew" in sent
    assert readings.count == 1


def test_count_tokens_counts_a_pdfs_text(client_for):
    def count(repeats: int) -> int:
        response = client_for().post("/v1/messages/count_tokens", json=with_pdf(crafted_pdf(repeats, show=b"abcd")))
        assert response.status_code == 200, response.text
        return response.json()["input_tokens"]

    assert count(400) > count(4) + 300, "400 x 'abcd' is about 400 tokens more text"


# -- the event loop stays free ------------------------------------------------------------------


def test_health_answers_while_a_heavy_pdf_is_read(stack, client_for, readings):
    readings.gate()
    answers: list[httpx.Response] = []
    heavy = threading.Thread(
        target=lambda: answers.append(client_for().post("/v1/messages", json=with_pdf(crafted_pdf(HEAVY_REPEATS))))
    )
    heavy.start()
    try:
        assert readings.started.wait(30), "the PDF was never read"
        health = httpx.get(f"{stack.url}/health", timeout=10)  # a frozen loop would not answer at all
        assert health.status_code == 200
    finally:
        readings.release.set()
        heavy.join(30)
    assert not heavy.is_alive() and answers, "the heavy request never ended"
    message = assert_error(answers[0], 400, "invalid_request_error")
    assert message.startswith(f"{PDF_FIELD}:") and "content-stream operators" in message


def test_pdfs_past_the_threads_and_the_waiting_room_get_529(stack, client_for, readings):
    # One thread and no room to wait: while one PDF is being read, the next request is told to come
    # back (overloaded_error, which the SDKs retry) instead of queueing behind it without a bound.
    settings = stack.services.settings
    stack.services.settings = dataclasses.replace(settings, pdf_threads=1, pdf_max_waiting=0)
    readings.gate()
    answers: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: answers.append(client_for().post("/v1/messages", json=with_pdf(crafted_pdf(10))))
    )
    first.start()
    try:
        assert readings.started.wait(30), "the PDF was never read"
        crowded = client_for().post("/v1/messages", json=with_pdf(crafted_pdf(10)))
        assert_error(crowded, 529, "overloaded_error")
    finally:
        readings.release.set()
        first.join(30)
        stack.services.settings = settings
    assert answers and answers[0].status_code == 200, "the request being read was not answered"
    assert readings.count == 1
    assert client_for().post("/v1/messages", json=with_pdf(crafted_pdf(10))).status_code == 200, (
        "the pool is free again"
    )


# -- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_a_pdf_past_the_operator_budget_is_a_400_naming_it(client_for, worker, stream):
    response = client_for().post("/v1/messages", json=with_pdf(crafted_pdf(HEAVY_REPEATS), stream=stream))
    message = assert_error(response, 400, "invalid_request_error")
    assert message == (
        f"{PDF_FIELD}: the PDFs of this request have more than {MAX_OPERATORS:,} content-stream operators, "
        "the most Parley reads for one request; send fewer or simpler pages, or the text as a text document"
    )
    assert not worker.requests


def test_a_pdf_past_the_text_size_is_a_413_naming_it(client_for, worker):
    response = client_for().post("/v1/messages", json=with_pdf(crafted_pdf(MAX_TEXT_CHARS + 1)))
    message = assert_error(response, 413, "request_too_large")
    assert message.startswith(f"{PDF_FIELD}:") and f"{MAX_TEXT_CHARS:,} characters" in message
    assert not worker.requests


def test_count_tokens_keeps_the_same_limits(client_for):
    response = client_for().post("/v1/messages/count_tokens", json=with_pdf(crafted_pdf(HEAVY_REPEATS)))
    message = assert_error(response, 400, "invalid_request_error")
    assert message.startswith(f"{PDF_FIELD}:") and "content-stream operators" in message


# -- admission comes first ----------------------------------------------------------------------


def test_a_rate_limited_key_gets_429_for_a_pdf_without_it_being_read(stack, client_for, readings, one_minute):
    key, _ = stack.services.keys.create(
        account=f"pdf-{secrets.token_hex(4)}", name="t", limits=Limits(requests_per_minute=1)
    )
    client = client_for(key)
    assert client.post("/v1/messages", json=request(messages=HELLO)).status_code == 200
    refused = client.post("/v1/messages", json=with_pdf(crafted_pdf(HEAVY_REPEATS)))
    assert_error(refused, 429, "rate_limit_error")
    assert readings.count == 0, "a refused request had its PDF read"


def test_a_key_not_allowed_the_model_gets_403_for_a_pdf_without_it_being_read(stack, client_for, readings):
    key, _ = stack.services.keys.create(account="pdf", name="t", allowed_models=("other-model",))
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        refused = client_for(key).post(path, json=with_pdf(crafted_pdf(HEAVY_REPEATS)))
        assert_error(refused, 403, "permission_error")
    assert readings.count == 0, "a refused request had its PDF read"


# -- the reader itself (core/pdf.py) ------------------------------------------------------------


def read(pdf: bytes, **limits: Any) -> dict[str, str]:
    return pdf_texts({"messages.0.content.1": b64(pdf)}, PdfLimits(**limits))


def test_the_time_budget_stops_the_reading():
    with pytest.raises(InvalidRequestError) as raised:
        read(crafted_pdf(10), seconds=0)
    assert raised.value.message.startswith(f"{PDF_FIELD}: reading the PDF's text took longer than the 0 s allowed")


def test_a_stop_event_stops_the_reading():
    stop = threading.Event()
    stop.set()
    with pytest.raises(InvalidRequestError, match="the request ended while its PDF was read"):
        pdf_texts({"messages.0.content.1": b64(crafted_pdf(10))}, PdfLimits(), stop)


def test_the_budgets_count_every_pdf_of_the_request():
    sources = {f"messages.0.content.{index}": b64(crafted_pdf(10, pages=2)) for index in range(3)}
    assert len(pdf_texts(sources, PdfLimits(max_pages=6))) == 3
    with pytest.raises(InvalidRequestError) as raised:
        pdf_texts(sources, PdfLimits(max_pages=5))
    assert raised.value.message == (
        "messages.0.content.2.source.data: the PDFs of this request have more than 5 pages, "
        "the most Parley reads for one request"
    )
    with pytest.raises(RequestTooLargeError):
        pdf_texts(sources, PdfLimits(max_text_chars=59))  # 3 PDFs x 2 pages x 10 characters


def test_a_content_stream_past_the_parsing_budget_is_a_400():
    with pytest.raises(InvalidRequestError) as raised:
        read(crafted_pdf(30_000))  # 300,000 tokens in one stream
    assert raised.value.message.startswith(f"{PDF_FIELD}: the PDF is more complex than Parley reads")


def test_admission_estimates_a_pdf_by_its_size_up_to_the_text_cap():
    sources = {"messages.0.content.1": "A" * 4000, "messages.0.content.2": "A" * 4000}  # 3,000 bytes each
    assert estimate_pdf_tokens(sources, max_text_chars=1_000_000) == 1500
    assert estimate_pdf_tokens(sources, max_text_chars=400) == 100
