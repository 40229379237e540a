"""The request each worker of a route gets for a Messages request, built once per kind of worker:
a Chat Completions request (translated, system messages folded where the worker's template needs
it), or the Anthropic body as it came (guarded) for Anthropic-native workers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Awaitable, Callable, TypeVar

from starlette.requests import Request

from ..core.anthropic_types import MessagesRequest
from ..core.documents import DocumentTexts, estimate_pdf_tokens, pdf_sources
from ..core.passthrough import anthropic_request_for_worker, message_from_worker, usage_of_message
from ..core.quirks import later_system_message
from ..core.request import WorkerProfile, fit_max_tokens, messages_to_chat
from ..core.response import AnswerContext, chat_to_message
from ..core.tokens import estimate_prompt_tokens
from ..io.chat_templates import ChatTemplates
from ..io.routes import Route, Worker
from ..io.worker import WorkerClient, WorkerFailure, WorkerStream
from .documents import read_pdfs
from .services import Services

__all__ = ["WorkerRequests", "text_worker"]

T = TypeVar("T")

_CHAT_PATH = "/chat/completions"
_MESSAGES_PATH = "/v1/messages"


class WorkerRequests:
    """The request each worker of the route gets, built once per kind of worker."""

    def __init__(
        self, request: Request, raw: dict[str, Any], message_request: MessagesRequest, templates: ChatTemplates
    ) -> None:
        self._http_request = request
        self._raw = raw  # the body as parsed (and guarded), for Anthropic-native workers
        self._message_request = message_request
        self._templates = templates
        self._chats: dict[WorkerProfile, dict[str, Any]] = {}
        self.documents: DocumentTexts = {}  # the PDFs' texts, once read (`read_documents`)
        self.prompt_tokens = 0

    def _profile(self, worker: Worker, folded: bool = False) -> WorkerProfile:
        profile = worker.profile
        if not profile.fold_system_messages and (folded or self._templates.folds(worker)):
            profile = replace(profile, fold_system_messages=True)
        return profile

    def chat(self, worker: Worker, folded: bool = False) -> dict[str, Any]:
        """The worker's chat request; `folded`: with its system messages folded whatever the
        worker is known to take."""
        profile = self._profile(worker, folded)
        chat = self._chats.get(profile)
        if chat is None:
            chat = self._chats[profile] = messages_to_chat(self._message_request, profile, self.documents)
        return {**chat, "max_tokens": fit_max_tokens(chat["max_tokens"], profile, self.prompt_tokens)}

    def admission_estimate(self, worker: Worker, max_pdf_text_chars: int) -> int:
        """The prompt's estimate before any PDF is read: the PDFs the worker would read as text
        counted by their size (`estimate_pdf_tokens`). Translating validates the request as well."""
        pdfs = pdf_sources(self._message_request, worker.profile.files)
        if not pdfs:
            chat = self.chat(worker)
            return estimate_prompt_tokens(chat["messages"], chat.get("tools"))
        chat = messages_to_chat(self._message_request, self._profile(worker), dict.fromkeys(pdfs, ""))
        return estimate_prompt_tokens(chat["messages"], chat.get("tools")) + estimate_pdf_tokens(
            pdfs, max_pdf_text_chars
        )

    async def read_documents(self, request: Request, services: Services, route: Route) -> bool:
        """Read the PDFs that the route's OpenAI-style workers take as text (an Anthropic-native
        worker gets them as they came). Whether there were any."""
        sources: dict[str, str] = {}
        for worker in route.workers:
            if worker.api == "openai":
                sources.update(pdf_sources(self._message_request, worker.profile.files))
        self.documents = await read_pdfs(request, services, sources)
        return bool(sources)

    def anthropic(self, worker: Worker) -> dict[str, Any]:
        return anthropic_request_for_worker(self._raw, worker.profile)

    def anthropic_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self._http_request.headers.get("anthropic-version", "2023-06-01")}
        beta = self._http_request.headers.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        return headers

    async def _call_chat(self, worker: Worker, call: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
        """`call` with the worker's chat request; once more with its system messages folded if
        the worker's template refused them (`io.chat_templates`)."""
        chat = self.chat(worker)
        try:
            return await call(chat)
        except WorkerFailure as failure:
            if not self._templates.may_fold_after(worker, failure, later_system_message(chat["messages"])):
                raise
        answer = await call(self.chat(worker, folded=True))
        self._templates.learned(worker)
        return answer

    async def complete(self, client: WorkerClient, worker: Worker, timeouts: Any) -> dict[str, Any]:
        if worker.api == "anthropic":
            return await client.complete(
                worker, _MESSAGES_PATH, self.anthropic(worker), timeouts, self.anthropic_headers()
            )
        return await self._call_chat(worker, lambda chat: client.complete(worker, _CHAT_PATH, chat, timeouts))

    async def message(
        self, client: WorkerClient, worker: Worker, timeouts: Any, context: AnswerContext
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """The worker's answer as an Anthropic message, and its usage. Translated inside the worker
        call: an answer Parley cannot use fails that worker (it cools down, the next one is tried)."""
        answer = await self.complete(client, worker, timeouts)
        if worker.api == "anthropic":
            message = message_from_worker(answer, context)
            return message, usage_of_message(message, context.input_tokens_estimate)
        message = chat_to_message(answer, context)
        return message, message["usage"]

    async def open_stream(self, client: WorkerClient, worker: Worker, timeouts: Any) -> WorkerStream:
        if worker.api == "anthropic":
            return await client.open_stream(
                worker, _MESSAGES_PATH, self.anthropic(worker), timeouts, self.anthropic_headers()
            )
        return await self._call_chat(worker, lambda chat: client.open_stream(worker, _CHAT_PATH, chat, timeouts))


def text_worker(route: Route) -> Worker | None:
    """The worker whose translation the prompt is estimated and tokenized on: the first
    OpenAI-style one (a tokenizing worker is one)."""
    return next((worker for worker in route.workers if worker.api == "openai"), None)
