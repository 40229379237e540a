"""A scriptable fake OpenAI-compatible worker (vLLM, Ollama, llama.cpp server, SGLang) for Parley's tests."""

from .scripts import (
    Answer,
    Drop,
    Garbage,
    Hang,
    Script,
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
    "Script",
    "StreamError",
    "ToolCall",
    "WorkerError",
]
