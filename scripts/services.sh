#!/usr/bin/env bash
# Starts and stops the real services outboxkit's tests and benchmarks need:
# PostgreSQL (Debian's package) and a single-node Apache Kafka broker in KRaft
# mode whose jars come from Maven Central.
#
# Usage: scripts/services.sh up|down|postgres|postgres-restart|postgres-logical|kafka-start|kafka-stop|kafka-kill|status|env
#
# postgres-logical starts a second Debian cluster of the same PostgreSQL version,
# "logical" on 127.0.0.1:$OUTBOXKIT_LOGICAL_PORT (default 5433), with
# wal_level=logical for logical decoding (Debezium in `make bench-peers`); the
# main cluster is never restarted for it.
#
# Idempotent: "up" leaves a service alone when it already answers, and only
# "down" stops what "up" started (recorded by PID in $OUTBOXKIT_STATE).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/scripts/kafka/pom.xml")
CACHE=${OUTBOXKIT_CACHE:-$HOME/.cache/outboxkit}
STATE=${OUTBOXKIT_STATE:-$CACHE/run}
KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
KAFKA_DATA=$STATE/kafka-data
KAFKA_LOG=$STATE/kafka.log
KAFKA_PID=$STATE/kafka.pid
KAFKA_PORT=${OUTBOXKIT_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
DEFAULT_DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"
DATABASE_URL=${DATABASE_URL:-$DEFAULT_DATABASE_URL}
LOGICAL_PORT=${OUTBOXKIT_LOGICAL_PORT:-5433}
LOGICAL_DATABASE_URL="postgres://postgres:postgres@127.0.0.1:$LOGICAL_PORT/postgres?sslmode=disable"

mkdir -p "$STATE"

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_answers() { psql "$DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1; }
pg_logical_answers() { psql "$LOGICAL_DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1; }

postgres_up() {
  if pg_answers; then log "postgres: already answering at $DATABASE_URL"; return; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    log "postgres: installing Debian's postgresql package"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  fi
  local ver
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  [ -n "$ver" ] || die "postgres: no cluster under /etc/postgresql"
  # Room for parallel tests, relays and benchmarks; durability settings stay
  # at their defaults so benchmark figures mean what they would in production.
  as_root tee "/etc/postgresql/$ver/main/conf.d/outboxkit.conf" >/dev/null <<'CONF'
max_connections = 300
shared_buffers = 512MB
listen_addresses = '127.0.0.1'
CONF
  if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" && $4=="online"' | grep -q .; then
    as_root pg_ctlcluster "$ver" main start
    echo "$ver" >"$STATE/postgres.started"
  fi
  for _ in $(seq 1 60); do
    as_root su postgres -c "psql -Atqc 'select 1'" >/dev/null 2>&1 && break
    sleep 0.5
  done
  as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  for _ in $(seq 1 60); do pg_answers && break; sleep 0.5; done
  pg_answers || die "postgres: not answering at $DATABASE_URL; log: /var/log/postgresql/postgresql-$ver-main.log"
  log "postgres: ready at $DATABASE_URL"
}

postgres_down() {
  [ -f "$STATE/postgres.started" ] || { log "postgres: not started by this script; left alone"; return; }
  local ver
  ver=$(cat "$STATE/postgres.started")
  as_root pg_ctlcluster "$ver" main stop -m fast || true
  rm -f "$STATE/postgres.started"
  log "postgres: stopped"
}

# postgres_logical_up creates (once) and starts the second cluster "logical":
# the main cluster's settings plus wal_level=logical and room for replication
# slots, so tools that need logical decoding run without restarting the main
# cluster other sessions use.
postgres_logical_up() {
  if pg_logical_answers; then log "postgres-logical: already answering at $LOGICAL_DATABASE_URL"; return; fi
  command -v pg_createcluster >/dev/null 2>&1 || postgres_up
  local ver
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  [ -n "$ver" ] || die "postgres-logical: no PostgreSQL under /etc/postgresql"
  if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="logical"' | grep -q .; then
    log "postgres-logical: creating cluster $ver/logical on port $LOGICAL_PORT"
    as_root pg_createcluster "$ver" logical -p "$LOGICAL_PORT" >/dev/null
  fi
  as_root tee "/etc/postgresql/$ver/logical/conf.d/outboxkit.conf" >/dev/null <<CONF
max_connections = 300
shared_buffers = 512MB
listen_addresses = '127.0.0.1'
port = $LOGICAL_PORT
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
CONF
  if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="logical" && $4=="online"' | grep -q .; then
    as_root pg_ctlcluster "$ver" logical start
    echo "$ver" >"$STATE/postgres-logical.started"
  fi
  for _ in $(seq 1 60); do
    as_root su postgres -c "psql -p $LOGICAL_PORT -Atqc 'select 1'" >/dev/null 2>&1 && break
    sleep 0.5
  done
  as_root su postgres -c "psql -p $LOGICAL_PORT -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  for _ in $(seq 1 60); do pg_logical_answers && break; sleep 0.5; done
  pg_logical_answers || die "postgres-logical: not answering at $LOGICAL_DATABASE_URL; log: /var/log/postgresql/postgresql-$ver-logical.log"
  [ "$(psql "$LOGICAL_DATABASE_URL" -Atqc 'show wal_level')" = logical ] ||
    die "postgres-logical: wal_level is not logical on port $LOGICAL_PORT"
  log "postgres-logical: ready at $LOGICAL_DATABASE_URL (wal_level=logical)"
}

postgres_logical_down() {
  [ -f "$STATE/postgres-logical.started" ] || { log "postgres-logical: not started by this script; left alone"; return; }
  local ver
  ver=$(cat "$STATE/postgres-logical.started")
  as_root pg_ctlcluster "$ver" logical stop -m fast || true
  rm -f "$STATE/postgres-logical.started"
  log "postgres-logical: stopped"
}

kafka_fetch() {
  if [ -f "$KAFKA_HOME/.complete" ]; then return; fi
  log "kafka: resolving Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_HOME"
  rm -rf "$KAFKA_HOME"
  mkdir -p "$KAFKA_HOME"
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" >"$STATE/mvn.log" 2>&1 ||
    die "kafka: maven failed; log: $STATE/mvn.log"
  touch "$KAFKA_HOME/.complete"
}

kafka_running() { [ -f "$KAFKA_PID" ] && kill -0 "$(cat "$KAFKA_PID")" 2>/dev/null; }

kafka_answers() {
  # A metadata request through kafka-go, the client the project uses.
  (cd "$ROOT" && go run ./scripts/kafkaready -brokers "127.0.0.1:$KAFKA_PORT" -timeout "${1:-1s}") >/dev/null 2>&1
}

kafka_config() {
  cat >"$STATE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Production clusters usually forbid auto-creation; the relay must cope with a
# missing topic (it parks the aggregate), and tests create their topics.
auto.create.topics.enable=false
message.max.bytes=1048588
PROPS
  cat >"$STATE/log4j2.yaml" <<'YAML'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
YAML
}

kafka_start() {
  if kafka_running && kafka_answers 2s; then log "kafka: already running (pid $(cat "$KAFKA_PID"))"; return; fi
  if ! kafka_running && kafka_answers 1s; then log "kafka: something already answers on 127.0.0.1:$KAFKA_PORT; using it"; return; fi
  command -v java >/dev/null || die "kafka: java not found (install a JDK 17+)"
  kafka_fetch
  kafka_config
  local cp="$KAFKA_HOME/libs/*"
  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    mkdir -p "$KAFKA_DATA"
    java -cp "$cp" kafka.tools.StorageTool format -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid)" \
      -c "$STATE/server.properties" >>"$KAFKA_LOG" 2>&1 || die "kafka: storage format failed; log: $KAFKA_LOG"
  fi
  local t0=$SECONDS
  nohup java -Xms256m -Xmx768m -XX:+UseG1GC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$STATE/log4j2.yaml" \
    -cp "$cp" kafka.Kafka "$STATE/server.properties" >>"$KAFKA_LOG" 2>&1 &
  echo $! >"$KAFKA_PID"
  for _ in $(seq 1 120); do
    kafka_running || die "kafka: broker exited during start; log: $KAFKA_LOG"
    if kafka_answers 2s; then log "kafka: ready at 127.0.0.1:$KAFKA_PORT in $((SECONDS - t0))s (pid $(cat "$KAFKA_PID"))"; return; fi
    sleep 0.5
  done
  die "kafka: not answering after 60s; log: $KAFKA_LOG"
}

# kafka_stop stops the broker by PID: SIGTERM, then SIGKILL after a timeout.
# The data directory stays, so a later start resumes with every topic.
kafka_stop() {
  local sig=${1:-TERM}
  kafka_running || { rm -f "$KAFKA_PID"; log "kafka: not running"; return; }
  local pid
  pid=$(cat "$KAFKA_PID")
  kill -s "$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  rm -f "$KAFKA_PID"
  log "kafka: stopped (pid $pid, $sig)"
}

case "${1:-up}" in
up)
  # Go modules first so the readiness probe compiles while Postgres starts.
  (cd "$ROOT" && go build -o /dev/null ./scripts/kafkaready) &
  build=$!
  postgres_up
  wait "$build" || die "could not build scripts/kafkaready"
  kafka_start
  ;;
down)
  kafka_stop TERM
  rm -rf "$KAFKA_DATA"
  postgres_logical_down
  postgres_down
  ;;
