#!/usr/bin/env bash
# `make bench`: every speed and memory figure beside a baseline measured in the same run (see
# bench/report.py, or `make bench BENCH_ARGS=--help`). Starts (or reuses) Kafka and Redis;
# stops what it started. The consumer side stores into a private redis-server of its own.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
: "${PYTHON:?run through make, which sets PYTHON to the venv interpreter}"

started=()
cleanup() { for svc in "${started[@]}"; do "infra/$svc.sh" stop || true; done; }
trap cleanup EXIT
# A broker named by KAFKA_BOOTSTRAP_SERVERS (other than the local default) is used as it is.
case ${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092} in
  127.0.0.1:9092 | localhost:9092)
    if ! infra/kafka.sh status 2>/dev/null; then infra/kafka.sh start; started+=(kafka); fi ;;
  *) echo "[bench] Kafka: KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS (no local broker)" >&2 ;;
esac
# Also installs redis-server on a fresh machine; the bench's own instance needs the binary.
if ! infra/redis.sh status 2>/dev/null; then infra/redis.sh start; started+=(redis); fi

"$PYTHON" -m bench.report "$@"
