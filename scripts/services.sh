#!/usr/bin/env bash
# Starts and stops the real services outboxkit's tests and benchmarks need:
# PostgreSQL (Debian's package), a single-node Apache Kafka broker in KRaft
# mode whose jars come from Maven Central, and on demand a three-node KRaft
# cluster from the same jars for fault tests.
#
# Usage: scripts/services.sh COMMAND
#
#   up | down                 PostgreSQL (main, and the wal_level=logical cluster
#                             on 5433 for WAL mode) and the single broker (127.0.0.1:9092)
#   postgres | postgres-restart | postgres-logical | postgres-logical-restart
#   kafka-start | kafka-stop | kafka-kill
#   status                    health of every service: up, degraded or down
#   env                       export lines for DATABASE_URL and KAFKA_BROKERS
#
#   cluster-up | cluster-down three combined broker+controller nodes, numbered
#                             1..3, on 127.0.0.1:19092, :29092, :39092 (each
#                             controller on the port above); RF 3, min ISR 2,
#                             auto.create.topics.enable=false. cluster-down
#                             also removes the cluster's data.
#   cluster-stop N            SIGTERM node N (SIGKILL after a timeout)
#   cluster-kill N            SIGKILL node N
#   cluster-start N           start node N again, keeping its data
#   cluster-pause N           SIGSTOP node N (it keeps its ports, answers nothing)
#   cluster-resume N          SIGCONT node N
#   cluster-status            up/degraded/down per node and for the cluster
#   cluster-env               KAFKA_BROKERS=host:port,host:port,host:port
#
# postgres-logical starts a second Debian cluster of the same PostgreSQL version,
# "logical" on 127.0.0.1:$OUTBOXKIT_LOGICAL_PORT (default 5433), with
# wal_level=logical for logical decoding (Debezium in `make bench-peers`); the
# main cluster is never restarted for it.
#
# Health, for the single broker and every cluster node: a start first waits
# until the node's broker and controller ports are free (an old process may
# still be exiting) and fails naming the port and its holder otherwise; it is
# done only when the node is in the metadata broker list with a known
# controller and leads a probe topic that took a write with acks=all
# (scripts/kafkaready). A start fails loudly, with the log's last lines, when
# the process exits or logs a fatal error. Stops find the java process by its
# pid file or, without one, by its config file on the command line.
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
CLUSTER=$STATE/cluster
CLUSTER_PORT=${OUTBOXKIT_CLUSTER_PORT:-19092} # node n: CLUSTER_PORT + (n-1)*10000, controller +1
PORT_WAIT=${OUTBOXKIT_PORT_WAIT:-20}          # seconds a start waits for an old process's ports
START_WAIT=${OUTBOXKIT_START_WAIT:-120}       # seconds a start waits for a healthy node
STOP_WAIT=${OUTBOXKIT_STOP_WAIT:-30}          # seconds a stop waits after SIGTERM before SIGKILL

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

# ---- Kafka nodes: shared by the single broker and the cluster ---------------
#
# A node is described by a few variables set by node_single or node_cluster N:
# NAME (for messages), NODE_ID, PORT (PLAINTEXT), CPORT (CONTROLLER), CONF
# (server.properties, also how its java process is found), DATA, LOGF, PIDF.

node_single() {
  NAME=kafka NODE_ID=1 PORT=$KAFKA_PORT CPORT=$KAFKA_CONTROLLER_PORT
  CONF=$STATE/server.properties DATA=$KAFKA_DATA LOGF=$KAFKA_LOG PIDF=$KAFKA_PID
}

node_cluster() {
  case "${1:-}" in 1 | 2 | 3) ;; *) die "cluster: node must be 1, 2 or 3, got '${1:-}'" ;; esac
  local dir=$CLUSTER/kafka-$1
  NAME=kafka-$1 NODE_ID=$1 PORT=$(cluster_port "$1") CPORT=$(($(cluster_port "$1") + 1))
  CONF=$dir/server.properties DATA=$dir/data LOGF=$dir/kafka.log PIDF=$dir/kafka.pid
}

cluster_port() { echo $((CLUSTER_PORT + ($1 - 1) * 10000)); }

cluster_brokers() {
  local n out=
  for n in 1 2 3; do out=${out:+$out,}127.0.0.1:$(cluster_port "$n"); done
  echo "$out"
}

# kafkaready runs scripts/kafkaready (built once per checkout and source
# change) with the given flags.
kafkaready() {
  local bin
  bin=$STATE/bin/kafkaready-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)
  if [ ! -x "$bin" ] || [ "$ROOT/scripts/kafkaready/main.go" -nt "$bin" ]; then
    mkdir -p "$STATE/bin"
    (cd "$ROOT" && go build -o "$bin.tmp" ./scripts/kafkaready && mv "$bin.tmp" "$bin") >&2 ||
      die "could not build scripts/kafkaready"
  fi
  "$bin" "$@"
}

