"""End-to-end use of the verifier on a toy scope (store, then look up), through the calls the cache makes.

    python training/verifier/demo.py
"""

from __future__ import annotations

import numpy as np
import paths  # noqa: F401  (puts the checkout on sys.path)

from semcache._cache.verifier.model import shipped_verifier
from semcache.embeddings import SentenceTransformerEmbedding

CACHED = ["How do I enable dark mode on my iPhone?", "What is the capital of Australia?",
          "Convert 5 miles to kilometers.", "How do I reverse a list in Python?",
          "How many legs does a spider have?", "What is the capital of Japan?"]
QUERIES = ["how do i turn on dark mode on iphone", "How do I disable dark mode on my iPhone?",
           "capital city of australia?", "What is the capital of Austria?", "Convert 5 kilometers to miles.",
           "how to reverse a python list", "How do I reverse a list in JavaScript?",
           "how many legs do spiders have", "what's the capital of japan", "What is the capital of France?"]


def main() -> None:
    verifier, embedder = shipped_verifier(), SentenceTransformerEmbedding()
    threshold = verifier.serving_threshold("default")
    vectors, tokens = embedder.embed_with_tokens(CACHED)  # store time: one pass per prompt
    stored = [verifier.entry_data(t) for t in tokens]  # kept with each entry
    for query in QUERIES:
        vector, query_tokens = embedder.embed_one_with_tokens(query)  # lookup: the same pass gives both
        sims = vectors @ vector
        top = [int(i) for i in np.argsort(-sims)[:2]]
        entry = verifier.entry_side(CACHED[top[0]], stored[top[0]])
        score = verifier.score_candidate(verifier.query_side(query, query_tokens), entry, float(sims[top[0]]),
                                         [float(sims[i]) for i in top])
        verdict = f"HIT {CACHED[top[0]]!r}" if score >= threshold else "miss"
        print(f"{query!r:48} cos {sims[top[0]]:.3f} score {score:.3f} -> {verdict}")


if __name__ == "__main__":
    main()
