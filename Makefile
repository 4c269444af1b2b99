# network-anomaly — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV = $(shell bash scripts/bootstrap.sh)
TEST_KAFKA_PORT ?= 19092
TEST_KAFKA_DIR ?= $(HOME)/.cache/network-anomaly/test-kafka

.PHONY: help install demo test test-unit lint bench constraints kafka-start kafka-stop clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: ## Install everything (venv in ~/.cache/network-anomaly, jars via Maven); prints the venv
	@bash scripts/bootstrap.sh

demo: ## Install, then run the end-to-end demo (Kafka + training + streaming job + live events)
	@v="$(VENV)" && "$$v/bin/netanomaly" demo

test: ## Install, start a test Kafka broker, run the whole test suite, stop the broker
	@bash scripts/test.sh

test-unit: ## Only the fast unit tests (no Kafka, no Flink)
	@v="$(VENV)" && "$$v/bin/pytest" -m "not integration" tests

lint: ## ruff
	@v="$(VENV)" && "$$v/bin/ruff" check . && "$$v/bin/ruff" format --check .

bench: ## Benchmarks (ratios against a baseline in the same run)
	@v="$(VENV)" && "$$v/bin/python" -m bench.run

constraints: ## Re-resolve constraints.txt after changing a pin in setup.py
	@d=$$(mktemp -d) && python3.11 -m venv $$d && $$d/bin/pip install -q -e .[dev] && \
	  { head -2 constraints.txt; $$d/bin/pip freeze --exclude-editable | grep -v '^network-anomaly'; } > constraints.new && \
	  mv constraints.new constraints.txt && rm -rf $$d

kafka-start: ## Start the local Kafka broker on 127.0.0.1:9092
	@v="$(VENV)" && "$$v/bin/netanomaly" kafka start

kafka-stop: ## Stop the local Kafka broker
	@v="$(VENV)" && "$$v/bin/netanomaly" kafka stop

clean: ## Remove build and test leftovers (not the venv or the jar cache)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache out
