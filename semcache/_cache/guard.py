"""The hit guard: a cheap lexical check that vetoes semantic hits embeddings get wrong.

Sentence embeddings place "How do I enable dark mode?" and "How do I disable
dark mode?" very close together, yet the cached answer to one is wrong for the
other.  Before a semantic (not exact) hit is served, :func:`conflict` compares
the two prompts and names the first reason they need different answers:

* ``numbers``: they mention different numbers ("2+2" vs "2+3", "in 2019" vs
  "in 2020"); "1,000", "1k" and "1000" are the same number, and so are "two" and "2";
* ``negation``: one is negated and the other is not, and otherwise they share
  most of their words (a reworded paraphrase may swap "without X" for "no X");
* ``antonym``: one uses a word whose opposite the other uses (enable/disable...);
* ``entity``: each names a proper noun or term the other lacks ("Python" vs
  "Rust"); spelling variants ("Hilary"/"Hillary", "Jack-Jack"/"Jack Jack",
  "Newton's"/"Newtons") and acronyms ("ML"/"Machine Learning") are no conflict.

It only vetoes; it never turns a miss into a hit.  Its cost in right hits and
its gain in wrong hits are measured with the threshold (``semcache calibrate``,
see docs/guides/threshold.md): each rule above was kept or loosened by what it
did on the three labelled datasets of ``../shared/data``.

>>> conflict("How do I enable dark mode?", "How can I enable the dark mode?") is None
True
>>> conflict("How do I enable dark mode?", "How do I disable dark mode?")
'antonym'
>>> conflict("How to read a file in Python?", "How to read a file in Rust?")
'entity'
>>> conflict("What is 2+2?", "What is 2+3?")
'numbers'
>>> conflict("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?")
'negation'
>>> conflict("Are mediums real or not?", "Are mediums real?") is None
True
>>> conflict("Why do people dislike Hilary Clinton?", "Why do people dislike Hillary Clinton?") is None
True
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#.\-']*[A-Za-z0-9+#]|[A-Za-z]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*k?\b|\d+(?:[.,]\d+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
# Phrases that look negated but ask both ways ("Is it true or not?") or are not
# negations at all ("roll no. 1").
_NOT_NEGATIONS = re.compile(r"\b(?:or not|or no|why not|no\.(?=\s*\d))", re.IGNORECASE)

NEGATIONS = frozenset(
    "not no never none nobody nothing neither nor cannot can't don't doesn't didn't isn't aren't wasn't "
    "weren't won't wouldn't shouldn't couldn't hasn't haven't hadn't without absence lack lacks lacking "
    "cant dont doesnt didnt isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt".split()
)
_NEGATING_PREFIXES = ("non-", "no-")
# Share of words (negations and stopwords aside) two prompts must have in common
# before a negation difference counts: a reworded paraphrase often trades
# "without any code" for "no-code", a hard negative only inserts a "not".
NEGATION_MIN_OVERLAP = 0.5

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

_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "_ _ two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
    if word != "_"  # "one" is more often a pronoun ("which one is better?") than a number
}

# Capitalised words that say nothing about the topic.
_STOP_CAPITALS = frozenset(
    "i i'm i've i'd what how why when where who which can could should would is are was were do does did "
    "the a an please tell explain give write list describe yes no also however then if in on for to and "
    "or but it this that these those there you we my your our their its".split()
)
# Words that carry little meaning, left out when comparing word overlap.
_STOPWORDS = _STOP_CAPITALS | frozenset("of at by with from as be been has have had will about into than so".split())
_ENTITY_SPLIT = re.compile(r"[.!?:;()\[\]\"\n]\s*|" + _WORD.pattern)


def _clean(text: str) -> str:
    return text.translate(_APOSTROPHES)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _numbers(text: str, words: set[str]) -> Counter[str]:
    """Numbers as written ("1,000" and "1k" both become "1000"), plus number words."""
    found: Counter[str] = Counter()
    for raw in _NUMBER.findall(text):
        number = raw.replace(",", "")
        if number.endswith("k"):
            number = str(int(float(number[:-1]) * 1000))
        found[number] += 1
    for word in words & _NUMBER_WORDS.keys():
        found[_NUMBER_WORDS[word]] += 1
    return found


def _negated(text: str, words: set[str]) -> bool:
    if words.isdisjoint(NEGATIONS) and not any(word.startswith(_NEGATING_PREFIXES) for word in words):
        return False
    stripped = {w.lower() for w in _words(_NOT_NEGATIONS.sub(" ", text))}
    return not stripped.isdisjoint(NEGATIONS) or any(word.startswith(_NEGATING_PREFIXES) for word in stripped)


def _overlap(old_words: set[str], new_words: set[str]) -> float:
    """Jaccard overlap of the meaningful words (negations and stopwords aside)."""
    old = old_words - NEGATIONS - _STOPWORDS
    new = new_words - NEGATIONS - _STOPWORDS
    return len(old & new) / len(old | new) if old | new else 1.0


def _squash(token: str) -> str:
    """Lowercase letters and digits only, possessive dropped: "Newton's" -> "newton"."""
    token = token.lower()
    if token.endswith("'s"):
        token = token[:-2]
    return re.sub(r"[^a-z0-9+#]", "", token)


def _entities(text: str) -> set[str]:
    """Proper nouns and technical terms: capitalised words not opening a sentence, or mixed-case/symbol terms."""
    found = set()
    sentence_start = True
    for match in _ENTITY_SPLIT.finditer(text):
        token = match.group(0)
        if not token[0].isalpha():
            sentence_start = True
            continue
        distinctive = any(ch in token for ch in "+#") or (token[0].isupper() and not sentence_start)
        if distinctive and token.lower() not in _STOP_CAPITALS:
            found.add(token)
        sentence_start = False
    return found


def _one_edit_apart(a: str, b: str) -> bool:
    """True when one insertion, deletion or substitution turns ``a`` into ``b``."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return a == b
    if len(a) > len(b):
        a, b = b, a
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return a[i + 1 :] == b[i + 1 :] if len(a) == len(b) else a[i:] == b[i + 1 :]
    return True


