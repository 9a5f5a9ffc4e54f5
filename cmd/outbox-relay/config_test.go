package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/relay"
)

// base is the smallest valid environment.
var base = []string{
	"DATABASE_URL=postgres://relay:s3cret@db.example:5432/app?sslmode=disable",
	"KAFKA_BROKERS=k1:9092, k2:9092",
}

func environ(extra ...string) []string {
	return append(append([]string{}, base...), extra...)
}

func TestParseConfigDefaults(t *testing.T) {
	t.Parallel()
	// Variables a Kubernetes Service named kafka or database puts in every
	// pod of its namespace are not the relay's and not typos.
	cfg, err := parseConfig(environ("HOME=/root", "OUTBOXKIT_TEST_LOGS=1",
		"KAFKA_SERVICE_HOST=10.0.0.7", "KAFKA_SERVICE_PORT=9092", "KAFKA_SERVICE_PORT_BROKER=9092", "KAFKA_PORT=tcp://10.0.0.7:9092",
		"KAFKA_PORT_9092_TCP=tcp://10.0.0.7:9092", "KAFKA_PORT_9092_TCP_ADDR=10.0.0.7", "KAFKA_PORT_9092_TCP_PORT=9092",
		"KAFKA_PORT_9092_TCP_PROTO=tcp", "KAFKA_UI_SERVICE_HOST=10.0.0.8", "DATABASE_SERVICE_HOST=10.0.0.9", "DATABASE_PORT_5432_TCP=tcp://10.0.0.9:5432"))
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if got, want := cfg.Brokers, []string{"k1:9092", "k2:9092"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Brokers = %q, want %q (split on commas, trimmed)", got, want)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"RELAY_HTTP_ADDR", cfg.HTTPAddr, "127.0.0.1:9090"},
		{"RELAY_DB_MAX_CONNS", cfg.pool.MaxConns, int32(16)},
		{"RELAY_LOG_LEVEL", cfg.level, slog.LevelInfo},
		{"RELAY_LOG_FORMAT", cfg.LogFormat, "json"},
		{"hard deadline", cfg.hardDeadline(), 9 * time.Second},
		{"KAFKA_CLIENT_ID (unset: relay's default)", cfg.kafka.ClientID, ""},
		{"KAFKA_TLS", cfg.kafka.TLS == nil, true},
		{"KAFKA_SASL_MECHANISM", cfg.kafka.SASL.Mechanism, broker.Mechanism("")},
		{"KAFKA_SASL_ALLOW_PLAINTEXT", cfg.kafka.AllowPlaintextSASL, false},
		{"application_name", cfg.pool.ConnConfig.RuntimeParams["application_name"], "outbox-relay"},
		{"db host", cfg.pool.ConnConfig.Host, "db.example"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestDefaultsAreRelays: unset tuning variables leave their relay.Config
// fields zero, for relay.New to apply its own defaults, and -h prints
// those defaults, read from relay.
func TestDefaultsAreRelays(t *testing.T) {
	t.Parallel()
	cfg, err := parseConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.relayConfig()
	got.Kafka = broker.Config{}
	if !reflect.DeepEqual(got, relay.Config{}) {
		t.Errorf("relayConfig without tuning variables = %+v, want every field zero (relay's defaults)", got)
	}
	if hd := cfg.hardDeadline(); hd != relay.DefaultShutdownTimeout+shutdownGrace {
		t.Errorf("hard deadline %s, want relay's default shutdown timeout + %s", hd, shutdownGrace)
	}

	var help strings.Builder
	printUsage(&help)
	for name, want := range map[string]string{
		"OUTBOX_BATCH_SIZE":        strconv.Itoa(relay.DefaultBatchSize),
		"OUTBOX_MAX_BATCH_BYTES":   strconv.Itoa(relay.DefaultMaxBatchBytes),
		"RELAY_LANES":              strconv.Itoa(relay.DefaultLanes),
		"RELAY_MIN_POLL_INTERVAL":  relay.DefaultMinPollInterval.String(),
		"RELAY_MAX_POLL_INTERVAL":  relay.DefaultMaxPollInterval.String(),
		"RELAY_REBALANCE_INTERVAL": relay.DefaultRebalanceInterval.String(),
		"RELAY_LOCK_TIMEOUT":       relay.DefaultLockTimeout.String(),
		"RELAY_PUBLISH_TIMEOUT":    relay.DefaultPublishTimeout.String(),
		"RELAY_SHUTDOWN_TIMEOUT":   relay.DefaultShutdownTimeout.String(),
		"RELAY_RETRY_BACKOFF_MIN":  relay.DefaultRetryBackoffMin.String(),
		"RELAY_RETRY_BACKOFF_MAX":  relay.DefaultRetryBackoffMax.String(),
		"RELAY_PARK_AFTER":         relay.DefaultParkAfter.String(),
		"RELAY_SOURCE":             string(relay.SourceTable),
		"KAFKA_CLIENT_ID":          relay.DefaultClientID,
	} {
		if !regexp.MustCompile(`(?m)^` + name + ` +` + regexp.QuoteMeta(want) + ` `).MatchString(help.String()) {
			t.Errorf("-h does not show %s with relay's default %s:\n%s", name, want, help.String())
		}
	}
}

// tuningVars returns the variable of each tuning field of relay.Config
// (an int or a duration with a default), by field name.
func tuningVars(t *testing.T) map[string]reflect.StructField {
	t.Helper()
	notTuning := map[string]bool{"StandbysRequired": true} // RELAY_STANDBYS_REQUIRED: 0 means all of them
	vars := map[string]reflect.StructField{}
	for f := range reflect.TypeFor[relay.Config]().Fields() {
		if !f.IsExported() || notTuning[f.Name] || (f.Type != reflect.TypeFor[time.Duration]() && f.Type != reflect.TypeFor[int]()) {
			continue
		}
		name := fieldVars[f.Name]
		if name == "" {
			t.Errorf("relay.Config.%s (%s) has no OUTBOX_/RELAY_ variable in cmd/outbox-relay", f.Name, f.Type)
			continue
		}
		vars[name] = f
	}
	return vars
}

// TestEveryRelayFieldHasAVariable fails when relay.Config grows a tuning
// field the binary does not expose, or when the mapping drops one: it sets
// every variable to a distinct value and finds it in relay.Config.
func TestEveryRelayFieldHasAVariable(t *testing.T) {
	t.Parallel()
	env := environ()
	want := map[string]any{}
	i := 0
	for name, f := range tuningVars(t) {
		i++
		switch f.Type {
		case reflect.TypeFor[time.Duration]():
			d := time.Duration(i)*time.Second + 7*time.Millisecond
			env = append(env, name+"="+d.String())
			want[f.Name] = d
		default:
			env = append(env, name+"="+strconv.Itoa(5000+i))
			want[f.Name] = 5000 + i
		}
	}
	cfg, err := parseConfig(env)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	got := reflect.ValueOf(cfg.relayConfig())
	for field, w := range want {
		if g := got.FieldByName(field).Interface(); g != w {
			t.Errorf("relay.Config.%s = %v, want %v from %s", field, g, w, fieldVars[field])
		}
	}
	if rc := cfg.relayConfig(); !reflect.DeepEqual(rc.Kafka, cfg.kafka) || !reflect.DeepEqual(rc.Kafka.Brokers, cfg.Brokers) {
		t.Errorf("relayConfig does not carry the Kafka settings and brokers")
	}
}

// errCase is one invalid environment and the error it must give.
type errCase struct {
	name    string
	env     []string
	wantVar string
	wantMsg string
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []errCase{
		{"missing DATABASE_URL", []string{"KAFKA_BROKERS=k:9092"}, "DATABASE_URL", "not set"},
		{"empty DATABASE_URL", []string{"DATABASE_URL=", "KAFKA_BROKERS=k:9092"}, "DATABASE_URL", "is empty"},
		{"missing KAFKA_BROKERS", []string{"DATABASE_URL=postgres://h/db"}, "KAFKA_BROKERS", "not set"},
		{"unparsable DATABASE_URL", []string{"DATABASE_URL=postgres://u:pw@h:port/db", "KAFKA_BROKERS=k:9092"}, "DATABASE_URL", "cannot parse"},
		{"broker without port", environ("KAFKA_BROKERS=kafka"), "KAFKA_BROKERS", `"kafka" is not host:port`},
		{"empty broker", environ("KAFKA_BROKERS=k:9092,,k2:9092"), "KAFKA_BROKERS", "empty address"},
		{"bad http addr", environ("RELAY_HTTP_ADDR=9090"), "RELAY_HTTP_ADDR", "not host:port"},
		{"pool size zero", environ("RELAY_DB_MAX_CONNS=0"), "RELAY_DB_MAX_CONNS", "between 1 and 1000"},
		{"pool size text", environ("RELAY_DB_MAX_CONNS=many"), "RELAY_DB_MAX_CONNS", `invalid integer "many"`},
		{"log level", environ("RELAY_LOG_LEVEL=verbose"), "RELAY_LOG_LEVEL", `got "verbose"`},
		{"log format", environ("RELAY_LOG_FORMAT=xml"), "RELAY_LOG_FORMAT", `got "xml"`},
		{"negative duration", environ("RELAY_SHUTDOWN_TIMEOUT=-1s"), "RELAY_SHUTDOWN_TIMEOUT", "must be positive, got -1s"},
		{"duration without unit", environ("RELAY_MAX_POLL_INTERVAL=100"), "RELAY_MAX_POLL_INTERVAL", `invalid duration "100"`},
		{"duration word", environ("RELAY_MAX_POLL_INTERVAL=fast"), "RELAY_MAX_POLL_INTERVAL", `invalid duration "fast"`},
		{"boolean", environ("KAFKA_TLS=maybe"), "KAFKA_TLS", `invalid boolean "maybe"`},
		{"CA file without TLS", environ("KAFKA_TLS_CA_FILE=/etc/ca.pem"), "KAFKA_TLS_CA_FILE", "KAFKA_TLS is off"},
		{"missing CA file", environ("KAFKA_TLS=true", "KAFKA_TLS_CA_FILE=/nonexistent/ca.pem"), "KAFKA_TLS_CA_FILE", "cannot be read"},
		{"cert without key", environ("KAFKA_TLS=true", "KAFKA_TLS_CERT_FILE=/c.pem"), "KAFKA_TLS_KEY_FILE", "KAFKA_TLS_CERT_FILE is set"},
		{"unknown mechanism", environ("KAFKA_SASL_MECHANISM=kerberos", "KAFKA_SASL_USERNAME=u"), "KAFKA_SASL_MECHANISM", `unknown mechanism "kerberos"`},
		{"mechanism without user", environ("KAFKA_SASL_MECHANISM=scram-sha-256"), "KAFKA_SASL_USERNAME", "KAFKA_SASL_MECHANISM is SCRAM-SHA-256"},
		{"plain without TLS", environ("KAFKA_SASL_MECHANISM=plain", "KAFKA_SASL_USERNAME=u"), "KAFKA_SASL_MECHANISM", "set KAFKA_SASL_ALLOW_PLAINTEXT"},
		{"allow plaintext boolean", environ("KAFKA_SASL_ALLOW_PLAINTEXT=sure"), "KAFKA_SASL_ALLOW_PLAINTEXT", `invalid boolean "sure"`},
		{"unknown OUTBOX_ variable", environ("OUTBOX_BATCHSIZE=10"), "OUTBOX_BATCHSIZE", "unknown variable (did you mean OUTBOX_BATCH_SIZE?)"},
		{"unknown RELAY_ variable, other prefix", environ("RELAY_BATCH_SIZE=10"), "RELAY_BATCH_SIZE", "did you mean OUTBOX_BATCH_SIZE?"},
		{"unknown RELAY_ variable, no guess", environ("RELAY_ZZZZZZZZZZZZZZZZ=1"), "RELAY_ZZZZZZZZZZZZZZZZ", "unknown variable"},
		{"misspelt KAFKA_ variable", environ("KAFKA_SASL_MECHANSIM=plain"), "KAFKA_SASL_MECHANSIM", "unknown variable (did you mean KAFKA_SASL_MECHANISM?)"},
		{"misspelt KAFKA_ password", environ("KAFKA_SASL_PASSWROD=pw"), "KAFKA_SASL_PASSWROD", "did you mean KAFKA_SASL_PASSWORD?"},
		{"misspelt KAFKA_ file variable", environ("KAFKA_SASL_PASSWORD_FIEL=/run/pw"), "KAFKA_SASL_PASSWORD_FIEL", "did you mean KAFKA_SASL_PASSWORD_FILE?"},
		{"unknown KAFKA_ variable, no guess", environ("KAFKA_SOMETHING_ELSE=x"), "KAFKA_SOMETHING_ELSE", "unknown variable"},
		{"misspelt DATABASE_ variable", environ("DATABASE_URI=postgres://h/db"), "DATABASE_URI", "did you mean DATABASE_URL?"},
		{"misspelt DATABASE_ file variable", environ("DATABASE_URL_FLIE=/run/url"), "DATABASE_URL_FLIE", "did you mean DATABASE_URL_FILE?"},
		{"password and its file", environ("KAFKA_SASL_PASSWORD=pw", "KAFKA_SASL_PASSWORD_FILE=/run/pw"), "KAFKA_SASL_PASSWORD_FILE", "is set and so is KAFKA_SASL_PASSWORD (set one)"},
		{"database URL and its file", []string{"DATABASE_URL=postgres://h/db", "DATABASE_URL_FILE=/run/url", "KAFKA_BROKERS=k:9092"}, "DATABASE_URL_FILE", "is set and so is DATABASE_URL"},
		{"missing password file", environ("KAFKA_SASL_PASSWORD_FILE=/nonexistent/pw"), "KAFKA_SASL_PASSWORD_FILE", "cannot be read: open /nonexistent/pw: no such file"},
		{"empty file variable", environ("KAFKA_SASL_PASSWORD_FILE="), "KAFKA_SASL_PASSWORD_FILE", "is empty (want the path of a file holding KAFKA_SASL_PASSWORD)"},
	}
	// Every tuning knob: not a number, and zero (which relay would silently
	// replace by its default).
	for name, f := range tuningVars(t) {
		if f.Type == reflect.TypeFor[time.Duration]() {
			tests = append(tests,
				errCase{name + " invalid", environ(name + "=soon"), name, `invalid duration "soon"`},
				errCase{name + " zero", environ(name + "=0s"), name, "must be positive, got 0s"})
		} else {
			tests = append(tests,
				errCase{name + " invalid", environ(name + "=lots"), name, `invalid integer "lots"`},
				errCase{name + " zero", environ(name + "=0"), name, "must be positive, got 0"})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseConfig(tt.env)
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("parseConfig = %v, want a configError naming %s", err, tt.wantVar)
			}
			if ce.Var != tt.wantVar || !strings.Contains(ce.Msg, tt.wantMsg) {
				t.Fatalf("parseConfig error %q, want variable %s and a message containing %q", err, tt.wantVar, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), ":pw@") {
				t.Errorf("error leaks the database password: %q", err)
			}
		})
	}
}

// TestRelayValidationNamesVariable checks that relay.Config's own range
// checks come back naming the variable, not the Go field.
func TestRelayValidationNamesVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env     []string
		wantVar string
		wantMsg string
	}{
		{environ("OUTBOX_BATCH_SIZE=20000"), "OUTBOX_BATCH_SIZE", "must be between 1 and 10000, got 20000"},
		{environ("OUTBOX_MAX_BATCH_BYTES=100"), "OUTBOX_MAX_BATCH_BYTES", "must be at least 1024, got 100"},
		{environ("RELAY_MIN_POLL_INTERVAL=1s", "RELAY_MAX_POLL_INTERVAL=10ms"), "RELAY_MAX_POLL_INTERVAL", "must not be below RELAY_MIN_POLL_INTERVAL (1s), got 10ms"},
		{environ("RELAY_REBALANCE_INTERVAL=1ms"), "RELAY_REBALANCE_INTERVAL", "must be at least 10ms, got 1ms"},
		{environ("RELAY_PUBLISH_TIMEOUT=5ms"), "RELAY_PUBLISH_TIMEOUT", "must be at least 100ms"},
		{environ("RELAY_RETRY_BACKOFF_MIN=10s", "RELAY_RETRY_BACKOFF_MAX=1s"), "RELAY_RETRY_BACKOFF_MIN", "at most RELAY_RETRY_BACKOFF_MAX (1s)"},
	}
	for _, tt := range tests {
		t.Run(tt.wantVar, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseConfig(tt.env)
			if err != nil {
				t.Fatalf("parseConfig: %v (want it to pass and relay.New to refuse)", err)
			}
			// The pool connects lazily; this one never does.
			pool, err := pgxpool.NewWithConfig(context.Background(), cfg.pool)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			_, err = relay.New(pool, cfg.relayConfig())
			if err == nil {
				t.Fatalf("relay.New accepted %v", tt.env)
			}
			err = translateRelayError(err)
			var ce *configError
			if !errors.As(err, &ce) || ce.Var != tt.wantVar || !strings.Contains(ce.Msg, tt.wantMsg) {
				t.Fatalf("translated error %q, want variable %s and a message containing %q", err, tt.wantVar, tt.wantMsg)
			}
			for _, word := range strings.FieldsFunc(err.Error(), func(r rune) bool { return r == ' ' || r == '(' || r == ')' || r == ',' }) {
				if fieldVars[word] != "" {
					t.Errorf("translated error %q still names the Go field %s", err, word)
				}
			}
		})
	}
}

