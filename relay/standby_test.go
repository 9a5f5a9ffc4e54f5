package relay_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/internal/uniq"
	"github.com/outboxkit/outboxkit/relay"
)

// walReceiver is a real streaming replication client, pg_receivewal in
// synchronous mode (it reports each flush at once), standing in for a
// standby in pg_stat_replication under the application_name name.
type walReceiver struct {
	name string
	cmd  *exec.Cmd
}

func startWALReceiver(t *testing.T, adminURL string) *walReceiver {
	t.Helper()
	bin, err := exec.LookPath("pg_receivewal")
	if err != nil {
		t.Fatalf("pg_receivewal not found (Debian's postgresql-client, installed by `make services`): %v", err)
	}
	w := &walReceiver{name: "okt_standby_" + uniq.Hex(4)}
	conn := adminURL
	if strings.Contains(conn, "?") {
		conn += "&application_name=" + w.name
	} else {
		conn += "?application_name=" + w.name
	}
	out := &testenv.Buffer{}
	w.cmd = exec.Command(bin, "--synchronous", "--no-loop", "--no-password", "-D", t.TempDir(), "-d", conn)
	w.cmd.Stdout, w.cmd.Stderr = out, out
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = w.cmd.Process.Signal(syscall.SIGCONT)
		_ = w.cmd.Process.Kill()
		_ = w.cmd.Wait()
	})
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	for {
		streaming, err := queryBool(ctx, adminURL, `SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming')`, w.name)
		if err == nil && streaming {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("pg_receivewal %s not streaming after 15s (err %v); its output:\n%s", w.name, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// queryBool runs a one-boolean query on a connection of its own.
func queryBool(ctx context.Context, url, q string, args ...any) (bool, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	var v bool
	err = conn.QueryRow(ctx, q, args...).Scan(&v)
	return v, err
}

// With Standbys set, the relay publishes an event only once the named
// standby flushed its commit: a standby that stops flushing (here a paused
// WAL receiver) holds every new event back, and they go out as soon as it
// flushes again. A standby that is not streaming at all holds everything.
func TestStandbysHoldEventsUntilFlushed(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	w := startWALReceiver(t, testenv.AdminURL())
	_, stop := b.startRelay(relay.Config{Standbys: []string{w.name}, MaxPollInterval: 20 * time.Millisecond})
	defer stop()

	b.write(5, 2)
	b.waitDrained(15 * time.Second)

	if err := w.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	b.write(5, 2)
	time.Sleep(2 * time.Second)
	if n := b.pending(); n != 10 {
		t.Fatalf("%d of 10 events left in the outbox while the standby did not flush; want all 10 held back", 10-n)
	}
	if err := w.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	b.waitDrained(15 * time.Second)
	b.waitArrived(20, 20*time.Second)
}

func TestStandbysMissingHoldsEverything(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	_, stop := b.startRelay(relay.Config{Standbys: []string{"okt_no_such_standby"}, MaxPollInterval: 20 * time.Millisecond})
	defer stop()
	b.write(3, 1)
	time.Sleep(2 * time.Second)
	if n := b.pending(); n != 3 {
		t.Fatalf("%d of 3 events published with the named standby absent; want none", 3-n)
	}
}

// A role that cannot see the standbys' positions is refused at once rather
// than holding every event back for ever.
func TestStandbysWithoutPrivilege(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	ctx := context.Background()
	role := "okt_relay_" + uniq.Hex(4)
	admin, err := pgx.Connect(ctx, testenv.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN PASSWORD 'pw'`,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), `DROP OWNED BY `+role)
		_, _ = admin.Exec(context.Background(), `DROP ROLE `+role)
	})
	b.execTx(func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO `+role+`;
			GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO `+role)
		return err
	})
	// A receiver must be connected for its row to be there to hide.
	w := startWALReceiver(t, testenv.AdminURL())
	url := strings.Replace(b.db.URL, "postgres:postgres@", role+":pw@", 1)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	r, err := relay.New(pool, relay.Config{Kafka: broker.Config{Brokers: b.brokers}, Standbys: []string{w.name}, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.Run(ctx); !errors.Is(err, relay.ErrStandbyPositions) {
		t.Fatalf("Run returned %v, want ErrStandbyPositions", err)
	}
}
