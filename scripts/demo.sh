#!/usr/bin/env bash
# `make demo` runs this once the virtual environment exists (`dsd` on PATH): Fashion-MNIST, two design
# spaces of the `fashion` regime trained on the CPU (about 4 minutes on 2 cores), then the analysis and
# one HTML report.
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

# 2. Sample 16 models from each space (2M..4M flops at 28 px): runs/fashion-xa and runs/fashion-regnetx.
dsd sample --space AnyNetXA --regime fashion --n 16 --out runs/fashion-xa
dsd sample --space RegNetX --regime fashion --n 16 --out runs/fashion-regnetx

# 3. Train each on the CPU: 3 epochs over a fixed subset of 5,000 training images, evaluated on 1,000 test
#    images (the same for every model); two models at once, one core each.
dsd train runs/fashion-xa runs/fashion-regnetx --device cpu --cpu-workers 2 --epochs 3 --batch-size 64 \
  --train-images 5000 --eval-images 1000

# 4. What came out.
dsd status runs/fashion-xa runs/fashion-regnetx

# 5. The analysis: EDFs with the KS test, bootstrap trends, quantized linear fits, search efficiency,
#    and all of it in one self-contained HTML page.
dsd edf runs/fashion-xa runs/fashion-regnetx --plot
dsd trends runs/fashion-regnetx --plot --stats d,w0,wa,wm,flops
dsd fit-linear runs/fashion-xa runs/fashion-regnetx --top 10 --plot
dsd search-efficiency runs/fashion-xa runs/fashion-regnetx --plot
report=$(dsd report runs/fashion-xa runs/fashion-regnetx --out runs/fashion-report.html)
echo
echo "demo: report written to $report (open it in a browser)"
