"""What the routes use, built lazily on first use (no network at import) and injectable in tests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ..core.request_guard import JudgedBlocks
from ..io.accounts import AccountStore
from ..io.batch_objects import BatchObjects
from ..io.batch_queue import BatchQueue
from ..io.batch_slots import RouteSlots
from ..io.batches import BatchStore
from ..io.chat_templates import ChatTemplates
from ..io.egress import public_only_connector
from ..io.failover import FailoverPolicy, WorkerHealth
from ..io.keys import KeyStore
from ..io.knowledge_bases import knowledge_base_store
from ..io.limits import RateLimiter
from ..io.placeholder_keys import PlaceholderKeys
from ..io.policies import PolicyStore
from ..io.response_cache import Flights, ResponseCacheTable
from ..io.routes import RouteStore
from ..io.tokenizers import WorkerTokenizers
from ..io.usage import UsageStore
from ..io.usage_journal import MeteringLoop, StdoutUsageLog, UsageJournal
from ..io.worker import WorkerClient
from ..settings import Settings
from ..telemetry import Telemetry

__all__ = ["Services"]


@dataclass(slots=True)
class Services:
    settings: Settings
    keys: KeyStore
    routes: RouteStore
    worker: WorkerClient
    account_worker: WorkerClient  # for accounts' own workers: public addresses only
    health: WorkerHealth
    tokenizers: WorkerTokenizers  # which workers answer POST /tokenize, learned per instance
    templates: ChatTemplates  # which workers' templates refuse later system messages, learned per instance
    failover: FailoverPolicy
    rng: random.Random
    telemetry: Telemetry
    accounts: AccountStore
    limits: RateLimiter
    usage: UsageStore
    usage_log: StdoutUsageLog | UsageJournal
    policies: PolicyStore
    placeholder_keys: PlaceholderKeys  # each account's key for stable placeholders (derived)
    judged: JudgedBlocks  # what texts seen under a policy held, so a resent history is not scanned again
    response_cache: ResponseCacheTable
    flights: Flights  # this instance's requests calling a worker for a cache key
    knowledge_bases: Any  # KnowledgeBaseStore (LanceDB) or S3 Vectors', opened on first use (docs/rag.md)
    batches: BatchStore
    batch_slots: RouteSlots
    batch_objects: BatchObjects | None  # None: no batch bucket and queue are set, no batches
    batch_queue: BatchQueue | None

    @classmethod
    def build(
        cls,
        settings: Settings,
        dynamodb: Any,
        telemetry: Telemetry | None = None,
        s3: Any = None,
        sqs: Any = None,
    ) -> "Services":
        """`s3` and `sqs` (boto3 clients) are made here when not given and batches are set up."""
        usage = UsageStore(
            dynamodb,
            settings.usage_table,
            settings.usage_records_table,
            spend_cache_seconds=settings.spend_cache_seconds,
        )
        limits = RateLimiter(dynamodb, settings.limits_table)
        usage_log: StdoutUsageLog | UsageJournal
        if settings.usage_log == "stdout":
            usage_log = StdoutUsageLog()
        else:
            usage_log = UsageJournal(settings.usage_log)
            MeteringLoop(usage_log, usage, after_batch=limits.flush)
        return cls(
            settings=settings,
            keys=KeyStore(dynamodb, settings.keys_table, settings.key_cache_seconds),
            routes=RouteStore(dynamodb, settings.routes_table, settings.route_cache_seconds),
            worker=WorkerClient(settings.worker_max_connections),
            account_worker=WorkerClient(settings.worker_max_connections, connector=public_only_connector),
            health=WorkerHealth(),
            tokenizers=WorkerTokenizers(),
            templates=ChatTemplates(),
            failover=FailoverPolicy(
                attempts=settings.worker_attempts, cooldown_seconds=settings.worker_cooldown_seconds
            ),
            rng=random.Random(),
            telemetry=telemetry or Telemetry(),
            accounts=AccountStore(dynamodb, settings.accounts_table, settings.account_cache_seconds),
            limits=limits,
            usage=usage,
            usage_log=usage_log,
            policies=PolicyStore(dynamodb, settings.policies_table, settings.policy_cache_seconds),
            placeholder_keys=PlaceholderKeys(settings.pii_key_ref),
            judged=JudgedBlocks(),
            response_cache=ResponseCacheTable(dynamodb, settings.response_cache_table),
            flights=Flights(),
            knowledge_bases=knowledge_base_store(settings.knowledge_bases_uri),
            batches=BatchStore(dynamodb, settings.batches_table),
            batch_slots=RouteSlots(dynamodb, settings.batches_table),
            **_batch_io(settings, s3, sqs),
        )

    @property
    def batches_enabled(self) -> bool:
        return self.batch_objects is not None and self.batch_queue is not None

    def metered(self, timeout: float = 30.0) -> bool:
        """Wait until the usage of every request that has ended is in DynamoDB (a local journal's
        loop has metered it); True at once where the metering function does it (stdout)."""
        return self.usage_log.flush(timeout)

    def close(self, drain_seconds: float = 5.0) -> None:
        self.usage_log.close(drain_seconds)

    @classmethod
    def from_environment(cls) -> "Services":
        import boto3  # imported here: the app module must import fast and touch no network

        return cls.build(Settings.from_environment(), boto3.client("dynamodb"))


def _batch_io(settings: Settings, s3: Any, sqs: Any) -> dict[str, Any]:
    if not (settings.batch_bucket and settings.batch_queue_url):
        return {"batch_objects": None, "batch_queue": None}
    if s3 is None or sqs is None:
        import boto3

        s3, sqs = s3 or boto3.client("s3"), sqs or boto3.client("sqs")
    return {
        "batch_objects": BatchObjects(s3, settings.batch_bucket),
        "batch_queue": BatchQueue(sqs, settings.batch_queue_url),
    }
