package main

import (
	"context"
	"os"
	"path/filepath"
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

// TestProcessMisspeltKafkaVariable: KAFKA_SASL_MECHANSIM=plain started the
// relay without SASL; now the binary refuses it before connecting.
func TestProcessMisspeltKafkaVariable(t *testing.T) {
	t.Parallel()
	p := start(t, "DATABASE_URL=postgres://u:secret@127.0.0.1:1/db", "KAFKA_BROKERS=127.0.0.1:9092",
		"KAFKA_SASL_MECHANSIM=plain", "KAFKA_SASL_USERNAME=relay")
	if code := p.wait(10 * time.Second); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	assertOneLine(t, p.stderr.String(), "outbox-relay: KAFKA_SASL_MECHANSIM: unknown variable (did you mean KAFKA_SASL_MECHANISM?)")
}

// TestProcessSecretFiles runs the binary with DATABASE_URL_FILE and
// KAFKA_SASL_PASSWORD_FILE, each file ending in a newline as a Kubernetes
// secret made from a file does: the relay connects to the database with
// the URL (it gets ready), and the SCRAM password, newline dropped, passes
// validation. Both variables set with their _FILE is refused.
func TestProcessSecretFiles(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	brokers := strings.Join(testenv.Brokers(t), ",")
	dir := t.TempDir()
	urlFile, pwFile := filepath.Join(dir, "database-url"), filepath.Join(dir, "kafka-password")
	if err := os.WriteFile(urlFile, []byte(db.URL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte(passwordSecret+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("database URL", func(t *testing.T) {
		t.Parallel()
		addr := testenv.FreeAddr(t)
		p := start(t, "DATABASE_URL_FILE="+urlFile, "KAFKA_BROKERS="+brokers, "RELAY_HTTP_ADDR="+addr)
		waitFor(t, p, 20*time.Second, "/readyz to answer 200", func() bool { return status("http://"+addr+"/readyz") == 200 })
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(15 * time.Second); code != 0 {
			t.Fatalf("exit code %d after SIGTERM, want 0", code)
		}
		if strings.Contains(p.stderr.String(), db.URL) {
			t.Errorf("stderr quotes the database URL")
		}
	})
	t.Run("SCRAM password", func(t *testing.T) {
		t.Parallel()
		p := start(t, "DATABASE_URL_FILE="+urlFile, "KAFKA_BROKERS="+brokers, "RELAY_HTTP_ADDR="+testenv.FreeAddr(t),
			"KAFKA_SASL_MECHANISM=scram-sha-256", "KAFKA_SASL_USERNAME=relay", "KAFKA_SASL_PASSWORD_FILE="+pwFile)
		select {
		case <-p.done:
			t.Fatalf("the relay exited (%v), want it running with the password from the file:\n%s", p.err, p.stderr)
		case <-time.After(3 * time.Second):
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		p.wait(15 * time.Second)
		if out := p.stderr.String() + p.stdout.String(); strings.Contains(out, passwordSecret) {
			t.Errorf("output quotes the password: %q", out)
		}
	})
	t.Run("both set", func(t *testing.T) {
		t.Parallel()
		p := start(t, "DATABASE_URL_FILE="+urlFile, "KAFKA_BROKERS="+brokers,
			"KAFKA_SASL_MECHANISM=scram-sha-256", "KAFKA_SASL_USERNAME=relay",
			"KAFKA_SASL_PASSWORD=secret", "KAFKA_SASL_PASSWORD_FILE="+pwFile)
		if code := p.wait(10 * time.Second); code != 2 {
			t.Fatalf("exit code %d, want 2", code)
		}
		assertOneLine(t, p.stderr.String(), "outbox-relay: KAFKA_SASL_PASSWORD_FILE: is set and so is KAFKA_SASL_PASSWORD (set one)")
	})
}
