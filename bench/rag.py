"""`python -m bench.rag`: what knowledge bases cost, measured on LanceDB embedded in a folder.

- the import of lancedb (with pyarrow and numpy) in a fresh process, and of
  parley.io.knowledge_bases over what the app imports anyway (it must load no engine);
- top-5 queries, 256-dimension normalised random float32 vectors, at 10k and 100k rows: brute
  force, IVF_PQ and IVF_HNSW_SQ (build time, latency, recall@5 against brute force), and a fresh
  process's open of the table and first query (the files are in the page cache: a warm disk);
- retrieval at 10k chunks through parley.io.knowledge_bases: ingest, a warm search, and a fresh
  process's first search (store made, table opened, searched), the engine's import apart;
- S3 Vectors' share of a cold start: making its boto3 client (query latency needs AWS);
- with --sizes: what each engine and its dependencies take, installed for the Lambda target
  (arm64, python3.13, as layers/parley/Makefile), and Parley's layer with and without LanceDB.

Prints a table and writes bench/rag.json.

    python -m bench.rag [--rows 10000,100000] [--queries 50] [--no-index] [--sizes]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).parent
ROOT = HERE.parent
DIMENSIONS = 256
TOP_K = 5
FIELDS = ["source", "position", "start", "end", "title", "text"]
LAMBDA_TARGET = [
    "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64",
    "--python-version", "3.13", "--implementation", "cp", "--abi", "cp313", "--only-binary=:all:",
]  # fmt: skip
ENGINES = ["lancedb==0.40.0", "sqlite-vec", "usearch", "faiss-cpu"]


def _median_ms(function: Callable[[Any], Any], probes: Any) -> float:
    """The median time of `function` on each of the probes, in ms."""
    runs = []
    for probe in probes:
        started = time.perf_counter()
        function(probe)
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def _fresh(code: str, runs: int = 5) -> dict[str, float]:
    """Run `code` (which prints a JSON object of figures) in `runs` fresh processes, after one that
    writes the bytecode (as the layer ships it; kept apart from the sources): the medians."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    environment["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "parley-bench-pycache")
    command = [sys.executable, "-c", code]
    outputs = [subprocess.check_output(command, text=True, env=environment) for _ in range(runs + 1)][1:]
    results = [json.loads(output) for output in outputs]
    return {key: statistics.median(result[key] for result in results) for key in results[0]}