func TestParseConfigKafkaSecurity(t *testing.T) {
	t.Parallel()
	cfg, err := parseConfig(environ("KAFKA_TLS=true", "KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
		"KAFKA_SASL_USERNAME=relay", "KAFKA_SASL_PASSWORD=pw", "KAFKA_CLIENT_ID=orders-relay"))
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.kafka
	if k.TLS == nil || k.SASL.Mechanism != broker.SCRAMSHA512 || k.SASL.Username != "relay" || k.SASL.Password != "pw" || k.ClientID != "orders-relay" {
		t.Fatalf("kafka = TLS %v, SASL %s as %q, client ID %q; want TLS, SCRAM-SHA-512 as relay, orders-relay", k.TLS, k.SASL.Mechanism, k.SASL.Username, k.ClientID)
	}
	cfg, err = parseConfig(environ("KAFKA_SASL_MECHANISM=PLAIN", "KAFKA_SASL_USERNAME=relay", "KAFKA_SASL_ALLOW_PLAINTEXT=true"))
	if err != nil {
		t.Fatalf("PLAIN without TLS, allowed: %v", err)
	}
	if !cfg.kafka.AllowPlaintextSASL || cfg.kafka.SASL.Mechanism != broker.PLAIN {
		t.Fatalf("kafka = %+v, want PLAIN with AllowPlaintextSASL", cfg.kafka)
	}
}

