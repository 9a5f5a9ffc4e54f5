package inbox_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/testenv"
)

// credSecret is the distinctive part of every password these tests use;
// no error and no log line may contain it.
const credSecret = "hunter2-Sekr1t"

// badPasswords are, per mechanism, a password the mechanism cannot send:
// for SCRAM one ending in a newline (as a Kubernetes secret made from a
// file has), which SASLprep rejects; for PLAIN one with a NUL.
var badPasswords = map[broker.Mechanism]string{
	broker.PLAIN:       credSecret + "\x00",
	broker.SCRAMSHA256: credSecret + "\n",
	broker.SCRAMSHA512: credSecret + "\n",
}

// TestConstructorsRefuseBadPasswordWithoutQuotingIt checks NewConsumer and
// NewRedriveWriter with a password SASLprep (or PLAIN) rejects: a
// ConfigError naming the field, and the password in no error or log line.
// Before, the SCRAM library's error, which quotes the password, came back.
func TestConstructorsRefuseBadPasswordWithoutQuotingIt(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	for mech, pw := range badPasswords {
		t.Run(string(mech), func(t *testing.T) {
			t.Parallel()
			logs := &testenv.Buffer{}
			kcfg := broker.Config{Brokers: testenv.Brokers(t), AllowPlaintextSASL: true,
				SASL: broker.SASL{Mechanism: mech, Username: "inbox", Password: pw}}
			_, err := inbox.NewConsumer(db.Pool, inbox.Config{
				Kafka: kcfg, GroupID: "g", Topics: []string{"t"},
				Logger: slog.New(slog.NewJSONHandler(logs, nil)),
			}, func(context.Context, pgx.Tx, inbox.Message) error { return nil })
			var ce *inbox.ConfigError
			if !errors.As(err, &ce) || ce.Field != "Kafka.SASL.Password" || !strings.Contains(ce.Reason, "byte offset 14 of 15") {
				t.Errorf("NewConsumer = %v, want a ConfigError for Kafka.SASL.Password at byte offset 14 of 15", err)
			}
			assertNoSecret(t, "NewConsumer error", err)

			_, err = inbox.NewRedriveWriter(kcfg)
			var be *broker.ConfigError
			if !errors.As(err, &be) || be.Field != "SASL.Password" || !strings.Contains(be.Reason, "byte offset 14 of 15") {
				t.Errorf("NewRedriveWriter = %v, want a *broker.ConfigError for SASL.Password at byte offset 14 of 15", err)
			}
			assertNoSecret(t, "NewRedriveWriter error", err)
			if strings.Contains(logs.String(), credSecret) {
				t.Errorf("logs quote the password:\n%s", logs)
			}
		})
	}
}

// TestFailedAuthLogsNoPassword runs a Consumer and a redrive writer with a
// password the broker does not accept, for every mechanism, against the
// test broker: whatever the broker answers, the consumer's log lines and
// the writer's error do not quote the password.
func TestFailedAuthLogsNoPassword(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	brokers := testenv.Brokers(t)
	for _, mech := range []broker.Mechanism{broker.PLAIN, broker.SCRAMSHA256, broker.SCRAMSHA512} {
		t.Run(string(mech), func(t *testing.T) {
			t.Parallel()
			logs := &testenv.Buffer{}
			kcfg := broker.Config{Brokers: brokers, AllowPlaintextSASL: true,
				SASL: broker.SASL{Mechanism: mech, Username: "inbox", Password: credSecret}}
			c, err := inbox.NewConsumer(db.Pool, inbox.Config{
				Kafka: kcfg, GroupID: testenv.Unique("cred"), Topics: []string{testenv.Unique("cred")},
				JoinGroupBackoff: 100 * time.Millisecond,
				Logger:           slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			}, func(context.Context, pgx.Tx, inbox.Message) error { return nil })
			if err != nil {
				t.Fatalf("NewConsumer: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			runErr := c.Run(ctx)
			assertNoSecret(t, "Run error", runErr)
			if logs.String() == "" {
				t.Errorf("the consumer logged nothing in 3s of failing to authenticate")
			}
			if strings.Contains(logs.String(), credSecret) {
				t.Errorf("logs quote the password:\n%s", logs)
			}

			w, err := inbox.NewRedriveWriter(kcfg)
			if err != nil {
				t.Fatalf("NewRedriveWriter: %v", err)
			}
			defer w.Close()
			pctx, pcancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer pcancel()
			err = w.Publish(pctx, inbox.Record{Topic: "cred-nowhere", Value: []byte("x")})
			if err == nil {
				t.Errorf("Publish with a password the broker does not know succeeded")
			}
			assertNoSecret(t, "Publish error", err)
		})
	}
}

func assertNoSecret(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), credSecret) {
		t.Errorf("%s quotes the password: %q", what, err)
	}
}
