package kafkasettings

import (
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"testing"

	"github.com/outboxkit/outboxkit/broker"
)

// TestVarsCoverSettings: each Settings field is set by one variable of
// Vars, the one whose Field names it, and each BrokerField is a field of
// broker.Config.
func TestVarsCoverSettings(t *testing.T) {
	t.Parallel()
	setBy := map[string]string{}
	names := map[string]bool{}
	for _, v := range Vars {
		if !strings.HasPrefix(v.Name, "KAFKA_") || names[v.Name] {
			t.Errorf("%s: want a KAFKA_ name, once in Vars", v.Name)
		}
		names[v.Name] = true
		if v.Help == "" || strings.Contains(v.Help, "\n") {
			t.Errorf("%s: help %q, want one line", v.Name, v.Help)
		}
		var s Settings
		value := "x"
		if v.Bool() {
			value = "true"
		}
		if err := v.Set(&s, value); err != nil {
			t.Fatalf("%s: Set(%q) = %v", v.Name, value, err)
		}
		got := reflect.ValueOf(s)
		var changed []string
		for i := range got.NumField() {
			if !got.Field(i).IsZero() {
				changed = append(changed, got.Type().Field(i).Name)
			}
		}
		if len(changed) != 1 || changed[0] != v.Field {
			t.Errorf("%s sets %v, want its Field %s only", v.Name, changed, v.Field)
		}
		if prev := setBy[v.Field]; prev != "" {
			t.Errorf("%s and %s both set %s", prev, v.Name, v.Field)
		}
		setBy[v.Field] = v.Name
		if v.BrokerField != "" && !hasField(reflect.TypeFor[broker.Config](), v.BrokerField) {
			t.Errorf("%s: BrokerField %s is not a field of broker.Config", v.Name, v.BrokerField)
		}
	}
	for f := range reflect.TypeFor[Settings]().Fields() {
		if setBy[f.Name] == "" {
			t.Errorf("Settings.%s has no variable in Vars", f.Name)
		}
	}
}

// hasField reports whether typ has the field path ("SASL.Mechanism").
func hasField(typ reflect.Type, path string) bool {
	for name := range strings.SplitSeq(path, ".") {
		f, ok := typ.FieldByName(name)
		if !ok {
			return false
		}
		typ = f.Type
	}
	return true
}

// fromEnv reads env ("NAME", "value", ...) as a binary does and returns
// the broker.Config, or the error naming the variable.
func fromEnv(env ...string) (broker.Config, error) {
	s, err := FromEnv(func(name string) string {
		for i := 0; i+1 < len(env); i += 2 {
			if env[i] == name {
				return env[i+1]
			}
		}
		return ""
	})
	if err != nil {
		return broker.Config{}, err
	}
	cfg, err := s.Config([]string{"k:9092"})
	return cfg, NameVariables(err)
}

// TestVarErrorsNameTheVariable: a bad value, and a problem Settings.Config
// finds, come back as one line naming the variable at fault and the
// variables it mentions, never a Settings field.
func TestVarErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		env  []string
		want string
	}{
		{[]string{"KAFKA_SASL_MECHANISM", "kerberos", "KAFKA_SASL_USERNAME", "u"},
			`KAFKA_SASL_MECHANISM: is an unknown mechanism "kerberos" (want plain, scram-sha-256 or scram-sha-512)`},
		{[]string{"KAFKA_TLS", "maybe"}, `KAFKA_TLS: invalid boolean "maybe" (want true or false)`},
		{[]string{"KAFKA_SASL_ALLOW_PLAINTEXT", "Sure"}, `KAFKA_SASL_ALLOW_PLAINTEXT: invalid boolean "Sure" (want true or false)`},
		{[]string{"KAFKA_TLS_CA_FILE", "/ca.pem"}, "KAFKA_TLS_CA_FILE: is set but KAFKA_TLS is off"},
		{[]string{"KAFKA_TLS", "on", "KAFKA_TLS_CERT_FILE", "/c.pem"},
			"KAFKA_TLS_KEY_FILE: is empty but KAFKA_TLS_CERT_FILE is set (set both or neither)"},
		{[]string{"KAFKA_SASL_MECHANISM", "scram-sha-256"}, "KAFKA_SASL_USERNAME: is empty but KAFKA_SASL_MECHANISM is SCRAM-SHA-256"},
		{[]string{"KAFKA_SASL_MECHANISM", "plain", "KAFKA_SASL_USERNAME", "u"},
			"KAFKA_SASL_MECHANISM: is PLAIN without KAFKA_TLS, which sends the password in clear " +
				"(turn KAFKA_TLS on, use SCRAM, or set KAFKA_SASL_ALLOW_PLAINTEXT)"},
		{[]string{"KAFKA_SASL_USERNAME", "u"}, "KAFKA_SASL_USERNAME: is set but KAFKA_SASL_MECHANISM is empty"},
	} {
		_, err := fromEnv(tt.env...)
		var ve *VarError
		if !errors.As(err, &ve) || err.Error() != tt.want {
			t.Errorf("%q: got %v, want the *VarError %q", tt.env, err, tt.want)
		}
	}
}

func TestVarErrorKeepsTheCause(t *testing.T) {
	t.Parallel()
	_, err := fromEnv("KAFKA_TLS", "true", "KAFKA_TLS_CA_FILE", "/nonexistent/ca.pem")
	var ve *VarError
	if !errors.As(err, &ve) || ve.Var != "KAFKA_TLS_CA_FILE" || !strings.HasPrefix(ve.Reason, "cannot be read: open /nonexistent/ca.pem") ||
		!errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing CA file: %v; want KAFKA_TLS_CA_FILE: cannot be read, wrapping fs.ErrNotExist", err)
	}
	// Not a FieldError: unchanged.
	_, err = Settings{}.Config(nil)
	var ce *broker.ConfigError
	if err = NameVariables(err); !errors.As(err, &ce) || ce.Field != "Brokers" {
		t.Fatalf("NameVariables(no brokers) = %v, want the *broker.ConfigError as it was", err)
	}
	if NameVariables(nil) != nil {
		t.Fatal("NameVariables(nil) is not nil")
	}
}

func TestFromEnv(t *testing.T) {
	t.Parallel()
	cfg, err := fromEnv("KAFKA_TLS", "YES", "KAFKA_SASL_MECHANISM", "scram-sha-512", "KAFKA_SASL_USERNAME", "u",
		"KAFKA_SASL_PASSWORD", "p", "KAFKA_CLIENT_ID", "cli", "KAFKA_TLS_INSECURE_SKIP_VERIFY", "1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS == nil || !cfg.TLS.InsecureSkipVerify || cfg.SASL != (broker.SASL{Mechanism: broker.SCRAMSHA512, Username: "u", Password: "p"}) ||
		cfg.ClientID != "cli" || cfg.AllowPlaintextSASL {
		t.Fatalf("broker.Config = %+v, want TLS without verification, SCRAM-SHA-512 as u, client ID cli", cfg)
	}
	// Empty is unset: false for a boolean.
	s, err := FromEnv(func(string) string { return "" })
	if err != nil || s != (Settings{}) {
		t.Fatalf("FromEnv(nothing set) = %+v, %v; want the zero Settings", s, err)
	}
}
