"""The entry points: ``wrap(client)`` and ``@semantic_cache``, both over an :class:`~._core.OpenAICache`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Collection
from typing import Any

from semcache._cache.cache import Scope, SemanticCache
from semcache.errors import ConfigurationError, InvalidInputError

from ._core import OpenAICache

__all__ = ["semantic_cache", "wrap"]

log = logging.getLogger("semcache.integrations.openai")


class _Proxy:
    """``target`` with some attributes replaced; everything else is the target's."""

    def __init__(self, target: Any, overrides: dict[str, Any]) -> None:
        self._target = target
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        overrides = self.__dict__.get("_overrides", {})
        if name in overrides:
            return overrides[name]
        return getattr(self.__dict__["_target"], name)

    def __repr__(self) -> str:
        return f"<semcache cached {self._target!r}>"


def _kwargs_request(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The request of a client's ``create()`` call: its keyword arguments."""
    if args:
        raise InvalidInputError("the OpenAI client's create() takes keyword arguments only")
    return kwargs


def wrap(client: Any, cache: SemanticCache | None = None, **options: Any) -> Any:
    """A client whose ``chat.completions.create`` (and ``responses.create``) is cached.

    Works with ``openai.OpenAI`` and ``openai.AsyncOpenAI`` (and Azure clients);
    every other attribute is the wrapped client's.  The adapter is
    ``wrapped.semcache`` (its ``stats``, ``flush()``).

    Args:
        client: the OpenAI client.
        cache: the :class:`~semcache.SemanticCache` to use (default: an embedded one).
        **options: ``threshold``, ``scope``, ``ttl``, ``sampling``, ``write_behind``,
            ``memo_size`` (see :class:`OpenAICache`).

    Raises:
        ConfigurationError: ``client`` has no ``chat.completions.create``.
    """
    completions = getattr(getattr(client, "chat", None), "completions", None)
    if completions is None or not callable(getattr(completions, "create", None)):
        raise ConfigurationError(f"wrap() needs an OpenAI client, got {type(client).__name__}")
    core = options.pop("core", None) or OpenAICache(cache, **options)
    chat = _Proxy(
        client.chat,
        {
            "completions": _Proxy(
                completions, {"create": core.wrap_call(completions.create, "chat.completions", _kwargs_request)}
            )
        },
    )
    overrides: dict[str, Any] = {"chat": chat, "semcache": core}
    responses = getattr(client, "responses", None)
    if responses is not None and callable(getattr(responses, "create", None)):
        overrides["responses"] = _Proxy(
            responses, {"create": core.wrap_call(responses.create, "responses", _kwargs_request)}
        )
    if callable(getattr(client, "with_options", None)):
        overrides["with_options"] = lambda **kw: wrap(client.with_options(**kw), core=core)
    return _Proxy(client, overrides)


def semantic_cache(
    fn: Callable[..., Any] | None = None,
    *,
    cache: SemanticCache | None = None,
    threshold: float | None = None,
    scope: Scope = None,
    prompt_arg: str | None = None,
    exclude_args: Collection[str] = ("self", "cls"),
    **options: Any,
) -> Any:
    """Cache a function that calls the OpenAI client, sync or async.

    The function's arguments are the request: a ``messages`` argument is split
    like a chat request (the last user message is matched semantically, the
    rest exactly); otherwise ``prompt_arg`` (default: the first str argument)
    is the prompt.  Every other argument (``model``, ``temperature``...) and
    the function's qualified name form the scope, except ``exclude_args``:
    arguments that do not change the answer, such as ``self`` or a client
    object (an argument that is not JSON-like would make the call uncacheable).  The function may return a
    ``ChatCompletion``, a stream of chunks (when called with ``stream=True``),
    a ``Response``, or any JSON value such as the answer's text.

    >>> from semcache import SemanticCache, SemanticKV
    >>> from semcache.embeddings import HashEmbedding
    >>> calls = []
    >>> @semantic_cache(cache=SemanticCache(SemanticKV(embedding=HashEmbedding())), write_behind=False)
    ... def ask(question: str, model: str = "gpt-4o-mini") -> str:
    ...     calls.append(question)
    ...     return f"answer to {question}"
    >>> ask("What is semcache?"), ask("What is  semcache?"), len(calls)
    ('answer to What is semcache?', 'answer to What is semcache?', 1)

    Args:
        cache: the :class:`~semcache.SemanticCache` (default: an embedded one).
        threshold: the similarity threshold for these calls.
        scope: added to every call's scope.
        prompt_arg: the argument holding the prompt, when there is no ``messages``.
        exclude_args: arguments left out of the scope.
        **options: ``ttl``, ``sampling``, ``write_behind``, ``memo_size`` (see :class:`OpenAICache`).
    """

    def decorate(function: Callable[..., Any]) -> Any:
        request_of = _FunctionRequest(function, prompt_arg=prompt_arg, exclude_args=exclude_args)
        core = OpenAICache(cache, threshold=threshold, scope=scope, **options)
        return core.wrap_call(function, "function", request_of)

    return decorate(fn) if fn is not None else decorate


class _FunctionRequest:
    """A decorated function's arguments as a request: the prompt, the scope parameters, the function's name.

    Raises:
        ConfigurationError: at decoration, when the signature makes it certain
            that no call can carry a prompt (``prompt_arg`` names no parameter
            or an excluded one; no parameter other than ``exclude_args`` and no
            ``**kwargs``).  When it only turns out at call time (no str
            argument), the call goes upstream uncached, counted in
            ``stats.bypassed``, with one WARNING per decorated function.
    """

    def __init__(self, function: Callable[..., Any], *, prompt_arg: str | None, exclude_args: Collection[str]) -> None:
        self._signature = inspect.signature(function)
        self._name = f"{function.__module__}.{function.__qualname__}"
        self._prompt_arg = prompt_arg
        self._exclude_args = exclude_args
        self._warned = False
        self._check_prompt_source()

    def _check_prompt_source(self) -> None:
        """Refuse, at decoration, a signature with which no call can carry a prompt."""
        kinds = {name: param.kind for name, param in self._signature.parameters.items()}
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        named = {name for name, kind in kinds.items() if kind not in variadic}  # *args is a list: never the prompt
        open_keywords = inspect.Parameter.VAR_KEYWORD in kinds.values()  # any name may come in **kwargs
        where = f"@semantic_cache on {self._name}"
        if self._prompt_arg is not None and self._prompt_arg in self._exclude_args:
            raise ConfigurationError(f"{where}: prompt_arg={self._prompt_arg!r} is also in exclude_args")
        if self._prompt_arg is not None and self._prompt_arg not in named and not open_keywords:
            raise ConfigurationError(f"{where}: prompt_arg={self._prompt_arg!r} is not one of its parameters")
        if self._prompt_arg is None and not (named - set(self._exclude_args)) and not open_keywords:
            raise ConfigurationError(
                f"{where}: the function takes no argument that could hold the prompt (a str, or messages); "
                "it could never be cached"
            )

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        request: dict[str, Any] = {}
        for param, value in bound.arguments.items():
            kind = self._signature.parameters[param].kind
            if param in self._exclude_args:
                continue
            if kind is inspect.Parameter.VAR_KEYWORD:
                request.update((k, v) for k, v in value.items() if k not in self._exclude_args)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                request[f"*{param}"] = list(value)
            else:
                request[param] = value
        if "messages" not in request:
            key = self._prompt_arg or next((p for p, v in request.items() if isinstance(v, str)), None)
            if key is None or not isinstance(request.get(key), str):
                self._warn_no_prompt()
                return {"function": self._name}  # no prompt: not cacheable
            request["prompt"] = request.pop(key)
        request["function"] = self._name
        return request

    def _warn_no_prompt(self) -> None:
        """Say once that calls without a prompt go upstream uncached, and how to name the prompt."""
        if self._warned:
            return
        self._warned = True  # once: every such call would say the same
        log.warning(
            "semcache: %s was called without a str argument to use as the prompt (and no messages); "
            "such calls go upstream uncached (stats.bypassed). Name the prompt's argument with prompt_arg=...",
            self._name,
        )
