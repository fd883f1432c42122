"""Choose features and settings by cross-validation on the fitting data; the test splits are never read.

    python training/verifier/crossval.py [--drop NAME ...] [--hgb key=value ...]

The dev splits alone are small (388 LLM queries, 193 GPTCache ones: one wrong hit is 0.26% and
0.52%), too small to tell 0.3% from 1% apart.  So the LLM-style and GPTCache sets are read here as
one cache each over their train + dev splits, cut in 5 folds (LLM by group, GPTCache by pair id,
hashed), and every query is scored by a model fitted without its fold (plus the public sets' train
splits): out-of-fold scores over ~1,500 LLM and ~800 GPTCache queries.  The public sets are scored
on their dev split by a model fitted on everything here.

Printed: per set, the best right rate at a wrong-hit rate <= 0.3% / 1% / 3%; the operating points
calibrated on the out-of-fold scores (the rule of :func:`train.calibrate`) with the rates they give;
and each public dev set's ratio of verifier wrong hits to plain cosine's at the same right rate.
``--drop`` zeroes features (an ablation without rebuilding the tables).
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import paths  # noqa: F401  (first: puts the checkout on sys.path)
from build import SETS, SideCache, Table, table
from evaluate import cosine_at_right
from sim import choose, outcome
from train import (
    CALIBRATE_ON,
    HGB,
    TABLE_K,
    build_tables,
    calibrate,
    ensure_encodings,
    fit,
    log,
    out_of_fold,
    pca_basis,
    token_weights,
    train_texts,
)

from semcache._cache.verifier.features import ALL_NAMES, TokenCodec
from semcache._quality import pairs as pairsets

PUBLIC = tuple(s for s in SETS if s not in CALIBRATE_ON)


def best_right(tab: Table, scores: np.ndarray, target: float) -> float:
    """The highest right rate of any threshold on the nearest candidate whose wrong rate stays <= ``target``."""
    mat = tab.matrix(scores)[:, :1]
    allowed = (tab.read.sims[:, :1] >= 0.5) & np.isfinite(mat)
    best = 0.0
    for t in np.unique(mat[np.isfinite(mat)]):
        r = outcome(tab.read, choose(mat, allowed, float(t), "first"))
        if r.wrong_rate <= target:
            best = max(best, r.right_rate)
    return best


def public_ratio(tab: Table, scores: np.ndarray, threshold: float) -> str:
    mat = tab.matrix(scores)[:, :1]
    r = outcome(tab.read, choose(mat, (tab.read.sims[:, :1] >= 0.5) & np.isfinite(mat), threshold, "first"))
    same = cosine_at_right(tab, r.right_rate)
    if same is None or not same[1].wrong:
        return f"right {r.right_rate:.1%} wrong {r.wrong_rate:.2%} (cosine: none)"
    return f"right {r.right_rate:.1%} wrong {r.wrong_rate:.2%} ratio {r.wrong / same[1].wrong:.2f}"


def load_tables(cache: Path | None):
    """(fitting tables, public dev tables), from ``cache`` (a pickle) when given and present."""
    if cache and cache.exists():
        with open(cache, "rb") as handle:
            return pickle.load(handle)
    enc = ensure_encodings()
    texts = train_texts()
    weights = token_weights(enc, texts)
    sides = SideCache(enc, TokenCodec(pca_basis(enc, texts, weights), 8), weights)
    tables = build_tables(enc, sides)
    dev = {s: table(s, pairsets.load(s, "dev"), enc, sides, TABLE_K) for s in PUBLIC}
    if cache:
        with open(cache, "wb") as handle:
            pickle.dump((tables, dev), handle)
    return tables, dev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drop", nargs="*", default=[], help="feature names to zero")
    ap.add_argument("--hgb", nargs="*", default=[], help="HGB overrides, key=value")
    ap.add_argument("--tables", type=Path, help="a pickle of the tables, written when absent (features unchanged)")
    args = ap.parse_args()
    hgb = {**HGB, **{k: type(HGB.get(k, 0.0))(v) for k, v in (o.split("=") for o in args.hgb)}}
    tables, dev = load_tables(args.tables)
    drop = [ALL_NAMES.index(n) for n in args.drop]
    for tab in [*tables.pool.values(), *tables.public.values(), *dev.values()]:
        tab.X[:, drop] = 0.0
    log(f"tables ready; dropped {args.drop or 'nothing'}; HGB {hgb}")
    oof = out_of_fold(tables, hgb)
    clf = fit(tables.parts(), hgb)
    for s, tab in tables.pool.items():
        q, pos = len(tab.read.pairs), tab.read.positives
        print(f"{s} out-of-fold ({q} queries, {pos} duplicates): best right at wrong <= 0.3% / 1% / 3%: "
              + " / ".join(f"{best_right(tab, oof[s], t):.1%}" for t in (0.003, 0.01, 0.03)))
    points, rows = calibrate(tables.pool, oof)
    dev_scores = {s: clf.predict_proba(dev[s].X.astype(np.float64))[:, 1] for s in PUBLIC}
    for name, t in points.items():
        row = next((r for r in rows if r["threshold"] == t), None)
        rates = "; ".join(f"{s} right {row[s]['right_rate']:.1%} wrong {row[s]['wrong_rate']:.2%}"
                          for s in CALIBRATE_ON) if row else "none"
        print(f"point {name} {t:.3f}: {rates}")
        print("    public dev: " + "; ".join(f"{s} {public_ratio(dev[s], dev_scores[s], t)}" for s in PUBLIC))


if __name__ == "__main__":
    main()
