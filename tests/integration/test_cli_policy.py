"""`parley policy set|show|remove` against DynamoDB Local, as an operator runs them; the effective
policy a request is held to (`PolicyStore.lookup`); and `make dev`'s PARLEY_POLICY_FILE and PII key."""

from __future__ import annotations

import io
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from parley.cli import main
from parley.core.policy import NO_POLICY, parse_policy, policy_document
from parley.io.expiring import ExpiringCache
from parley.io.keys import KeyStore
from parley.io.policies import PolicyStore
from parley.io.tables import create_tables
from parley.local.stack import apply_policy, read_policy_file, use_local_pii_key
from parley.settings import Settings

POLICIES, KEYS = "cli-policies", "cli-policies-keys"
MASK = {"pii": {"mode": "mask", "entities": ["email"]}}
DENY = {"content": {"deny": [{"name": "codenames", "phrases": ["bluebird"]}]}}


@pytest.fixture(scope="module")
def tables(dynamodb: Any) -> None:
    create_tables(dynamodb, {"policies": POLICIES, "keys": KEYS})


@pytest.fixture
def cli_env(dynamodb: Any, tables: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.meta.endpoint_url)
    monkeypatch.setenv("PARLEY_POLICIES_TABLE", POLICIES)
    monkeypatch.setenv("PARLEY_KEYS_TABLE", KEYS)


class CountingClient:
    """A boto3 client that counts the calls made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return call


def exit_code(argv: list[str]) -> Any:
    """The status `parley …` exits with (main's answer, or the SystemExit's code)."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def fresh_account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


