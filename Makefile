# The two commands of the README. Each sets up .venv on its own the first time (and again when the
# build files change): torch==2.13.0 unless the venv already has a torch (install your CUDA build
# of torch into .venv first to keep it), then fastsdf in editable mode with its compiled modules.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastsdf-installed
BUILD_INPUTS := pyproject.toml setup.py $(shell find csrc -type f 2>/dev/null)

.PHONY: demo test bench sanitize clean

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

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) $(BUILD_INPUTS)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel "pybind11>=2.12"
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]" --no-build-isolation
	touch $(STAMP)

clean:
	rm -rf build fastsdf/*.so outputs
