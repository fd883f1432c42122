#!/usr/bin/env bash
# The test command: set up, lint, type-check, build the docs (a broken link fails), run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check semcache integrations tests examples benchmarks docs training datasets
.venv/bin/mypy semcache integrations
site_dir=$(mktemp -d) && trap 'rm -rf "$site_dir"' EXIT
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site_dir"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
