# The two commands of the README. Each sets up .venv on its own the first time (and again when the
# build files change): torch==2.13.0 unless the venv already has a torch (install your CUDA build
# of torch into .venv first to keep it), then fastsdf in editable mode with its compiled modules.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastsdf-installed
BUILD_INPUTS := pyproject.toml setup.py $(shell find csrc -type f 2>/dev/null)

.PHONY: demo test bench clean

demo: $(STAMP)
	$(PY) -m fastsdf.cli demo --out outputs/demo

test: $(STAMP)
	$(PY) -m pytest tests

# The peers: pysdf builds against Debian's Eigen (its setup.py cannot find Eigen 3.4 by itself),
# Open3D needs libusb.
bench: $(STAMP)
	if command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq libeigen3-dev libusb-1.0-0; fi
	CPLUS_INCLUDE_PATH=/usr/include/eigen3 $(PY) -m pip install --quiet -e ".[bench]" --no-build-isolation
	mkdir -p benchmarks/results
	$(PY) -m pytest benchmarks --benchmark-json=benchmarks/results/cpu.json
	$(PY) benchmarks/make_results.py benchmarks/results/*.json

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) $(BUILD_INPUTS)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel "pybind11>=2.12"
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]" --no-build-isolation
	touch $(STAMP)

clean:
	rm -rf build fastsdf/*.so outputs
