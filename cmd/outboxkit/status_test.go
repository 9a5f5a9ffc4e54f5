package main

import (
	"context"
	"encoding/json"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

func readStatus(t *testing.T, env []string) statusJSON {
	t.Helper()
	r := cli(t, env, "status", "--json").must(t)
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return st
}

func TestStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)
	env := []string{"DATABASE_URL=" + db.URL}
	topic := testenv.CreateTopic(t, "cli-status", 2)

	st := readStatus(t, env)
	if st.PendingEvents != 0 || st.ParkedAggregates != 0 || st.DeadLetters == nil || *st.DeadLetters != 0 ||
		st.RelayInstances != 0 || st.ShardsOwned != 0 || st.Shards != relay.NumShards || len(st.Owners) != 0 {
		t.Fatalf("empty database: %+v, want all zero, dead letters 0, %d shards", st, relay.NumShards)
	}

	for i, agg := range []string{"o-1", "o-1", "o-2"} {
		if err := outbox.Write(ctx, db.Pool, outbox.Event{Topic: topic, AggregateType: "order", AggregateID: agg, EventType: "E", Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO outbox_parked (aggregate_type, aggregate_id, seq, event_id, topic, error)
		SELECT aggregate_type, aggregate_id, seq, id, topic, 'topic does not exist' FROM outbox WHERE aggregate_id = 'o-2'`); err != nil {
		t.Fatal(err)
	}
	insertDeadLetter(t, db, "g1", "m1", topic, "k")
	insertDeadLetter(t, db, "g1", "m2", topic, "k")
	if _, err := db.Pool.Exec(ctx, `UPDATE inbox_dead_letters SET redriven_at = now() WHERE message_id = 'm2'`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let the oldest event age

	st = readStatus(t, env)
	if st.PendingEvents != 3 || st.ParkedAggregates != 1 || st.ParkedEvents != 1 || st.DeadLetters == nil || *st.DeadLetters != 1 || st.OldestPendingAgeSec <= 0 {
		t.Fatalf("with a backlog: %+v, want 3 pending, 1 parked with 1 event, 1 dead letter (the re-driven one not counted), an age > 0", st)
	}
	r := cli(t, env, "status").must(t)
	for _, re := range []string{`pending events\s+3\n`, `parked aggregates\s+1\n`, `parked events\s+1\n`, `dead letters\s+1\n`, `relay instances\s+0\n`, `shards owned\s+0 of 64\n`, `oldest pending\s+\d`} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("status output does not match %q:\n%s", re, r.stdout)
		}
	}

	// A running relay shows up as the owner of every shard; it publishes
	// the two events of o-1 and leaves parked o-2's.
	rl, err := relay.New(db.Pool, relay.Config{Kafka: broker.Config{Brokers: testenv.Brokers(t)}, RebalanceInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rl.Run(rctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("relay.Run: %v", err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st = readStatus(t, env)
		if st.ShardsOwned == relay.NumShards && st.PendingEvents == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with a relay running: %+v, want 64 shards owned and 1 pending (parked) event", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.RelayInstances != 1 || len(st.Owners) != 1 || len(st.Owners[0].Shards) != relay.NumShards ||
		!strings.HasPrefix(st.Owners[0].ApplicationName, "outbox-relay ") || st.Owners[0].PID == 0 {
		t.Fatalf("owners: %+v (instances %d), want one outbox-relay connection owning all 64 shards", st.Owners, st.RelayInstances)
	}
	r = cli(t, env, "status").must(t)
	if !regexp.MustCompile(`RELAY\s+PID\s+CLIENT\s+SHARDS\s+OWNED\n`).MatchString(r.stdout) ||
		!regexp.MustCompile(`outbox-relay .*\s64\s+0-63\n`).MatchString(r.stdout) {
		t.Errorf("status output with a relay:\n%s\nwant an owners table with one row owning 0-63", r.stdout)
	}
}

func TestStatusWithoutMigrations(t *testing.T) {
	t.Parallel()
	_, url := testenv.EmptyDB(t)
	for _, args := range [][]string{{"status"}, {"parked", "list"}, {"parked", "retry", "a", "b"}, {"deadletters", "list"}} {
		r := cli(t, []string{"DATABASE_URL=" + url}, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "apply the migrations first: outboxkit migrate up") {
			t.Errorf("%v on an empty database: exit %d, stderr %q; want 1 and a pointer to migrate up", args, r.code, r.stderr)
		}
	}
}

func TestRanges(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   []int
		want string
	}{
		{nil, ""},
		{[]int{3}, "3"},
		{[]int{0, 1, 2, 5, 7, 8}, "0-2,5,7-8"},
		{[]int{1, 3, 5}, "1,3,5"},
	} {
		if got := ranges(tt.in); got != tt.want {
			t.Errorf("ranges(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// insertDeadLetter adds a pending dead letter the way the inbox records one.
func insertDeadLetter(t *testing.T, db *testenv.DB, group, messageID, topic, key string) int64 {
	t.Helper()
	var id int64
	err := db.Pool.QueryRow(context.Background(), `INSERT INTO inbox_dead_letters
		(consumer_group, message_id, topic, kafka_partition, kafka_offset, key, value, headers, error, attempts)
		VALUES ($1, $2, $3, 0, 17, $4, '{"n":1}'::bytea, jsonb_build_object('id', $2::text, 'event_type', 'E'), 'handler: boom', 5)
		RETURNING id`, group, messageID, topic, []byte(key)).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestStatusPerSchema: two services share a database, one schema and one
// outbox each. With DATABASE_URL's search_path naming one schema, status
// shows that outbox's relay alone, owning every shard.
func TestStatusPerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, dbURL := testenv.EmptyDB(t)
	admin, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	envs := map[string][]string{}
	for _, schema := range []string{"svc_a", "svc_b"} {
		if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(dbURL)
		if err != nil {
			t.Skipf("DATABASE_URL is not a URL: %v", err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		envs[schema] = []string{"DATABASE_URL=" + u.String()}
		cli(t, envs[schema], "migrate", "up").must(t)

		pool, err := pgxpool.New(ctx, u.String())
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		rl, err := relay.New(pool, relay.Config{Kafka: broker.Config{Brokers: testenv.Brokers(t)}, RebalanceInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- rl.Run(rctx) }()
		defer func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("relay.Run on %s: %v", schema, err)
			}
		}()
	}
	pids := map[int32]string{}
	for schema, env := range envs {
		deadline := time.Now().Add(20 * time.Second)
		var st statusJSON
		for {
			st = readStatus(t, env)
			if st.ShardsOwned == relay.NumShards && len(st.Owners) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v, want one relay owning all %d shards", schema, st, relay.NumShards)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if st.RelayInstances != 1 {
			t.Fatalf("%s: %d relay instances, want 1 (the other schema's relay is not this outbox's)", schema, st.RelayInstances)
		}
		if other, ok := pids[st.Owners[0].PID]; ok {
			t.Fatalf("%s and %s show the same owner, backend %d", schema, other, st.Owners[0].PID)
		}
		pids[st.Owners[0].PID] = schema
	}
}