postgres) postgres_up ;;
postgres-restart)
  # For fault tests: a fast restart drops every connection, as a crash would.
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster "$ver" main restart -m fast
  for _ in $(seq 1 60); do pg_answers && break; sleep 0.5; done
  pg_answers || die "postgres: not answering after restart"
  log "postgres: restarted"
  ;;
postgres-logical) postgres_logical_up ;;
kafka-start) kafka_start ;;
kafka-stop) kafka_stop TERM ;;
kafka-kill) kafka_stop KILL ;;
status)
  pg_answers && echo "postgres: up ($DATABASE_URL)" || echo "postgres: down"
  pg_logical_answers && echo "postgres-logical: up ($LOGICAL_DATABASE_URL)" || echo "postgres-logical: down"
  kafka_answers 2s && echo "kafka: up (127.0.0.1:$KAFKA_PORT)" || echo "kafka: down"
  ;;
env)
  echo "export DATABASE_URL='$DATABASE_URL'"
  echo "export KAFKA_BROKERS='127.0.0.1:$KAFKA_PORT'"
  echo "export OUTBOXKIT_SERVICES='$ROOT/scripts/services.sh'"
  ;;
*) die "usage: $0 up|down|postgres|postgres-restart|postgres-logical|kafka-start|kafka-stop|kafka-kill|status|env" ;;
esac
