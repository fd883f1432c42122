"""A local OpenAI-compatible HTTP server for tests, examples and benchmarks.

It speaks enough of the OpenAI REST API for the real ``openai`` client and
``langchain_openai.ChatOpenAI`` to work against it unchanged:

* ``POST /v1/chat/completions``: plain or streamed (server-sent events ending
  with ``data: [DONE]``); a function tool call when the request offers
  ``tools`` (streamed as tool-call deltas when ``stream`` is true);
* ``POST /v1/responses``: non-streamed text answers;
* ``POST /v1/embeddings``: deterministic bag-of-words vectors (texts sharing
  words are similar), as floats or base64 as the client asks.

Answers are deterministic: the same model and conversation always get the
same text (:func:`fake_answer`), so a test can tell a cached answer from a
fresh one only by the call counters.

Failures are injected two ways: a marker in the last user message, or a flag
on the server (for clients whose prompts a test does not control):

* ``[[error:500]]`` (any status 400-599) or ``server.fail_next(status)``:
  the request fails with an OpenAI-style error body;
* ``[[break-stream]]`` or ``server.break_streams = True``: a streamed answer
  stops after its first chunks and the connection is dropped mid-body.

>>> from openai import OpenAI
>>> with FakeOpenAIServer() as server:
...     client = OpenAI(base_url=server.base_url, api_key="test")
...     reply = client.chat.completions.create(
...         model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
...     reply.choices[0].message.content == fake_answer("gpt-4o-mini", "Hi")
...     server.count("chat.completions")
True
1
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

DEFAULT_EMBEDDING_DIM = 1536
_ERROR_MARKER = re.compile(r"\[\[error:(\d{3})\]\]")
BREAK_MARKER = "[[break-stream]]"
_TOKEN = re.compile(r"\w+", re.UNICODE)
# Streamed text comes in token-like pieces: an optional leading space and up to 4 more characters
# (the adapter replays whole words with their trailing space: the two must not share a chunker).
_STREAM_PIECE = re.compile(r"\s?\S{1,4}|\s+")
_ARGUMENTS_PIECE = 7  # characters of tool-call arguments per streamed delta
_ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
}


class UpstreamError(Exception):
    """A failure to answer with: an HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, kind: str = "server_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def fake_answer(model: str, question: str, history: str = "") -> str:
    """The answer the server gives ``model`` for ``question`` after ``history``.

    >>> fake_answer("m", "Hi") == fake_answer("m", "Hi") != fake_answer("n", "Hi")
    True
    """
    digest = hashlib.sha256(f"{model}\x00{history}\x00{question}".encode()).hexdigest()[:8]
    return f"Answer {digest} from {model}: you asked {question.strip()!r}."


def fake_embedding(text: str, dim: int = DEFAULT_EMBEDDING_DIM) -> list[float]:
    """A unit bag-of-words hashing vector: texts sharing words point the same way."""
    vector = np.zeros(dim, dtype=np.float32)
    for token in ["\x00bias", *_TOKEN.findall(text.lower())]:
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        sign = 1.0 if digest[4] & 1 else -1.0
        vector[int.from_bytes(digest[:4], "little") % dim] += sign * (0.1 if token == "\x00bias" else 1.0)
    vector /= np.linalg.norm(vector)
    return [float(x) for x in vector]


def _text_of(content: Any) -> str:
    """The text of a message content: a str or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _split_conversation(messages: list[dict[str, Any]]) -> tuple[str, str, list[dict[str, Any]]]:
    """(history text, last user text, messages after the last user message)."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    question = _text_of(messages[last_user].get("content")) if last_user >= 0 else ""
    history = "\n".join(f"{m.get('role')}: {_text_of(m.get('content'))}" for m in messages[: max(last_user, 0)])
    return history, question, messages[last_user + 1 :]


