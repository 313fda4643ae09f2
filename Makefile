# One obvious command each. `make run` and `make test` are all a new user needs.
SHELL := /bin/bash
BOOT_PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The infra scripts use the venv's interpreter (it has confluent-kafka).
export PYTHON := $(abspath $(PY))

.PHONY: help venv run test test-unit test-integration infra down lint fmt bench bench-cluster reliability compose-check clean

help:
	@echo "make run     start Kafka, Redis, the producer (:8000) and a consumer (:8001); Ctrl-C stops them"
	@echo "make test    the whole suite: unit, integration, fuzzing, browser, reliability (small), bench smoke"
	@echo "make down    stop the local Kafka and Redis"
	@echo "make lint    ruff and mypy --strict"
	@echo "make bench   throughput benchmarks"
	@echo "make bench-cluster  the consumer into a local Redis Cluster (docs/scaling.md's figures)"
	@echo "make reliability  the fault scenarios at 50,000 events each (10,000 on a Redis Cluster); writes docs/reliability.md"

$(STAMP): pyproject.toml
	$(BOOT_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: venv
	@infra/run.sh

# pytest's fixtures start the local Kafka/Redis when nothing answers and stop them at the end.
# The tests run in TEST_WORKERS pytest-xdist processes: most of their time is spent waiting
# on Kafka, Redis and child processes, so more workers than cores pay. Each test has its
# own topic, group, key prefix and ports (tests/conftest.py). A worker is handed two tests
# at a time, not runs of fifty: the reliability scenarios (15-30 s each) stand next to each
# other, and one worker would otherwise get them all. TEST_WORKERS=0 runs the tests in this
# one process.
TEST_WORKERS ?= 3
PYTEST_PARALLEL = -n $(TEST_WORKERS) --maxschedchunk 2

test: venv
	$(PY) -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The system packages the suite needs beyond the venv (redis-server, java, wrk, chromium,
# ...), checked before it runs: a missing one is named, with its apt-get line.
.PHONY: needs
test: needs
needs:
	@infra/needs.sh

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-integration: venv
	$(PY) -m pytest tests/integration $(PYTEST_PARALLEL) $(PYTEST_ARGS)

infra: venv
	@infra/kafka.sh start
	@infra/redis.sh start
	@$(PY) infra/topics.py ensure

down:
	@infra/kafka.sh stop
	@infra/redis.sh stop

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# docker-compose.yml checked statically: no Docker engine runs on these machines.
compose-check:
	@if command -v docker-compose >/dev/null; then docker-compose -f docker-compose.yml config -q && echo "docker-compose.yml: valid"; \
	else echo "docker-compose not installed (apt-get install docker-compose); skipping the static check"; fi

# Sizes and parts: make bench BENCH_ARGS="--memory-events 2000000" (BENCH_ARGS=--help lists them).
bench: venv
	@bench/run.sh $(BENCH_ARGS)

# Not part of `make bench` (about 5 minutes): the consumer into private local Redis
# Clusters (3 masters; one shard; WAIT 1) beside a single node, for docs/scaling.md.
bench-cluster: venv
	@bench/run.sh --only cluster --no-docs $(BENCH_ARGS)

# The fault scenarios of tests/reliability/ (make test runs them small) at full size, on one
# Redis and on a Redis Cluster; the tables in docs/reliability.md are written from this run.
RELIABILITY_EVENTS ?= 50000
RELIABILITY_CLUSTER_EVENTS ?= 10000
reliability: venv
	RELIABILITY_EVENTS=$(RELIABILITY_EVENTS) RELIABILITY_CLUSTER_EVENTS=$(RELIABILITY_CLUSTER_EVENTS) \
		RELIABILITY_REPORT=docs/reliability.md \
		$(PY) -m pytest tests/reliability -p no:cacheprovider $(PYTEST_ARGS)

clean: down
	rm -rf .local $(VENV) .pytest_cache .mypy_cache .ruff_cache
