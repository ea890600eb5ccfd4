# mm_perception: the two commands a new user needs are `make demo` and `make test`.
# Every target runs scripts/setup.sh first (idempotent: a no-op when nothing changed).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/demo
# Fast DDS from the pip wheels; a sourced system ROS keeps its own choice.
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp
export MUJOCO_GL ?= osmesa
export PYTHONDONTWRITEBYTECODE := 1
# mm_perception_msgs as scripts/setup.sh builds it: the venv of the ROS wheels links its
# libraries; with a sourced system ROS 2 they are found only through this (read at start-up).
export LD_LIBRARY_PATH := $(CURDIR)/build/interfaces_install/lib$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))

.PHONY: setup demo test test-unit test-ros test-replay test-gpu lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m mm_perception.cli demo --out $(OUT)

test: setup lint
	$(PY) -m pytest tests -q

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-ros: setup
	$(PY) -m pytest tests/ros -q

test-replay: setup
	$(PY) -m pytest tests/replay -q

test-gpu: setup
	$(PY) -m pytest tests/gpu -q

lint: setup
	$(VENV)/bin/ruff check mm_perception tests bench launch
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/bench_conversions.py

clean:
	rm -rf out build install log .mypy_cache .ruff_cache .pytest_cache
