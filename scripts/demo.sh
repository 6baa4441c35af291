#!/usr/bin/env bash
# `make demo` runs this once the virtual environment exists (`dsd` on PATH): Fashion-MNIST, two design
# spaces of the `fashion` regime trained on the CPU by the regime's protocol (about 5 minutes on 2 cores),
# then the analysis and one HTML report.
# Re-running resumes: sampling is skipped and only untrained models are trained.
set -euo pipefail

# 1. Data: dsd finds Fashion-MNIST in --data-dir / $DSD_DATA_DIR, Debian's package, or its download cache.
if ! python -c "from dsd.training.data import DataRequest, locate; locate(DataRequest('fashion-mnist', 28, 1, 10, download=False))" 2>/dev/null; then
  if command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo -n")
    echo "demo: installing Debian's dataset-fashion-mnist" >&2
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
      || echo "demo: apt-get failed; dsd train will try to download Fashion-MNIST" >&2
  fi
fi

# 2. Sample 6 models from each space (2M..4M flops at 28 px) with the seed of bench/fidelity.py: they are
#    the first 6 models of that study's AnyNetXA and RegNetX runs (model i depends only on space, regime,
#    seed and i), so the demo trains a slice of the study whose table the README shows.
dsd sample --space AnyNetXA --regime fashion --n 6 --seed 2026 --out runs/demo-xa
dsd sample --space RegNetX --regime fashion --n 6 --seed 2026 --out runs/demo-regnetx

# 3. Train each on the CPU by the fashion regime's protocol (`dsd spaces` lists it: 3 epochs over a fixed
#    subset of 8,000 training images, 0.5 epoch of warm-up, evaluated on 2,000 test images); two models
#    at once, one core each.
dsd train runs/demo-xa runs/demo-regnetx --device cpu --cpu-workers 2

# 4. What came out.
dsd status runs/demo-xa runs/demo-regnetx

# 5. The analysis: EDFs with the KS test, bootstrap trends, quantized linear fits, search efficiency.
dsd edf runs/demo-xa runs/demo-regnetx --plot
dsd trends runs/demo-regnetx --plot --stats d,w0,wa,wm,flops
dsd fit-linear runs/demo-xa runs/demo-regnetx --top 10 --plot
dsd search-efficiency runs/demo-xa runs/demo-regnetx --plot
# 6. What the numbers support, each statement with its test (with 6 models a space, mostly that the
#    spaces do not differ detectably yet), then all of it in one report that opens with these findings.
dsd findings runs/demo-xa runs/demo-regnetx --samples 2000
report=$(dsd report runs/demo-xa runs/demo-regnetx --out runs/demo-report.html)
echo
echo "demo: report written to $report (open it in a browser)"
