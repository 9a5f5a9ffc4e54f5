package broker_test

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/outboxkit/outboxkit/broker"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	brokers := []string{"k:9092"}
	tests := []struct {
		name      string
		cfg       broker.Config
		wantField string // empty: valid
		wantMsg   string
	}{
		{name: "brokers only", cfg: broker.Config{Brokers: brokers}},
		{name: "PLAIN over TLS", cfg: broker.Config{Brokers: brokers, TLS: &tls.Config{}, SASL: broker.SASL{Mechanism: broker.PLAIN, Username: "u"}}},
		{name: "PLAIN without TLS, allowed", cfg: broker.Config{Brokers: brokers, AllowPlaintextSASL: true, SASL: broker.SASL{Mechanism: broker.PLAIN, Username: "u"}}},
		{name: "SCRAM without TLS", cfg: broker.Config{Brokers: brokers, SASL: broker.SASL{Mechanism: broker.SCRAMSHA512, Username: "u"}}},
		{name: "no brokers", cfg: broker.Config{}, wantField: "Brokers", wantMsg: "is empty"},
		{name: "empty broker", cfg: broker.Config{Brokers: []string{"k:9092", " "}}, wantField: "Brokers", wantMsg: "empty address at index 1"},
		{name: "PLAIN without TLS", cfg: broker.Config{Brokers: brokers, SASL: broker.SASL{Mechanism: broker.PLAIN, Username: "u"}}, wantField: "SASL.Mechanism", wantMsg: "without TLS"},
		{name: "unknown mechanism", cfg: broker.Config{Brokers: brokers, SASL: broker.SASL{Mechanism: "GSSAPI", Username: "u"}}, wantField: "SASL.Mechanism", wantMsg: `unknown mechanism "GSSAPI"`},
		{name: "lower-case mechanism", cfg: broker.Config{Brokers: brokers, SASL: broker.SASL{Mechanism: "scram-sha-256", Username: "u"}}, wantField: "SASL.Mechanism", wantMsg: "unknown mechanism"},
		{name: "mechanism without username", cfg: broker.Config{Brokers: brokers, SASL: broker.SASL{Mechanism: broker.SCRAMSHA256}}, wantField: "SASL.Username", wantMsg: "is empty"},
		{name: "password without mechanism", cfg: broker.Config{Brokers: brokers, SASL: broker.SASL{Password: "p"}}, wantField: "SASL.Password", wantMsg: "SASL.Mechanism is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ce *broker.ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.wantField || !strings.Contains(ce.Reason, tt.wantMsg) {
				t.Fatalf("Validate() = %v, want a *ConfigError for %s containing %q", err, tt.wantField, tt.wantMsg)
			}
			if !errors.Is(err, broker.ErrInvalidConfig) {
				t.Errorf("errors.Is(%v, ErrInvalidConfig) = false", err)
			}
			for _, r := range ce.Related {
				if !strings.Contains(ce.Reason, r) {
					t.Errorf("Related names %q, which Reason %q does not mention", r, ce.Reason)
				}
			}
		})
	}
}
