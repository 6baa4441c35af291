#!/usr/bin/env bash
# What a machine with a CUDA GPU has to confirm, in one go: the CUDA tests, a small sweep through the
# CLI on the GPU (several models per GPU, kill -9 and resume), and the GPU tables of bench/train.py.
# Uses the python3 on PATH (or $PYTHON), which must already have torch with CUDA and dsd's other
# dependencies (checked first, all of them named at once); dsd itself is installed into it without
# dependencies (no network needed). Every step runs even when one before it fails; the last lines say
# which failed. The sweep fails unless every model finished and at least one resumed from a checkpoint.
# Usage: bash scripts/gpu-check.sh [OUTDIR]   (default: ./gpu-check; every step's output is kept there)
set -uo pipefail
PY=${PYTHON:-python3}
out=${1:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
failed=()

# shellcheck disable=SC2086  # $PY may be a command with arguments
$PY - <<'PYEOF' || exit 1
import importlib.util, sys
needed = ["torch", "torchvision", "PIL", "numpy", "pandas", "pyarrow", "scipy", "matplotlib", "yaml", "typer",
          "rich", "pytest"]
missing = [m for m in needed if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu-check: this python lacks {', '.join(missing)} (set $PYTHON to one that has dsd's dependencies)")
import torch
if not torch.cuda.is_available():
    sys.exit("gpu-check: torch sees no CUDA GPU")
PYEOF
if ! $PY -m pip install -q --no-deps --no-build-isolation -e . >"$out/pip.txt" 2>&1; then
  cat "$out/pip.txt"
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

echo "== pytest -m cuda" >&2
$PY -m pytest -q -m cuda -rs tests 2>&1 | tee "$out/pytest-cuda.txt" || failed+=("pytest -m cuda")

echo "== a sweep on the GPU: 16 CIFAR-regime models, 4 per GPU, kill -9 after the first epoch, resumed" >&2
work=$(mktemp -d)
run=$work/cifar
args=(--dataset synthetic --epochs 3 --train-images 20000 --eval-images 2000 --models-per-gpu 4)
$PY -m dsd sample --space RegNetX --regime cifar --n 16 --out "$run" || failed+=("dsd sample")
$PY -m dsd train "$run" "${args[@]}" 2>"$out/sweep-killed.txt" &
pid=$!
for _ in $(seq 1500); do
  compgen -G "$run/checkpoints/*.pt" >/dev/null && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.2
done
compgen -G "$run/checkpoints/*.pt" >/dev/null || failed+=("no checkpoint before the kill")
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
{ $PY -m dsd train "$run" "${args[@]}" && $PY -m dsd status "$run"; } 2>&1 | tee "$out/sweep.txt" || failed+=("sweep")
$PY -m dsd status "$run" --json >"$out/status.json" || failed+=("dsd status")
$PY -c "import json, sys; s = json.load(open(sys.argv[1]))[0]; sys.exit(0 if s['done'] == 16 else
    f\"gpu-check: {s['done']} of 16 models done ({s['failed']} failed, {s['diverged']} diverged)\")" \
  "$out/status.json" || failed+=("every model of the sweep done")
$PY -m dsd export "$run" --out "$out/sweep.csv" || failed+=("dsd export")
resumed=$(grep -c 'resumed from the checkpoint' "$out/sweep.csv")
echo "resumed from a checkpoint: $resumed models" | tee -a "$out/sweep.txt"
[ "$resumed" -ge 1 ] || failed+=("no model resumed from its checkpoint")
rm -rf "$work"

echo "== bench/train.py --device cuda" >&2
$PY bench/train.py --device cuda 2>&1 | tee "$out/bench-train.txt" || failed+=("bench/train.py")

if [ ${#failed[@]} -gt 0 ]; then
  printf 'gpu-check: failed: %s\n' "${failed[@]}" | tee "$out/failed.txt" >&2
  exit 1
fi
echo "gpu-check: every step passed; outputs in $out" >&2
