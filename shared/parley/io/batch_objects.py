"""A batch's requests and results as S3 objects (the batch bucket; any S3 through boto3).

    requests/<batch id>.jsonl   the requests, one `{"custom_id", "params"}` line each, in order;
                                its chunks (`Chunk`: a byte range and the index of its first
                                request) are what the queue carries, so a message stays small
                                whatever a batch holds
    results/<batch id>.jsonl    the results JSONL, written once the batch's last request has
                                finished (from the batches table, where each is kept exactly once)

The bucket's lifecycle rule (template.yaml) removes both 29 days after they were written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ..core.batches import BatchRequest

__all__ = ["CHUNK_BYTES", "CHUNK_REQUESTS", "BatchObjects", "Chunk", "chunk_requests"]

CHUNK_REQUESTS = 100
"""The most requests in a chunk: one queue message, one batch-function invocation's work."""
CHUNK_BYTES = 8 * 1024 * 1024
"""A chunk ends before its bytes pass this (one request alone may be bigger)."""
_PART_BYTES = 8 * 1024 * 1024  # a multipart upload's part (S3's least is 5 MiB)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Requests `first` .. `first + count - 1` of a batch: bytes `start` to `end` (exclusive)."""

    number: int
    first: int
    count: int
    start: int
    end: int


def chunk_requests(requests: Iterable[BatchRequest]) -> tuple[bytes, list[Chunk]]:
    """The requests object's bytes, and its chunks."""
    lines: list[bytes] = []
    chunks: list[Chunk] = []
    offset = chunk_start = chunk_first = 0
    for index, request in enumerate(requests):
        line = orjson.dumps(
            {"custom_id": request.custom_id, "params": request.params}, option=orjson.OPT_APPEND_NEWLINE
        )
        count = index - chunk_first
        if count and (count == CHUNK_REQUESTS or offset + len(line) - chunk_start > CHUNK_BYTES):
            chunks.append(Chunk(len(chunks), chunk_first, count, chunk_start, offset))
            chunk_start, chunk_first = offset, index
        lines.append(line)
        offset += len(line)
    if offset > chunk_start:
        chunks.append(Chunk(len(chunks), chunk_first, len(lines) - chunk_first, chunk_start, offset))
    return b"".join(lines), chunks


class BatchObjects:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def put_requests(self, batch_id: str, body: bytes) -> None:
        self._s3.put_object(
            Bucket=self._bucket, Key=_requests_key(batch_id), Body=body, ContentType="application/x-jsonl"
        )

    def requests(self, batch_id: str, chunk: Chunk) -> list[BatchRequest]:
        """The chunk's requests, read with one ranged GET."""
        answer = self._s3.get_object(
            Bucket=self._bucket, Key=_requests_key(batch_id), Range=f"bytes={chunk.start}-{chunk.end - 1}"
        )
        lines = answer["Body"].read().splitlines()
        if len(lines) != chunk.count:
            raise ValueError(f"chunk {chunk.number} of {batch_id} holds {len(lines)} requests, not {chunk.count}")
        return [BatchRequest(line["custom_id"], line["params"]) for line in map(orjson.loads, lines)]

    def put_results(self, batch_id: str, lines: Iterable[bytes]) -> None:
        """Write the results object from its lines, in parts of 8 MiB: never all in memory."""
        key = _results_key(batch_id)
        parts = _parts(lines)
        first = next(parts, b"")
        second = next(parts, None)
        if second is None:
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=first, ContentType="application/x-jsonl")
            return
        upload = self._s3.create_multipart_upload(Bucket=self._bucket, Key=key, ContentType="application/x-jsonl")
        done: list[dict[str, Any]] = []
        try:
            for number, part in enumerate([first, second], start=1):
                done.append(self._upload_part(key, upload["UploadId"], number, part))
            for number, part in enumerate(parts, start=3):
                done.append(self._upload_part(key, upload["UploadId"], number, part))
            self._s3.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
            )
        except BaseException:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload["UploadId"])
            raise

    def _upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        answer = self._s3.upload_part(Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def results(self, batch_id: str) -> Iterator[bytes] | None:
        """The results object in pieces as S3 sends them, or None when it is not there (yet)."""
        try:
            answer = self._s3.get_object(Bucket=self._bucket, Key=_results_key(batch_id))
        except self._s3.exceptions.NoSuchKey:
            return None
        return answer["Body"].iter_chunks(256 * 1024)

    def delete(self, batch_id: str) -> None:
        self._s3.delete_objects(
            Bucket=self._bucket,
            Delete={"Objects": [{"Key": _requests_key(batch_id)}, {"Key": _results_key(batch_id)}], "Quiet": True},
        )


def _parts(lines: Iterable[bytes]) -> Iterator[bytes]:
    part: list[bytes] = []
    size = 0
    for line in lines:
        part.append(line)
        size += len(line)
        if size >= _PART_BYTES:
            yield b"".join(part)
            part, size = [], 0
    if part:
        yield b"".join(part)


def _requests_key(batch_id: str) -> str:
    return f"requests/{batch_id}.jsonl"


def _results_key(batch_id: str) -> str:
    return f"results/{batch_id}.jsonl"
