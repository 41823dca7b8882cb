# The two commands of the README:
#   make run    install everything and run Cairn on one data directory
#   make test   install everything and run every check and test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
DATA ?= /var/lib/cairn
LISTEN ?= 127.0.0.1:8080
BIN := $(VENV)/bin
APT_PACKAGES := python3 python3-venv python3-dev gcc pkg-config fuse3 libfuse3-dev \
	postgresql redis-server rsync attr acl restic litmus curl chromium qemu-utils e2fsprogs

.PHONY: run test setup system lint unit bench bench-s3 bench-image

run: setup
	$(BIN)/cairn --data $(DATA) serve --listen $(LISTEN)

test: setup lint unit

setup: system $(VENV)/.installed

# Installs the Debian packages once; the stamp records which list was installed.
system: $(VENV)/.system

$(VENV)/.system: Makefile
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		fi; \
	else echo "not root or no apt-get: install $(APT_PACKAGES) yourself"; fi
	mkdir -p $(VENV) && touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.system
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit:
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/engine_bench.py

bench-s3: setup
	$(BIN)/python bench/s3_bench.py

bench-image: setup
	$(BIN)/python bench/image_bench.py
