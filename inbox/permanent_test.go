package inbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// runUntilError runs c and returns what Run returned, failing the test
// when it has not returned within 30s.
func runUntilError(t *testing.T, c *inbox.Consumer) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("Run kept retrying for 30s instead of returning; after its context ended it returned %v", <-done)
		return nil
	}
}

// A missing inbox table is not retried for ever as transient: Run returns
// an ErrInboxTables error saying which, at the position read (here
// inbox_positions, as in a database migrated to before 00007).
func TestRunReturnsMissingInboxTable(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	if _, err := b.db.Pool.Exec(context.Background(), `DROP TABLE inbox_positions`); err != nil {
		t.Fatal(err)
	}
	b.produce(t, record("m-1", "k", "v"))
	err := runUntilError(t, b.consumer(t, b.config(), applyHandler("c1")))
	if !errors.Is(err, inbox.ErrInboxTables) || !strings.Contains(err.Error(), "42P01") || !strings.Contains(err.Error(), "inbox_positions") {
		t.Errorf("Run returned %v, want an ErrInboxTables error naming inbox_positions and SQLSTATE 42P01", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("Run's error spans several lines: %q", err)
	}
}

// A role that may read the position but not claim (no INSERT on inbox)
// makes Run return an ErrInboxTables error at the first transaction,
// instead of retrying the claim as transient for ever.
func TestRunReturnsMissingPrivilege(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	role := pgx.Identifier{strings.ReplaceAll(testenv.Unique("inbox_reader"), "-", "_")}.Sanitize()
	if _, err := b.db.Pool.Exec(ctx, `CREATE ROLE `+role+` NOLOGIN; GRANT `+role+` TO current_user;
GRANT USAGE ON SCHEMA public TO `+role+`; GRANT SELECT ON inbox, inbox_positions TO `+role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Before the database goes: the grants live in it.
		if _, err := b.db.Pool.Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE `+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	pcfg, err := pgxpool.ParseConfig(b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `SET ROLE `+role)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	b.produce(t, record("m-1", "k", "v"))
	c, err := inbox.NewConsumer(pool, b.config(), applyHandler("c1"))
	if err != nil {
		t.Fatal(err)
	}
	err = runUntilError(t, c)
	if !errors.Is(err, inbox.ErrInboxTables) || !strings.Contains(err.Error(), "42501") || !strings.Contains(err.Error(), "claim") {
		t.Errorf("Run returned %v, want an ErrInboxTables error from the claim with SQLSTATE 42501", err)
	}
	if n := b.count(t, `SELECT count(*) FROM inbox_dead_letters`); n != 0 {
		t.Errorf("%d dead letters: a database that refuses the inbox is not the message's fault", n)
	}
}

// Kafka refusing the consumer as it joins (a wrong SASL password, or ACLs
// that do not allow the group) makes Run return ErrJoinRefused instead of
// retrying for ever. The test brokers have neither SASL nor ACLs, so this
// runs against an in-process broker that has both.
func TestRunReturnsJoinRefused(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin-secret"), kfake.User("PLAIN", "reader", "reader-secret"),
		kfake.SeedTopics(1, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	for _, tc := range []struct{ name, user, password, want string }{
		{"wrong password", "admin", "not-the-password", "SASL"},
		{"no ACL for the group", "reader", "reader-secret", "Authorization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := inbox.NewConsumer(db.Pool, inbox.Config{
				Kafka: broker.Config{Brokers: cluster.ListenAddrs(), AllowPlaintextSASL: true,
					SASL: broker.SASL{Mechanism: broker.PLAIN, Username: tc.user, Password: tc.password}},
				GroupID: testenv.Unique("refused"), Topics: []string{"orders"},
				JoinGroupBackoff: 100 * time.Millisecond, Logger: testenv.Logger(t),
			}, applyHandler("c1"))
			if err != nil {
				t.Fatal(err)
			}
			err = runUntilError(t, c)
			if !errors.Is(err, inbox.ErrJoinRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run returned %v, want an ErrJoinRefused error mentioning %s", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), tc.password) {
				t.Errorf("Run's error quotes the password: %v", err)
			}
		})
	}
}
