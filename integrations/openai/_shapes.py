"""Completions and their streams: a ``chat.completion`` as the chunks a server streams, and back.

The adapter replays a cached answer as chunks (:func:`completion_to_chunks`)
and stores a streamed miss as the completion its chunks add up to
(:func:`chunks_to_completion`).  The bundled test server chunks its answers
with code of its own (:mod:`semcache.testing.openai_server`), so the tests
check this module against an independent oracle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["chunks_to_completion", "completion_to_chunks", "text_pieces"]

_PIECE = re.compile(r"\S+\s*|\s+")
_ARGUMENT_PIECE = 16  # characters of tool-call arguments per replayed delta


def text_pieces(text: str) -> list[str]:
    """Split a text the way it is replayed in a stream: words with their trailing space."""
    return _PIECE.findall(text) or [""]
def completion_to_chunks(completion: Mapping[str, Any], *, include_usage: bool = False) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` dicts a server streams for ``completion`` (a dict).

    Per choice, in OpenAI's order: a role chunk (carrying the first tool call's
    header, id and name, when the answer is a tool call), the content in pieces
    or each call's arguments in pieces, a finish chunk; then, when
    ``include_usage``, a chunk with no choices that carries the usage.

    Examples:
        >>> done = {"id": "c1", "created": 1, "model": "m", "choices": [
        ...     {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}]}
        >>> [c["choices"][0]["delta"] for c in completion_to_chunks(done)]
        [{'role': 'assistant', 'content': ''}, {'content': 'Hi '}, {'content': 'there'}, {}]
    """
    head = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
        "system_fingerprint": completion.get("system_fingerprint"),
    }
    out: list[dict[str, Any]] = []

    def emit(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        out.append({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    for choice in completion["choices"]:
        index, message = choice["index"], choice.get("message") or {}
        calls = message.get("tool_calls") or []
        content = message.get("content")
        opening: dict[str, Any] = {
            "role": message.get("role") or "assistant",
            "content": None if calls and not content else "",
        }
        deltas: list[dict[str, Any]] = [{"content": piece} for piece in text_pieces(content)] if content else []
        if message.get("refusal"):
            deltas.append({"refusal": message["refusal"]})
        for position, call in enumerate(calls):
            function = call.get("function") or {}
            header = {
                "index": position,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name"), "arguments": ""},
            }
            if position == 0 and not content:
                opening["tool_calls"] = [header]  # as OpenAI does: the role and the first call's header together
            else:
                deltas.append({"tool_calls": [header]})
            arguments = function.get("arguments") or ""
            for start in range(0, len(arguments), _ARGUMENT_PIECE):
                piece = arguments[start : start + _ARGUMENT_PIECE]
                deltas.append({"tool_calls": [{"index": position, "function": {"arguments": piece}}]})
        for delta in [opening, *deltas]:
            emit(index, delta)
        emit(index, {}, choice.get("finish_reason") or "stop")
    if include_usage:
        out.append({**head, "choices": [], "usage": completion.get("usage")})
    return out


def chunks_to_completion(chunks: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Reassemble streamed chunk dicts into a ``chat.completion`` dict.

    Returns:
        The completion, or None when the stream is incomplete (no chunks, or a
        choice without a finish reason), which must not be cached.

    Examples:
        >>> done = {"id": "c1", "created": 1, "model": "m", "choices": [
        ...     {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}]}
        >>> chunks_to_completion(completion_to_chunks(done))["choices"][0]["message"]["content"]
        'Hi there'
        >>> chunks_to_completion(completion_to_chunks(done)[:-1]) is None
        True
    """
    if not chunks:
        return None
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for part in chunk.get("choices") or []:
            choice = choices.setdefault(
                part["index"],
                {
                    "index": part["index"],
                    "message": {"role": "assistant", "content": None},
                    "finish_reason": None,
                    "logprobs": None,
                },
            )
            _apply_delta(choice["message"], part.get("delta") or {})
            if part.get("finish_reason"):
                choice["finish_reason"] = part["finish_reason"]
    if not choices or any(c["finish_reason"] is None for c in choices.values()):
        return None
    first = chunks[0]
    return {
        "id": first["id"],
        "object": "chat.completion",
        "created": first["created"],
        "model": first["model"],
        "system_fingerprint": first.get("system_fingerprint"),
        "choices": [choices[i] for i in sorted(choices)],
        "usage": usage,
    }


def _apply_delta(message: dict[str, Any], delta: Mapping[str, Any]) -> None:
    """Add one delta (role, content, refusal, tool-call pieces) to the message being reassembled."""
    if delta.get("role"):
        message["role"] = delta["role"]
    for field in ("content", "refusal"):
        if delta.get(field) is not None:
            message[field] = (message.get(field) or "") + delta[field]
    for call_delta in delta.get("tool_calls") or []:
        calls = message.setdefault("tool_calls", [])
        while len(calls) <= call_delta["index"]:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[call_delta["index"]]
        call["id"] = call_delta.get("id") or call["id"]
        call["type"] = call_delta.get("type") or call["type"]
        function = call_delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""
