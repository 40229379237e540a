"""Guardrail policies as data: what an account's (or a key's) requests and answers are held to.

The document (docs/guardrails.md):

    {"pii": {"mode": "off"|"mask"|"block", "entities": [...], "restore": true|false,
             "mask_output": true|false, "phone_regions": ["US", ...], "allow": [...]},
     "content": {"deny": [{"name": ..., "phrases": [...], "patterns": [...],
                           "direction": "both"|"input"|"output"}],
                 "prompt_injection": "off"|"flag"|"block", "scan": "latest"|"all"},
     "cache": {"mode": "off"|"deterministic"|"all", "ttl_seconds": N},
     "rag": {"knowledge_base": NAME, "top_k": N, "rerank_model": MODEL, "on_error": "answer"|"fail"}}

(`cache`: docs/cache.md; `rag`: docs/rag.md.)

`parse_policy` reads a document into a Policy (missing fields take the dataclasses' defaults) or
refuses it with a PolicyError naming the field (`content.deny[1].patterns[0]: not a valid RE2
pattern (missing ))`); `policy_document` writes a Policy back as a complete document, with every
field, so that `parse_policy(policy_document(p), p.version) == p`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import InvalidRequestError

__all__ = [
    "CachePolicy",
    "KNOWLEDGE_BASE_NAME",
    "RagPolicy",
    "PII_ENTITIES",
    "NEVER_RESTORED",
    "ContentPolicy",
    "DenyRule",
    "PiiPolicy",
    "Policy",
    "NO_POLICY",
    "PolicyError",
    "parse_policy",
    "policy_document",
]

PII_ENTITIES: tuple[str, ...] = ("email", "phone", "card", "iban", "national_id", "ssn", "ip", "secret")
"""Every entity the scrubber knows, in the order a policy lists them by default."""

NEVER_RESTORED: frozenset[str] = frozenset({"ssn", "secret"})
"""Entities whose values are dropped from the answer's restore map: the placeholder stays."""

PiiMode = Literal["off", "mask", "block"]
Direction = Literal["both", "input", "output"]
InjectionMode = Literal["off", "flag", "block"]
Scan = Literal["latest", "all"]
CacheMode = Literal["off", "deterministic", "all"]
RagOnError = Literal["answer", "fail"]

