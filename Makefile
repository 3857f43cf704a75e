# Every target creates .venv and installs what it needs on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The dashboard's browser tests drive Debian's Chromium (never a browser Playwright downloads).
CHROMIUM := /usr/bin/chromium

.PHONY: demo test test-all bench bench-secaggplus bench-accuracy bench-privacy bench-latency bench-simulate bench-quick lint format clean reliability

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench']))")
	touch $(STAMP)

$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ]; then echo "the browser tests need Debian's chromium:" \
	  "sudo apt-get install -y --no-install-recommends chromium"; exit 1; fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

demo: $(STAMP)
	$(VENV)/bin/fedsparsify demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/mypy

test: lint $(CHROMIUM)
	$(PY) -m pytest -m "not slow" -q

test-all: lint $(CHROMIUM)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/crypto_costs.py --json benchmarks/results/crypto_costs.json

# Ours (pairwise-masked lean CKKS) next to Flower's SecAgg+ (the bench extra).
bench-secaggplus: $(STAMP)
	$(VENV)/bin/fedsparsify bench crypto --secaggplus --json benchmarks/results/secaggplus.json

bench-accuracy: $(STAMP)
	$(PY) benchmarks/accuracy.py --jobs 2 --resume

bench-privacy: $(STAMP)
	$(VENV)/bin/fedsparsify bench privacy --resume

bench-latency: $(STAMP)
	$(PY) benchmarks/latency.py --out benchmarks/results

# Simulated rounds for 10, 100 and 1,000 sites, local against Ray (about 10 minutes on 2 cores).
bench-simulate: $(STAMP)
	$(PY) benchmarks/simulate.py --json benchmarks/results/simulate.json

# The whole reliability battery (fuzzing, kill -9 faults, 32-client load) and its report.
reliability: $(STAMP)
	$(PY) benchmarks/reliability.py --json benchmarks/results/reliability.json

bench-quick: $(STAMP)
	$(PY) benchmarks/crypto_costs.py --quick
	$(PY) benchmarks/latency.py --quick --out $${TMPDIR:-/tmp}/fedsparsify-latency-quick

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks examples
	$(VENV)/bin/ruff check --fix src tests benchmarks examples

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
