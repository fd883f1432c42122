"""Split a chat conversation into what is embedded and what must match exactly.

Both adapters cache chat requests the same way: the **last user message** is
the prompt (embedded, matched semantically), and **everything else** (the
system prompt, the earlier turns, and any tool turns after the question) is
canonicalised into the scope, so it must match exactly.  "What about its
population?" after "Capital of France?" and after "Capital of Japan?" thus
land in different scopes and never serve each other's answer.

>>> turns = [
...     {"role": "system", "content": "Be brief."},
...     {"role": "user", "content": "Capital of France?"},
...     {"role": "assistant", "content": "Paris"},
...     {"role": "user", "content": "What about its  population?"},
... ]
>>> split = split_conversation(turns)
>>> split.prompt
'What about its  population?'
>>> [m["role"] for m in split.context]
['system', 'user', 'assistant', '(prompt)']
>>> split_conversation([{"role": "system", "content": "only a system prompt"}]) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from semcache._cache.cache import normalize_prompt

PROMPT_PLACEHOLDER = {"role": "(prompt)"}


@dataclass(frozen=True)
class Conversation:
    """A conversation split for caching.

    Attributes:
        prompt: the text of the last user message: what is embedded.
        context: every other message, canonicalised, with a placeholder where
            the prompt sits: what goes into the scope and must match exactly.
    """

    prompt: str
    context: list[dict[str, Any]]


def content_text(content: Any) -> str | None:
    """The text of a message content (a str, or a list of parts); None when it has non-text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type") in ("text", "input_text") and "text" in part:
                texts.append(str(part["text"]))
            else:
                return None  # an image, audio or file: not something the embedder can judge
        return "\n".join(texts)
    return None


def canonical_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as it must match: text normalised (whitespace, NFKC), run-specific ids and empty fields dropped.

    Tool-call ids are random per run, so calls match by name and arguments and a
    tool result by its position after the call, not by ``tool_call_id``.

    >>> canonical_message({"role": "tool", "tool_call_id": "call_x", "content": " sunny ", "name": None})
    {'role': 'tool', 'content': 'sunny'}
    """
    out = {k: v for k, v in message.items() if v is not None and k != "tool_call_id"}
    if isinstance(out.get("tool_calls"), list):
        out["tool_calls"] = [
            {k: v for k, v in call.items() if k != "id"} if isinstance(call, Mapping) else call
            for call in out["tool_calls"]
        ]
    text = content_text(out.get("content"))
    if text is not None:
        out["content"] = normalize_prompt(text)
    return out


def split_conversation(messages: Sequence[Mapping[str, Any]]) -> Conversation | None:
    """Split ``messages`` (OpenAI-style role/content dicts) at the last user message.

    Returns:
        The split, or None when there is no user message with text content
        (such a request is not cached).
    """
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
    if last_user is None:
        return None
    prompt = content_text(messages[last_user].get("content"))
    if prompt is None or not prompt.strip():
        return None
    context = [canonical_message(m) for m in messages[:last_user]]
    # Other fields of the prompt message (a speaker ``name``...) must match too.
    extras = {k: v for k, v in messages[last_user].items() if k not in ("role", "content")}
    context.append({**extras, **PROMPT_PLACEHOLDER})
    context.extend(canonical_message(m) for m in messages[last_user + 1 :])
    return Conversation(prompt=prompt, context=context)
