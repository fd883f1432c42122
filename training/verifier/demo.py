"""End-to-end use of the verifier on a toy scope (store -> lookup), as semcache would call it.

    python demo.py
"""
import numpy as np
from encoder import Encoder

from semcache._cache.verifier.model import Verifier

if __name__ == "__main__":
    v, enc = Verifier.load(), Encoder()
    cached = ["How do I enable dark mode on my iPhone?", "What is the capital of Australia?",
              "Convert 5 miles to kilometers.", "How do I reverse a list in Python?"]
    stored = enc.encode(cached)  # store time: one pass per prompt; keep sentence vector + entry side
    matrix = np.stack([e.sentence for e in stored])
    sides = [v.entry_side(t, e.tokens, e.ids) for t, e in zip(cached, stored)]
    for q in ["how do i turn on dark mode on iphone", "How do I turn off dark mode on my iPhone?",
              "capital city of australia?", "What is the capital of Austria?", "Convert 5 kilometers to miles.",
              "how to reverse a python list", "How do I reverse a list in JavaScript?"]:
        e = enc.encode_one(q)  # lookup: the same forward pass gives the sentence vector and the token vectors
        sims = matrix @ e.sentence
        top = list(np.argsort(-sims)[: int(v.settings["search_k"])])
        cand = [(sides[i], float(sims[i])) for i in top]
        rank = v.decide(v.query_side(q, e.tokens, e.ids), cand)
        served = cached[top[rank]] if rank >= 0 else None
        print(f"{q!r:48} nearest cos {sims[top[0]]:.3f} -> {'HIT ' + repr(served) if served else 'miss'}")
