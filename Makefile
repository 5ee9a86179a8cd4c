# Two commands: `make run` starts the bot (paper mode, SQLite, embedded defaults);
# `make test` runs the test suite. Both create .venv and install the project first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test install bench soak soak-short demo simulate clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/trading-bot run

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache

# `make demo`: the local simulator replays real XRP/USDT candles at 60x and the bot trades it in LIVE mode
# (real orders on the simulator, no account needed), printing the dashboard every 10 s. Ctrl-C stops both.
demo: $(STAMP)
	$(BIN)/python -m bot.demo

# Benchmarks (one table; figures in bench/results.json) and the accelerated 24 h soak.
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

soak: $(STAMP)
	$(BIN)/python bench/soak.py --long

soak-short: $(STAMP)
	$(BIN)/python bench/soak.py --short
