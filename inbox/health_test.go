package inbox_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// probe answers one GET of path through h: the status and the body.
func probe(h http.Handler, path string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// TestHealthFollowsRun: a consumer is neither live nor ready before Run,
// live and then ready once it has joined its group, not ready (but still
// live) while its database refuses connections, ready again when the
// database is back, and neither after Run returns; the HTTP handler
// answers the same.
func TestHealthFollowsRun(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	c := b.consumer(t, b.config(), applyHandler("c1"))
	h := c.HealthHandler()
	ctx := context.Background()

	if err := c.Live(); !errors.Is(err, inbox.ErrNotRunning) {
		t.Errorf("Live before Run = %v, want ErrNotRunning", err)
	}
	if err := c.Ready(ctx); !errors.Is(err, inbox.ErrNotRunning) {
		t.Errorf("Ready before Run = %v, want ErrNotRunning", err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := probe(h, path); code != http.StatusServiceUnavailable || !strings.Contains(body, "not running") {
			t.Errorf("GET %s before Run = %d %q, want 503 saying the consumer is not running", path, code, body)
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	testenv.WaitFor(t, 30*time.Second, func() bool { return c.Ready(ctx) == nil },
		func() string { return "Ready after Run started: " + errString(c.Ready(ctx)) })
	if err := c.Live(); err != nil {
		t.Errorf("Live while running = %v, want nil", err)
	}
	if code, body := probe(h, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("GET /healthz while running = %d %q, want 200 \"ok\\n\"", code, body)
	}
	if code, body := probe(h, "/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("GET /readyz after joining = %d %q, want 200 \"ready\\n\"", code, body)
	}

	// The consumer works while ready: a message is applied.
	b.produce(t, record("health-1", "k", "v"))
	testenv.WaitFor(t, 30*time.Second, func() bool { return b.count(t, `SELECT count(*) FROM applied`) == 1 },
		func() string { return "the message was not applied" })

	// The database refuses connections: not ready, still live.
	admin, err := pgx.Connect(ctx, testenv.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	db := pgx.Identifier{b.db.Name}.Sanitize()
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	allow := func() {
		if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" ALLOW_CONNECTIONS true"); err != nil {
			t.Error(err)
		}
	}
	defer allow()
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", b.db.Name); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() bool {
		code, _ := probe(h, "/readyz")
		return code == http.StatusServiceUnavailable
	}, func() string { return "/readyz still answers 200 with the database refusing connections" })
	if err := c.Ready(ctx); err == nil || !strings.HasPrefix(err.Error(), "inbox: database: ") {
		t.Errorf("Ready with the database refusing connections = %v, want an inbox: database: error", err)
	}
	if err := c.Live(); err != nil {
		t.Errorf("Live with the database refusing connections = %v, want nil (a restart would not help)", err)
	}
	allow()
	testenv.WaitFor(t, 30*time.Second, func() bool { return c.Ready(ctx) == nil },
		func() string { return "Ready once the database is back: " + errString(c.Ready(ctx)) })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its context ending")
	}
	if err := c.Live(); !errors.Is(err, inbox.ErrNotRunning) {
		t.Errorf("Live after Run returned = %v, want ErrNotRunning", err)
	}
	if err := c.Ready(ctx); !errors.Is(err, inbox.ErrNotRunning) {
		t.Errorf("Ready after Run returned = %v, want ErrNotRunning", err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _ := probe(h, path); code != http.StatusServiceUnavailable {
			t.Errorf("GET %s after Run returned = %d, want 503", path, code)
		}
	}
}

// TestNotReadyUntilJoined: a consumer whose group cannot be joined (its
// brokers do not answer) is live but not ready.
func TestNotReadyUntilJoined(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	cfg := b.config()
	cfg.Kafka.Brokers = []string{testenv.FreeAddr(t)} // nothing listens there
	c := b.consumer(t, cfg, applyHandler("c1"))
	stop := run(t, c)
	testenv.WaitFor(t, 10*time.Second, func() bool { return c.Live() == nil },
		func() string { return "Live after Run started: " + errString(c.Live()) })
	time.Sleep(time.Second) // a join attempt or two fail meanwhile
	if err := c.Ready(context.Background()); !errors.Is(err, inbox.ErrNotJoined) {
		t.Errorf("Ready without a reachable broker = %v, want ErrNotJoined", err)
	}
	if code, body := probe(c.HealthHandler(), "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not joined") {
		t.Errorf("GET /readyz without a reachable broker = %d %q, want 503 saying it has not joined", code, body)
	}
	stop()
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}
