# make demo: create .venv if missing, install, run the main job on the embedded default.
# make test: same set-up, then lint, types, layer contract and the whole test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: browser demo test lint typecheck layers pytest install clean sz bench-env-spu bench-env-flower

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,fast,tee,ml,ray,platform]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sharelearn demo

lint: $(STAMP)
	$(BIN)/ruff check sharelearn tests benchmarks
	$(BIN)/ruff format --check sharelearn tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

# The dashboard's browser tests drive Debian's chromium (never `playwright install`).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "WARNING: chromium missing and not installable: the dashboard browser tests will skip"

pytest: $(STAMP) browser
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

test: lint typecheck layers pytest

# Comparison engines for `sharelearn bench mpc` / `bench fedavg`, each in its own venv (their pins
# conflict with ours): SecretFlow SPU 0.9.5 in .venv-spu, Flower's simulation in .venv-flower.
bench-env-spu:
	bash benchmarks/envs/spu.sh

bench-env-flower:
	bash benchmarks/envs/flower.sh

sz:
	@find sharelearn -name '*.py' | xargs wc -l | sort -n | tail -25

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
