#!/usr/bin/env bash
# The test command: set up, lint, type-check, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check semcache integrations tests examples
.venv/bin/mypy semcache
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
