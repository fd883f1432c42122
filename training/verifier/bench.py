"""Cost of the verifier on this machine: a whole semantic lookup with the verifier vs a bare embedding.

    python training/verifier/bench.py [--n 400] [--scope 2000]

Both paths use the package's own pieces, as the cache calls them:

* bare embedding = ``SentenceTransformerEmbedding.embed_one(prompt)`` (memo off), what a lookup pays today
  before it searches;
* lookup with the verifier = ``embed_one_with_tokens`` (the same forward pass, also returning the word
  pieces), ``VectorIndex.search(vector, 2)`` over an HNSW index of ``--scope`` entries (the package's
  index), then ``Verifier.query_side``, ``Verifier.entry_side`` of the nearest entry (its stored bytes
  decoded and its lexical info re-derived from the stored prompt: nothing memoised) and
  ``Verifier.score_candidate``.

The two paths are interleaved prompt by prompt (the machine is shared) after a warm-up; p50/p90/p99
are reported, with the verifier's part alone and the bytes an entry stores for it.  The scope is the
LLM test split's cached prompts (so queries meet their real nearest entry) plus other train prompts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import paths  # noqa: F401  (puts the checkout on sys.path, names the data)

from semcache._cache.cache import normalize_prompt
from semcache._cache.verifier.model import Verifier
from semcache._engine.index import VectorIndex
from semcache._quality import pairs as pairsets
from semcache.embeddings import SentenceTransformerEmbedding


def pct(seconds: list[float], q: float) -> float:
    """The ``q``-th percentile of ``seconds``, in milliseconds."""
    return float(np.percentile(np.array(seconds) * 1000, q))


def line(label: str, seconds: list[float]) -> str:
    return f"{label:58} p50 {pct(seconds, 50):6.2f} ms  p90 {pct(seconds, 90):6.2f} ms  p99 {pct(seconds, 99):6.2f} ms"


def scope_prompts(size: int) -> list[str]:
    own = sorted({normalize_prompt(p.first) for p in pairsets.load("llm", "test")})
    other = sorted({normalize_prompt(p.first) for s in ("llm", "qqp") for p in pairsets.load(s, "train")})
    return own + other[: size - len(own)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="queries timed")
    ap.add_argument("--scope", type=int, default=2000, help="cached entries searched")
    args = ap.parse_args()
    import torch

    verifier = Verifier.load()
    embedder = SentenceTransformerEmbedding(memo_size=0)
    cached = scope_prompts(args.scope)
    vectors, tokens = embedder.embed_with_tokens(cached)
    index = VectorIndex(embedder.dim)
    stored = {index.add(v): (text, verifier.entry_data(t)) for v, text, t in zip(vectors, cached, tokens, strict=True)}
    threshold = verifier.serving_threshold("default")
    queries = [normalize_prompt(p.second) for p in pairsets.load("llm", "test")][: args.n]
    for q in queries[:20]:  # warm-up
        embedder.embed_one(q)
        embedder.embed_one_with_tokens(q)
    bare, lookup, verify, hits = [], [], [], 0
    for q in queries:
        t0 = time.perf_counter()
        embedder.embed_one(q)
        t1 = time.perf_counter()
        vector, query_tokens = embedder.embed_one_with_tokens(q)
        found = index.search(vector, 2)
        t2 = time.perf_counter()
        label, similarity = found[0]
        text, data = stored[label]
        score = verifier.score_candidate(verifier.query_side(q, query_tokens), verifier.entry_side(text, data),
                                         similarity, [s for _, s in found])
        hits += score >= threshold
        t3 = time.perf_counter()
        bare.append(t1 - t0)
        lookup.append(t3 - t1)
        verify.append(t3 - t2)
    nbytes = np.array([len(data) for _, data in stored.values()])
    print(f"torch threads {torch.get_num_threads()}; {len(queries)} LLM test prompts; HNSW scope of {len(cached)} "
          f"entries; {hits} served at the default point")
    print(line("bare embedding (embed_one)", bare))
    print(line("lookup: embed_one_with_tokens + search(k=2) + verifier", lookup))
    print(line("  of which the verifier (both sides + 1 candidate)", verify))
    print(f"ratio of p50s, lookup with the verifier / bare embedding: {np.median(lookup) / np.median(bare):.3f}")
    print(f"bytes stored per entry for the verifier: median {np.median(nbytes):.0f}, "
          f"p90 {np.percentile(nbytes, 90):.0f}, max {nbytes.max()}")


if __name__ == "__main__":
    main()
