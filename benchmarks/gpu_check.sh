#!/usr/bin/env bash
# GPU check (issue 4, "When a GPU is lent"): CUDA correctness, loss cost at N = 8192, ResNet-18
# step times; writes benchmarks/results/gpu_check-<device>.{json,md}. Under 8 minutes on one GPU.
#   benchmarks/gpu_check.sh            # on a GPU machine
#   benchmarks/gpu_check.sh --tiny     # toy sizes on the CPU (what the tests run)
# PYTHON selects the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
exec timeout "${GPU_CHECK_TIMEOUT:-470}" "$PYTHON" benchmarks/gpu_check.py "$@"
