"""Build llm_pairs.jsonl (and the counts in README.md) from the hand-written src/*.txt beside this script.

Source format (see src/README.txt): ``#batch N`` (once, at the top of a file written later than
the first batch), ``#domain NAME``, ``@ base prompt`` starts a group, ``+KIND text`` is a
paraphrase of the base (label 1), ``-KIND text`` a hard negative (label 0). Every +/- line becomes
one pair whose ``first`` is the group's base prompt.

Splits are assigned by group, stratified by domain, batch by batch: the groups of each domain of a
batch are shuffled with a seeded ``random.Random`` (``SEED`` for batch 1, ``"SEED/N"`` for batch N)
and cut 60/20/20 (train/dev/test). Groups of a later batch never move an earlier batch's groups
between splits, and keep their ids (``g0000`` in batch 1, ``b2g0000`` in batch 2).

    python datasets/llm_pairs/make_llm_pairs.py    # rewrites llm_pairs.jsonl deterministically

Prompts are compared in the cache's normalised form (``semcache._cache.cache.normalize_prompt``,
imported from the checkout this script sits in).
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SRC = HERE / "src"
OUT = HERE / "llm_pairs.jsonl"
SEED = 20240601
KINDS_POS = {"casual", "typo", "reorder", "abbrev", "polite", "qform", "context", "synonym", "terse", "formal"}
KINDS_NEG = {"entity", "product", "version", "number", "unit", "date", "quantity", "negation", "direction",
             "scope", "comparative", "ask", "antonym", "qualifier"}


def parse() -> list[dict]:
    """Groups in file order: {"batch", "domain", "base", "variants": [(label, kind, text)], "source"}."""
    groups: list[dict] = []
    for path in sorted(SRC.glob("*.txt")):
        if path.name == "README.txt":
            continue
        domain = None
        batch = 1
        for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            where = f"{path.name}:{n}"
            if line.startswith("#batch "):
                batch = int(line.split(None, 1)[1])
            elif line.startswith("#domain "):
                domain = line.split(None, 1)[1]
            elif line.startswith("@ "):
                groups.append({"batch": batch, "domain": domain, "base": line[2:].strip(), "variants": [],
                               "source": where})
            elif line[0] in "+-":
                kind, text = line[1:].split(None, 1)
                allowed = KINDS_POS if line[0] == "+" else KINDS_NEG
                if kind not in allowed:
                    sys.exit(f"{where}: unknown kind {kind!r}")
                groups[-1]["variants"].append((int(line[0] == "+"), kind, text.strip()))
            else:
                sys.exit(f"{where}: cannot parse {line!r}")
    return groups


def assign_splits(groups: list[dict]) -> list[str]:
    """The split of every group (the rule of the module docstring)."""
    split = [""] * len(groups)
    for batch in sorted({g["batch"] for g in groups}):
        by_domain: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(groups):
            if g["batch"] == batch:
                by_domain[g["domain"]].append(i)
        rng = random.Random(SEED if batch == 1 else f"{SEED}/{batch}")
        for domain in sorted(by_domain):
            idx = by_domain[domain][:]
            rng.shuffle(idx)
            n = len(idx)
            n_train, n_dev = round(n * 0.6), round(n * 0.2)
            for k, i in enumerate(idx):
                split[i] = "train" if k < n_train else "dev" if k < n_train + n_dev else "test"
    return split


def group_ids(groups: list[dict]) -> list[str]:
    """``g0000``... for batch 1 (as before batches existed), ``b2g0000``... for batch 2, and so on."""
    seen: Counter[int] = Counter()
    ids = []
    for g in groups:
        n = seen[g["batch"]]
        seen[g["batch"]] += 1
        ids.append(f"g{n:04d}" if g["batch"] == 1 else f"b{g['batch']}g{n:04d}")
    return ids


def build() -> list[dict]:
    """Every pair of every group, with its split; exits on a repeated base prompt or a cross-group exact hit."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from semcache._cache.cache import normalize_prompt

    groups = parse()
    splits = assign_splits(groups)
    rows = []
    seen_bases: dict[str, str] = {}
    for gid, g, split in zip(group_ids(groups), groups, splits, strict=True):
        key = normalize_prompt(g["base"]).lower()
        if key in seen_bases:
            sys.exit(f"{g['source']}: base prompt repeats {seen_bases[key]}")
        seen_bases[key] = g["source"]
        for vi, (label, kind, text) in enumerate(g["variants"]):
            rows.append({
                "id": f"{gid}-{vi}", "first": g["base"], "second": text, "label": label,
                "kind": ("paraphrase/" if label else "negative/") + kind, "domain": g["domain"],
                "group": gid, "split": split,
            })
    # A query equal (normalised, case-folded) to another group's cached base would be an exact hit on
    # a different request's answer: the source must not contain such pairs.
    for r in rows:
        other = seen_bases.get(normalize_prompt(r["second"]).lower())
        if other is not None:
            sys.exit(f"pair {r['id']}: second text equals the base prompt at {other}")
    return rows


def readme_counts(rows: list[dict]) -> str:
    def table(key: str) -> str:
        cnt: dict[str, Counter] = defaultdict(Counter)
        for r in rows:
            cnt[r[key]][r["split"]] += 1
        lines = [f"| {key} | train | dev | test | all |", "|---|---|---|---|---|"]
        for k in sorted(cnt):
            c = cnt[k]
            lines.append(f"| {k} | {c['train']} | {c['dev']} | {c['test']} | {sum(c.values())} |")
        return "\n".join(lines)

    splits = Counter(r["split"] for r in rows)
    pos = Counter(r["split"] for r in rows if r["label"])
    groups = {s: len({r["group"] for r in rows if r["split"] == s}) for s in ("train", "dev", "test")}
    head = ["| split | groups | pairs | positives | negatives |", "|---|---|---|---|---|"]
    for s in ("train", "dev", "test"):
        head.append(f"| {s} | {groups[s]} | {splits[s]} | {pos[s]} | {splits[s] - pos[s]} |")
    n_pos = sum(pos.values())
    head.append(f"| all | {sum(groups.values())} | {len(rows)} | {n_pos} | {len(rows) - n_pos} |")
    return "\n".join(head) + "\n\n### By kind\n\n" + table("kind") + "\n\n### By domain\n\n" + table("domain") + "\n"


if __name__ == "__main__":
    rows = build()
    with open(OUT, "w", encoding="utf-8") as handle:
        for r in rows:
            handle.write(json.dumps(r, ensure_ascii=False) + "\n")
    readme = HERE / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    marker = "<!-- counts -->"
    counts = readme_counts(rows)
    head = text.split(marker)[0] if marker in text else text + "\n"
    text = head + marker + "\n\n" + counts
    readme.write_text(text, encoding="utf-8")
    print(f"{len(rows)} pairs, {len({r['group'] for r in rows})} groups, "
          f"{sum(r['label'] for r in rows) / len(rows):.1%} positive -> {OUT}")
