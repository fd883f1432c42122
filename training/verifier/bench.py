"""Cost of the verifier on this machine: per candidate, and a whole semantic lookup vs a bare embedding.

    python bench.py [--n 300]

* bare embedding  = ``SentenceTransformer.encode([prompt], normalize_embeddings=True)`` (what semcache's
  embedder calls for one prompt);
* lookup + verifier = one forward pass returning sentence + token vectors (:class:`encoder.Encoder`),
  exact top-2 search over a 2,000-entry scope, the query's side, the nearest entry's stored side
  (int8 tokens decoded; its TextInfo re-derived from the stored prompt text, the conservative case),
  features and tree scoring (:meth:`model.Verifier.decide`).

The two are interleaved prompt by prompt (the machine is shared), each prompt timed once per path after
a warm-up; p50/p90 reported.  Also: the verifier's part alone, per candidate, and bytes stored per entry.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from encoder import Encoder, normalize_prompt

from semcache._cache.verifier.features import TextInfo, context_features, pair_features
from semcache._cache.verifier.model import Verifier
from semcache._quality import pairs as pairsets


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, q))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    import torch

    print(f"torch threads {torch.get_num_threads()}")
    v = Verifier.load()
    enc = Encoder()
    st = enc.model
    # the scope: the LLM test split's cached prompts (so queries have their real nearest entry) + other prompts
    own = sorted({normalize_prompt(p.first) for p in pairsets.load("llm", "test")})
    other = sorted({normalize_prompt(p.first) for s in ("llm", "qqp") for p in pairsets.load(s, "train")})
    entries_text = own + other[: 2000 - len(own)]
    queries = [normalize_prompt(p.second) for p in pairsets.load("llm", "test")][: args.n]
    stored = enc.encode(entries_text)
    matrix = np.stack([e.sentence for e in stored])
    sides = [v.entry_side(t, e.tokens, e.ids) for t, e in zip(entries_text, stored)]
    nbytes = np.array([s.stored_bytes for s in sides])
    for q in queries[:20]:  # warm-up
        st.encode([q], normalize_embeddings=True)
        enc.encode_one(q)
    bare, full, ver, feat_only, fwd, search = [], [], [], [], [], []
    for q in queries:
        t0 = time.perf_counter()
        st.encode([q], normalize_embeddings=True)
        t1 = time.perf_counter()
        e = enc.encode_one(q)
        tf = time.perf_counter()
        sims = matrix @ e.sentence
        top = np.argpartition(-sims, 1)[:2]
        top = top[np.argsort(-sims[top])]
        t2 = time.perf_counter()
        qside = v.query_side(q, e.tokens, e.ids)
        cand = []
        for i in top:
            s = sides[i]
            s.info = TextInfo(entries_text[i])  # re-derive from the stored prompt (not memoised)
            cand.append((s, float(sims[i])))
        v.decide(qside, cand)
        t3 = time.perf_counter()
        bare.append(t1 - t0)
        full.append(t3 - t1)
        ver.append(t3 - t2)
        fwd.append(tf - t1)
        search.append(t2 - tf)
        sims_top = [c for _, c in cand]
        t4 = time.perf_counter()
        x = np.concatenate([pair_features(sims_top[0], cand[0][0], qside), context_features(sims_top, 0)])
        v.score(x[None])  # one candidate's features + trees, entry TextInfo already there
        feat_only.append(time.perf_counter() - t4)
    print(f"{len(queries)} LLM test prompts, scope of {len(entries_text)} entries")
    print(f"bare embedding (SentenceTransformer.encode)     p50 {pct(bare, 50):6.2f} ms  p90 {pct(bare, 90):6.2f} ms")
    print(f"lookup incl. verifier (forward+search+verify)   p50 {pct(full, 50):6.2f} ms  p90 {pct(full, 90):6.2f} ms")
    print(f"  of which the forward pass (sentence + tokens) p50 {pct(fwd, 50):6.2f} ms")
    print(f"  of which the exact numpy search (stand-in for the index) p50 {pct(search, 50):6.2f} ms")
    print(f"ratio of p50s, (forward with tokens + verifier) / bare embedding: "
          f"{(np.median(fwd) + np.median(ver)) / np.median(bare):.3f}")
    print(f"ratio of p50s                                   {np.median(full) / np.median(bare):.3f}")
    print(f"verifier part (query side + entry TextInfo + 1 candidate) p50 {pct(ver, 50):.3f} ms  p90 {pct(ver, 90):.3f} ms")
    print(f"verifier per candidate (features + trees, entry info stored) p50 {pct(feat_only, 50):.3f} ms")
    print(f"bytes stored per entry (int8 PCA-{v.codec.dim} content tokens + fp16 scale + uint16 id): "
          f"median {np.median(nbytes):.0f}, p90 {np.percentile(nbytes, 90):.0f}, max {nbytes.max()}")


if __name__ == "__main__":
    main()
