#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker + controller) from Maven Central jars.
#
#   infra/kafka.sh start    resolve jars once, format storage once, start, wait for metadata
#   infra/kafka.sh stop     stop the broker this script started
#   infra/kafka.sh status   exit 0 when a broker answers on the bootstrap address
#
# Idempotent: `start` reuses a broker that already answers. Everything it writes lives under
# $LOCAL_STATE_DIR (default: <repo>/.local), which is git-ignored. LOCAL_KAFKA_LIBS points at
# a jar directory resolved before (default: $LOCAL_STATE_DIR/kafka/libs), so a second broker
# with its own state directory (the reliability suite's) does not resolve the jars again.
#
# Besides the PLAINTEXT listener the broker has a second one, SASL_PLAINTEXT on
# LOCAL_KAFKA_SASL_PORT (default: LOCAL_KAFKA_PORT + 2, so 9094; empty = none), where the
# clients authenticate as LOCAL_KAFKA_SASL_USERNAME / LOCAL_KAFKA_SASL_PASSWORD with
# SCRAM-SHA-512 or PLAIN: the tests of the KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* settings
# use it. SCRAM credentials live in the cluster's metadata, so they are created through the
# admin API once the broker answers, on every start: a data directory formatted before the
# listener existed gets them too, and no re-format is needed.
#
# LOCAL_KAFKA_AUTHORIZER=true adds an authorizer, for Kafka ACLs to be tried and tested
# (docs/operations.md, "Kafka ACLs"; tests/integration/sasl/test_acls.py starts a broker
# of its own with it). Off by default: the tests' own SCRAM users have no ACLs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${LOCAL_STATE_DIR:-$ROOT/.local}
HOME_DIR=$STATE/kafka
LIBS=${LOCAL_KAFKA_LIBS:-$HOME_DIR/libs}
DATA=$HOME_DIR/data
LOGS=$HOME_DIR/logs
PIDFILE=$HOME_DIR/kafka.pid
CONFIG=$HOME_DIR/server.properties
HOST=127.0.0.1
PORT=${LOCAL_KAFKA_PORT:-9092}
CONTROLLER_PORT=${LOCAL_KAFKA_CONTROLLER_PORT:-9093}
SASL_PORT=${LOCAL_KAFKA_SASL_PORT-$((PORT + 2))}
SASL_USERNAME=${LOCAL_KAFKA_SASL_USERNAME:-pipeline}
SASL_PASSWORD=${LOCAL_KAFKA_SASL_PASSWORD:-pipeline-secret}
AUTHORIZER=${LOCAL_KAFKA_AUTHORIZER:-false}
HEAP=${LOCAL_KAFKA_HEAP:-512m}
PYTHON=${PYTHON:-python3}

log() { echo "[kafka] $*" >&2; }

# The Python helper runs in a clean environment: this script talks to its own PLAINTEXT
# listener, whatever Kafka security settings (or bad values of other settings) the
# caller's environment holds for the services.
topics_py() {
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" PYTHONPATH="$ROOT" "$@"
}

answers() {
  # A metadata request, not just an open port: the broker listens before it can serve.
  topics_py "$PYTHON" "$ROOT/infra/topics.py" wait --bootstrap "$HOST:$PORT" --timeout "${1:-1}" >/dev/null 2>&1
}

add_sasl_user() {
  [ -n "$SASL_PORT" ] || return 0
  # The password goes through the environment, not the command line (ps shows that).
  topics_py LOCAL_KAFKA_SASL_PASSWORD="$SASL_PASSWORD" "$PYTHON" "$ROOT/infra/topics.py" \
    scram-user --bootstrap "$HOST:$PORT" --username "$SASL_USERNAME" \
    || { log "could not create the SASL user $SASL_USERNAME"; exit 1; }
}

