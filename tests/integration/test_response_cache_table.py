"""The response cache's table on DynamoDB Local (io/response_cache.py): expiry checked on read,
the size limit, compression, and the lease duplicates wait on."""

from __future__ import annotations

import os
import secrets

import pytest

from parley.io.response_cache import GIVEN_UP, GIVEN_UP_SECONDS, MAX_STORED_BYTES, ResponseCacheTable
from parley.io.tables import create_tables

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def table(dynamodb):
    create_tables(dynamodb, {"response_cache": "rc-table"})
    return ResponseCacheTable(dynamodb, "rc-table")


def _message(text: str) -> dict:
    return {"type": "message", "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "usage": {}}


def test_an_entry_is_served_until_it_expires_whatever_dynamodb_has_deleted(table):
    key = secrets.token_hex(8)
    assert table.put(key, _message("kept"), "acct", ttl_seconds=60, now=NOW)
    kept = table.get(key, NOW + 59)
    assert kept is not None and kept.message == _message("kept") and kept.stored_at == NOW
    assert table.get(key, NOW + 60) is None


def test_the_table_ttl_is_enabled(dynamodb, table):
    described = dynamodb.describe_time_to_live(TableName="rc-table")["TimeToLiveDescription"]
    assert described["AttributeName"] == "expires_at" and described["TimeToLiveStatus"] in ("ENABLED", "ENABLING")


def test_answers_are_compressed_and_one_too_large_is_not_kept(dynamodb, table):
    key = secrets.token_hex(8)
    repetitive = "the same words again " * 20_000  # 420 KB of text, far over DynamoDB's item limit raw
    assert table.put(key, _message(repetitive), "acct", 60, NOW)
    item = dynamodb.get_item(TableName="rc-table", Key={"key": {"S": f"answer#{key}"}})["Item"]
    assert len(item["answer"]["B"]) < 10_000
    assert table.get(key, NOW).message["content"][0]["text"] == repetitive

    noise = os.urandom(MAX_STORED_BYTES).hex()  # incompressible past the limit
    big = secrets.token_hex(8)
    assert not table.put(big, _message(noise), "acct", 60, NOW)
    assert table.get(big, NOW) is None


def test_one_request_holds_the_lease_until_it_releases_or_it_lapses(table):
    key = secrets.token_hex(8)
    holder = table.claim(key, NOW, lease_seconds=30)
    assert holder is not None
    assert table.claim(key, NOW + 1, 30) is None
    table.release(key, "someone-else", kept=True, now=NOW + 2)  # not the holder: the lease stays
    assert table.claim(key, NOW + 2, 30) is None
    table.release(key, holder, kept=True, now=NOW + 3)
    again = table.claim(key, NOW + 3, 30)
    assert again is not None
    assert table.claim(key, NOW + 34, 30) is not None, "a lapsed lease must be claimable"


def test_a_lease_whose_answer_was_not_kept_tells_the_waiters_for_a_while(table):
    key = secrets.token_hex(8)
    holder = table.claim(key, NOW, lease_seconds=30)
    table.release(key, holder, kept=False, now=NOW + 1)
    assert table.claim(key, NOW + 2, 30) == GIVEN_UP, "waiters on other instances go at once"
    assert table.claim(key, NOW + 1 + GIVEN_UP_SECONDS + 1, 30) not in (None, GIVEN_UP), "then leading resumes"
