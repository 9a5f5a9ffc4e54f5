package reach_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/internal/reach"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// connect tries url for real and returns its parsed config and the error.
func connect(t *testing.T, url string) (*pgx.ConnConfig, error) {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		conn.Close(ctx)
		t.Fatalf("connected to %s, want a failure", cfg.Host)
	}
	return cfg, err
}

func TestPostgreSQL(t *testing.T) {
	t.Parallel()
	cfg, err := connect(t, "postgres://u:secret@127.0.0.1:1/db")
	got := reach.PostgreSQL(err, &cfg.Config, "DATABASE_URL").Error()
	if want := "cannot reach PostgreSQL at 127.0.0.1:1: connection refused (is PostgreSQL running at 127.0.0.1:1? check DATABASE_URL)"; got != want {
		t.Errorf("closed port: %q, want %q", got, want)
	}
	if !reach.Unreachable(err) {
		t.Errorf("Unreachable(%v) = false, want true", err)
	}

	// A server that answers and refuses the password.
	admin, err := pgx.ParseConfig(testenv.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	admin.Password = "not-the-password"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pgx.ConnectConfig(ctx, admin)
	if err == nil {
		t.Fatal("the test server accepted a wrong password: this test needs password authentication")
	}
	got = reach.PostgreSQL(err, &admin.Config, "DATABASE_URL").Error()
	if !strings.Contains(got, " refused the connection: password authentication failed") || !strings.HasSuffix(got, "(SQLSTATE 28P01) (check DATABASE_URL)") ||
		strings.Contains(got, "not-the-password") || strings.Contains(got, "\n") {
		t.Errorf("wrong password: %q, want one line with the server's reason and a hint, without the password", got)
	}
	if reach.Unreachable(err) {
		t.Errorf("Unreachable(%v) = true for a server that answered", err)
	}
}

func TestKafka(t *testing.T) {
	t.Parallel()
	var d net.Dialer
	_, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:1")
	if err == nil {
		t.Fatal("dialled 127.0.0.1:1")
	}
	got := reach.Kafka(err, "127.0.0.1:1", "KAFKA_BROKERS").Error()
	if want := "cannot reach Kafka at 127.0.0.1:1: connection refused (is Kafka running at 127.0.0.1:1? check KAFKA_BROKERS)"; got != want {
		t.Errorf("closed port: %q, want %q", got, want)
	}
	if !reach.Unreachable(err) {
		t.Errorf("Unreachable(%v) = false, want true", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, err = d.DialContext(ctx, "tcp", "127.0.0.1:1"); reach.Cause(err) != "timed out" {
		t.Errorf("Cause(%v) = %q, want timed out", err, reach.Cause(err))
	}
}

func TestHosts(t *testing.T) {
	t.Parallel()
	cfg, err := pgx.ParseConfig("postgres://u@db1:5432,db2:5433,db1:5432/app")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := reach.Hosts(&cfg.Config), "db1:5432,db2:5433"; got != want {
		t.Errorf("Hosts = %q, want %q (each once)", got, want)
	}
}
