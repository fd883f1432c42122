"""Read labelled sets as a cache and compare plain cosine, cosine + hit guard, and the verifier.

    python evaluate.py                      # test splits, verifier.npz, Markdown tables on stdout
    python evaluate.py --split dev --candidates 1

Per set (its ``--split`` pairs only; every first text of the split cached, every second looked up,
nearest neighbours over all cached firsts of the split; exact normalised matches are exact hits):

* cosine 0.94 and cosine 0.94 + guard (today's semcache);
* the verifier at each operating point of the file (strict / default / loose);
* for every verifier row, the plain cosine threshold with at least the same right-hit rate
  and fewest wrong hits, and the ratio verifier wrong / cosine wrong ("same right-hit rate");
* for llm: wrong hits per negative kind at the default point.

Rates: right = right hits / duplicate pairs; wrong = wrong hits / all queries.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import paths  # noqa: F401  (first: puts the checkout on sys.path)
from build import SETS, Encodings, SideCache, Table, table
from sim import Rates, choose, cosine_choice, outcome

from semcache._cache.verifier.model import DEFAULT_PATH, Verifier
from semcache._quality import pairs as pairsets

TODAY = 0.94


def cosine_rates(tab: Table, threshold: float, guard: bool = False) -> Rates:
    choice = cosine_choice(tab.read, threshold)
    if guard:
        vetoed = tab.matrix(tab.guard.astype(float), fill=0.0)[:, 0] > 0
        choice = np.where(vetoed, -1, choice)
    return outcome(tab.read, choice)


def cosine_at_right(tab: Table, right_rate: float, guard: bool = False) -> tuple[float, Rates] | None:
    """The cosine threshold whose right rate >= ``right_rate`` with the fewest wrong hits."""
    best = None
    for t in np.unique(tab.read.sims[:, 0]):
        r = cosine_rates(tab, float(t), guard)
        if r.right_rate >= right_rate - 1e-12 and (best is None or r.wrong < best[1].wrong):
            best = (float(t), r)
    return best


def verifier_rates(tab: Table, scores: np.ndarray, threshold: float, v: Verifier, candidates: int) -> Rates:
    mat = tab.matrix(scores)[:, :candidates]
    allowed = (tab.read.sims[:, :candidates] >= float(v.settings["cos_floor"])) & np.isfinite(mat)
    return outcome(tab.read, choose(mat, allowed, threshold, v.settings["rule"]))


TARGETS = (0.003, 0.01, 0.03)


def best_right(tab: Table, scores: np.ndarray, target: float, v: Verifier, candidates: int) -> float:
    """The highest right rate of any score threshold whose wrong rate stays <= ``target``."""
    best = 0.0
    for t in np.unique(scores):
        r = verifier_rates(tab, scores, float(t), v, candidates)
        if r.wrong_rate <= target:
            best = max(best, r.right_rate)
    return best


def fmt(r: Rates) -> str:
    return f"{r.right} / {r.wrong} / {r.misses} | {r.right_rate:.1%} | {r.wrong_rate:.2%}"


def evaluate(name: str, split: str, v: Verifier, enc: Encodings, sides: SideCache, candidates: int) -> str:
    tab = table(name, pairsets.load(name, split), enc, sides, k=5)
    scores = v.score(tab.X) if len(tab.X) else np.zeros(0)
    q, pos = len(tab.read.pairs), tab.read.positives
    ew = int(((tab.read.exact >= 0) & ~tab.read.exact_right()).sum())  # wrong exact hits: no decision avoids them
    out = [f"### {name} / {split}: {q} queries, {pos} duplicates, {len(tab.read.entries)} cached entries, "
           f"{int((tab.read.exact >= 0).sum())} exact hits of which {ew} wrong\n",
           "| decision | right / wrong / miss | right rate | wrong rate | cosine at >= same right rate: "
           "threshold, wrong rate | verifier wrong / cosine wrong | same, semantic hits only |",
           "|---|---|---|---|---|---|---|",
           f"| cosine {TODAY} | {fmt(cosine_rates(tab, TODAY))} | | |",
           f"| cosine {TODAY} + guard | {fmt(cosine_rates(tab, TODAY, True))} | | |"]
    for point, thr in v.operating_points.items():
        r = verifier_rates(tab, scores, thr, v, candidates)
        same = cosine_at_right(tab, r.right_rate)
        if same is None:
            cmp_ = "unreachable | - | -"
        else:
            ratio = r.wrong / same[1].wrong if same[1].wrong else float("inf") if r.wrong else 1.0
            sem = (r.wrong - ew) / (same[1].wrong - ew) if same[1].wrong > ew else float("nan")
            cmp_ = f"{same[0]:.3f}, {same[1].wrong_rate:.2%} | {ratio:.2f} | {sem:.2f}"
        out.append(f"| verifier {point} ({thr:.3f}) | {fmt(r)} | {cmp_} |")
    if name in ("llm", "gptcache"):
        out.append("\nBest right rate at a wrong-hit rate of at most 0.3% / 1% / 3% (any threshold, chosen on this "
                   "split: a model comparison, not an operating point): "
                   + " / ".join(f"{best_right(tab, scores, target, v, candidates):.1%}" for target in TARGETS))
    if name == "llm":
        thr = v.operating_points["default"]
        mat = tab.matrix(scores)[:, :candidates]
        allowed = (tab.read.sims[:, :candidates] >= float(v.settings["cos_floor"])) & np.isfinite(mat)
        choice = choose(mat, allowed, thr, v.settings["rule"])
        kinds: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        exact_right = tab.read.exact_right()
        for i, p in enumerate(tab.read.pairs):
            totals[p.kind] += 1
            exact = tab.read.exact[i] >= 0
            served = exact or choice[i] >= 0
            right = exact_right[i] if exact else (choice[i] >= 0 and tab.read.right[i, choice[i]])
            if served and not right:
                kinds[p.kind] += 1
            if p.positive and not served:
                kinds[p.kind + " (missed)"] += 1
        out.append("\nAt the default point, wrong hits by negative kind / missed paraphrases by style: "
                   + ", ".join(f"{k} {c}/{totals[k.replace(' (missed)', '')]}" for k, c in sorted(kinds.items())))
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="test", choices=["train", "dev", "test"])
    ap.add_argument("--model", default=str(DEFAULT_PATH))
    ap.add_argument("--candidates", type=int, default=None, help="override the file's candidates per lookup")
    ap.add_argument("--sets", nargs="*", default=list(SETS))
    args = ap.parse_args()
    v = Verifier.load(args.model)
    k = args.candidates or int(v.settings["candidates"])
    enc = Encodings()
    sides = SideCache(enc, v.codec, v.token_weights)
    print(f"verifier {args.model}: operating points {v.operating_points}; {k} candidate(s) per lookup, "
          f"cosine floor {v.settings['cos_floor']}, rule {v.settings['rule']}; split {args.split}\n")
    print("Rates: right = right hits / duplicate pairs; wrong = wrong hits / all queries.\n")
    for name in args.sets:
        print(evaluate(name, args.split, v, enc, sides, k), flush=True)


if __name__ == "__main__":
    main()
