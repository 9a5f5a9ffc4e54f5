// Package kafkasettings holds the Kafka connection settings as the binaries
// in cmd/ read them, flat and as text (file paths, a mechanism name), and
// turns them into a [broker.Config]: it reads the PEM files into a
// [*tls.Config] and checks what the files and names can get wrong. The
// libraries take a broker.Config; [Merge] and [Check] (library.go) are the
// one check of it that the relay's and the inbox's Config share.
//
// [Vars] (vars.go) is the one table of the KAFKA_* variables that set
// Settings: their names, the field each sets, how each is parsed, and
// [NameVariables], which restates a [*FieldError] as the one-line
// [*VarError] naming the variable that holds the field. The relay binary
// lists them in its own table of variables; outboxkit reads them with
// [FromEnv].
package kafkasettings

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/outboxkit/outboxkit/broker"
)

// Settings are the TLS and SASL settings of a binary. The zero value is a
// plaintext, unauthenticated connection.
type Settings struct {
	// TLS turns on TLS. The system's root CAs verify the brokers unless
	// CAFile is set.
	TLS bool
	// CAFile is a PEM file of CA certificates that verify the brokers,
	// instead of the system roots. Needs TLS.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// brokers that require mutual TLS. Set both or neither. Need TLS.
	CertFile string
	// KeyFile: see CertFile.
	KeyFile string
	// InsecureSkipVerify accepts any broker certificate. For tests only: it
	// lets anyone on the path read and change the traffic. Needs TLS.
	InsecureSkipVerify bool

	// SASLMechanism is empty (no SASL), "plain", "scram-sha-256" or
	// "scram-sha-512", in any letter case.
	SASLMechanism string
	// Username and Password are the SASL credentials.
	Username string
	// Password: see Username.
	Password string
	// AllowPlaintextSASL accepts SASL PLAIN without TLS.
	AllowPlaintextSASL bool

	// ClientID identifies the program in broker logs and quotas.
	ClientID string
}

// FieldError says which [Settings] field is wrong and why.
type FieldError struct {
	// Field is the Settings field at fault, such as "CAFile".
	Field string
	// Reason says what is wrong, without the field name.
	Reason string
	// Related lists the other Settings fields Reason names.
	Related []string
	// Err is the cause, or nil.
	Err error
}

// Error returns "kafka settings: <Field> <Reason>[: <Err>]".
func (e *FieldError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("kafka settings: %s %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("kafka settings: %s %s: %v", e.Field, e.Reason, e.Err)
}

// Unwrap returns the cause, so errors.Is(err, fs.ErrNotExist) works for a
// missing file.
func (e *FieldError) Unwrap() error { return e.Err }

// fields maps the broker.Config fields to the Settings fields that set
// them, as [Vars] pairs them.
var fields = func() map[string]string {
	m := map[string]string{}
	for _, v := range Vars {
		if v.BrokerField != "" {
			m[v.BrokerField] = v.Field
		}
	}
	return m
}()

// Config checks s, reads its files and returns the broker.Config for
// brokers. Its errors are *FieldError, except for a broker.Config error
// about Brokers, returned as the *broker.ConfigError it is.
func (s Settings) Config(brokers []string) (broker.Config, error) {
	if err := s.check(); err != nil {
		return broker.Config{}, err
	}
	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return broker.Config{}, err
	}
	cfg := broker.Config{
		Brokers:            brokers,
		ClientID:           s.ClientID,
		TLS:                tlsCfg,
		SASL:               broker.SASL{Mechanism: broker.Mechanism(strings.ToUpper(s.SASLMechanism)), Username: s.Username, Password: s.Password},
		AllowPlaintextSASL: s.AllowPlaintextSASL,
	}
	if err := cfg.Validate(); err != nil {
		return broker.Config{}, s.fromBroker(err)
	}
	return cfg, nil
}

// fromBroker restates a broker.ConfigError in terms of Settings fields.
func (s Settings) fromBroker(err error) error {
	be, ok := err.(*broker.ConfigError)
	if !ok || fields[be.Field] == "" {
		return err
	}
	fe := &FieldError{Field: fields[be.Field], Reason: be.Reason}
	for _, r := range be.Related {
		if f := fields[r]; f != "" {
			fe.Reason = strings.ReplaceAll(fe.Reason, r, f)
			fe.Related = append(fe.Related, f)
		}
	}
	return fe
}

// check catches what broker.Config cannot see: file settings without TLS,
// half a key pair, a mechanism name in the binaries' spelling.
func (s Settings) check() error {
	if !s.TLS {
		for _, f := range []struct {
			name string
			set  bool
		}{{"CAFile", s.CAFile != ""}, {"CertFile", s.CertFile != ""}, {"KeyFile", s.KeyFile != ""}, {"InsecureSkipVerify", s.InsecureSkipVerify}} {
			if f.set {
				return &FieldError{Field: f.name, Reason: "is set but TLS is off", Related: []string{"TLS"}}
			}
		}
	}
	if s.CertFile != "" && s.KeyFile == "" {
		return &FieldError{Field: "KeyFile", Reason: "is empty but CertFile is set (set both or neither)", Related: []string{"CertFile"}}
	}
	if s.KeyFile != "" && s.CertFile == "" {
		return &FieldError{Field: "CertFile", Reason: "is empty but KeyFile is set (set both or neither)", Related: []string{"KeyFile"}}
	}
	switch strings.ToLower(s.SASLMechanism) {
	case "", "plain", "scram-sha-256", "scram-sha-512":
	default:
		return &FieldError{Field: "SASLMechanism", Reason: fmt.Sprintf("is an unknown mechanism %q (want plain, scram-sha-256 or scram-sha-512)", s.SASLMechanism)}
	}
	return nil
}

// tlsConfig returns the TLS configuration, or nil when TLS is off. It reads
// the files now, so a missing or malformed file is reported at start rather
// than at the first connection.
func (s Settings) tlsConfig() (*tls.Config, error) {
	if !s.TLS {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: s.InsecureSkipVerify, //nolint:gosec // explicit opt-in, documented as test-only
	}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, &FieldError{Field: "CAFile", Reason: "cannot be read", Err: err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &FieldError{Field: "CAFile", Reason: fmt.Sprintf("%s holds no PEM certificate", s.CAFile)}
		}
		cfg.RootCAs = pool
	}
	if s.CertFile != "" {
		// Read each file on its own first, so the error names the one at fault.
		if _, err := os.ReadFile(s.CertFile); err != nil {
			return nil, &FieldError{Field: "CertFile", Reason: "cannot be read", Err: err}
		}
		if _, err := os.ReadFile(s.KeyFile); err != nil {
			return nil, &FieldError{Field: "KeyFile", Reason: "cannot be read", Err: err}
		}
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, &FieldError{Field: "CertFile", Reason: "cannot be loaded with KeyFile as a client certificate and key", Related: []string{"KeyFile"}, Err: err}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
