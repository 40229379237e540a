"""A scriptable fake OpenAI-compatible worker (vLLM, Ollama, llama.cpp server, SGLang) for Parley's tests;
it also answers the Anthropic Messages API (POST /v1/messages), vLLM's POST /tokenize, and
POST /v1/embeddings and /v1/rerank (tests/fakeworker/retrieval.py)."""

from .scripts import (
    Answer,
    Drop,
    Garbage,
    Hang,
    RawAnswer,
    Script,
    Stall,
    StreamError,
    ToolCall,
    WorkerError,
)
from .server import FakeWorker

__all__ = [
    "Answer",
    "Drop",
    "FakeWorker",
    "Garbage",
    "Hang",
    "RawAnswer",
    "Script",
    "Stall",
    "StreamError",
    "ToolCall",
    "WorkerError",
]
