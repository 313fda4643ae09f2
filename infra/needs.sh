#!/usr/bin/env bash
# The system packages `make test` needs beyond the venv, checked before the suite starts,
# so that a missing one is named here, with the line that installs it, rather than deep
# inside a test.
#
#   infra/needs.sh   exit 0 when every one is there; else name each missing one, print the
#                    apt-get line that installs them all, and exit 1
#
# Maven only resolves the broker's jars, once: with them in place
# ($LOCAL_KAFKA_LIBS, default $LOCAL_STATE_DIR/kafka/libs) it is not needed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIBS=${LOCAL_KAFKA_LIBS:-${LOCAL_STATE_DIR:-$ROOT/.local}/kafka/libs}

# command, Debian package, what needs it
NEEDS=(
  "redis-server redis-server Redis for the tests, and the private ones of the fault tests"
  "java openjdk-17-jre-headless the local Kafka broker"
  "wrk wrk the producer's benchmark smoke test"
  "chromium chromium the dashboard's browser tests"
  "chromedriver chromium-driver the dashboard's browser tests"
)
[ -f "$LIBS/.complete" ] || NEEDS+=("mvn maven resolving the Kafka broker's jars (first run only)")

missing=()
for need in "${NEEDS[@]}"; do
  read -r command package why <<<"$need"
  if ! command -v "$command" >/dev/null; then
    echo "[needs] $command is missing (Debian package $package): $why" >&2
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=
[ "$(id -u)" = 0 ] || sudo="sudo "
echo "[needs] install with: ${sudo}apt-get install -y ${missing[*]}" >&2
exit 1
