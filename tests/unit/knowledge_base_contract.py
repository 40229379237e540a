"""What every knowledge base store does, whatever its engine: the contract of `KnowledgeBaseStore`
(LanceDB) and `S3VectorsKnowledgeBaseStore` (Amazon S3 Vectors), written once.

An engine's test file runs it by subclassing `KnowledgeBaseContract` as `TestKnowledgeBaseContract`
(pytest collects only classes named `Test…`), with three fixtures of its own:

    store            an empty store
    docs             acme's knowledge base "docs" in it (`EMBEDDER`, `DIMENSIONS`)
    another_store    a second store on the same place as `store` (folder, bucket)

What only one engine does (LanceDB's compaction and commit store, S3 Vectors' request limits and
partial requests) stays in that engine's file: test_knowledge_bases.py, test_s3_vectors.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from parley.core.chunking import Chunk
from parley.io.knowledge_bases import (
    FoundChunk,
    KnowledgeBase,
    KnowledgeBaseError,
    KnowledgeBaseExistsError,
    KnowledgeBaseNotFoundError,
)

if TYPE_CHECKING:
    from parley.io.knowledge_bases import KnowledgeBaseStore
    from parley.io.s3_vectors import S3VectorsKnowledgeBaseStore

    Store = KnowledgeBaseStore | S3VectorsKnowledgeBaseStore

__all__ = ["DIMENSIONS", "EMBEDDER", "KnowledgeBaseContract", "axis", "chunks_of"]

DIMENSIONS = 4
EMBEDDER = "builtin:test-4"


def axis(index: int, length: int = DIMENSIONS) -> list[float]:
    return [1.0 if i == index else 0.0 for i in range(length)]


def chunks_of(source: str, texts: list[str]) -> list[Chunk]:
    chunks, offset = [], 0
    for position, text in enumerate(texts):
        chunks.append(Chunk(source, position, offset, offset + len(text), f"{source} part {position}", text))
        offset += len(text)
    return chunks


class KnowledgeBaseContract:
    def test_a_knowledge_base_is_created_got_listed_and_removed(self, store: Store) -> None:
        assert store.list("acme") == []
        docs = store.create("acme", "docs", EMBEDDER, DIMENSIONS)
        faq = store.create("acme", "faq", "route:embedder-7", 8)

        assert (docs.account, docs.name, docs.embedder, docs.dimensions) == ("acme", "docs", EMBEDDER, DIMENSIONS)
        assert docs.created_at.endswith("+00:00")
        assert store.get("acme", "docs") == docs
        assert store.list("acme") == [docs, faq]

        assert store.remove("acme", "docs") is True
        assert store.remove("acme", "docs") is False
        assert store.get("acme", "docs") is None
        assert store.list("acme") == [faq]

    def test_a_name_is_created_once(self, store: Store, docs: KnowledgeBase) -> None:
        store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["kept"]), [axis(0)])
        with pytest.raises(KnowledgeBaseExistsError):
            store.create("acme", "docs", EMBEDDER, 16)  # moto would have made the S3 Vectors index again, empty
        assert store.get("acme", "docs") == docs
        assert store.sources("acme", "docs") == [("a.md", 1)]

    def test_search_finds_the_nearest_chunks_with_what_they_came_with(self, store: Store, docs: KnowledgeBase) -> None:
        chunks = chunks_of("guide.md", ["alpha", "beta", "gamma"])
        assert store.replace_source("acme", "docs", "guide.md", chunks, [axis(0), axis(1), axis(2)]) == 3

        found = store.search("acme", "docs", [0.1, 0.9, 0.0, 0.0], top_k=2)

        assert [chunk.text for chunk in found] == ["beta", "alpha"]
        assert found[0] == FoundChunk("guide.md", 1, 5, 9, "guide.md part 1", "beta", pytest.approx(0.9939, abs=1e-4))
        assert found[0].score > found[1].score

    def test_replacing_a_source_replaces_its_chunks_and_leaves_the_others(
        self, store: Store, docs: KnowledgeBase
    ) -> None:
        store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["a0", "a1", "a2"]), [axis(0)] * 3)
        store.replace_source("acme", "docs", "b.md", chunks_of("b.md", ["b0"]), [axis(1)])

        assert store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["new a0", "new a1"]), [axis(2)] * 2) == 2

        assert store.sources("acme", "docs") == [("a.md", 2), ("b.md", 1)]
        found = store.search("acme", "docs", axis(2), top_k=10)
        assert sorted(chunk.text for chunk in found) == ["b0", "new a0", "new a1"]

        assert store.replace_source("acme", "docs", "a.md", [], []) == 0
        assert store.sources("acme", "docs") == [("b.md", 1)]

    def test_removing_a_source_removes_only_its_chunks(self, store: Store, docs: KnowledgeBase) -> None:
        store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["a0", "a1"]), [axis(0)] * 2)
        store.replace_source("acme", "docs", "b.md", chunks_of("b.md", ["b0"]), [axis(1)])

        assert store.remove_source("acme", "docs", "a.md") == 2
        assert store.remove_source("acme", "docs", "a.md") == 0
        assert store.sources("acme", "docs") == [("b.md", 1)]
        assert [chunk.text for chunk in store.search("acme", "docs", axis(0), top_k=5)] == ["b0"]

    @pytest.mark.parametrize(
        "tricky",
        ["it's' OR source != 'x.md", "back\\", "back\\' OR source != '", '{"$exists": true}', "%_*", "é 💥"],
    )
    def test_a_source_name_is_data_not_a_filter(self, store: Store, docs: KnowledgeBase, tricky: str) -> None:
        store.replace_source("acme", "docs", "x.md", chunks_of("x.md", ["x0"]), [axis(0)])
        store.replace_source("acme", "docs", tricky, chunks_of(tricky, ["t0"]), [axis(1)])
        assert store.sources("acme", "docs") == sorted([("x.md", 1), (tricky, 1)])
        assert store.search("acme", "docs", axis(1), top_k=1)[0].source == tricky

        assert store.remove_source("acme", "docs", tricky) == 1
        assert store.sources("acme", "docs") == [("x.md", 1)]

    def test_an_empty_knowledge_base_finds_nothing(self, store: Store, docs: KnowledgeBase) -> None:
        assert store.search("acme", "docs", axis(0), top_k=5) == []  # S3 Vectors' record vector is axis(0)
        assert store.sources("acme", "docs") == []

    def test_one_account_never_reaches_another_accounts_knowledge_base(self, store: Store, docs: KnowledgeBase) -> None:
        store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["secret"]), [axis(0)])

        assert store.get("other", "docs") is None
        assert store.list("other") == []
        assert store.remove("other", "docs") is False
        for reach in (
            lambda: store.search("other", "docs", axis(0), top_k=1),
            lambda: store.sources("other", "docs"),
            lambda: store.remove_source("other", "docs", "a.md"),
            lambda: store.replace_source("other", "docs", "a.md", chunks_of("a.md", ["x"]), [axis(0)]),
        ):
            with pytest.raises(KnowledgeBaseNotFoundError):
                reach()

        other = store.create("other", "docs", EMBEDDER, DIMENSIONS)
        assert store.search("other", "docs", axis(0), top_k=1) == []
        assert store.list("acme") == [docs] and store.list("other") == [other]  # moto lists both: the store filters
        assert [chunk.text for chunk in store.search("acme", "docs", axis(0), top_k=1)] == ["secret"]

    @pytest.mark.parametrize("account", ["Acme Corp/eu", "team:42", "équipe", "../acme", "a" * 256])
    def test_any_account_parley_has_keeps_its_own_knowledge_bases(self, store: Store, account: str) -> None:
        made = store.create(account, "docs", EMBEDDER, DIMENSIONS)
        store.replace_source(account, "docs", "a.md", chunks_of("a.md", ["mine"]), [axis(0)])
        assert store.list(account) == [made] and store.get("acme", "docs") is None
        assert [chunk.text for chunk in store.search(account, "docs", axis(0), top_k=1)] == ["mine"]

    @pytest.mark.parametrize(
        ("account", "name"),
        [
            ("acme", ""),
            ("acme", "../docs"),
            ("acme", "a/b"),
            ("acme", ".hidden"),
            ("acme", "with space"),
            ("acme", "quote'"),
            ("acme", "é"),
            ("acme", "x" * 65),
            ("", "docs"),
            ("a\nb", "docs"),
            ("a" * 257, "docs"),
        ],
    )
    def test_a_bad_account_or_name_is_refused(self, store: Store, account: str, name: str) -> None:
        with pytest.raises(KnowledgeBaseError):
            store.create(account, name, EMBEDDER, DIMENSIONS)
        with pytest.raises(KnowledgeBaseError):
            store.get(account, name)
        with pytest.raises(KnowledgeBaseError):
            store.search(account, name, axis(0), top_k=1)

    @pytest.mark.parametrize("dimensions", [0, -1, 4097, True, 4.0, "4"])
    def test_bad_dimensions_are_refused(self, store: Store, dimensions: Any) -> None:
        with pytest.raises(KnowledgeBaseError):
            store.create("acme", "docs", EMBEDDER, dimensions)
        assert store.get("acme", "docs") is None

    @pytest.mark.parametrize(
        "vector",
        [
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [float("nan"), 0.0, 0.0, 1.0],
            [float("inf"), 0.0, 0.0, 1.0],
            [1e39, 0.0, 0.0, 1.0],
            [0.0, 0.0, 0.0, 0.0],
            [1e-50, 0.0, 0.0, 0.0],
            ["a", "b", "c", "d"],
            b"\x00\x00\x80?\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        ],
    )
    def test_a_bad_vector_is_refused_and_changes_nothing(self, store: Store, docs: KnowledgeBase, vector: Any) -> None:
        store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["a0"]), [axis(0)])
        new = chunks_of("a.md", ["new a0", "new a1"])
        with pytest.raises(KnowledgeBaseError):
            store.replace_source("acme", "docs", "a.md", new, [axis(1), vector])
        with pytest.raises(KnowledgeBaseError):
            store.search("acme", "docs", vector, top_k=1)
        assert store.sources("acme", "docs") == [("a.md", 1)]
        assert [chunk.text for chunk in store.search("acme", "docs", axis(0), top_k=5)] == ["a0"]

    def test_bad_chunks_and_counts_are_refused(self, store: Store, docs: KnowledgeBase) -> None:
        def replace(chunks: list[Chunk], source: str = "a.md") -> int:
            return store.replace_source("acme", "docs", source, chunks, [axis(0)])

        refusals = [
            lambda: replace(chunks_of("a.md", ["a0", "a1"])),
            lambda: replace(chunks_of("b.md", ["b0"])),
            lambda: replace(chunks_of("", ["x"]), source=""),
            lambda: replace(chunks_of("a\nb", ["x"]), source="a\nb"),
            lambda: replace([Chunk("a.md", 0, 0, 1, "t", None)]),  # type: ignore[arg-type]
            lambda: replace([Chunk("a.md", -1, 0, 1, "t", "x")]),
            lambda: replace([Chunk("a.md", 0, 5, 1, "t", "x")]),
            lambda: replace([Chunk("a.md", True, 0, 1, "t", "x")]),
            lambda: store.search("acme", "docs", axis(0), top_k=0),
            lambda: store.search("acme", "docs", axis(0), top_k=101),
        ]
        for refusal in refusals:
            with pytest.raises(KnowledgeBaseError):
                refusal()
        assert store.sources("acme", "docs") == []

    def test_another_store_on_the_same_place_sees_every_write(self, store: Store, another_store: Store) -> None:
        writer, reader = store, another_store
        writer.create("acme", "docs", EMBEDDER, DIMENSIONS)
        writer.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["first"]), [axis(0)])
        assert [chunk.text for chunk in reader.search("acme", "docs", axis(0), top_k=1)] == ["first"]

        writer.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["second"]), [axis(0)])
        assert [chunk.text for chunk in reader.search("acme", "docs", axis(0), top_k=1)] == ["second"]

        writer.remove("acme", "docs")  # LanceDB: the reader's open table is stale, and opened again
        assert reader.get("acme", "docs") is None
        with pytest.raises(KnowledgeBaseNotFoundError):
            reader.search("acme", "docs", axis(0), top_k=1)

        again = writer.create("acme", "docs", "route:bigger", 8)
        assert reader.get("acme", "docs") == again
        assert reader.search("acme", "docs", axis(0, 8), top_k=1) == []
