# The two commands a newcomer needs: `make run` and `make test`. Everything else is set up by them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell command -v python3)
UV = $(shell scripts/bootstrap-uv)
VENV := .venv
PYTEST := $(VENV)/bin/pytest
RUN_ARGS ?=

.PHONY: help run sync sync-dev test test-slow lint fmt bench test-deps clean

help:
	@echo "make run        run the appliance on built-in defaults (RTMP :1935, web :8080)"
	@echo "make test       install test peers, lint, run the test suite"
	@echo "make test-slow  the slow checks (image, boot, soak, long fuzzing)"
	@echo "make bench      benchmarks side by side with peers"

sync:
	"$(UV)" sync --locked --all-extras --no-dev --inexact

sync-dev:
	"$(UV)" sync --locked --all-extras

run: sync
	exec $(VENV)/bin/appliance run $(RUN_ARGS)

test-deps:
	scripts/install-test-deps

lint: sync-dev
	$(VENV)/bin/ruff check appliance tests
	$(VENV)/bin/ruff format --check appliance tests
	$(VENV)/bin/mypy appliance

# pytest exits 5 when it collected nothing; that is a failure here, as is any other non-zero exit.
test: test-deps lint
	$(PYTEST) -m "not slow" -p no:cacheprovider

test-slow: test-deps sync-dev
	$(PYTEST) -m slow -p no:cacheprovider

bench: sync-dev
	scripts/install-test-deps && scripts/install-bench-deps
	@if ls bench/*.py >/dev/null 2>&1; then for b in bench/*.py; do $(VENV)/bin/python $$b || exit 1; done; \
	else echo "no benchmarks yet: they arrive with the relay issue"; fi

clean:
	rm -rf $(VENV) .tools var .pytest_cache .mypy_cache .ruff_cache
