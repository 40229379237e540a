"""The response cache (docs/cache.md) and knowledge bases (docs/rag.md) on real engines.

- The cache in front of the real vLLM: a greedy request with a tool, asked buffered (a miss, a
  generation) then streamed (a hit: a proper event stream folding to the kept message, and no
  generation in vLLM's own counters), and the reverse: a streamed miss kept as its client got it,
  then served buffered.
- Retrieval with a real embedding engine: llama.cpp's server (llama-cpp-python) serving
  `/v1/embeddings` from the suite's tiny GGUF, a knowledge base built from tests/vectors/rag with
  `parley kb` on it, and a request to vLLM under a `rag` policy whose prompt, as vLLM counts it,
  is the question followed by the passages Parley found.

Random weights: the checks are on shapes, equality and counts, never on words.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any, Iterator

import anthropic
import httpx
import pytest

from parley.cli import main
from parley.io.routes import Route, Timeouts, Worker
from parley.settings import Settings
from tests.anthropic_stream import accumulate, assert_well_formed
from tests.integration.helpers import parse_sse
from tests.stack import RunningParley, parley_stack, tables_named

from .conftest import MODEL, PATIENT, PING_SECONDS, ROOT, vllm_workers
from .prompts import FORCED, PARIS, WEATHER
from .servers import SERVED_MODEL, LlamaCppEmbeddingServer, LlamaCppServer, VllmServer
from .tiny_model import _config

LLAMA_PYTHON = os.environ.get("PARLEY_LLAMA_PYTHON")
RAG_FILES = Path(__file__).resolve().parents[1] / "vectors" / "rag"
TINY_HIDDEN_SIZE = _config()["hidden_size"]


class Account:
    """An account of its own (entries and knowledge bases are per account), under `policy`."""

    def __init__(self, parley: RunningParley, policy: dict[str, Any] | None = None) -> None:
        self.name = f"real-{secrets.token_hex(4)}"
        if policy is not None:
            parley.services.policies.put(self.name, policy)
        key, _ = parley.services.keys.create(account=self.name, name="real")
        self.http = httpx.Client(
            base_url=parley.url, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}, timeout=300
        )

    def post(self, body: dict[str, Any], path: str = "/v1/messages") -> httpx.Response:
        answer = self.http.post(path, json={"model": MODEL, **body})
        assert answer.status_code == 200, answer.text
        return answer


def events_of(answer: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    assert answer.headers["content-type"].startswith("text/event-stream")
    return [(item.event or "", item.json()) for item in parse_sse(answer.content)]


def without_id(message: dict[str, Any]) -> dict[str, Any]:
    """The message as the SDK reads it, all but its id (a hit is a new message)."""
    return anthropic.types.Message.model_validate(message).model_dump(exclude={"id"})


def generations(vllm: VllmServer) -> dict[str, float]:
    """vLLM's own counts of what it generated: requests finished (whatever their reason) and the
    prompt and output tokens they took. vLLM records them before it hands the request its last
    output, so they include every answer a client has received."""
    wanted = ("vllm:request_success_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total")
    counts = dict.fromkeys(wanted, 0.0)
    running = 0.0
    for line in httpx.get(vllm.root_url + "/metrics", timeout=30).text.splitlines():
        name, value = line.split("{", 1)[0].split(" ", 1)[0], line.rsplit(" ", 1)[-1]
        if name in counts:
            counts[name] += float(value)
        elif name == "vllm:num_requests_running":
            running += float(value)
    assert running == 0, "vLLM is still generating"
    return counts


def generated(before: dict[str, float], after: dict[str, float]) -> tuple[int, ...]:
    """(requests, prompt tokens, output tokens) vLLM generated between two readings."""
    return tuple(int(after[name] - before[name]) for name in before)


# -- the response cache ------------------------------------------------------------------------

DETERMINISTIC = {"cache": {"mode": "deterministic"}}
TOOL_REQUESTS = {
    "forced": {"tools": [WEATHER], "tool_choice": FORCED},
    "auto": {"tools": [WEATHER], "tool_choice": {"type": "auto"}},
}
"""Greedy, the tiny model fills a forced call with the grammar's whitespace until max_tokens (a
cut tool_use); under auto it writes words. Both are complete answers, kept."""


def greedy(tools: str) -> dict[str, Any]:
    return {"max_tokens": 32, "temperature": 0, "messages": PARIS, **TOOL_REQUESTS[tools]}


@pytest.mark.parametrize("tools", list(TOOL_REQUESTS))
def test_a_buffered_miss_is_served_streamed_without_a_generation(parley, vllm, tools):
    user = Account(parley, DETERMINISTIC)
    start = generations(vllm)
    miss = user.post(greedy(tools))
    assert miss.headers["parley-cache"] == "miss"
    buffered = miss.json()
    assert buffered["stop_reason"] in ("max_tokens", "tool_use", "end_turn")
    if tools == "forced":
        assert [block["type"] for block in buffered["content"]] == ["tool_use"]
    kept = generations(vllm)
    usage = buffered["usage"]
    assert generated(start, kept) == (1, usage["input_tokens"], usage["output_tokens"]), "the miss is vLLM's answer"

    hit = user.post({**greedy(tools), "stream": True})
    assert hit.headers["parley-cache"] == "hit" and int(hit.headers["age"]) >= 0
    events = events_of(hit)
    result = assert_well_formed(events)
    assert (result.stop_reason, result.usage["output_tokens"]) == (buffered["stop_reason"], usage["output_tokens"])
    replayed = accumulate(events)
    assert replayed["id"].startswith("msg_") and replayed["id"] != buffered["id"]
    assert without_id(replayed) == without_id(buffered)
    assert generated(kept, generations(vllm)) == (0, 0, 0), "the hit made vLLM generate"


@pytest.mark.parametrize("tools", list(TOOL_REQUESTS))
def test_a_streamed_miss_is_kept_as_sent_and_served_buffered(parley, vllm, tools):
    user = Account(parley, DETERMINISTIC)
    start = generations(vllm)
    miss = user.post({**greedy(tools), "stream": True})
    assert miss.headers["parley-cache"] == "miss"
    events = events_of(miss)
    result = assert_well_formed(events)
    streamed = accumulate(events)
    kept = generations(vllm)
    assert generated(start, kept) == (1, result.usage["input_tokens"], result.usage["output_tokens"])

    hit = user.post(greedy(tools))
    assert hit.headers["parley-cache"] == "hit"
    served = hit.json()
    assert served["id"] != streamed["id"]
    assert without_id(served) == without_id(streamed)
    assert generated(kept, generations(vllm)) == (0, 0, 0), "the hit made vLLM generate"


# -- knowledge bases on llama.cpp's embeddings -------------------------------------------------

EMBEDDER = "real-llama-embedder"
"""Parley's route to llama.cpp's /v1/embeddings (the GGUF pools by mean)."""
UNPOOLED_EMBEDDER = "real-llama-embedder-unpooled"
"""The same server with a GGUF that names no pooling."""
KNOWLEDGE_BASE = "handbook"
QUESTION = "What is the name of the office parrot?"
CREATED = re.compile(r"created knowledge base (\S+) of account (\S+) \((\S+), (\d+) dimensions\)")
FOUND = re.compile(r"(-?\d\.\d{3})  (\S+) #(\d+)")


def llama_embedder(folder: Path, pooling: str | None) -> LlamaCppEmbeddingServer:
    """llama.cpp serving embeddings of the tiny GGUF (written by the server's Python), pooled as
    `pooling` says (None: the GGUF names no pooling)."""
    if not LLAMA_PYTHON:
        pytest.skip("PARLEY_LLAMA_PYTHON names no llama-cpp-python environment")
    model = folder / "tiny-qwen.gguf"
    command = [LLAMA_PYTHON, "-m", "tests.real.tiny_gguf", str(model), *(["--pooling", pooling] if pooling else [])]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return LlamaCppEmbeddingServer(Path(LLAMA_PYTHON), model, folder / "llama-cpp.log")


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppEmbeddingServer]:
    with llama_embedder(tmp_path_factory.mktemp("llama-embeddings"), "mean") as server:
        yield server


@pytest.fixture(scope="module")
def unpooled_embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppEmbeddingServer]:
    with llama_embedder(tmp_path_factory.mktemp("llama-embeddings-unpooled"), None) as server:
        yield server


def embedding_route(model: str, server: LlamaCppServer) -> Route:
    timeouts = Timeouts(connect=5.0, first_byte=120.0, idle=60.0, buffered=120.0)
    return Route(model=model, workers=(Worker(base_url=server.base_url, model=SERVED_MODEL),), timeouts=timeouts)


@pytest.fixture(scope="module")
def parley_rag(
    dynamodb: Any, vllm: VllmServer, embedder: LlamaCppEmbeddingServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningParley]:
    """A stack of its own, its knowledge bases in a temporary folder, with the CLI's environment
    pointed at it (`parley kb` works on the same folder and routes)."""
    settings = Settings(
        **tables_named("real-rag"),
        knowledge_bases_uri=str(tmp_path_factory.mktemp("knowledge")),
        ping_seconds=PING_SECONDS,
    )
    routes = [
        Route(model=MODEL, workers=(vllm_workers(vllm)[0],), timeouts=PATIENT),
        embedding_route(EMBEDDER, embedder),
    ]
    with parley_stack(dynamodb, settings, routes) as running, pytest.MonkeyPatch.context() as environment:
        environment.setenv("PARLEY_KNOWLEDGE_BASES_URI", settings.knowledge_bases_uri)
        environment.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.meta.endpoint_url)
        environment.setenv("PARLEY_ROUTES_TABLE", settings.routes_table)
        yield running


def kb(*args: str) -> tuple[int, str, str]:
    """`parley kb ARGS`: its exit code, what it printed and what it complained of."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["kb", *args])
    return code, out.getvalue(), err.getvalue()


class Team(Account):
    """An account with a knowledge base built by `parley kb` on llama.cpp from tests/vectors/rag."""

    def __init__(self, parley: RunningParley) -> None:
        super().__init__(parley)
        self.created = kb("create", KNOWLEDGE_BASE, "--account", self.name, "--embedding-model", EMBEDDER)
        files = [str(RAG_FILES / name) for name in ("handbook.md", "shipping.txt", "report.pdf")]
        self.added = kb("add", KNOWLEDGE_BASE, "--account", self.name, *files)


@pytest.fixture(scope="module")
def team(parley_rag: RunningParley) -> Iterator[Team]:
    made = Team(parley_rag)
    yield made
    made.http.close()


def llama_embeddings(server: LlamaCppServer, texts: list[str]) -> list[Any]:
    """llama.cpp's own answer to /v1/embeddings: the `embedding` of each text."""
    answer = httpx.post(f"{server.base_url}/embeddings", json={"model": SERVED_MODEL, "input": texts}, timeout=60)
    answer.raise_for_status()
    return [item["embedding"] for item in sorted(answer.json()["data"], key=lambda item: item["index"])]


def vllm_count(vllm: VllmServer, messages: list[dict[str, Any]]) -> int:
    """vLLM's own count of a Chat Completions prompt (its POST /tokenize, with the chat template)."""
    body = {"model": SERVED_MODEL, "messages": messages, "add_generation_prompt": True}
    answer = httpx.post(vllm.root_url + "/tokenize", json=body, timeout=60)
    answer.raise_for_status()
    return answer.json()["count"]


def test_a_knowledge_base_on_llama_cpp_records_the_models_dimensions(team, parley_rag, embedder):
    code, out, err = team.created
    assert code == 0, err
    [vector] = llama_embeddings(embedder, ["how many dimensions"])
    assert len(vector) == TINY_HIDDEN_SIZE and all(isinstance(value, float) for value in vector)
    assert CREATED.fullmatch(out.strip()).groups() == (KNOWLEDGE_BASE, team.name, f"route:{EMBEDDER}", str(len(vector)))
    record = parley_rag.services.knowledge_bases.get(team.name, KNOWLEDGE_BASE)
    assert (record.embedder, record.dimensions) == (f"route:{EMBEDDER}", TINY_HIDDEN_SIZE)

    code, out, err = team.added
    assert code == 0, err
    chunks = dict(line.split(": ") for line in out.splitlines())
    assert set(chunks) == {"handbook.md", "shipping.txt", "report.pdf"}
    assert all(re.fullmatch(r"[1-9]\d* chunks", count) for count in chunks.values()), chunks
    sources = parley_rag.services.knowledge_bases.sources(team.name, KNOWLEDGE_BASE)
    assert {source: f"{count} chunks" for source, count in sources} == chunks


def test_kb_search_finds_the_chunks_llama_cpps_embedding_of_the_question_is_nearest(team, parley_rag, embedder):
    code, out, err = kb("search", KNOWLEDGE_BASE, "--account", team.name, QUESTION, "--top-k", "3")
    assert code == 0, err
    found = [FOUND.match(line).groups() for line in out.splitlines() if not line.startswith("    ")]
    scores = [float(score) for score, _, _ in found]
    assert len(found) == 3 and scores == sorted(scores, reverse=True) and all(-1 <= score <= 1 for score in scores)
    [vector] = llama_embeddings(embedder, [QUESTION])
    nearest = parley_rag.services.knowledge_bases.search(team.name, KNOWLEDGE_BASE, vector, 3)
    assert [(source, int(position)) for _, source, position in found] == [
        (chunk.source, chunk.position) for chunk in nearest
    ]


def passage(chunk: Any) -> str:
    """A found chunk as Parley delimits it for an OpenAI worker (docs/rag.md)."""
    return (
        f'<search_result source="{chunk.source}" title="{chunk.title or chunk.source}">\n{chunk.text}\n</search_result>'
    )


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_a_request_under_a_rag_policy_reaches_vllm_with_the_passages(team, parley_rag, vllm, embedder, stream):
    body = {"max_tokens": 1, "temperature": 0, "messages": [{"role": "user", "content": QUESTION}], "stream": stream}

    def input_tokens(answer: httpx.Response) -> int:
        usage = assert_well_formed(events_of(answer)).usage if stream else answer.json()["usage"]
        return usage["input_tokens"]

    plain = Account(parley_rag).post(body)
    assert "parley-rag" not in plain.headers
    assert input_tokens(plain) == vllm_count(vllm, body["messages"])

    parley_rag.services.policies.put(team.name, {"rag": {"knowledge_base": KNOWLEDGE_BASE, "top_k": 2}})
    answer = team.post(body)
    assert answer.headers["parley-rag"] == "chunks=2"
    [vector] = llama_embeddings(embedder, [QUESTION])
    found = parley_rag.services.knowledge_bases.search(team.name, KNOWLEDGE_BASE, vector, 2)
    prompt = "\n".join([QUESTION, *map(passage, found)])
    sent = input_tokens(answer)
    assert sent == vllm_count(vllm, [{"role": "user", "content": prompt}]) > input_tokens(plain)
    counted = team.post({"messages": body["messages"]}, path="/v1/messages/count_tokens")
    assert counted.json()["input_tokens"] == sent, "count_tokens counts the passages too"


def test_llama_cpp_without_a_pooling_embeds_each_token_and_parley_refuses_it(parley_rag, unpooled_embedder):
    [per_token] = llama_embeddings(unpooled_embedder, ["how many dimensions"])
    assert len(per_token) > 1 and all(len(vector) == TINY_HIDDEN_SIZE for vector in per_token)
    parley_rag.services.routes.put(embedding_route(UNPOOLED_EMBEDDER, unpooled_embedder))
    account = Account(parley_rag).name
    code, out, err = kb("create", KNOWLEDGE_BASE, "--account", account, "--embedding-model", UNPOOLED_EMBEDDER)
    assert (code, out) == (1, "")
    assert err == (
        "parley kb create: the embedding worker failed: The worker's answer to /embeddings has one vector per "
        "token (index 0), not one per input: the worker pools nothing (serve an embedding model with a pooling "
        "type, such as mean).\n"
    )
    assert parley_rag.services.knowledge_bases.get(account, KNOWLEDGE_BASE) is None
