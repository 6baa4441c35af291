# make test: create .venv if needed, install dsd, run the test suite (what .ci/run calls)
# make demo: the whole pipeline on the CPU (Fashion-MNIST), ending with an HTML report
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# torch builds that pip takes from local disk on our machines (x86_64: CUDA build; aarch64: CPU build)
ifeq ($(shell uname -m),aarch64)
TORCH := torch==2.9.1 torchvision==0.24.1
else
TORCH := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: venv test demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[ray,dev]"
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q -rs

demo: venv
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

bench: venv
	$(BIN)/python bench/sample.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/analysis.py

clean:
	rm -rf $(VENV) runs