def _normalised(vectors: Any) -> Any:
    import numpy as np

    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _vectors(rows: int, seed: int) -> Any:
    """Random unit vectors in clusters of 100 (a document's chunks: neighbours at cosine ~0.5),
    not uniform on the sphere, where every vector is about as far as any other and no index
    can find a nearest one."""
    import numpy as np

    random = np.random.default_rng(seed)
    centres = random.standard_normal((-(-rows // 100), DIMENSIONS))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return _normalised(np.repeat(centres, 100, axis=0)[:rows] + random.standard_normal((rows, DIMENSIONS)) / 16)


def _probes(data: Any, count: int, seed: int) -> Any:
    """Questions near stored chunks: a random chunk's vector moved by a third of its length."""
    import numpy as np

    random = np.random.default_rng(seed)
    near = data[random.integers(0, len(data), count)]
    return _normalised(near + random.standard_normal(near.shape) / (3 * np.sqrt(DIMENSIONS)))


def _chunk_table(vectors: Any) -> Any:
    import pyarrow as pa

    rows = len(vectors)
    return pa.table(
        {
            "key": [f"s{row // 100}:{row % 100}" for row in range(rows)],
            "source": [f"doc-{row // 100}.md" for row in range(rows)],
            "position": list(range(rows)),
            "start": [0] * rows,
            "end": [500] * rows,
            "title": ["A heading"] * rows,
            "text": ["lorem ipsum dolor sit amet " * 18] * rows,  # ~500 characters, a chunk's size
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIMENSIONS),
        }
    )


def import_figures() -> dict[str, float]:
    lancedb = "import time; t = time.perf_counter(); import lancedb; "
    lancedb += "print('{\"ms\": %f}' % ((time.perf_counter() - t) * 1000))"
    module = "import json, re, hashlib, dataclasses, datetime, typing, functools, time; t = time.perf_counter(); "
    module += "import parley.io.knowledge_bases; print('{\"ms\": %f}' % ((time.perf_counter() - t) * 1000))"
    client = "import boto3, time; t = time.perf_counter(); boto3.client('s3vectors', region_name='us-east-1'); "
    client += "print('{\"ms\": %f}' % ((time.perf_counter() - t) * 1000))"
    return {
        "import_lancedb_ms": _fresh(lancedb)["ms"],
        "import_knowledge_bases_module_ms": _fresh(module)["ms"],
        "s3vectors_client_ms": _fresh(client)["ms"],
    }


def engine_figures(folder: Path, rows: int, queries: int, index: bool) -> dict[str, float]:
    import lancedb
    from lancedb.index import IvfHnswSq, IvfPq

    data = _vectors(rows, seed=1)
    probes = _probes(data, queries, seed=2)
    db = lancedb.connect(folder)
    started = time.perf_counter()
    table = db.create_table(f"bench_{rows}", _chunk_table(data))
    figures = {"write_s": time.perf_counter() - started}

    def top(probe: Any, brute: bool = False, refine: int | None = None) -> list[str]:
        query = table.search(probe, vector_column_name="vector").distance_type("cosine")
        query = query.bypass_vector_index() if brute else query
        query = query.refine_factor(refine) if refine else query
        return [row["key"] for row in query.select(["key", *FIELDS, "_distance"]).limit(TOP_K).to_list()]

    truth = [top(probe, brute=True) for probe in probes]
    figures["brute_force_ms"] = _median_ms(lambda probe: top(probe, brute=True), probes)

    cold = "import json, sys, time; t = time.perf_counter(); import lancedb; i = time.perf_counter(); "
    cold += f"db = lancedb.connect({str(folder)!r}); table = db.open_table('bench_{rows}'); o = time.perf_counter(); "
    cold += f"table.search([0.0625] * {DIMENSIONS}, vector_column_name='vector').distance_type('cosine')"
    cold += f".select({FIELDS + ['_distance']!r}).limit({TOP_K}).to_list(); q = time.perf_counter(); "
    cold += "print(json.dumps({'open_ms': (o - i) * 1000, 'first_query_ms': (q - o) * 1000}))"
    fresh = _fresh(cold, runs=3)
    figures["cold_open_ms"], figures["cold_first_query_brute_ms"] = fresh["open_ms"], fresh["first_query_ms"]

    if index:
        for label, config in (
            ("ivf_pq", IvfPq(distance_type="cosine")),
            ("ivf_hnsw_sq", IvfHnswSq(distance_type="cosine")),
        ):
            started = time.perf_counter()
            table.create_index("vector", config=config, replace=True)
            figures[f"{label}_build_s"] = time.perf_counter() - started
            found = [top(probe) for probe in probes]
            figures[f"{label}_ms"] = _median_ms(top, probes)
            figures[f"{label}_recall_at_5"] = statistics.mean(
                len(set(hit) & set(want)) / TOP_K for hit, want in zip(found, truth, strict=True)
            )
            found = [top(probe, refine=10) for probe in probes]
            figures[f"{label}_refine10_ms"] = _median_ms(lambda probe: top(probe, refine=10), probes)
            figures[f"{label}_refine10_recall_at_5"] = statistics.mean(
                len(set(hit) & set(want)) / TOP_K for hit, want in zip(found, truth, strict=True)
            )
            fresh = _fresh(cold, runs=3)
            figures[f"{label}_cold_first_query_ms"] = fresh["first_query_ms"]
    return figures


def store_figures(folder: Path, queries: int) -> dict[str, float]:
    """10k chunks through parley.io.knowledge_bases: 100 sources of 100 chunks."""
    from parley.io.knowledge_bases import KnowledgeBaseStore

    class Chunk:
        def __init__(self, source: str, position: int) -> None:
            self.source, self.position, self.start, self.end = source, position, position * 500, position * 500 + 500
            self.title, self.text = "A heading", "lorem ipsum dolor sit amet " * 18

    vectors = _vectors(10_000, seed=3)
    probes = _probes(vectors, queries, seed=4)
    store = KnowledgeBaseStore(str(folder))
    store.create("bench", "docs", "builtin:bench-256", DIMENSIONS)
    started = time.perf_counter()
    for number in range(100):
        source = f"doc-{number}.md"
        chunks = [Chunk(source, position) for position in range(100)]
        store.replace_source("bench", "docs", source, chunks, vectors[number * 100 : number * 100 + 100])
    figures = {"store_ingest_10k_s": time.perf_counter() - started}
    figures["store_search_10k_ms"] = _median_ms(lambda probe: store.search("bench", "docs", probe, TOP_K), probes)

    cold = "import json, time; import lancedb; t = time.perf_counter(); "
    cold += "from parley.io.knowledge_bases import KnowledgeBaseStore; "
    cold += f"store = KnowledgeBaseStore({str(folder)!r}); store.get('bench', 'docs'); "
    cold += f"store.search('bench', 'docs', [0.0625] * {DIMENSIONS}, {TOP_K}); "
    cold += "print(json.dumps({'ms': (time.perf_counter() - t) * 1000}))"
    figures["store_cold_first_search_10k_ms"] = _fresh(cold, runs=3)["ms"]
    figures.update(retrieval_figures(store, queries))
    return figures


def retrieval_figures(store: Any, queries: int) -> dict[str, float]:
    """What the retrieve stage does per request at 10k chunks: the question embedded by the
    built-in embedder (in a thread, as the stage does), then searched (the stored vectors are not
    WordLlama's, so only the time counts)."""
    import asyncio

    from parley.io.embeddings import builtin_embedder

    embedder = builtin_embedder()
    loop = asyncio.new_event_loop()
    questions = [f"How many days of paid leave do staff get in year {number}?" for number in range(queries)]
    loop.run_until_complete(embedder.embed(questions[:1]))  # loaded before timing

    def embedded(question: str) -> Any:
        return loop.run_until_complete(embedder.embed([question]))[0]

    try:
        return {
            "builtin_embed_question_ms": _median_ms(embedded, questions),
            "retrieval_10k_builtin_embedder_ms": _median_ms(
                lambda question: store.search("bench", "docs", embedded(question), TOP_K), questions
            ),
        }
    finally:
        loop.close()


def _installed_mb(requirements: list[str]) -> float:
    with tempfile.TemporaryDirectory() as target:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", target]
        subprocess.run([*command, *LAMBDA_TARGET, *requirements], check=True, capture_output=True)
        shutil.rmtree(Path(target) / "bin", ignore_errors=True)
        return sum(path.stat().st_size for path in Path(target).rglob("*") if path.is_file()) / 2**20


def size_figures() -> dict[str, float]:
    """Unzipped sizes, no bytecode (the layer's compileall adds ~25%: 91 -> 114 MB for Parley's)."""
    figures = {f"size_{engine.split('==')[0]}_mb": _installed_mb([engine]) for engine in ENGINES}
    with tempfile.TemporaryDirectory() as wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, str(ROOT)],
            check=True,
            capture_output=True,
        )
        parley = f"{next(Path(wheels).glob('parley-*.whl'))}[lambda]"
        figures["size_parley_layer_mb"] = _installed_mb([parley])
        figures["size_parley_layer_with_lancedb_mb"] = _installed_mb([parley, ENGINES[0]])
    return figures


def measure(rows: list[int], queries: int, index: bool, sizes: bool) -> dict[str, Any]:
    results: dict[str, Any] = import_figures()
    with tempfile.TemporaryDirectory() as folder:
        for count in rows:
            for key, value in engine_figures(Path(folder) / "engine", count, queries, index).items():
                results[f"{count // 1000}k_{key}"] = value
        results.update(store_figures(Path(folder) / "store", queries))
    if sizes:
        results.update(size_figures())
    return results


def _row(key: str, value: float) -> tuple[str, str]:
    unit = key.rsplit("_", 1)[-1]
    if unit in ("ms", "s", "mb"):
        return key, f"{value:.1f} {unit.upper() if unit == 'mb' else unit}"
    return key, f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000", help="table sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--no-index", action="store_true", help="skip the ANN index builds")
    parser.add_argument("--sizes", action="store_true", help="install each engine for the Lambda target (network)")
    args = parser.parse_args()
    rows = [int(count) for count in args.rows.split(",")]
    results = measure(rows, args.queries, not args.no_index, args.sizes)
    lines = [_row(key, value) for key, value in results.items()]
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name:<{width}}  {value:>12}")
    (HERE / "rag.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
