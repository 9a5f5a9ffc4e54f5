package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
)

// passwordSecret is the distinctive part of the passwords below; the
// binary must never print it.
const passwordSecret = "hunter2-Sekr1t"

// TestProcessSCRAMPasswordNotPrinted runs the binary with a SCRAM password
// ending in a newline, as a Kubernetes secret made from a file has.
// SASLprep rejects it, and the SCRAM library's error quotes it; the binary
// printed that error on stderr. Now it exits 2 naming the variable and the
// byte offset, and prints the password nowhere.
func TestProcessSCRAMPasswordNotPrinted(t *testing.T) {
	t.Parallel()
	for _, mech := range []string{"scram-sha-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			p := start(t, "DATABASE_URL=postgres://u:secret@127.0.0.1:1/db", "KAFKA_BROKERS=127.0.0.1:9092",
				"KAFKA_SASL_MECHANISM="+mech, "KAFKA_SASL_USERNAME=relay", "KAFKA_SASL_PASSWORD="+passwordSecret+"\n")
			if code := p.wait(10 * time.Second); code != 2 {
				t.Fatalf("exit code %d, want 2", code)
			}
			assertOneLine(t, p.stderr.String(), "outbox-relay: KAFKA_SASL_PASSWORD: has a character SASLprep prohibits")
			if !strings.Contains(p.stderr.String(), "at byte offset 14 of 15") {
				t.Errorf("stderr = %q, want the byte offset of the newline", p.stderr)
			}
			for name, out := range map[string]string{"stderr": p.stderr.String(), "stdout": p.stdout.String()} {
				if strings.Contains(out, passwordSecret) {
					t.Errorf("%s quotes the password: %q", name, out)
				}
			}
		})
	}
}

// TestProcessFailedAuthPrintsNoPassword runs the binary against a migrated
// database and the test broker, with an event to publish and credentials
// the broker does not accept, for every mechanism: the relay keeps
// retrying and logging, and no line of its output quotes the password.
// PLAIN sends a trailing newline as it is, so the PLAIN password has one.
func TestProcessFailedAuthPrintsNoPassword(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	brokers := testenv.Brokers(t)
	ev := outbox.Event{Topic: testenv.Unique("cred"), AggregateType: "order", AggregateID: "o-1", EventType: "Placed", Payload: []byte(`{}`)}
	if err := outbox.Write(context.Background(), db.Pool, ev); err != nil {
		t.Fatal(err)
	}
	for mech, pw := range map[string]string{"plain": passwordSecret + "\n", "scram-sha-256": passwordSecret, "scram-sha-512": passwordSecret} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			p := start(t, "DATABASE_URL="+db.URL, "KAFKA_BROKERS="+strings.Join(brokers, ","),
				"RELAY_HTTP_ADDR="+testenv.FreeAddr(t), "RELAY_LOG_LEVEL=debug",
				"KAFKA_SASL_MECHANISM="+mech, "KAFKA_SASL_USERNAME=relay", "KAFKA_SASL_PASSWORD="+pw,
				"KAFKA_SASL_ALLOW_PLAINTEXT=true")
			select {
			case <-p.done:
				t.Fatalf("the relay exited early: %v", p.err)
			case <-time.After(4 * time.Second):
			}
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			p.wait(15 * time.Second)
			logs := p.stderr.String()
			if !strings.Contains(logs, "outbox relay starting") {
				t.Errorf("stderr = %q, want the relay's logs", logs)
			}
			for name, out := range map[string]string{"stderr": logs, "stdout": p.stdout.String()} {
				if strings.Contains(out, passwordSecret) {
					t.Errorf("%s quotes the password: %q", name, out)
				}
			}
		})
	}
}
