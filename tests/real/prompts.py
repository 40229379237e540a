"""The prompts every real-worker module sends (Anthropic's shapes)."""

from __future__ import annotations

HELLO = [{"role": "user", "content": "Hello"}]
PARIS = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
FORCED = {"type": "tool", "name": "get_weather"}
GREEDY = {"temperature": 0}
"""Greedy decoding: the same answer every time (the dummy weights come from a fixed seed)."""
SDK_GREEDY = {"extra_body": GREEDY}
"""GREEDY for the Python SDK, whose 2.x `create()` has no `temperature` parameter."""
