# The two commands of the README. Each sets up .venv on its own the first time (and again when the
# build files change): torch==2.13.0 unless the venv already has a torch (install your CUDA build
# of torch into .venv first to keep it), then fastsdf in editable mode with its compiled modules.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastsdf-installed
BUILD_INPUTS := pyproject.toml setup.py $(shell find csrc -type f 2>/dev/null)
# The GPU machine's Triton (torch 2.11's), beside the venv's own: tests/test_triton_compile.py compiles
# the kernels with it too, since its code generation differs (fastsdf/kernels/siren/launch.py).
GPU_MACHINE_TRITON := $(VENV)/triton-3.6

.PHONY: demo test bench sanitize clean gpu-check gpu-wheels

demo: $(STAMP)
	$(PY) -m fastsdf.cli demo --out outputs/demo

test: $(STAMP) $(GPU_MACHINE_TRITON)/.installed
	$(PY) -m pytest tests

# The peers: pysdf builds against Debian's Eigen (its setup.py cannot find Eigen 3.4 by itself),
# Open3D needs libusb.
bench: $(STAMP)
	if command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq libeigen3-dev libusb-1.0-0; fi
	CPLUS_INCLUDE_PATH=/usr/include/eigen3 $(PY) -m pip install --quiet -e ".[bench]" --no-build-isolation
	mkdir -p benchmarks/results
	$(PY) -m pytest benchmarks --benchmark-json=benchmarks/results/cpu.json
	$(PY) benchmarks/make_results.py benchmarks/results/*.json

# fastsdf._C with AddressSanitizer and UBSan (gcc's, and its runtimes), built apart
# (build/sanitize/lib: the package and the module; the in-place module stays), and the tests against
# it. torch is not instrumented, so the runtimes are preloaded; any report aborts the run.
# SANITIZE_TESTS picks the tests. setuptools compiles C++ with CXXFLAGS (CFLAGS alone would leave
# the module uninstrumented, hence the nm check); --capture=sys leaves file descriptor 2 to the
# sanitizers, whose report pytest's capture would swallow when they end the process.
SANITIZE_DIR := build/sanitize
SANITIZE_FLAGS := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer -g
SANITIZE_TESTS ?= tests

SANITIZE_RUN = LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONPATH=$(abspath $(SANITIZE_DIR))/lib

sanitize: $(STAMP)
	rm -rf $(SANITIZE_DIR)
	CC=gcc CXX=g++ LDCXXSHARED="g++ -shared" FASTSDF_CUDA=0 \
		CFLAGS="$(SANITIZE_FLAGS)" CXXFLAGS="$(SANITIZE_FLAGS)" LDFLAGS="$(SANITIZE_FLAGS)" \
		$(PY) setup.py --quiet build --build-lib $(SANITIZE_DIR)/lib --build-temp $(SANITIZE_DIR)/temp
	nm -D --undefined-only $(SANITIZE_DIR)/lib/fastsdf/_C*.so | grep -q __asan_report || \
		{ echo "fastsdf._C was built without the sanitizers"; exit 1; }
	cd $(SANITIZE_DIR) && $(SANITIZE_RUN) $(abspath $(PY)) -c "import fastsdf._C as m, sys; \
		sys.exit(0 if '$(SANITIZE_DIR)' in m.__file__ else 'not the sanitized module: ' + m.__file__)"
	$(SANITIZE_RUN) $(VENV)/bin/pytest -p no:cacheprovider --capture=sys $(SANITIZE_TESTS)

# On a machine with a CUDA GPU (benchmarks/GPU.md has the device tool's command): $(PYTHON) as it
# is, no venv and no download. Builds the modules in place for GPU_ARCHS, runs the tests marked
# cuda, benchmarks/gpu_bench.py (GPU_BUDGET seconds of timing) and make_results.py. Each step has a
# time limit and a failed step does not stop the next; the target fails at the end if any failed.
# Logs go to GPU_LOGS and, with gpu.json and RESULTS.md, to $$OUT when it is set. Wheels carried in
# .whl/ (make gpu-wheels) are installed into GPU_SITE first; the shared meshes carried in
# .whl/meshes stand in for ../shared/meshes where that is missing (it does not travel).
GPU_ARCHS ?= 90
GPU_BUDGET ?= 180
GPU_LOGS ?= build/gpu-check
GPU_SITE ?= $(CURDIR)/build/gpu-site
GPU_WHEELS ?= trimesh==5.2.0
GPU_RUN = PYTHONUNBUFFERED=1 PYTHONPATH=$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} timeout -k 10

gpu-check: SHELL := /bin/bash
gpu-check:
	@$(PYTHON) -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null || { echo \
		"make gpu-check: no CUDA GPU visible to $(PYTHON) (no torch, or torch.cuda.is_available() is False); nothing run" >&2; \
		exit 2; }
	rm -rf $(GPU_LOGS) && mkdir -p $(GPU_LOGS)
	if [ -d .whl ]; then $(PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
		--target $(GPU_SITE) .whl/*.whl; fi
	if [ ! -d ../shared/meshes ] && [ -d .whl/meshes ]; then mkdir -p ../shared && ln -s $(CURDIR)/.whl/meshes ../shared/meshes; fi
	set -o pipefail; FASTSDF_CUDA=1 FASTSDF_CUDA_ARCHS="$(GPU_ARCHS)" $(GPU_RUN) 120 $(PYTHON) setup.py build_ext --inplace -j 4 \
		2>&1 | tee $(GPU_LOGS)/build.log; echo "build $$?" >> $(GPU_LOGS)/status
	set -o pipefail; $(GPU_RUN) 180 $(PYTHON) -m pytest -m cuda tests -q -rs -p no:cacheprovider --timeout 90 \
		2>&1 | tee $(GPU_LOGS)/pytest-cuda.log; echo "pytest-cuda $$?" >> $(GPU_LOGS)/status
	set -o pipefail; $(GPU_RUN) $$(($(GPU_BUDGET) + 60)) $(PYTHON) benchmarks/gpu_bench.py --budget $(GPU_BUDGET) \
		2>&1 | tee $(GPU_LOGS)/gpu-bench.log; echo "gpu-bench $$?" >> $(GPU_LOGS)/status
	set -o pipefail; $(GPU_RUN) 60 $(PYTHON) benchmarks/make_results.py benchmarks/results/*.json \
		2>&1 | tee $(GPU_LOGS)/results.log; echo "results $$?" >> $(GPU_LOGS)/status
	if [ -n "$$OUT" ]; then cp $(GPU_LOGS)/*.log benchmarks/RESULTS.md "$$OUT"/ && \
		{ [ ! -f benchmarks/results/gpu.json ] || cp benchmarks/results/gpu.json "$$OUT"/; }; fi
	@echo "make gpu-check: exit status of each step (0 = passed)"; cat $(GPU_LOGS)/status; \
		! grep -qv ' 0$$' $(GPU_LOGS)/status

# What gpu-check needs that the GPU machine lacks (it has no network), into .whl/ to carry: wheels,
# and the shared meshes the tests and benchmarks read.
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	rm -rf .whl/meshes && cp -r ../shared/meshes .whl/meshes

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) $(BUILD_INPUTS)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel "pybind11>=2.12"
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]" --no-build-isolation
	touch $(STAMP)

$(GPU_MACHINE_TRITON)/.installed: | $(PY)
	rm -rf $(GPU_MACHINE_TRITON) && $(PY) -m pip install --quiet --no-deps --target $(GPU_MACHINE_TRITON) triton==3.6.0
	touch $@

clean:
	rm -rf build fastsdf/*.so outputs