kafka_answers() {
  # A metadata request through kafka-go, the client the project uses.
  kafkaready -brokers "127.0.0.1:$KAFKA_PORT" -timeout "${1:-1s}" >/dev/null 2>&1
}

# node_pids prints the pids of the node's java process: the one in its pid
# file and any whose command line runs kafka.Kafka on its config file, so a
# lost pid file does not leave a broker behind.
node_pids() {
  {
    [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null && cat "$PIDF"
    pgrep -f -- "kafka\.Kafka $CONF( |\$)" || true
  } | sort -u
}

node_running() { [ -n "$(node_pids)" ]; }

node_paused() {
  local pid
  for pid in $(node_pids); do
    [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = T ] && return 0
  done
  return 1
}

# port_holders prints "pid=N" for each process listening on 127.0.0.1:port.
port_holders() {
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | sort -u | tr '\n' ' ' || true
}

port_busy() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

# wait_ports_free waits until the node's broker and controller ports are
# free (an old process may still be exiting) and fails naming the holder.
wait_ports_free() {
  local port deadline=$((SECONDS + PORT_WAIT))
  for port in "$PORT" "$CPORT"; do
    while port_busy "$port"; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        die "$NAME: port 127.0.0.1:$port still held after ${PORT_WAIT}s by $(port_holders "$port")(ss -ltnp); stop that process first"
      fi
      sleep 0.5
    done
  done
}

log_tail() {
  [ -f "$LOGF" ] || return 0
  log "$NAME: last lines of $LOGF:"
  tail -n "${1:-25}" "$LOGF" | sed 's/^/    /' >&2
}

fail_node() { log "$*"; log_tail; exit 1; }

# node_fatal reports whether the log, from byte offset $1 on, has a fatal
# error: the broker logs these and exits, or hangs half-started.
node_fatal() {
  [ -f "$LOGF" ] || return 1
  tail -c +$(($1 + 1)) "$LOGF" | grep -Eq ' FATAL |Exiting Kafka|Fatal error during|shutting down due to'
}

node_format() {
  local cp="$KAFKA_HOME/libs/*" id=$1
  [ -f "$DATA/meta.properties" ] && return
  mkdir -p "$DATA"
  [ -n "$id" ] || id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid)
  java -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$CONF" >>"$LOGF" 2>&1 ||
    fail_node "$NAME: storage format failed"
}

# node_launch starts the node's java process in the background, after its
# ports are free, and records in LOG_OFFSET where this run's log begins.
node_launch() {
  local heap=$1
  wait_ports_free
  LOG_OFFSET=$(stat -c %s "$LOGF" 2>/dev/null || echo 0)
  nohup java $heap -XX:+UseG1GC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$(dirname "$CONF")/log4j2.yaml" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$CONF" >>"$LOGF" 2>&1 &
  echo $! >"$PIDF"
}

# node_wait waits until the node is healthy by kafkaready's flags ("$@"),
# and fails loudly (with the log's last lines) when the process died, logged
# a fatal error, or is not healthy after START_WAIT seconds.
node_wait() {
  local t0=$SECONDS err=
  while :; do
    node_running || fail_node "$NAME: java exited during start (pid $(cat "$PIDF" 2>/dev/null))"
    node_fatal "$LOG_OFFSET" && fail_node "$NAME: fatal error in the log during start (pid $(cat "$PIDF"))"
    if err=$(kafkaready -brokers "127.0.0.1:$PORT" -node-id "$NODE_ID" -timeout 5s "$@" 2>&1 >/dev/null); then
      return
    fi
    [ $((SECONDS - t0)) -lt "$START_WAIT" ] || fail_node "$NAME: not healthy after ${START_WAIT}s (pid $(cat "$PIDF")): $err"
    sleep 0.5
  done
}

# node_stop stops the node: signal sig (TERM by default), then SIGKILL after
# STOP_WAIT seconds, and waits until the process is gone. A paused process
# gets SIGCONT too, or it would never act on SIGTERM.
node_stop() {
  local sig=${1:-TERM} pids pid
  pids=$(node_pids)
  if [ -z "$pids" ]; then rm -f "$PIDF"; log "$NAME: not running"; return; fi
  # shellcheck disable=SC2086
  kill -s "$sig" $pids 2>/dev/null || true
  # shellcheck disable=SC2086
  [ "$sig" = KILL ] || kill -CONT $pids 2>/dev/null || true
  node_reap "$sig" "$pids"
}