KNOWLEDGE_BASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""What a knowledge base may be called (io/knowledge_bases.py checks the same)."""

MAX_CACHE_TTL_SECONDS = 30 * 86_400
MAX_RAG_TOP_K = 20


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    mode: PiiMode = "off"
    entities: tuple[str, ...] = PII_ENTITIES
    restore: bool = True
    mask_output: bool = False  # also mask personal data the model itself writes
    phone_regions: tuple[str, ...] = ("US",)  # regions whose national formats count as phones
    allow: tuple[str, ...] = ()  # values never masked (a support address, a public number)


@dataclass(frozen=True, slots=True)
class DenyRule:
    name: str
    phrases: tuple[str, ...] = ()  # matched on normalised text (core.content_policy.normalise)
    patterns: tuple[str, ...] = ()  # RE2 syntax, on normalised text
    direction: Direction = "both"

    def applies_to(self, direction: Literal["input", "output"]) -> bool:
        return self.direction in ("both", direction)


@dataclass(frozen=True, slots=True)
class ContentPolicy:
    deny: tuple[DenyRule, ...] = ()
    prompt_injection: InjectionMode = "off"
    scan: Scan = "latest"  # judge the newest turn only (and its new tool results), or all of it


@dataclass(frozen=True, slots=True)
class CachePolicy:
    mode: CacheMode = "off"  # deterministic: only requests with temperature 0
    ttl_seconds: int = 3600


@dataclass(frozen=True, slots=True)
class RagPolicy:
    knowledge_base: str = ""  # none: no retrieval
    top_k: int = 4
    rerank_model: str = ""  # a route whose workers serve /v1/rerank; none: the vector order
    on_error: RagOnError = "answer"  # answer without the documents, or fail the request

    @property
    def active(self) -> bool:
        return bool(self.knowledge_base)


@dataclass(frozen=True, slots=True)
class Policy:
    pii: PiiPolicy = field(default_factory=PiiPolicy)
    content: ContentPolicy = field(default_factory=ContentPolicy)
    cache: CachePolicy = field(default_factory=CachePolicy)
    rag: RagPolicy = field(default_factory=RagPolicy)
    version: str = ""  # "<scope>@<n>": changes with every stored change (part of cache keys)

    @property
    def active(self) -> bool:
        """Whether any guardrail applies: a request under an inactive policy skips them all."""
        return self.pii.mode != "off" or bool(self.content.deny) or self.content.prompt_injection != "off"


NO_POLICY = Policy()


class PolicyError(InvalidRequestError):
    """A policy document Parley refuses; the message names the field (`pii.mode: …`)."""


def parse_policy(document: Any, version: str = "") -> Policy:
    """The Policy a document (parsed JSON) describes, or PolicyError naming the first bad field."""
    fields = _fields(document, "", ("pii", "content", "cache", "rag"))
    return Policy(
        pii=_pii(fields["pii"]) if "pii" in fields else PiiPolicy(),
        content=_content(fields["content"]) if "content" in fields else ContentPolicy(),
        cache=_cache(fields["cache"]) if "cache" in fields else CachePolicy(),
        rag=_rag(fields["rag"]) if "rag" in fields else RagPolicy(),
        version=version,
    )


def policy_document(policy: Policy) -> dict[str, Any]:
    """The complete document of a policy (every field, defaults included; not its version)."""
    pii, content, cache, rag = policy.pii, policy.content, policy.cache, policy.rag
    return {
        "pii": {
            "mode": pii.mode,
            "entities": list(pii.entities),
            "restore": pii.restore,
            "mask_output": pii.mask_output,
            "phone_regions": list(pii.phone_regions),
            "allow": list(pii.allow),
        },
        "content": {
            "deny": [
                {"name": r.name, "phrases": list(r.phrases), "patterns": list(r.patterns), "direction": r.direction}
                for r in content.deny
            ],
            "prompt_injection": content.prompt_injection,
            "scan": content.scan,
        },
        "cache": {"mode": cache.mode, "ttl_seconds": cache.ttl_seconds},
        "rag": {
            "knowledge_base": rag.knowledge_base,
            "top_k": rag.top_k,
            "rerank_model": rag.rerank_model,
            "on_error": rag.on_error,
        },
    }


_PII_FIELDS = ("mode", "entities", "restore", "mask_output", "phone_regions", "allow")
_CONTENT_FIELDS = ("deny", "prompt_injection", "scan")
_RULE_FIELDS = ("name", "phrases", "patterns", "direction")
_CACHE_FIELDS = ("mode", "ttl_seconds")
_RAG_FIELDS = ("knowledge_base", "top_k", "rerank_model", "on_error")


def _fields(value: Any, path: str, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{path}: must be an object" if path else "the policy document must be a JSON object")
    for name in value:
        if name not in known:
            raise PolicyError(f"{_join(path, str(name))}: unknown field; known: {', '.join(known)}")
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _choice(value: Any, path: str, allowed: Any) -> Any:
    choices = get_args(allowed)
    if not isinstance(value, str) or value not in choices:
        raise PolicyError(f"{path}: must be one of " + ", ".join(f'"{c}"' for c in choices))
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{path}: must be true or false")
    return value


def _integer(value: Any, path: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise PolicyError(f"{path}: must be a whole number from {low:,} to {high:,}")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"{path}: must be a string")
    if not value.strip():
        raise PolicyError(f"{path}: must not be empty")
    return value


def _strings(value: Any, path: str) -> tuple[str, ...]:
    """A list of non-empty strings, each once."""
    if not isinstance(value, list):
        raise PolicyError(f"{path}: must be a list of strings")
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        _string(item, f"{path}[{index}]")
        if item in seen:
            raise PolicyError(f'{path}[{index}]: duplicate "{item}" (also {path}[{seen[item]}])')
        seen[item] = index
    return tuple(value)


def _pii(value: Any) -> PiiPolicy:
    fields = _fields(value, "pii", _PII_FIELDS)
    default = PiiPolicy()
    entities = _strings(fields["entities"], "pii.entities") if "entities" in fields else default.entities
    for index, entity in enumerate(entities):
        if entity not in PII_ENTITIES:
            raise PolicyError(f'pii.entities[{index}]: unknown entity "{entity}"; known: {", ".join(PII_ENTITIES)}')
    regions = _strings(fields["phone_regions"], "pii.phone_regions") if "phone_regions" in fields else None
    if regions is not None:
        import phonenumbers

        for index, region in enumerate(regions):
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise PolicyError(f'pii.phone_regions[{index}]: unknown region "{region}"')
    return PiiPolicy(
        mode=_choice(fields["mode"], "pii.mode", PiiMode) if "mode" in fields else default.mode,
        entities=entities,
        restore=_bool(fields["restore"], "pii.restore") if "restore" in fields else default.restore,
        mask_output=_bool(fields["mask_output"], "pii.mask_output") if "mask_output" in fields else default.mask_output,
        phone_regions=regions if regions is not None else default.phone_regions,
        allow=_strings(fields["allow"], "pii.allow") if "allow" in fields else default.allow,
    )


def _content(value: Any) -> ContentPolicy:
    fields = _fields(value, "content", _CONTENT_FIELDS)
    default = ContentPolicy()
    deny = fields.get("deny", [])
    if not isinstance(deny, list):
        raise PolicyError("content.deny: must be a list of rules")
    rules = tuple(_rule(rule, f"content.deny[{index}]") for index, rule in enumerate(deny))
    names: dict[str, int] = {}
    for index, rule in enumerate(rules):
        if rule.name in names:
            raise PolicyError(
                f'content.deny[{index}].name: duplicate "{rule.name}" (also content.deny[{names[rule.name]}])'
            )
        names[rule.name] = index
    injection = fields.get("prompt_injection", default.prompt_injection)
    return ContentPolicy(
        deny=rules,
        prompt_injection=_choice(injection, "content.prompt_injection", InjectionMode),
        scan=_choice(fields.get("scan", default.scan), "content.scan", Scan),
    )


def _rule(value: Any, path: str) -> DenyRule:
    fields = _fields(value, path, _RULE_FIELDS)
    if "name" not in fields:
        raise PolicyError(f"{path}.name: required")
    name = _string(fields["name"], f"{path}.name")
    phrases = _strings(fields.get("phrases", []), f"{path}.phrases")
    patterns = _strings(fields.get("patterns", []), f"{path}.patterns")
    if not phrases and not patterns:
        raise PolicyError(f"{path}: needs phrases or patterns (or both)")
    for index, pattern in enumerate(patterns):
        _check_pattern(pattern, f"{path}.patterns[{index}]")
    return DenyRule(
        name=name,
        phrases=phrases,
        patterns=patterns,
        direction=_choice(fields.get("direction", "both"), f"{path}.direction", Direction),
    )


def _check_pattern(pattern: str, path: str) -> None:
    from .content_policy import pattern_error  # RE2: loaded when a policy is read, not at import

    reason = pattern_error(pattern)
    if reason is not None:
        raise PolicyError(f"{path}: {reason}")


def _cache(value: Any) -> CachePolicy:
    fields = _fields(value, "cache", _CACHE_FIELDS)
    default = CachePolicy()
    return CachePolicy(
        mode=_choice(fields.get("mode", default.mode), "cache.mode", CacheMode),
        ttl_seconds=_integer(
            fields.get("ttl_seconds", default.ttl_seconds), "cache.ttl_seconds", 1, MAX_CACHE_TTL_SECONDS
        ),
    )


def _rag(value: Any) -> RagPolicy:
    fields = _fields(value, "rag", _RAG_FIELDS)
    default = RagPolicy()
    if "knowledge_base" not in fields:
        raise PolicyError("rag.knowledge_base: required")
    return RagPolicy(
        knowledge_base=_knowledge_base(fields["knowledge_base"]),
        top_k=_integer(fields.get("top_k", default.top_k), "rag.top_k", 1, MAX_RAG_TOP_K),
        rerank_model=_name_or_none(fields.get("rerank_model", ""), "rag.rerank_model"),
        on_error=_choice(fields.get("on_error", default.on_error), "rag.on_error", RagOnError),
    )


def _knowledge_base(value: Any) -> str:
    name = _name_or_none(value, "rag.knowledge_base")
    if name and not KNOWLEDGE_BASE_NAME.fullmatch(name):
        raise PolicyError(f"rag.knowledge_base: must match {KNOWLEDGE_BASE_NAME.pattern}")
    return name


def _name_or_none(value: Any, path: str) -> str:
    """A name, or "" for none (how `policy_document` writes a missing one)."""
    return "" if value == "" else _string(value, path)