func TestParseConfigLogSettings(t *testing.T) {
	t.Parallel()
	cfg, err := parseConfig(environ("RELAY_LOG_LEVEL=DEBUG", "RELAY_LOG_FORMAT=text"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.level != slog.LevelDebug || cfg.LogFormat != "text" {
		t.Fatalf("level %v format %q, want debug and text", cfg.level, cfg.LogFormat)
	}
}

// writeSecret writes content to a fresh file and returns its path.
func writeSecret(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestParseConfigSecretFiles reads KAFKA_SASL_PASSWORD_FILE and
// DATABASE_URL_FILE: one trailing \n or \r\n is dropped, nothing else.
func TestParseConfigSecretFiles(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		content, want string
	}{
		{"s3cret\n", "s3cret"},
		{"s3cret\r\n", "s3cret"},
		{"s3cret", "s3cret"},
		{" s3cret \t", " s3cret \t"},
		{"s3cret\r", "s3cret\r"}, // only a whole line ending
	} {
		cfg, err := parseConfig([]string{"DATABASE_URL_FILE=" + writeSecret(t, "postgres://relay:pw@db.example:5432/app\n"), "KAFKA_BROKERS=k:9092",
			"KAFKA_SASL_MECHANISM=plain", "KAFKA_SASL_USERNAME=relay", "KAFKA_SASL_ALLOW_PLAINTEXT=true",
			"KAFKA_SASL_PASSWORD_FILE=" + writeSecret(t, tt.content)})
		if err != nil {
			t.Fatalf("password file %q: %v", tt.content, err)
		}
		if got := cfg.kafka.SASL.Password; got != tt.want {
			t.Errorf("password file %q: password %q, want %q", tt.content, got, tt.want)
		}
		if cc := cfg.pool.ConnConfig; cc.Host != "db.example" || cc.Database != "app" || cc.Password != "pw" {
			t.Errorf("DATABASE_URL_FILE: host %q database %q, want db.example and app with the file's password", cc.Host, cc.Database)
		}
	}

	// Two line endings: the second stays, SCRAM's SASLprep refuses it, and
	// the error names the variable that was set, not the password.
	_, err := parseConfig(environ("KAFKA_SASL_MECHANISM=scram-sha-512", "KAFKA_SASL_USERNAME=relay",
		"KAFKA_SASL_PASSWORD_FILE="+writeSecret(t, "hunter2-Sekr1t\n\n")))
	var ce *configError
	if !errors.As(err, &ce) || ce.Var != "KAFKA_SASL_PASSWORD_FILE" || !strings.Contains(ce.Msg, "at byte offset 14 of 15") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("password file with two newlines: %v; want KAFKA_SASL_PASSWORD_FILE refused at byte offset 14 of 15, without the password", err)
	}
	_, err = parseConfig([]string{"DATABASE_URL_FILE=" + writeSecret(t, "\n"), "KAFKA_BROKERS=k:9092"})
	if !errors.As(err, &ce) || ce.Var != "DATABASE_URL_FILE" || !strings.Contains(ce.Msg, "is empty") {
		t.Errorf("empty DATABASE_URL_FILE content: %v; want DATABASE_URL_FILE: is empty", err)
	}
	_, err = parseConfig([]string{"DATABASE_URL_FILE=" + writeSecret(t, "postgres://u:pw@h:port/db"), "KAFKA_BROKERS=k:9092"})
	if !errors.As(err, &ce) || ce.Var != "DATABASE_URL_FILE" || strings.Contains(err.Error(), ":pw@") {
		t.Errorf("unparsable DATABASE_URL_FILE content: %v; want DATABASE_URL_FILE named, without the password", err)
	}
}
