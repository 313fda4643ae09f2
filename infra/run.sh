#!/usr/bin/env bash
# `make run`: the whole pipeline on this machine, in the foreground.
#
# Starts (or reuses) Kafka and Redis, creates the topics, then runs one producer (gunicorn,
# :8000) and one consumer replica (worker + read API, :8001) with their log lines prefixed.
# Ctrl-C stops what this script started; Kafka or Redis that were already running stay up.
#
# The services use KAFKA_BOOTSTRAP_SERVERS and REDIS_URL when they are set, else the local
# stack's ports (LOCAL_KAFKA_PORT, default 9092; LOCAL_REDIS_PORT, default 6379); the
# producer gets REDIS_URL only when it is set, as it then keeps its quota in Redis. A local
# broker or Redis is started only for a local address (127.0.0.1 or localhost on those
# ports, or on the broker's SASL port); any other address must already answer.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=$(dirname "${PYTHON:?run through make, which sets PYTHON to the venv interpreter}")
PRODUCER_PORT=${PRODUCER_PORT:-8000}
CONSUMER_PORT=${CONSUMER_PORT:-8001}
KAFKA_PORT=${LOCAL_KAFKA_PORT:-9092}
KAFKA_SASL_PORT=${LOCAL_KAFKA_SASL_PORT-$((KAFKA_PORT + 2))}
REDIS_PORT=${LOCAL_REDIS_PORT:-6379}
export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$KAFKA_PORT}
# Not exported: the consumer is given it below. The producer sees REDIS_URL only when the
# caller set it, since a set REDIS_URL is what moves its quota counters into Redis.
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
t0=$SECONDS

started=()
pids=()

cleanup() {
  local status=$?
  trap - INT TERM EXIT
  # No `set -e` here: a failed echo (the terminal or a `| tee` already gone after Ctrl-C)
  # must not skip the stopping.
  set +e
  echo "[run] stopping" >&2 2>/dev/null
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  for svc in "${started[@]}"; do "infra/$svc.sh" stop 2>/dev/null; done
  exit "$status"
}
trap cleanup EXIT
# Ctrl-C or SIGTERM: a normal stop, so exit 0 (through the EXIT trap above).
trap 'exit 0' INT TERM

answers() { curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$1/$2" 2>/dev/null; }
for port in "$PRODUCER_PORT" "$CONSUMER_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "[run] port $port is already in use (another make run?); stop it first" >&2
    exit 1
  fi
done

local_kafka() {
  local port
  for port in "$KAFKA_PORT" $KAFKA_SASL_PORT; do
    case $KAFKA_BOOTSTRAP_SERVERS in "127.0.0.1:$port" | "localhost:$port") return 0 ;; esac
  done
  return 1
}

local_redis() {
  local host
  for host in 127.0.0.1 localhost; do
    case $REDIS_URL in "redis://$host:$REDIS_PORT" | "redis://$host:$REDIS_PORT/"*) return 0 ;; esac
  done
  return 1
}

if local_kafka; then
  if ! infra/kafka.sh status 2>/dev/null; then infra/kafka.sh start; started+=(kafka); fi
else
  # topics.py below waits for it, and says so when it does not answer.
  echo "[run] Kafka: KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS (no local broker)" >&2
fi
if local_redis; then
  if ! infra/redis.sh status 2>/dev/null; then infra/redis.sh start; started+=(redis); fi
elif ! command -v redis-cli >/dev/null; then
  echo "[run] Redis: REDIS_URL, not checked (no redis-cli here); no local Redis" >&2
elif redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; then
  infra/redis.sh start # uses it, and warns when its settings can lose events
else
  # The URL may hold a password: it is not printed.
  echo "[run] nothing answers at REDIS_URL, which is not the local Redis's address" >&2
  echo "[run] (127.0.0.1:$REDIS_PORT), so none is started: fix it, or unset it" >&2
  exit 1
fi
"$PYTHON" infra/topics.py ensure

# The services run in sessions of their own, so the terminal's Ctrl-C reaches only this
# script, which then sends each one a single SIGTERM (their graceful-shutdown path); the
# log prefixers ignore SIGINT so the services' last lines still get through.
prefix() { trap '' INT; exec sed -u "s/^/[$1] /"; }
setsid "$BIN/producer-service" > >(prefix producer) 2>&1 &
pids+=($!)
REDIS_URL=$REDIS_URL setsid "$BIN/consumer-service" > >(prefix consumer) 2>&1 &
pids+=($!)
consumer_pid=$!

# Exit status 3 is the consumer's poison guard (docs/consumer.md): restarting alone only
# trips it again, so say how to get going.
explain() { # <pid> <exit status>
  if [[ $1 == "$consumer_pid" && $2 == 3 ]]; then
    cat >&2 <<HINT
[run] The consumer's poison guard stopped it (exit status 3): most of the records it just
[run] read are not events; its ERROR line above says how many. A plain restart stops again.
[run] See "Getting out of a poison flood" in docs/consumer.md. In short, after a look at them:
[run]   CONSUMER_POISON_MAX_SHARE=1 make run   # dead-letters them; then restart without it
HINT
  fi
}

until answers "$PRODUCER_PORT" ready && answers "$CONSUMER_PORT" ready; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" && code=0 || code=$?
      echo "[run] a service exited during start-up (status $code)" >&2
      explain "$pid" "$code"
      exit 1
    fi
  done
  sleep 0.3
done

cat <<MSG

[run] ready in $((SECONDS - t0)) s. In another terminal:

  curl -sS -X POST http://127.0.0.1:$PRODUCER_PORT/events/generate \\
       -H 'Content-Type: application/json' \\
       -d '{"userId": "user-42", "eventType": "LOGIN", "payload": {"device": "mobile"}}'

  curl -sS http://127.0.0.1:$CONSUMER_PORT/events/processed

[run] API docs: http://127.0.0.1:$PRODUCER_PORT/docs  metrics: /metrics on both ports. Ctrl-C stops.

MSG
wait -n -p exited "${pids[@]}" && code=0 || code=$?
echo "[run] a service exited with status $code; stopping the rest" >&2
explain "$exited" "$code"
exit "$code"
