#!/usr/bin/env bash
# Local Redis for the pipeline: Debian's redis-server with AOF persistence, no eviction.
#
#   infra/redis.sh start    reuse a Redis that answers on 127.0.0.1:$PORT, else start one
#   infra/redis.sh stop     stop the Redis this script started (never someone else's)
#   infra/redis.sh status   exit 0 when Redis answers
#
# Data (AOF) lives under $LOCAL_STATE_DIR/redis (default <repo>/.local/redis), git-ignored.
# A restart reads the whole AOF back before Redis serves: with the default retention's
# worth of events (about 1.2 GiB) that takes seconds, more on a busy machine. While the
# server lives and answers LOADING, `start` waits, with a progress line every few seconds,
# for up to LOCAL_REDIS_LOAD_TIMEOUT seconds (default 300).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${LOCAL_STATE_DIR:-$ROOT/.local}
DIR=$STATE/redis
PORT=${LOCAL_REDIS_PORT:-6379}
PIDFILE=$DIR/redis.pid
LOAD_TIMEOUT=${LOCAL_REDIS_LOAD_TIMEOUT:-300}
# A server that neither answers nor loads has failed to start (a busy port, a bad AOF).
ANSWER_TIMEOUT=5
PROGRESS_EVERY=3

log() { echo "[redis] $*" >&2; }

if ! [[ $LOAD_TIMEOUT =~ ^[0-9]+$ ]]; then
  log "LOCAL_REDIS_LOAD_TIMEOUT must be a whole number of seconds, got '$LOAD_TIMEOUT'"
  exit 2
fi

reply() { redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null || true; }
answers() { [ "$(reply)" = PONG ]; }

load_progress() {
  local info perc eta
  info=$(redis-cli -h 127.0.0.1 -p "$PORT" info persistence 2>/dev/null | tr -d '\r')
  perc=$(sed -n 's/^loading_loaded_perc://p' <<<"$info")
  eta=$(sed -n 's/^loading_eta_seconds://p' <<<"$info")
  echo "${perc:-?}% of the current AOF file, about ${eta:-?} s left"
}

# Returns once the Redis on $PORT answers PONG. Exits 1 when the process in $PIDFILE dies,
# when nothing answers within ANSWER_TIMEOUT s, or when loading outlasts LOAD_TIMEOUT s.
wait_ready() {
  local started=$SECONDS deadline=$((SECONDS + ANSWER_TIMEOUT)) next=$SECONDS pid loading=
  while :; do
    case $(reply) in
      PONG) break ;;
      LOADING*)
        [ -n "$loading" ] || { loading=1; deadline=$((started + LOAD_TIMEOUT)); }
        if [ "$SECONDS" -ge "$next" ]; then
          log "loading its data: $(load_progress); waited $((SECONDS - started)) s of LOCAL_REDIS_LOAD_TIMEOUT=$LOAD_TIMEOUT"
          next=$((SECONDS + PROGRESS_EVERY))
        fi
        ;;
    esac
    pid=$(cat "$PIDFILE" 2>/dev/null || true)
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      log "exited during start-up; last lines of $DIR/redis.log:"
      tail -n 20 "$DIR/redis.log" >&2 2>/dev/null || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      if [ -n "$loading" ]; then
        log "still loading after $LOAD_TIMEOUT s; it goes on in the background (pid ${pid:-?})."
        log "Raise LOCAL_REDIS_LOAD_TIMEOUT, or start again to wait longer; see $DIR/redis.log"
      else
        log "did not answer in $ANSWER_TIMEOUT s; see $DIR/redis.log"
      fi
      exit 1
    fi
    sleep 0.1
  done
  log "ready on 127.0.0.1:$PORT"
}

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
  case $(reply) in
    PONG)
      log "already running on 127.0.0.1:$PORT"
      check_durability redis-cli -h 127.0.0.1 -p "$PORT"
      return 0
      ;;
    LOADING*)
      # Started before (by an earlier `start` that gave up waiting, say): wait for it.
      wait_ready
      check_durability redis-cli -h 127.0.0.1 -p "$PORT"
      return 0
      ;;
  esac
  mkdir -p "$DIR"
  # A pid file left by a server that died would read as "exited" before the new one
  # writes its own.
  rm -f "$PIDFILE"
  # The Debian package starts a system service on install; ours is separate and
  # persists with an AOF fsynced before each reply, and never evicts (the same policy as
  # docker-compose): the consumer commits Kafka offsets only after Redis answered, so an
  # fsync per batch is what makes "stored" mean "on disk", and noeviction what keeps it
  # there (a full Redis refuses writes; the consumer backs off until there is room).
  redis-server --bind 127.0.0.1 --port "$PORT" --dir "$DIR" \
    --appendonly yes --appendfsync always --save "" --maxmemory-policy noeviction \
    --daemonize yes --pidfile "$PIDFILE" --logfile "$DIR/redis.log"
  wait_ready
}

# Waits up to 5 s for process $1 to end; fails when it still lives.
exited() {
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  return 1
}

stop() {
  if [ ! -f "$PIDFILE" ]; then log "not started by this script"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    # SHUTDOWN can be refused (a long script holds the server, say): then SIGTERM. The pid
    # file stays while the server lives, so a later `stop` can try again.
    redis-cli -h 127.0.0.1 -p "$PORT" shutdown >/dev/null 2>&1 || true
    if ! exited "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      exited "$pid" || { log "did not stop in 10 s (pid $pid)"; exit 1; }
    fi
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
