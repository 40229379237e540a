"""Settings from the environment, read once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .core.pdf import PdfLimits

_PDF = PdfLimits()

__all__ = ["Settings"]


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True, slots=True)
class Settings:
    keys_table: str = "parley-keys"
    routes_table: str = "parley-routes"
    usage_table: str = "parley-usage"
    usage_records_table: str = "parley-usage-records"
    limits_table: str = "parley-limits"
    accounts_table: str = "parley-accounts"
    policies_table: str = "parley-policies"
    response_cache_table: str = "parley-response-cache"
    batches_table: str = "parley-batches"
    # Message batches (docs/batches.md): the bucket of their requests and results, the queue of
    # their chunks (unset: no batches), whether this process polls the queue itself (locally;
    # in AWS the queue triggers the batch function), how many of a batch's requests one process
    # runs at once, and how many times a request that failed for a passing reason is tried.
    batch_bucket: str = ""
    batch_queue_url: str = ""
    batch_poll: bool = False
    batch_concurrency: int = 16
    batch_attempts: int = 4
    batch_visibility_seconds: int = 60  # a polled chunk comes back this long after its poller died
    batch_slot_patience_seconds: float = 30.0  # a request waits this long for a slot, then its chunk goes back
    batch_max_receives: int = 10  # a polled chunk's deliveries before it is given up (AWS: the queue's redrive)
    # How long duplicates of a request whose answer is not kept yet wait for it (docs/cache.md).
    cache_lease_seconds: float = 60.0
    # Where knowledge bases live (docs/rag.md): a folder, or s3://bucket/prefix (s3+ddb:// for
    # concurrent writers through a DynamoDB commit store).
    knowledge_bases_uri: str = ".parley/knowledge"
    account_cache_seconds: float = 60.0
    spend_cache_seconds: float = 10.0
    key_cache_seconds: float = 60.0
    route_cache_seconds: float = 30.0
    policy_cache_seconds: float = 60.0
    # The key that makes PII placeholders (a secret reference, as a worker key's: io/secrets.py).
    pii_key_ref: str = "env:PARLEY_PII_KEY"
    max_body_bytes: int = 32 * 1024 * 1024
    ping_seconds: float = 10.0
    worker_attempts: int = 3
    worker_cooldown_seconds: float = 30.0
    worker_max_connections: int = 256
    # Where each request's usage line goes before its last byte (docs/metering.md): "stdout" for
    # the metering function (Lambda), or the folder of a usage journal that a metering loop in
    # this process writes to DynamoDB in batches (everywhere else).
    usage_log: str = ".parley/usage"
    # Reading the text of a request's PDFs (for workers that take no files), for all its PDFs
    # together: seconds, content-stream operators, pages (past any: 400), characters of text
    # (past it: 413); and the threads that read PDFs (more requests wait their turn, up to
    # pdf_max_waiting; past that: 529), so that PDFs never hold the threads store calls need.
    pdf_seconds: float = _PDF.seconds
    pdf_max_operators: int = _PDF.max_operators
    pdf_max_pages: int = _PDF.max_pages
    pdf_max_text_chars: int = _PDF.max_text_chars
    pdf_threads: int = 2
    pdf_max_waiting: int = 16

    @property
    def pdf_limits(self) -> PdfLimits:
        return PdfLimits(self.pdf_seconds, self.pdf_max_operators, self.pdf_max_pages, self.pdf_max_text_chars)

    @property
    def table_names(self) -> dict[str, str]:
        """Each table's role (as in io.tables.TABLES) → its name."""
        return {
            "keys": self.keys_table,
            "routes": self.routes_table,
            "usage": self.usage_table,
            "usage_records": self.usage_records_table,
            "limits": self.limits_table,
            "accounts": self.accounts_table,
            "policies": self.policies_table,
            "response_cache": self.response_cache_table,
            "batches": self.batches_table,
        }

    @classmethod
    def from_environment(cls) -> "Settings":
        defaults = cls()
        return cls(
            keys_table=os.environ.get("PARLEY_KEYS_TABLE", defaults.keys_table),
            routes_table=os.environ.get("PARLEY_ROUTES_TABLE", defaults.routes_table),
            usage_table=os.environ.get("PARLEY_USAGE_TABLE", defaults.usage_table),
            usage_records_table=os.environ.get("PARLEY_USAGE_RECORDS_TABLE", defaults.usage_records_table),
            limits_table=os.environ.get("PARLEY_LIMITS_TABLE", defaults.limits_table),
            accounts_table=os.environ.get("PARLEY_ACCOUNTS_TABLE", defaults.accounts_table),
            policies_table=os.environ.get("PARLEY_POLICIES_TABLE", defaults.policies_table),
            response_cache_table=os.environ.get("PARLEY_RESPONSE_CACHE_TABLE", defaults.response_cache_table),
            batches_table=os.environ.get("PARLEY_BATCHES_TABLE", defaults.batches_table),
            batch_bucket=os.environ.get("PARLEY_BATCH_BUCKET", defaults.batch_bucket),
            batch_queue_url=os.environ.get("PARLEY_BATCH_QUEUE_URL", defaults.batch_queue_url),
            batch_poll=os.environ.get("PARLEY_BATCH_POLL", "") == "1",
            batch_concurrency=_int("PARLEY_BATCH_CONCURRENCY", defaults.batch_concurrency),
            batch_attempts=_int("PARLEY_BATCH_ATTEMPTS", defaults.batch_attempts),
            batch_visibility_seconds=_int("PARLEY_BATCH_VISIBILITY_SECONDS", defaults.batch_visibility_seconds),
            batch_slot_patience_seconds=_float(
                "PARLEY_BATCH_SLOT_PATIENCE_SECONDS", defaults.batch_slot_patience_seconds
            ),
            batch_max_receives=_int("PARLEY_BATCH_MAX_RECEIVES", defaults.batch_max_receives),
            cache_lease_seconds=_float("PARLEY_CACHE_LEASE_SECONDS", defaults.cache_lease_seconds),
            knowledge_bases_uri=os.environ.get("PARLEY_KNOWLEDGE_BASES_URI", defaults.knowledge_bases_uri),
            account_cache_seconds=_float("PARLEY_ACCOUNT_CACHE_SECONDS", defaults.account_cache_seconds),
            spend_cache_seconds=_float("PARLEY_SPEND_CACHE_SECONDS", defaults.spend_cache_seconds),
            key_cache_seconds=_float("PARLEY_KEY_CACHE_SECONDS", defaults.key_cache_seconds),
            route_cache_seconds=_float("PARLEY_ROUTE_CACHE_SECONDS", defaults.route_cache_seconds),
            policy_cache_seconds=_float("PARLEY_POLICY_CACHE_SECONDS", defaults.policy_cache_seconds),
            pii_key_ref=os.environ.get("PARLEY_PII_KEY_REF") or defaults.pii_key_ref,
            max_body_bytes=_int("PARLEY_MAX_BODY_BYTES", defaults.max_body_bytes),
            ping_seconds=_float("PARLEY_PING_SECONDS", defaults.ping_seconds),
            worker_attempts=_int("PARLEY_WORKER_ATTEMPTS", defaults.worker_attempts),
            worker_cooldown_seconds=_float("PARLEY_WORKER_COOLDOWN_SECONDS", defaults.worker_cooldown_seconds),
            worker_max_connections=_int("PARLEY_WORKER_MAX_CONNECTIONS", defaults.worker_max_connections),
            pdf_seconds=_float("PARLEY_PDF_SECONDS", defaults.pdf_seconds),
            pdf_max_operators=_int("PARLEY_PDF_MAX_OPERATORS", defaults.pdf_max_operators),
            pdf_max_pages=_int("PARLEY_PDF_MAX_PAGES", defaults.pdf_max_pages),
            pdf_max_text_chars=_int("PARLEY_PDF_MAX_TEXT_CHARS", defaults.pdf_max_text_chars),
            pdf_threads=_int("PARLEY_PDF_THREADS", defaults.pdf_threads),
            pdf_max_waiting=_int("PARLEY_PDF_MAX_WAITING", defaults.pdf_max_waiting),
            usage_log=os.environ.get(
                "PARLEY_USAGE_LOG", "stdout" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else defaults.usage_log
            ),
        )
