package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/bench/internal/workload"
	"github.com/outboxkit/outboxkit/internal/testenv/dbadmin"
	"github.com/outboxkit/outboxkit/outbox"
)

// system is one contender: how its events are written, how its process is
// started, and what to clean up.
type system struct {
	name string
	kind string   // "outboxkit", "debezium" or "watermill"
	env  []string // extra environment of its process
	desc string   // configuration, for the report
	wal  bool     // outboxkit in WAL mode: outbox.Emit and RELAY_SOURCE=wal
}

// tunedRelayEnv is the best outboxkit configuration found for this workload
// (see docs/benchmarks.md, "Peers").
var tunedRelayEnv = []string{"OUTBOX_BATCH_SIZE=5000"}

// tunedDebezium lowers the connector's batching wait: poll.interval.ms is how
// long a poll waits for a batch to fill before it hands over what it has.
var tunedDebezium = []string{"poll.interval.ms=10"}

func knownSystems() map[string]system {
	return map[string]system{
		"outboxkit": {name: "outboxkit", kind: "outboxkit",
			desc: "cmd/outbox-relay, default configuration (OUTBOX_BATCH_SIZE 1000, RELAY_LANES 4, RELAY_MIN/MAX_POLL_INTERVAL 2ms/100ms, RELAY_DB_MAX_CONNS 16)"},
		"outboxkit-tuned": {name: "outboxkit-tuned", kind: "outboxkit", env: tunedRelayEnv,
			desc: "cmd/outbox-relay with " + strings.Join(tunedRelayEnv, " ")},
		"outboxkit-wal": {name: "outboxkit-wal", kind: "outboxkit", wal: true,
			desc: "cmd/outbox-relay with RELAY_SOURCE=wal (a slot of its own, created before the writers start), other settings default; writers use outbox.Emit"},
		"debezium": {name: "debezium", kind: "debezium",
			desc: "Debezium 3.6.1.Final embedded engine, PostgreSQL connector (pgoutput, snapshot.mode=no_data, connector defaults: max.batch.size 2048, max.queue.size 8192, poll.interval.ms 500), outbox EventRouter; KafkaProducer (kafka-clients 4.3.0) acks=all, enable.idempotence=true, other producer defaults"},
		"debezium-tuned": {name: "debezium-tuned", kind: "debezium", env: []string{"DBZ_EXTRA=" + strings.Join(tunedDebezium, "\n")},
			desc: "as debezium, with " + strings.Join(tunedDebezium, " ")},
		"watermill": {name: "watermill", kind: "watermill",
			desc: "watermill v1.5.1 forwarder; watermill-sql/v4 v4.1.2 subscriber (DefaultPostgreSQLSchema, DefaultPostgreSQLOffsetsAdapter, defaults: batch 100, poll 1s); watermill-kafka/v3 v3.0.6 publisher (DefaultSaramaSyncPublisherConfig + RequiredAcks=WaitForAll, key from aggregate_id)"},
	}
}

// run is one system's run: its database, topic and processes.
type run struct {
	sys      system
	repeat   int
	dbName   string
	dbURL    string
	pool     *pgxpool.Pool
	topic    string
	slot     string // debezium, outboxkit-wal
	tmpDir   string
	httpAddr string // outboxkit
}

// prepare creates the run's database and its tables.
func (b *bench) prepare(ctx context.Context, r *run) error {
	if err := dbadmin.CreateDatabase(ctx, b.opts.dbURL, r.dbName, ""); err != nil {
		return fmt.Errorf("%w (run `scripts/services.sh postgres-logical`)", err)
	}
	r.dbURL = dbadmin.WithDatabase(b.opts.dbURL, r.dbName)
	pcfg, err := pgxpool.ParseConfig(r.dbURL)
	if err != nil {
		return err
	}
	pcfg.MaxConns = int32(b.opts.producers + 4)
	if r.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return err
	}
	switch {
	case r.sys.wal:
		// The slot exists before anything is emitted, as `outboxkit wal
		// setup` would make it: Emit refuses without it.
		if err := dbadmin.Migrate(ctx, r.dbURL); err != nil {
			return err
		}
		r.slot = strings.ReplaceAll(r.dbName, "-", "_")
		if _, err := r.pool.Exec(ctx, "UPDATE outbox_wal_settings SET slot_name = $1", r.slot); err != nil {
			return err
		}
		_, err := r.pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", r.slot)
		return err
	case r.sys.kind == "outboxkit", r.sys.kind == "debezium":
		return dbadmin.Migrate(ctx, r.dbURL)
	case r.sys.kind == "watermill":
		return wmPrepare(ctx, r.pool)
	}
	return fmt.Errorf("unknown system kind %q", r.sys.kind)
}

// cleanup drops what prepare and the system created.
func (b *bench) cleanup(r *run) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if r.pool != nil {
		r.pool.Close()
	}
	if r.slot != "" {
		b.dropSlot(ctx, r.slot)
	}
	_ = dbadmin.DropDatabase(ctx, b.opts.dbURL, r.dbName)
	if r.tmpDir != "" {
		_ = os.RemoveAll(r.tmpDir)
	}
}

