package relay_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/migrations"
	"github.com/outboxkit/outboxkit/relay"
)

// migrateSchema creates schema in the database at dbURL and applies every
// migration in it, as a service that owns one schema of a shared database
// would (its search_path names only that schema).
func migrateSchema(t *testing.T, dbURL, schema string) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = schema
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatalf("migrate schema %s: %v", schema, err)
	}
}

// schemaBed is a bed whose pool reaches the outbox of one schema through
// its search_path, set as a runtime param.
func schemaBed(t *testing.T, name, dbURL, schema string) *bed {
	t.Helper()
	migrateSchema(t, dbURL, schema)
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	return newPoolBed(t, name, dbURL, cfg)
}

func newPoolBed(t *testing.T, name, dbURL string, cfg *pgxpool.Config) *bed {
	t.Helper()
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &bed{t: t, db: &testenv.DB{Name: name, URL: dbURL, Pool: pool},
		topic: testenv.CreateTopic(t, "relay", 4), brokers: testenv.Brokers(t)}
}

// waitOwnsAll waits until r owns every shard.
func waitOwnsAll(t *testing.T, r *relay.Relay, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !r.Ready() || r.ShardsOwned() != relay.NumShards {
		if time.Now().After(deadline) {
			t.Fatalf("%s: relay ready=%v owns %d shards after 20s, want all %d", what, r.Ready(), r.ShardsOwned(), relay.NumShards)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOutboxesInTwoSchemasKeepApart: two services share a database, each
// with its outbox in its own schema and a relay reaching it through its
// search_path. Their relays must not count each other as members nor split
// the shards between them: each owns all 64 shards of its own outbox, and
// every event of both outboxes reaches Kafka.
func TestOutboxesInTwoSchemasKeepApart(t *testing.T) {
	t.Parallel()
	name, dbURL := testenv.EmptyDB(t)
	a := schemaBed(t, name, dbURL, "svc_a")
	b := schemaBed(t, name, dbURL, "svc_b")
	ra, _ := a.startRelayOn(a.db.Pool, relayConfigForTest())
	rb, _ := b.startRelayOn(b.db.Pool, relayConfigForTest())
	waitOwnsAll(t, ra, "svc_a")
	waitOwnsAll(t, rb, "svc_b")
	// A few rebalance rounds with both running: neither gives shards away.
	time.Sleep(time.Second)
	waitOwnsAll(t, ra, "svc_a")
	waitOwnsAll(t, rb, "svc_b")

	countsA := a.write(40, 10)
	countsB := b.write(40, 10)
	a.waitDrained(60 * time.Second)
	b.waitDrained(60 * time.Second)
	checkCounts(t, a, countsA)
	checkCounts(t, b, countsB)

	ctx := context.Background()
	pids := map[string]int32{}
	for _, s := range []struct {
		schema string
		b      *bed
	}{{"svc_a", a}, {"svc_b", b}} {
		st, err := relay.ReadStatus(ctx, s.b.db.Pool)
		if err != nil {
			t.Fatal(err)
		}
		if st.Members != 1 || len(st.Owners) != relay.NumShards {
			t.Fatalf("%s status: %d members and %d owned shards, want 1 and %d", s.schema, st.Members, len(st.Owners), relay.NumShards)
		}
		for _, o := range st.Owners {
			if o.PID != st.Owners[0].PID {
				t.Fatalf("%s status: shards owned by backends %d and %d, want one", s.schema, st.Owners[0].PID, o.PID)
			}
		}
		pids[s.schema] = st.Owners[0].PID
	}
	if pids["svc_a"] == pids["svc_b"] {
		t.Fatalf("both schemas' shards owned by backend %d, want one relay each", pids["svc_a"])
	}
}

func relayConfigForTest() relay.Config { return relay.Config{BatchSize: 200} }

// TestLockConnectionHonoursPoolHooks: the relay's lock connection is made
// like the pool's own, so a password only BeforeConnect supplies and a
// search_path only AfterConnect sets reach it too.
func TestLockConnectionHonoursPoolHooks(t *testing.T) {
	t.Parallel()
	t.Run("before_connect_password", func(t *testing.T) {
		t.Parallel()
		db := testenv.NewDB(t)
		full, err := pgxpool.ParseConfig(db.URL)
		if err != nil {
			t.Fatal(err)
		}
		password := full.ConnConfig.Password
		u, err := url.Parse(db.URL)
		if err != nil || u.User == nil {
			t.Skipf("DATABASE_URL is not a URL with credentials (%v)", err)
		}
		u.User = url.User(u.User.Username())
		cfg, err := pgxpool.ParseConfig(u.String())
		if err != nil {
			t.Fatal(err)
		}
		// Without the hook the server refuses the connection: the test
		// would prove nothing on a server that trusts local clients.
		conn, err := pgx.ConnectConfig(context.Background(), cfg.ConnConfig.Copy())
		var pgErr *pgconn.PgError
		if err == nil {
			conn.Close(context.Background())
			t.Skip("the server accepts connections without a password")
		} else if !errors.As(err, &pgErr) || pgErr.Code != "28P01" { // invalid_password
			t.Fatalf("connect without a password: want invalid_password (28P01), got %v", err)
		}
		cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
			cc.Password = password // as a rotated secret or an IAM token would be
			return nil
		}
		b := newPoolBed(t, db.Name, db.URL, cfg)
		r, _ := b.startRelayOn(b.db.Pool, relayConfigForTest())
		counts := b.write(20, 5)
		waitOwnsAll(t, r, "password from BeforeConnect")
		b.waitDrained(60 * time.Second)
		checkCounts(t, b, counts)
	})
	t.Run("after_connect_search_path", func(t *testing.T) {
		t.Parallel()
		name, dbURL := testenv.EmptyDB(t)
		migrateSchema(t, dbURL, "svc")
		cfg, err := pgxpool.ParseConfig(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, "SET search_path = svc")
			return err
		}
		b := newPoolBed(t, name, dbURL, cfg)
		r, _ := b.startRelayOn(b.db.Pool, relayConfigForTest())
		counts := b.write(20, 5)
		waitOwnsAll(t, r, "search_path from AfterConnect")
		b.waitDrained(60 * time.Second)
		checkCounts(t, b, counts)
	})
}
