"""Where the training data lives and where the trained verifier goes (this script runs in the source checkout).

The public pair sets are read from the folder named by ``SEMCACHE_DATA`` (``--data``
of the scripts sets it); by default the ``shared/data`` folder beside the checkout,
as the project keeps it.  The LLM-style pairs are ``datasets/llm_pairs/llm_pairs.jsonl``.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = HERE / "cache"  # encodings and feature tables, rebuilt when absent (not committed)
SHIPPED = REPO / "semcache" / "_cache" / "verifier" / "verifier.npz"
CALIBRATION = HERE / "calibration.json"

os.environ.setdefault("SEMCACHE_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("SEMCACHE_LLM_PAIRS", str(REPO / "datasets" / "llm_pairs" / "llm_pairs.jsonl"))