resolve_jars() {
  if [ -f "$LIBS/.complete" ]; then return; fi
  command -v mvn >/dev/null || { log "mvn is missing: install Maven (apt-get install maven)"; exit 1; }
  log "resolving Apache Kafka jars from Maven Central (first run only)"
  rm -rf "$LIBS"
  mkdir -p "$HOME_DIR"
  mvn -q -B -f "$ROOT/infra/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS" >"$HOME_DIR/mvn.log" 2>&1 \
    || { cat "$HOME_DIR/mvn.log" >&2; log "could not resolve the Kafka jars (see above)"; exit 1; }
  touch "$LIBS/.complete"
}

write_config() {
  mkdir -p "$DATA" "$LOGS"
  local listeners="PLAINTEXT://$HOST:$PORT" sasl=""
  if [ -n "$SASL_PORT" ]; then
    listeners="$listeners,SASL_PLAINTEXT://$HOST:$SASL_PORT"
    # Brokers talk to each other over PLAINTEXT, so the broker needs no credentials of its
    # own. PLAIN's users are the JAAS line's user_<name> entries; SCRAM's are created by
    # add_sasl_user.
    sasl="sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USERNAME=\"$SASL_PASSWORD\";"
    if [ "$AUTHORIZER" = true ]; then
      # PLAINTEXT's clients (User:ANONYMOUS, the controller's own requests among them) and
      # the SASL user are super users: they may do all they could without an authorizer.
      # Any other SASL user may do only what ACLs grant it.
      sasl="$sasl
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:$SASL_USERNAME"
    fi
  fi
  cat >"$CONFIG" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
listeners=$listeners,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
$sasl
log.dirs=$DATA
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  cat >"$HOME_DIR/log4j2.yaml" <<YAML
Configuration:
  Appenders:
    RollingFile:
      name: file
      fileName: "$LOGS/server.log"
      filePattern: "$LOGS/server.log.%i"
      PatternLayout: { pattern: "[%d] %p %m (%c)%n" }
      Policies: { SizeBasedTriggeringPolicy: { size: 20MB } }
      DefaultRollOverStrategy: { max: 3 }
  Loggers:
    Root: { level: INFO, AppenderRef: [ { ref: file } ] }
YAML
}

JAVA=(java -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$HOME_DIR/log4j2.yaml" -cp "$LIBS/*")

start() {
  if answers 1; then log "already running on $HOST:$PORT"; return 0; fi
  command -v java >/dev/null || { log "java is missing: install a JDK 17 (apt-get install openjdk-17-jre-headless)"; exit 1; }
  resolve_jars
  write_config
  if [ ! -f "$DATA/meta.properties" ]; then
    log "formatting KRaft storage in $DATA"
    "${JAVA[@]}" kafka.tools.StorageTool format --standalone \
      --cluster-id "$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)" \
      --config "$CONFIG" >"$LOGS/format.log" 2>&1 \
      || { cat "$LOGS/format.log" >&2; exit 1; }
  fi
  log "starting broker on $HOST:$PORT (logs: $LOGS/server.log)"
  # setsid: the broker outlives this shell and ignores the terminal's Ctrl-C; `stop` ends it.
  setsid nohup "${JAVA[@]}" kafka.Kafka "$CONFIG" >"$LOGS/stdout.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + ${LOCAL_KAFKA_START_TIMEOUT:-90}))
  until answers 2; do
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      log "broker exited during start-up; last lines of its logs:"
      tail -n 30 "$LOGS/stdout.log" "$LOGS/server.log" >&2 2>/dev/null || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then log "broker not ready in time"; exit 1; fi
    sleep 0.5
  done
  add_sasl_user
  log "ready on $HOST:$PORT${SASL_PORT:+ (SASL_PLAINTEXT on $HOST:$SASL_PORT, user $SASL_USERNAME)}"
}

stop() {
  if [ ! -f "$PIDFILE" ]; then log "not started by this script"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "broker did not stop in 30 s, killing it"; kill -KILL "$pid"; }
    log "stopped"
  fi
  rm -f "$PIDFILE"
}

status() {
  if answers 2; then log "running on $HOST:$PORT"; else log "not running"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