class _Vocabulary:
    """The words of one prompt, in the forms an entity of the other prompt may take there."""

    def __init__(self, text: str) -> None:
        tokens = _words(text)
        squashed = [_squash(token) for token in tokens]
        # Runs of up to three adjacent words: "Hugging Face" matches "HuggingFace", "Jack Jack" "Jack-Jack".
        self.runs = {"".join(squashed[i : i + n]) for n in (1, 2, 3) for i in range(len(squashed))}
        # Acronyms it spells out: initials of capitalised word runs ("Machine Learning" -> "ml")
        # and capitals inside one word ("TypeScript" -> "ts").
        self.acronyms = {"".join(ch for ch in token if ch.isupper()).lower() for token in tokens}
        capitals = [token for token in tokens if token[0].isupper()]
        for i in range(len(capitals)):
            for n in (2, 3, 4):
                self.acronyms.add("".join(token[0] for token in capitals[i : i + n]).lower())

    def knows(self, entity: str) -> bool:
        key = _squash(entity)
        if not key or key in self.runs or key.rstrip("s") in self.runs or key + "s" in self.runs:
            return True
        if entity.isupper() and 2 <= len(entity) <= 5 and key in self.acronyms:
            return True
        # "Pythonic" knows "Python" (a derived form), but "JavaScript" does not know "Java".
        if any(
            key[len(key) - len(suffix) :] == suffix and len(key) - len(suffix) >= 4 and key[: -len(suffix)] in self.runs
            for suffix in _DERIVATIONS
        ):
            return True
        return len(key) >= 6 and any(_one_edit_apart(key, run) for run in self.runs if abs(len(run) - len(key)) <= 1)


_DERIVATIONS = ("s", "es", "ic", "ian", "ish", "ese", "an", "n")


def conflict(cached_prompt: str, new_prompt: str) -> str | None:
    """Why a cached answer for ``cached_prompt`` must not serve ``new_prompt``, or None."""
    old_text, new_text = _clean(cached_prompt), _clean(new_prompt)
    old_words = {w.lower() for w in _words(old_text)}
    new_words = {w.lower() for w in _words(new_text)}
    old_numbers, new_numbers = _numbers(old_text, old_words), _numbers(new_text, new_words)
    if old_numbers != new_numbers:
        return "numbers"
    if _negated(old_text, old_words) != _negated(new_text, new_words) and (
        _overlap(old_words, new_words) >= NEGATION_MIN_OVERLAP
    ):
        return "negation"
    for word in old_words - new_words:
        if ANTONYMS.get(word, frozenset()) & (new_words - old_words):
            return "antonym"
    old_vocabulary, new_vocabulary = _Vocabulary(old_text), _Vocabulary(new_text)
    old_only = [e for e in _entities(old_text) if not new_vocabulary.knows(e)]
    new_only = [e for e in _entities(new_text) if not old_vocabulary.knows(e)]
    if old_only and new_only:
        return "entity"
    return None