def policy_file(tmp_path: Path, document: Any) -> str:
    path = tmp_path / f"{uuid.uuid4().hex[:6]}.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def test_set_show_remove_and_versions_that_only_increase(cli_env, tmp_path, capsys):
    account = fresh_account()
    assert main(["policy", "set", "--account", account, "--file", policy_file(tmp_path, MASK)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"version account#{account}@1")
    assert main(["policy", "set", "--account", account, "--file", policy_file(tmp_path, DENY)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"version account#{account}@2")

    assert main(["policy", "show", "--account", account]) == 0
    shown = capsys.readouterr()
    assert json.loads(shown.out) == policy_document(parse_policy(DENY)), "the whole document, defaults filled in"
    assert shown.err.strip() == f"version: account#{account}@2"

    assert main(["policy", "remove", "--account", account]) == 0
    assert main(["policy", "show", "--account", account]) == 1
    assert "no policy for account" in capsys.readouterr().err
    assert main(["policy", "remove", "--account", account]) == 1

    assert main(["policy", "set", "--account", account, "--file", policy_file(tmp_path, MASK)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"version account#{account}@4"), "versions never repeat"


def test_set_reads_stdin(cli_env, monkeypatch, capsys):
    account = fresh_account()
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(MASK)))
    assert main(["policy", "set", "--account", account, "--file", "-"]) == 0
    assert f"account#{account}@1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"pii": {"mode": "redact"}}, 'pii.mode: must be one of "off", "mask", "block"'),
        (
            {"content": {"deny": [{"name": "a", "phrases": ["x"]}, {"name": "b", "patterns": ["(a"]}]}},
            "content.deny[1].patterns[0]: not a valid RE2 pattern (missing ))",
        ),
        ('{"pii": {"mode": "mask"', "is not valid JSON"),
    ],
)
def test_a_bad_file_names_the_field_exits_2_and_stores_nothing(dynamodb, cli_env, tmp_path, capsys, document, message):
    account = fresh_account()
    assert exit_code(["policy", "set", "--account", account, "--file", policy_file(tmp_path, document)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert PolicyStore(dynamodb, POLICIES).get(account) is None


def test_a_missing_file_exits_2(cli_env, tmp_path, capsys):
    assert exit_code(["policy", "set", "--account", fresh_account(), "--file", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_keys_policy_overrides_its_accounts_in_one_round_trip(dynamodb, cli_env, tmp_path, capsys):
    account = fresh_account()
    keys = KeyStore(dynamodb, KEYS)
    _, own = keys.create(account=account, name="own policy")
    _, other = keys.create(account=account, name="account's policy")
    assert main(["policy", "set", "--account", account, "--file", policy_file(tmp_path, MASK)]) == 0
    assert (
        main(["policy", "set", "--account", account, "--key", own.key_id, "--file", policy_file(tmp_path, DENY)]) == 0
    )
    assert f"version key#{own.key_id}@1" in capsys.readouterr().out

    counting = CountingClient(dynamodb)
    store = PolicyStore(counting, POLICIES)
    held = store.lookup(account, own.key_id)
    assert (held.version, held.content.deny[0].name, held.pii.mode) == (f"key#{own.key_id}@1", "codenames", "off")
    assert counting.calls == ["batch_get_item"], "both scopes in one read"
    assert store.lookup(account, other.key_id).version == f"account#{account}@1"
    assert store.lookup(account, None).version == f"account#{account}@1"
    assert store.lookup(fresh_account(), "key_none") is NO_POLICY

    assert main(["policy", "show", "--account", account, "--key", other.key_id]) == 1
    assert f"held to account {account}'s (account#{account}@1)" in capsys.readouterr().err
    assert main(["policy", "remove", "--account", account, "--key", own.key_id]) == 0
    assert store.lookup(account, own.key_id).version == f"account#{account}@1", "back to the account's"


def test_a_policy_for_a_key_of_another_account_is_refused(dynamodb, cli_env, tmp_path, capsys):
    account = fresh_account()
    _, record = KeyStore(dynamodb, KEYS).create(account=fresh_account(), name="elsewhere")
    assert (
        main(["policy", "set", "--account", account, "--key", record.key_id, "--file", policy_file(tmp_path, MASK)])
        == 1
    )
    assert f"has no key with id {record.key_id}" in capsys.readouterr().err
    assert PolicyStore(dynamodb, POLICIES).get(account, record.key_id) is None


def test_lookup_is_served_from_the_cache_until_a_put_clears_it(dynamodb, tables):
    account, counting = fresh_account(), CountingClient(dynamodb)
    store, elsewhere = PolicyStore(counting, POLICIES), PolicyStore(dynamodb, POLICIES)
    assert store.cached(account, "key_x") is ExpiringCache.MISSING
    elsewhere.put(account, MASK)
    first = store.lookup(account, "key_x")
    assert store.cached(account, "key_x") == first and not store.due(account, "key_x")

    elsewhere.put(account, DENY)  # another instance (the CLI): this one keeps its answer for a while
    assert store.cached(account, "key_x") == first and counting.calls == ["batch_get_item"]

    store.put(account, MASK)
    assert store.cached(account, "key_x") is ExpiringCache.MISSING
    assert store.lookup(account, "key_x").version == f"account#{account}@3"
    store.remove(account)
    assert store.cached(account, "key_x") is ExpiringCache.MISSING
    assert store.lookup(account, "key_x") is NO_POLICY


def test_dev_stack_applies_a_policy_file_and_refuses_a_bad_one(dynamodb, tables, tmp_path):
    settings = Settings(policies_table=POLICIES)
    good = policy_file(tmp_path, MASK)
    line = apply_policy(dynamodb, settings, read_policy_file(good), good)
    assert line.startswith(f"Guardrail policy {good} applied to account dev (version account#dev@")
    assert "keeps its stored guardrail policy" in apply_policy(dynamodb, settings, None)

    with pytest.raises(SystemExit) as raised:
        read_policy_file(policy_file(tmp_path, {"pii": {"entities": ["passport"]}}))
    assert 'pii.entities[0]: unknown entity "passport"' in str(raised.value.code)


def test_dev_stack_makes_one_pii_key_and_keeps_it(tmp_path, monkeypatch):
    monkeypatch.delenv("PARLEY_PII_KEY", raising=False)
    monkeypatch.delenv("PARLEY_PII_KEY_REF", raising=False)
    use_local_pii_key(tmp_path / "data")
    key = os.environ["PARLEY_PII_KEY"]
    path = tmp_path / "data" / "pii.key"
    assert len(bytes.fromhex(key)) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    monkeypatch.delenv("PARLEY_PII_KEY")
    use_local_pii_key(tmp_path / "data")
    assert os.environ["PARLEY_PII_KEY"] == key, "the same key after a restart"

    monkeypatch.setenv("PARLEY_PII_KEY_REF", "secretsmanager:parley/pii")
    monkeypatch.delenv("PARLEY_PII_KEY")
    use_local_pii_key(tmp_path / "other")
    assert "PARLEY_PII_KEY" not in os.environ and not (tmp_path / "other").exists()