def _usage(prompt: str, completion: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = len(prompt.split()) + 1, len(completion.split()) + 1
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def stream_chunks(completion: dict[str, Any], *, include_usage: bool = False) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects this server streams for ``completion`` (one choice).

    Written from OpenAI's documented stream format, independently of the
    adapter's replay (:mod:`semcache.integrations.openai`), so the tests compare
    the adapter's reassembly and replay against it: an opening delta with the
    role (``content`` ``""`` for text; ``None`` and the first call's id, type and
    name for a tool call), the text in token-like pieces or each call's
    arguments in pieces, an empty delta with the finish reason; with
    ``include_usage``, every chunk carries ``"usage": None`` and a last chunk
    with no choices carries the usage.

    >>> done = {"id": "c1", "created": 1, "model": "m", "system_fingerprint": None, "usage": None,
    ...         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"},
    ...                      "finish_reason": "stop"}]}
    >>> [(c["choices"][0]["delta"].get("content"), c["choices"][0]["finish_reason"]) for c in stream_chunks(done)]
    [('', None), ('Hi', None), (' ther', None), ('e', None), (None, 'stop')]
    """
    (choice,) = completion["choices"]
    message = choice["message"]
    calls = message.get("tool_calls") or []
    opening: dict[str, Any] = {"role": "assistant", "content": None if calls else "", "refusal": None}
    deltas: list[dict[str, Any]] = [{"content": piece} for piece in _STREAM_PIECE.findall(message.get("content") or "")]
    for position, call in enumerate(calls):
        header = {"index": position, "id": call["id"], "type": "function"}
        header["function"] = {"name": call["function"]["name"], "arguments": ""}
        if position == 0:
            opening["tool_calls"] = [header]
        else:
            deltas.append({"tool_calls": [header]})
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), _ARGUMENTS_PIECE):
            piece = {"index": position, "function": {"arguments": arguments[start : start + _ARGUMENTS_PIECE]}}
            deltas.append({"tool_calls": [piece]})
    head = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    if include_usage:
        head["usage"] = None
    ends = [None] * (len(deltas) + 1) + [choice["finish_reason"]]  # the finish reason comes with an empty delta
    chunks = [
        {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": end}]}
        for delta, end in zip([opening, *deltas, {}], ends, strict=True)
    ]
    if include_usage:
        chunks.append({**head, "choices": [], "usage": completion["usage"]})
    return chunks


class _QuietHTTPServer(ThreadingHTTPServer):
    """Clients dropping a connection (a broken or abandoned stream) is expected here, not worth a traceback."""

    request_queue_size = 256  # the default 5 resets connections when a gateway opens dozens at once
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 in a background thread.

    Args:
        port: the port to bind; 0 picks a free one.
        latency: seconds each request waits before answering (simulates a slow model).

    Attributes:
        calls: requests answered (including injected errors), by endpoint
            (``"chat.completions"``, ``"responses"``, ``"embeddings"``).
        model_calls: the same, by ``(endpoint, model)``.
        requests: the JSON body of every request, in arrival order.
        authorizations: the ``Authorization`` header of every POST, in the same order (None when absent).
        break_streams: when true, every streamed answer breaks mid-way.
    """

    def __init__(self, port: int = 0, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.calls: Counter[str] = Counter()
        self.model_calls: Counter[tuple[str, str]] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.break_streams = False
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._sequence = 0
        self._httpd = _QuietHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The URL to give a client as ``base_url``: ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- control
    def count(self, endpoint: str | None = None, model: str | None = None) -> int:
        """Requests received, optionally only those to ``endpoint`` and/or for ``model``."""
        with self._lock:
            if model is None:
                return sum(self.calls.values()) if endpoint is None else self.calls[endpoint]
            return sum(n for (ep, m), n in self.model_calls.items() if m == model and endpoint in (None, ep))

    def reset(self) -> None:
        """Forget counters, recorded requests and pending injected failures."""
        with self._lock:
            self.calls.clear()
            self.model_calls.clear()
            self.requests.clear()
            self.authorizations.clear()
            self._failures.clear()
            self.break_streams = False

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        """Make the next ``times`` requests fail with HTTP ``status``."""
        with self._lock:
            self._failures.extend([status] * times)

    # ------------------------------------------------------------- handling
    def _record(self, endpoint: str, body: dict[str, Any], authorization: str | None = None) -> int | None:
        """Count a request; return the status of an injected failure, if one is due."""
        model = str(body.get("model", ""))
        with self._lock:
            self.authorizations.append(authorization)
            self.calls[endpoint] += 1
            self.model_calls[(endpoint, model)] += 1
            self.requests.append(body)
            self._sequence += 1
            return self._failures.pop(0) if self._failures else None

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._sequence += 1
            return f"{prefix}-fake{self._sequence:06d}"

    def chat_completion(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The answer to a chat request: the full completion and its stream chunks."""
        model = _require(body, "model", str)
        messages = _require(body, "messages", list)
        history, question, after = _split_conversation(messages)
        _check_markers(question)
        completion_id, created = self._next_id("chatcmpl"), int(time.time())
        tools = body.get("tools") or []
        tool_choice = body.get("tool_choice", "auto")
        tool_results = [m for m in after if m.get("role") == "tool"]
        if tools and tool_choice != "none" and not tool_results:
            message, finish = self._tool_call_message(tools, tool_choice, question, completion_id), "tool_calls"
        else:
            if tool_results:
                question = f"{question} (tool said: {_text_of(tool_results[-1].get('content'))})"
            message, finish = {"role": "assistant", "content": fake_answer(model, question, history)}, "stop"
        usage = _usage(history + " " + question, message.get("content") or "")
        completion = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return completion, stream_chunks(completion, include_usage=include_usage)

    def _tool_call_message(
        self, tools: list[dict[str, Any]], tool_choice: Any, question: str, completion_id: str
    ) -> dict[str, Any]:
        functions = [t.get("function", {}) for t in tools if t.get("type") == "function"]
        if isinstance(tool_choice, dict):
            wanted = tool_choice.get("function", {}).get("name")
            functions = [f for f in functions if f.get("name") == wanted] or functions
        if not functions:
            raise UpstreamError(400, "tools must contain at least one function", "invalid_request_error")
        function = functions[0]
        properties = list((function.get("parameters") or {}).get("properties") or {"query": {}})
        arguments = json.dumps({properties[0]: question})
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{hashlib.sha256(completion_id.encode()).hexdigest()[:12]}",
                    "type": "function",
                    "function": {"name": function.get("name", "tool"), "arguments": arguments},
                }
            ],
        }

    def response(self, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to a ``/v1/responses`` request (text output only)."""
        model = _require(body, "model", str)
        raw = body.get("input")
        if isinstance(raw, str):
            messages = [{"role": "user", "content": raw}]
        elif isinstance(raw, list):
            messages = [m for m in raw if isinstance(m, dict) and "role" in m]
        else:
            raise UpstreamError(400, "input must be a string or a list of messages", "invalid_request_error")
        if body.get("instructions"):
            messages.insert(0, {"role": "system", "content": body["instructions"]})
        if body.get("stream"):
            raise UpstreamError(400, "the fake server does not stream /v1/responses", "invalid_request_error")
        history, question, _ = _split_conversation(messages)
        _check_markers(question)
        text = fake_answer(model, question, history)
        usage = _usage(history + " " + question, text)
        return {
            "id": self._next_id("resp"),
            "object": "response",
            "created_at": time.time(),
            "model": model,
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "id": self._next_id("msg"),
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
                "total_tokens": usage["total_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """Deterministic vectors for ``/v1/embeddings``."""
        model = _require(body, "model", str)
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise UpstreamError(400, "input must be a string or a non-empty list of strings", "invalid_request_error")
        for text in texts:
            _check_markers(text)
        dim = body.get("dimensions") or DEFAULT_EMBEDDING_DIM
        if not isinstance(dim, int) or dim < 2:
            raise UpstreamError(400, "dimensions must be an int >= 2", "invalid_request_error")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = fake_embedding(text, dim)
            encoded: Any = (
                base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii") if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(t.split()) + 1 for t in texts)
        return {
            "object": "list",
            "model": model,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


@dataclass(frozen=True)
class Endpoint:
    """Where an example sends its OpenAI calls.

    Attributes:
        base_url: the API URL (None: the client's default, OpenAI itself).
        api_key: the key to use.
        server: the bundled server when running offline, else None.
    """

    base_url: str | None
    api_key: str
    server: FakeOpenAIServer | None

    @property
    def offline(self) -> bool:
        return self.server is not None

    def describe(self) -> str:
        if self.server is None:
            return "[online] OPENAI_API_KEY is set: talking to OpenAI"
        return f"[offline] no OPENAI_API_KEY: using the bundled OpenAI-compatible server at {self.base_url}"


@contextmanager
def openai_endpoint(*, latency: float = 0.2) -> Iterator[Endpoint]:
    """OpenAI itself when ``OPENAI_API_KEY`` is set, else a :class:`FakeOpenAIServer` for the block.

    Args:
        latency: seconds the local server waits per request, so hits and misses look as they would.
    """
    api_key = os.environ.get("OPENAI_API_KEY")
    if api_key:
        yield Endpoint(os.environ.get("OPENAI_BASE_URL"), api_key, None)
        return
    with FakeOpenAIServer(latency=latency) as server:
        yield Endpoint(server.base_url, "offline", server)


def _require(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise UpstreamError(400, f"'{name}' is required and must be a {kind.__name__}", "invalid_request_error")
    return value


def _check_markers(text: str) -> None:
    match = _ERROR_MARKER.search(text)
    if match:
        status = int(match.group(1))
        kind = "invalid_request_error" if status < 500 else "server_error"
        raise UpstreamError(status, f"injected error {status}", kind)


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real clients expect
        # Headers and body go out in separate writes: with Nagle on, a keep-alive answer waits ~40 ms for an ACK.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # quiet: tests read counters, not logs

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/v1/models":
                self._send_json(200, {"object": "list", "data": []})
            else:
                self._send_error(UpstreamError(404, f"no route {self.path}", "invalid_request_error"))

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            endpoint = _ENDPOINTS.get(self.path.split("?", 1)[0].rstrip("/"))
            if endpoint is None:
                self._send_error(UpstreamError(404, f"no route {self.path}", "invalid_request_error"))
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body is not an object")
            except ValueError as exc:
                self._send_error(UpstreamError(400, f"invalid JSON body: {exc}", "invalid_request_error"))
                return
            injected = server._record(endpoint, body, self.headers.get("Authorization"))
            if server.latency:
                time.sleep(server.latency)
            try:
                if injected is not None:
                    raise UpstreamError(injected, f"injected error {injected}")
                if endpoint == "embeddings":
                    self._send_json(200, server.embeddings(body))
                elif endpoint == "responses":
                    self._send_json(200, server.response(body))
                else:
                    completion, chunks = server.chat_completion(body)
                    if body.get("stream"):
                        history, question, _ = _split_conversation(body["messages"])
                        self._send_stream(chunks, broken=server.break_streams or BREAK_MARKER in question)
                    else:
                        self._send_json(200, completion)
            except UpstreamError as exc:
                self._send_error(exc)

        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", server._next_id("req"))
            self.end_headers()
            self.wfile.write(data)

        def _send_error(self, exc: UpstreamError) -> None:
            self._send_json(exc.status, {"error": {"message": str(exc), "type": exc.kind, "param": None, "code": None}})

        def _send_stream(self, chunks: list[dict[str, Any]], *, broken: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
            if broken:
                # Send a little, then drop the connection without the terminating chunk.
                for event in events[:2]:
                    self._write_chunk(event)
                self.wfile.flush()
                self.close_connection = True
                return
            for event in events:
                self._write_chunk(event)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    return Handler
