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

// TestValidateCredentials checks that Validate refuses the credentials the
// mechanism cannot use, names the field and the byte offset, and never
// quotes the value.
func TestValidateCredentials(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-Sekr1t"
	tests := []struct {
		name      string
		mech      broker.Mechanism
		user, pw  string
		wantField string // empty: valid
		wantMsg   string
	}{
		{name: "SCRAM, ordinary", mech: broker.SCRAMSHA256, user: "u", pw: secret},
		{name: "SCRAM, non-ASCII space is mapped", mech: broker.SCRAMSHA512, user: "u", pw: secret + "\u00a0x"},
		{name: "SCRAM, accented letters", mech: broker.SCRAMSHA512, user: "u", pw: "pässwörd-" + secret},
		{name: "SCRAM, trailing newline", mech: broker.SCRAMSHA256, user: "u", pw: secret + "\n", wantField: "SASL.Password", wantMsg: "at byte offset 14 of 15"},
		{name: "SCRAM-SHA-512, trailing CR LF", mech: broker.SCRAMSHA512, user: "u", pw: secret + "\r\n", wantField: "SASL.Password", wantMsg: "at byte offset 14 of 16"},
		{name: "SCRAM, tab", mech: broker.SCRAMSHA256, user: "u", pw: "ab\t" + secret, wantField: "SASL.Password", wantMsg: "at byte offset 2 of"},
		{name: "SCRAM, unassigned in Unicode 3.2", mech: broker.SCRAMSHA256, user: "u", pw: "é" + secret + "\U0001F600", wantField: "SASL.Password", wantMsg: "at byte offset 16 of 20"},
		{name: "SCRAM, invalid UTF-8", mech: broker.SCRAMSHA256, user: "u", pw: secret + "\xff", wantField: "SASL.Password", wantMsg: "not valid UTF-8 at byte offset 14"},
		{name: "SCRAM, mixed directions", mech: broker.SCRAMSHA256, user: "u", pw: "\u05d0" + secret + "\u05d1", wantField: "SASL.Password", wantMsg: "right-to-left text (RFC 3454 section 6) at byte offset 2 of"},
		{name: "SCRAM, right-to-left not at the end", mech: broker.SCRAMSHA256, user: "u", pw: "\u05d0\u05d11", wantField: "SASL.Password", wantMsg: "right-to-left text (RFC 3454 section 6) at byte offset 4 of 5"},
		{name: "SCRAM, username with a newline", mech: broker.SCRAMSHA256, user: "relay\n", pw: secret, wantField: "SASL.Username", wantMsg: "at byte offset 5 of 6"},
		{name: "PLAIN, newline is sent as it is", mech: broker.PLAIN, user: "u", pw: secret + "\n"},
		{name: "PLAIN, unassigned code point", mech: broker.PLAIN, user: "u", pw: secret + "\U0001F600"},
		{name: "PLAIN, NUL", mech: broker.PLAIN, user: "u", pw: secret + "\x00", wantField: "SASL.Password", wantMsg: "NUL byte at byte offset 14 of 15"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := broker.Config{Brokers: []string{"k:9092"}, TLS: &tls.Config{}, SASL: broker.SASL{Mechanism: tt.mech, Username: tt.user, Password: tt.pw}}
			err := cfg.Validate()
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
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q quotes the password or spans lines", err)
			}
		})
	}
}
