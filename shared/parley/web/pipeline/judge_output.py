"""Stage `judge output`: the guard the answer goes through on its way to the client
(core/answer_guard.py), built from the request's policy and what judging the input found."""

from __future__ import annotations

from typing import Callable

from ...core.answer_guard import AnswerGuard, ChatAnswerGuard, answer_guard_for, chat_answer_guard_for
from .exchange import Exchange

__all__ = ["answer_guard", "chat_answer_guard"]


def answer_guard(exchange: Exchange, usage: Callable[[], dict[str, int]] | None = None) -> AnswerGuard | None:
    """A Messages answer's guard (None when the policy leaves answers as they come). `usage`:
    the stream's usage so far, for a refusal's message_delta."""
    if not exchange.policy.active:
        return None
    return answer_guard_for(exchange.policy, exchange.guarded.restore_map, exchange.placeholder_key, usage)


def chat_answer_guard(exchange: Exchange) -> ChatAnswerGuard | None:
    if not exchange.policy.active:
        return None
    return chat_answer_guard_for(exchange.policy, exchange.guarded.restore_map, exchange.placeholder_key)