// write commits the events with these indexes in one transaction, the way
// the system's users write.
func (b *bench) write(ctx context.Context, r *run, idx []int) error {
	if r.sys.kind == "watermill" {
		msgs := make([]*message.Message, len(idx))
		for k, i := range idx {
			id, _ := uuid.NewV7()
			m := message.NewMessage(id.String(), b.gen.IndexedPayload(i))
			m.Metadata.Set(wmKeyMetadata, b.gen.AggregateID(i))
			m.Metadata.Set("aggregate_type", workload.AggregateType)
			m.Metadata.Set("event_type", workload.EventType)
			m.Metadata.Set("tenant", "acme")
			msgs[k] = m
		}
		return wmWrite(ctx, r.pool, r.topic, msgs)
	}
	evs := make([]outbox.Event, len(idx))
	for k, i := range idx {
		evs[k] = b.gen.IndexedEvent(r.topic, i)
	}
	write := outbox.Write
	if r.sys.wal {
		write = outbox.Emit
	}
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error { return write(ctx, tx, evs...) })
}

// start starts the system's process and waits until it is ready to publish.
func (b *bench) start(ctx context.Context, r *run) (*child, error) {
	switch r.sys.kind {
	case "outboxkit":
		if r.httpAddr == "" {
			r.httpAddr = freeAddr()
		}
		cmd := exec.Command(b.relayBin)
		cmd.Env = append(cleanEnv(), "DATABASE_URL="+r.dbURL, "KAFKA_BROKERS="+strings.Join(b.opts.brokers, ","),
			"RELAY_HTTP_ADDR="+r.httpAddr, "RELAY_LOG_LEVEL=warn", "RELAY_LOG_FORMAT=text")
		if r.sys.wal {
			cmd.Env = append(cmd.Env, "RELAY_SOURCE=wal", "RELAY_WAL_SLOT="+r.slot)
		}
		cmd.Env = append(cmd.Env, r.sys.env...)
		return startChild(ctx, r.sys.name, cmd, "", "http://"+r.httpAddr+"/readyz")
	case "watermill":
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(exe)
		cmd.Env = append(cleanEnv(), wmChildEnv+"=1", wmDBEnv+"="+r.dbURL, wmBrokersEnv+"="+strings.Join(b.opts.brokers, ","))
		cmd.Env = append(cmd.Env, r.sys.env...)
		return startChild(ctx, r.sys.name, cmd, wmReadyToken, "")
	case "debezium":
		u, _ := url.Parse(r.dbURL)
		pw, _ := u.User.Password()
		if r.slot == "" {
			r.slot = strings.ReplaceAll(r.dbName, "-", "_")
		}
		target := filepath.Join(b.opts.debeziumDir, "target")
		cmd := exec.Command(filepath.Join(b.opts.javaHome, "bin", "java"),
			"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
			"-cp", filepath.Join(target, "debezium-relay.jar")+":"+filepath.Join(target, "lib", "*"),
			"dev.outboxkit.bench.DebeziumRelay")
		cmd.Env = append(cleanEnv(),
			"PG_HOST="+u.Hostname(), "PG_PORT="+u.Port(), "PG_USER="+u.User.Username(), "PG_PASSWORD="+pw,
			"PG_DB="+r.dbName, "KAFKA_BROKERS="+strings.Join(b.opts.brokers, ","),
			"DBZ_SLOT="+r.slot, "DBZ_PUBLICATION="+r.slot, "DBZ_OFFSETS_FILE="+filepath.Join(r.tmpDir, "offsets.dat"))
		cmd.Env = append(cmd.Env, r.sys.env...)
		c, err := startChild(ctx, r.sys.name, cmd, "debezium-started", "")
		if err != nil {
			return nil, err
		}
		// The task has started; it streams once its slot is active (on the
		// first start it creates the slot: rows committed before that are
		// not captured, by design of snapshot.mode=no_data).
		for deadline := time.Now().Add(2 * time.Minute); ; {
			var active bool
			err := r.pool.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", r.slot).Scan(&active)
			if err == nil && active {
				return c, nil
			}
			if err := c.alive(); err != nil {
				return nil, err
			}
			if time.Now().After(deadline) {
				c.kill()
				return nil, fmt.Errorf("debezium: slot %s not active within 2 minutes", r.slot)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil, fmt.Errorf("unknown system kind %q", r.sys.kind)
}

// cleanEnv is this process's environment without variables a child would
// misread (the relay rejects unknown OUTBOX_, RELAY_, KAFKA_ and DATABASE_
// variables).
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OUTBOX_") || strings.HasPrefix(k, "RELAY_") || strings.HasPrefix(k, "PEERS_") ||
			strings.HasPrefix(k, "DATABASE_") || strings.HasPrefix(k, "KAFKA_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:19090"
	}
	defer l.Close()
	return l.Addr().String()
}

// dropSlot drops the replication slot of a run whose consumer has exited: a
// slot keeps WAL and blocks DROP DATABASE.
func (b *bench) dropSlot(ctx context.Context, slot string) {
	admin, err := pgx.Connect(ctx, b.opts.dbURL)
	if err != nil {
		return
	}
	defer admin.Close(context.Background())
	for range 50 {
		_, err := admin.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot)
		if err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
