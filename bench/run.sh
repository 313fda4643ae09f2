#!/usr/bin/env bash
# `make bench`: the pipeline's throughput, each figure beside a baseline measured in the
# same run on the same machine. Starts (or reuses) Kafka and Redis; stops what it started.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
: "${PYTHON:?run through make, which sets PYTHON to the venv interpreter}"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "[bench] wrk is missing: sudo apt-get install -y wrk" >&2; exit 1
  fi
fi

started=()
cleanup() { for svc in "${started[@]}"; do "infra/$svc.sh" stop || true; done; }
trap cleanup EXIT
if ! infra/kafka.sh status 2>/dev/null; then infra/kafka.sh start; started+=(kafka); fi
if ! infra/redis.sh status 2>/dev/null; then infra/redis.sh start; started+=(redis); fi

"$PYTHON" bench/report.py "$@"
