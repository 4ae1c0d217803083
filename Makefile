# pktstat-bpf — set-up, build, run and test on a fresh Debian 12 machine.
#
#   make run    install what is missing, build, and count traffic on the
#               default interface for a short capture (ARGS="-t 30s -j" ...)
#   make test   the same set-up, then the whole test suite
#   make test-kernels  the BPF tests inside Debian's 6.1 and 6.12 kernels under
#               qemu (make test runs it too, where qemu can run)
#   make bench  benchmarks (never part of make test; its quick smoke run is)
#   make soak   a few minutes of sustained traffic (never part of make test)
#   make docs   execute notebooks/traffic_analysis.ipynb and save its bitrate
#               plot as docs/traffic_bitrate.png (the README's figure; root)
#   make fuzz   the libFuzzer target of the pcap replay path, ASan+UBSan, for
#               FUZZ_SECONDS (default 60); fails on any crash

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?= -t 5s
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 60
FUZZ_BUILD := build/fuzz
# The benchmark module _bench_core (bench/cpp) and the shipped BPF objects
# as compiled for it: built here, never installed (bench/_bench.py).
BENCH_BUILD := build/bench
# The working corpus: our own copy of the seeds in ../shared/pcaps (never
# written to), plus what the fuzzer adds across runs.
FUZZ_CORPUS ?= $(FUZZ_BUILD)/corpus
PCAPS ?= $(abspath $(CURDIR)/../shared/pcaps)
FUZZ_KERNEL ?= $(shell [ "$$(id -u)" = 0 ] && echo 1 || echo 0)

# Debian packages: build (clang, bpftool, libbpf, libelf, zlib, pkgconf,
# libpcap), run (iproute2) and test tooling (tshark, tcpreplay, tmux; qemu,
# busybox, kmod and the decompressors for the kernel matrix; prometheus for
# the exporter test; nfdump's nfcapd, the IPFIX collector of the flow-record
# tests; clang's sanitizer and libFuzzer runtimes for make fuzz;
# clang-format for the style test; openssh-server's sshd, bind9-dnsutils'
# dig and wireguard-tools' wg, the real servers, clients and tunnels of the
# live application-label tests).
SYSTEM_PACKAGES := clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev pkgconf \
	libpcap-dev iproute2 tshark tcpreplay tmux qemu-system-x86 busybox-static \
	kmod xz-utils zstd prometheus libclang-rt-14-dev clang-format nfdump nftables \
	openssh-server bind9-dnsutils wireguard-tools
SOURCES := $(shell find src python -type f -not -name '*.pyc' 2>/dev/null) \
	CMakeLists.txt pyproject.toml

.PHONY: setup system-packages run test test-kernels bench bench-module soak docs fuzz clean
setup: system-packages $(VENV)/.installed

# Debian's own python3 needs python3-venv for `-m venv` and python3-dev for
# Python.h; an interpreter that has both (pyenv's, here) needs neither.
PYTHON_PACKAGES := $(shell $(PYTHON) -c 'import ensurepip' 2>/dev/null || echo python3-venv) \
	$(shell $(PYTHON) -c 'import os, sysconfig; os.stat(sysconfig.get_path("include") + "/Python.h")' \
		2>/dev/null || echo python3-dev)

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES) $(PYTHON_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The build back-end (build-system.requires) and the CMake its settings ask
# for (tool.scikit-build cmake.version), with ninja, all read from
# pyproject.toml, never retyped here; installed once into the venv so that
# rebuilds reuse build/ (--no-build-isolation) and make fuzz has cmake/ninja.
$(VENV)/.build-deps: $(PY) pyproject.toml
	$(PY) -m pip install -q $$($(PY) -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb")); \
		print(" ".join(t["build-system"]["requires"] + ["cmake" + t["tool"]["scikit-build"]["cmake"]["version"], "ninja"]))')
	touch $@

$(VENV)/.installed: $(VENV)/.build-deps $(SOURCES)
	$(PY) -m pip install -q --no-build-isolation ".[test]"
	touch $@

run: setup
	$(PY) -m pktstat_bpf $(ARGS)

# After the suite, the kernel matrix's guests run the BPF subset (-m kernel,
# narrowed by PYTEST_ARGS too) where qemu can run; TEST_KERNELS=0 leaves
# them out (e.g. while iterating on one test).
TEST_KERNELS ?= 1

test: setup bench-module
	$(PY) -m pytest -ra $(PYTEST_ARGS)
	@if [ "$(TEST_KERNELS)" = 0 ]; then echo "make test: TEST_KERNELS=0: the kernel matrix did not run"; \
	elif ! command -v qemu-system-x86_64 >/dev/null; then \
		echo "make test: qemu-system-x86_64 is missing: the kernel matrix did not run"; \
	else PYTEST_ARGS="$(PYTEST_ARGS)" tests/vm/test-kernels.sh; fi

# The BPF subset on this machine's kernel, then inside 6.1 and 6.12.
test-kernels: setup bench-module
	$(PY) -m pytest -m kernel -ra $(PYTEST_ARGS)
	PYTEST_ARGS="$(PYTEST_ARGS)" tests/vm/test-kernels.sh

soak: setup
	$(PY) -m pytest -ra -s soak $(PYTEST_ARGS)

bench: setup bench-module
	$(PY) bench/run.py

# For make bench and for make test (tests/test_bench.py, tests/test_programs.py).
bench-module: $(BENCH_BUILD)/.built

$(BENCH_BUILD)/.built: $(VENV)/.installed $(wildcard bench/cpp/*)
	$(VENV)/bin/cmake -S . -B $(BENCH_BUILD) -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja \
		-DPKTSTAT_BENCH=ON -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=$(abspath $(PY)) \
		-Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir) >/dev/null
	nice $(VENV)/bin/cmake --build $(BENCH_BUILD) --target _bench_core
	touch $@

docs: setup
	$(PY) notebooks/run.py notebooks/traffic_analysis.ipynb --figure readme-figure=docs/traffic_bitrate.png

# libFuzzer over the replay path (fuzz/pcap_replay_fuzz.cpp), seeded with
# the corpus copy and fuzz/regressions (inputs that once failed). As root
# (FUZZ_KERNEL=1, the default there) every input also runs through the
# program in the kernel, with the conservation check.
fuzz: system-packages $(VENV)/.build-deps
	$(VENV)/bin/cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja \
		-DPKTSTAT_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	nice $(VENV)/bin/cmake --build $(FUZZ_BUILD) --target pcap_replay_fuzz
	@if [ ! -d $(FUZZ_CORPUS) ]; then \
		test -d $(PCAPS)/corpus || { echo "no seed captures in $(PCAPS) (set PCAPS=)"; exit 1; }; \
		mkdir -p $(FUZZ_CORPUS) && cp $(PCAPS)/corpus/* $(PCAPS)/unsupported/* $(FUZZ_CORPUS)/ && \
		chmod u+w $(FUZZ_CORPUS)/*; \
	fi
	mkdir -p $(FUZZ_BUILD)/artifacts
	PKTSTAT_FUZZ_KERNEL=$(FUZZ_KERNEL) nice $(FUZZ_BUILD)/fuzz/pcap_replay_fuzz $(FUZZ_CORPUS) fuzz/regressions \
		-max_total_time=$(FUZZ_SECONDS) -max_len=1048576 -timeout=30 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix=$(abspath $(FUZZ_BUILD))/artifacts/ $(FUZZ_ARGS)

clean:
	rm -rf build $(VENV) .pytest_cache