node_reap() {
  local sig=$1 pids=$2 pid deadline=$((SECONDS + STOP_WAIT))
  for pid in $pids; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$NAME: pid $pid still running ${STOP_WAIT}s after SIG$sig; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  rm -f "$PIDF"
  log "$NAME: stopped (pid $(echo $pids), SIG$sig)"
}

# node_health prints "up", "degraded (why)" or "down" for the node.
node_health() {
  local err
  if ! node_running; then
    if ! port_busy "$PORT"; then
      echo down
    elif kafkaready -brokers "127.0.0.1:$PORT" -timeout 3s >/dev/null 2>&1; then
      echo "up (127.0.0.1:$PORT, $(port_holders "$PORT")not started by this script)"
    else
      echo "degraded (127.0.0.1:$PORT held by $(port_holders "$PORT")not started by this script, not answering)"
    fi
    return
  fi
  if node_paused; then echo "degraded (paused, pid $(echo $(node_pids)))"; return; fi
  if err=$(kafkaready -brokers "127.0.0.1:$PORT" -node-id "$NODE_ID" -timeout 3s 2>&1 >/dev/null); then
    echo "up (127.0.0.1:$PORT, pid $(echo $(node_pids)))"
  else
    echo "degraded (pid $(echo $(node_pids)) running but unhealthy: ${err#kafkaready: })"
  fi
}

log4j_config() {
  cat >"$1" <<'YAML'
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

# ---- the single broker --------------------------------------------------------

kafka_running() { node_single; node_running; }

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
  log4j_config "$STATE/log4j2.yaml"
}

kafka_start() {
  node_single
  if node_running && kafka_answers 2s; then log "kafka: already running (pid $(echo $(node_pids)))"; return; fi
  if ! node_running && kafka_answers 1s; then log "kafka: something already answers on 127.0.0.1:$KAFKA_PORT; using it"; return; fi
  command -v java >/dev/null || die "kafka: java not found (install a JDK 17+)"
  kafka_fetch
  kafka_config
  node_format ""
  local t0=$SECONDS
  node_launch "-Xms256m -Xmx768m"
  node_wait
  node_wait -probe-topic -replication-factor 1
  log "kafka: ready at 127.0.0.1:$KAFKA_PORT in $((SECONDS - t0))s (pid $(cat "$KAFKA_PID"); metadata and a probe topic answered)"
}

# kafka_stop stops the broker (SIGTERM, then SIGKILL after a timeout). The
# data directory stays, so a later start resumes with every topic.
kafka_stop() { node_single; node_stop "${1:-TERM}"; }

# ---- the three-node cluster ------------------------------------------------------

cluster_config() {
  local n=$1 voters= v
  for v in 1 2 3; do voters=${voters:+$voters,}$v@127.0.0.1:$(($(cluster_port "$v") + 1)); done
  mkdir -p "$(dirname "$CONF")"
  cat >"$CONF" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA
num.partitions=1
# What the relay's guarantees need from a cluster (README): every write
# acknowledged by at least two of three replicas.
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
message.max.bytes=1048588
PROPS
  log4j_config "$(dirname "$CONF")/log4j2.yaml"
}

cluster_id() {
  [ -s "$CLUSTER/cluster.id" ] ||
    java -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool random-uuid >"$CLUSTER/cluster.id"
  cat "$CLUSTER/cluster.id"
}

# cluster_launch starts node n unless it is already healthy; it prints the
# node's log offset for the later node_wait, or nothing when it was up.
cluster_launch() {
  node_cluster "$1"
  if node_running && kafkaready -brokers "127.0.0.1:$PORT" -node-id "$NODE_ID" -timeout 2s >/dev/null 2>&1; then
    log "$NAME: already running (pid $(echo $(node_pids)))"
    return
  fi
  cluster_config "$1"
  node_format "$(cluster_id)"
  node_launch "-Xms256m -Xmx512m" >&2
  echo "$LOG_OFFSET"
}

cluster_up() {
  command -v java >/dev/null || die "cluster: java not found (install a JDK 17+)"
  kafka_fetch
  mkdir -p "$CLUSTER"
  local t0=$SECONDS n offsets=()
  # All three start before any is waited for: a node is healthy only once a
  # quorum of controllers (two of three) runs.
  for n in 1 2 3; do offsets[$n]=$(cluster_launch "$n"); done
  for n in 1 2 3; do
    node_cluster "$n"
    LOG_OFFSET=${offsets[$n]:-$(stat -c %s "$LOGF" 2>/dev/null || echo 0)}
    node_wait
  done
  node_cluster 1
  node_wait -probe-topic -replication-factor 3
  log "cluster: ready at $(cluster_brokers) in $((SECONDS - t0))s (every node registered; a probe topic with 3 replicas took a write)"
}

