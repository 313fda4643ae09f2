#!/usr/bin/env bash
# Local Redis for the pipeline: Debian's redis-server with AOF persistence, no eviction.
#
#   infra/redis.sh start    reuse a Redis that answers on 127.0.0.1:$PORT, else start one
#   infra/redis.sh stop     stop the Redis this script started (never someone else's)
#   infra/redis.sh status   exit 0 when Redis answers
#
# Data (AOF) lives under $LOCAL_STATE_DIR/redis (default <repo>/.local/redis), git-ignored.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${LOCAL_STATE_DIR:-$ROOT/.local}
DIR=$STATE/redis
PORT=${LOCAL_REDIS_PORT:-6379}
PIDFILE=$DIR/redis.pid

log() { echo "[redis] $*" >&2; }

answers() { redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; }

# A Redis we did not start (Debian's system service, say) may run without an AOF, or
# evict keys when its memory is full. The consumer commits Kafka offsets once Redis
# answered, so such a Redis can lose events for good (on a restart, or by eviction) and
# store replayed ones twice (their seen marks evicted): say so loudly rather than reuse
# it silently.
check_durability() {
  local aof fsync policy
  aof=$("$@" config get appendonly 2>/dev/null | sed -n 2p)
  fsync=$("$@" config get appendfsync 2>/dev/null | sed -n 2p)
  policy=$("$@" config get maxmemory-policy 2>/dev/null | sed -n 2p)
  if [ "$aof" != yes ] || [ "$fsync" != always ]; then
    log "WARNING: this Redis runs with appendonly=${aof:-?} appendfsync=${fsync:-?}; events"
    log "WARNING: stored there can be lost if it restarts. Use 'appendonly yes' and"
    log "WARNING: 'appendfsync always', or stop it and let this script start its own."
  fi
  if [ "$policy" != noeviction ]; then
    log "WARNING: this Redis runs with maxmemory-policy=${policy:-?}; when its memory is"
    log "WARNING: full it deletes keys: stored events are lost and replayed ones stored"
    log "WARNING: twice. Use 'maxmemory-policy noeviction', or stop it and let this"
    log "WARNING: script start its own."
  fi
}

install() {
  command -v redis-server >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "redis-server is missing; installing Debian's package"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    log "redis-server is missing. Install it with: sudo apt-get install -y redis-server"
    exit 1
  fi
}

start() {
  if [ -n "${REDIS_URL:-}" ] && command -v redis-cli >/dev/null \
    && redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; then
    log "using the Redis that answers at REDIS_URL"
    check_durability redis-cli -u "$REDIS_URL"
    return 0
  fi
  install
  if answers; then
    log "already running on 127.0.0.1:$PORT"
    check_durability redis-cli -h 127.0.0.1 -p "$PORT"
    return 0
  fi
  mkdir -p "$DIR"
  # The Debian package starts a system service on install; ours is separate and
  # persists with an AOF fsynced before each reply, and never evicts (the same policy as
  # docker-compose): the consumer commits Kafka offsets only after Redis answered, so an
  # fsync per batch is what makes "stored" mean "on disk", and noeviction what keeps it
  # there (a full Redis refuses writes; the consumer backs off until there is room).
  redis-server --bind 127.0.0.1 --port "$PORT" --dir "$DIR" \
    --appendonly yes --appendfsync always --save "" --maxmemory-policy noeviction \
    --daemonize yes --pidfile "$PIDFILE" --logfile "$DIR/redis.log"
  for _ in $(seq 1 50); do answers && { log "ready on 127.0.0.1:$PORT"; return 0; }; sleep 0.1; done
  log "did not answer in 5 s; see $DIR/redis.log"; exit 1
}

stop() {
  if [ ! -f "$PIDFILE" ]; then log "not started by this script"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    redis-cli -h 127.0.0.1 -p "$PORT" shutdown >/dev/null 2>&1 || kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "stopped"
  fi
  rm -f "$PIDFILE"
}

status() {
  if answers; then log "running on 127.0.0.1:$PORT"; else log "not running"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
