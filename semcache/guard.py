"""The hit guard: a cheap lexical check that vetoes semantic hits embeddings get wrong.

Sentence embeddings place "How do I enable dark mode?" and "How do I disable
dark mode?" very close together, yet the cached answer to one is wrong for the
other.  Before a semantic (not exact) hit is served, :func:`conflict` compares
the two prompts and names the first reason they need different answers:

* ``numbers``: they mention different numbers ("2+2" vs "2+3", "in 2019" vs "in 2020");
* ``negation``: one is negated and the other is not;
* ``antonym``: one uses a word whose opposite the other uses (enable/disable...);
* ``entity``: each names a proper noun or term the other lacks ("Python" vs "Rust").

It only vetoes; it never turns a miss into a hit.  Its cost in right hits is
measured with the threshold (``semcache calibrate``) and reported in the README.

>>> conflict("How do I enable dark mode?", "How can I enable the dark mode?") is None
True
>>> conflict("How do I enable dark mode?", "How do I disable dark mode?")
'antonym'
>>> conflict("How to read a file in Python?", "How to read a file in Rust?")
'entity'
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#.\-']*[A-Za-z0-9+#]|[A-Za-z]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

NEGATIONS = frozenset(
    "not no never none nobody nothing neither nor cannot can't don't doesn't didn't isn't aren't wasn't "
    "weren't won't wouldn't shouldn't couldn't hasn't haven't hadn't without".split()
)

_ANTONYM_PAIRS = """
enable disable  enabled disabled  add remove  increase decrease  start stop  open close  on off
before after  max min  maximum minimum  buy sell  import export  encrypt decrypt  upload download
install uninstall  include exclude  allow deny  accept reject  true false  win lose  positive negative
highest lowest  best worst  first last  push pull  lock unlock  connect disconnect  encode decode
compress decompress  serialize deserialize  ascending descending  more less  larger smaller
bigger smaller  faster slower  cheap expensive  cheapest expensive  hot cold  north south  east west
left right  male female  love hate  inner outer  upper lower  input output  send receive
create delete  show hide  mount unmount  subscribe unsubscribe  login logout  sync async
synchronous asynchronous  success failure  internal external  public private  client server
horizontal vertical  minimum maximum  advantages disadvantages  pros cons  above below  under over
inside outside  import export  rise fall  gain loss  profit loss  young old  long short  dark light
""".split()
ANTONYMS: dict[str, frozenset[str]] = {}
for _a, _b in zip(_ANTONYM_PAIRS[::2], _ANTONYM_PAIRS[1::2], strict=True):
    ANTONYMS[_a] = ANTONYMS.get(_a, frozenset()) | {_b}
    ANTONYMS[_b] = ANTONYMS.get(_b, frozenset()) | {_a}

# Capitalised words that say nothing about the topic.
_STOP_CAPITALS = frozenset(
    "i i'm i've what how why when where who which can could should would is are do does did the a an "
    "please tell explain give write list describe".split()
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _entities(text: str) -> set[str]:
    """Proper nouns and technical terms: capitalised words not opening a sentence, or mixed-case/symbol terms."""
    found = set()
    sentence_start = True
    for match in re.finditer(r"[.!?]\s+|" + _WORD.pattern, text):
        token = match.group(0)
        if not token[0].isalpha():
            sentence_start = True
            continue
        lowered = token.lower()
        distinctive = any(ch in token for ch in "+#") or (token[0].isupper() and not sentence_start)
        if distinctive and lowered not in _STOP_CAPITALS:
            found.add(lowered)
        sentence_start = False
    return found


def conflict(cached_prompt: str, new_prompt: str) -> str | None:
    """Why a cached answer for ``cached_prompt`` must not serve ``new_prompt``, or None."""
    old_words = {w.lower() for w in _words(cached_prompt)}
    new_words = {w.lower() for w in _words(new_prompt)}
    if set(_NUMBER.findall(cached_prompt)) != set(_NUMBER.findall(new_prompt)):
        return "numbers"
    if bool(old_words & NEGATIONS) != bool(new_words & NEGATIONS):
        return "negation"
    for word in old_words - new_words:
        if ANTONYMS.get(word, frozenset()) & (new_words - old_words):
            return "antonym"
    old_entities, new_entities = _entities(cached_prompt), _entities(new_prompt)
    if (old_entities - new_words) and (new_entities - old_words):
        return "entity"
    return None