# cluster_start starts node n and waits until it leads a probe topic
# replicated to every live broker: registered, unfenced and replicating.
cluster_start() {
  local t0=$SECONDS off
  kafka_fetch
  mkdir -p "$CLUSTER"
  off=$(cluster_launch "$1")
  node_cluster "$1"
  [ -n "$off" ] || return 0
  LOG_OFFSET=$off
  node_wait
  node_wait -probe-topic -replication-factor 0
  log "$NAME: ready at 127.0.0.1:$PORT in $((SECONDS - t0))s (pid $(cat "$PIDF"))"
}

cluster_down() {
  local n all=
  # SIGTERM to all at once: stopped one by one, the last two would wait for
  # a controller quorum that is already gone.
  for n in 1 2 3; do
    node_cluster "$n"
    local pids
    pids=$(node_pids)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || { kill -TERM $pids 2>/dev/null; kill -CONT $pids 2>/dev/null; } || true
    all="$all $n:$(echo $pids | tr ' ' ,)"
  done
  for n in $all; do
    node_cluster "${n%%:*}"
    if [ -n "${n#*:}" ]; then node_reap TERM "$(echo "${n#*:}" | tr , ' ')"; else rm -f "$PIDF"; log "$NAME: not running"; fi
  done
  rm -rf "$CLUSTER"
  log "cluster: down, data removed"
}

cluster_status() {
  local n h ups=0
  for n in 1 2 3; do
    node_cluster "$n"
    h=$(node_health)
    case "$h" in up*) ups=$((ups + 1)) ;; esac
    echo "cluster $NAME: $h"
  done
  case $ups in
  3) echo "cluster: up ($(cluster_brokers))" ;;
  0) echo "cluster: down" ;;
  *) echo "cluster: degraded ($ups of 3 nodes up)" ;;
  esac
}

usage="usage: $0 up|down|postgres|postgres-restart|postgres-logical|postgres-logical-restart|kafka-start|kafka-stop|kafka-kill|status|env|cluster-up|cluster-down|cluster-stop N|cluster-kill N|cluster-start N|cluster-pause N|cluster-resume N|cluster-status|cluster-env"

case "${1:-up}" in
up)
  # Go modules first so the readiness probe compiles while Postgres starts.
  (kafkaready -h >/dev/null 2>&1 || true) &
  build=$!
  postgres_up
  # WAL mode's tests need wal_level=logical: a second cluster, so the main
  # one keeps its settings.
  postgres_logical_up
  wait "$build"
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
postgres-logical-restart)
  # For WAL mode's fault tests: every connection, replication ones included, dies.
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster "$ver" logical restart -m fast
  for _ in $(seq 1 60); do pg_logical_answers && break; sleep 0.5; done
  pg_logical_answers || die "postgres-logical: not answering after restart"
  log "postgres-logical: restarted"
  ;;
kafka-start) kafka_start ;;
kafka-stop) kafka_stop TERM ;;
kafka-kill) kafka_stop KILL ;;
status)
  pg_answers && echo "postgres: up ($DATABASE_URL)" || echo "postgres: down"
  pg_logical_answers && echo "postgres-logical: up ($LOGICAL_DATABASE_URL)" || echo "postgres-logical: down"
  node_single
  echo "kafka: $(node_health)"
  if [ -d "$CLUSTER" ]; then cluster_status; fi
  ;;
env)
  echo "export DATABASE_URL='$DATABASE_URL'"
  echo "export KAFKA_BROKERS='127.0.0.1:$KAFKA_PORT'"
  echo "export OUTBOXKIT_SERVICES='$ROOT/scripts/services.sh'"
  ;;
cluster-up) cluster_up ;;
cluster-down) cluster_down ;;
cluster-start) cluster_start "${2:-}" ;;
cluster-stop) node_cluster "${2:-}" && node_stop TERM ;;
cluster-kill) node_cluster "${2:-}" && node_stop KILL ;;
cluster-pause)
  node_cluster "${2:-}"
  node_running || die "$NAME: not running"
  # shellcheck disable=SC2046
  kill -STOP $(node_pids)
  log "$NAME: paused (pid $(echo $(node_pids)))"
  ;;
cluster-resume)
  node_cluster "${2:-}"
  node_running || die "$NAME: not running"
  # shellcheck disable=SC2046
  kill -CONT $(node_pids)
  log "$NAME: resumed (pid $(echo $(node_pids)))"
  ;;
cluster-status) cluster_status ;;
cluster-env) echo "KAFKA_BROKERS=$(cluster_brokers)" ;;
*) die "$usage" ;;
esac
