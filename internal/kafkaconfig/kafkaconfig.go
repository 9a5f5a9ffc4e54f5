// Package kafkaconfig turns one set of Kafka connection settings (TLS, SASL,
// client ID) into the two kafka-go objects that need them: a
// [*kafka.Transport] for Writer and Client, and a [*kafka.Dialer] for Reader
// and ConsumerGroup. kafka-go configures these separately, and a setting
// applied to one but not the other is a classic way to get a producer that
// connects and a consumer that does not; building both from one [Config]
// rules that out.
//
// The package knows nothing about environment variables: the binaries in
// cmd/ map their own settings onto [Config], and translate a [*FieldError]
// back to the variable that holds the field.
//
//	cfg := kafkaconfig.Config{TLS: true, CAFile: "/etc/kafka/ca.pem",
//		SASLMechanism: "scram-sha-512", Username: "relay", Password: pw}
//	transport, err := cfg.Transport()
//	...
//	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: transport}
package kafkaconfig

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
)

// SASL mechanism names accepted by [Config.SASLMechanism], in any letter case.
const (
	MechanismPlain       = "plain"
	MechanismSCRAMSHA256 = "scram-sha-256"
	MechanismSCRAMSHA512 = "scram-sha-512"
)

// DefaultClientID is the client ID sent to the brokers when Config.ClientID
// is empty.
const DefaultClientID = "outboxkit"

// Config holds the settings shared by every Kafka connection of a program.
// The zero value is a plaintext, unauthenticated connection.
type Config struct {
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
	// "scram-sha-512", in any letter case. PLAIN sends the password as it
	// is: use it only over TLS.
	SASLMechanism string
	// Username and Password are the SASL credentials. Username is required
	// when SASLMechanism is set.
	Username string
	// Password: see Username.
	Password string

	// ClientID identifies the program in broker logs and quotas. Defaults
	// to "outboxkit".
	ClientID string
}

// FieldError says which [Config] field is wrong and why. Msg may name other
// fields of Config by their Go names; Err, when set, is the underlying cause
// (such as the error of reading a file).
type FieldError struct {
	// Field is the Config field at fault, such as "CAFile".
	Field string
	// Msg says what is wrong, without the field name.
	Msg string
	// Err is the cause, or nil.
	Err error
}

// Error returns "kafkaconfig: <Field>: <Msg>[: <Err>]".
func (e *FieldError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("kafkaconfig: %s: %s", e.Field, e.Msg)
	}
	return fmt.Sprintf("kafkaconfig: %s: %s: %v", e.Field, e.Msg, e.Err)
}

// Unwrap returns the cause, so errors.Is(err, fs.ErrNotExist) works for a
// missing file.
func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks the settings without reading any file. [Config.Transport],
// [Config.Dialer] and [Config.TLSConfig] call it first.
func (c Config) Validate() error {
	if !c.TLS {
		switch {
		case c.CAFile != "":
			return &FieldError{Field: "CAFile", Msg: "is set but TLS is off"}
		case c.CertFile != "":
			return &FieldError{Field: "CertFile", Msg: "is set but TLS is off"}
		case c.KeyFile != "":
			return &FieldError{Field: "KeyFile", Msg: "is set but TLS is off"}
		case c.InsecureSkipVerify:
			return &FieldError{Field: "InsecureSkipVerify", Msg: "is set but TLS is off"}
		}
	}
	if c.CertFile != "" && c.KeyFile == "" {
		return &FieldError{Field: "KeyFile", Msg: "is empty but CertFile is set (set both or neither)"}
	}
	if c.KeyFile != "" && c.CertFile == "" {
		return &FieldError{Field: "CertFile", Msg: "is empty but KeyFile is set (set both or neither)"}
	}
	switch strings.ToLower(c.SASLMechanism) {
	case "":
		if c.Username != "" {
			return &FieldError{Field: "Username", Msg: "is set but SASLMechanism is empty"}
		}
		if c.Password != "" {
			return &FieldError{Field: "Password", Msg: "is set but SASLMechanism is empty"}
		}
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		if c.Username == "" {
			return &FieldError{Field: "Username", Msg: "is empty but SASLMechanism is " + strings.ToLower(c.SASLMechanism)}
		}
	default:
		return &FieldError{Field: "SASLMechanism", Msg: fmt.Sprintf("unknown mechanism %q (want plain, scram-sha-256 or scram-sha-512)", c.SASLMechanism)}
	}
	return nil
}

// TLSConfig returns the TLS configuration, or nil when TLS is off. It reads
// CAFile, CertFile and KeyFile now, so a missing or malformed file is
// reported at start rather than at the first connection.
func (c Config) TLSConfig() (*tls.Config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !c.TLS {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // explicit opt-in, documented as test-only
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, &FieldError{Field: "CAFile", Msg: "cannot read", Err: err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &FieldError{Field: "CAFile", Msg: fmt.Sprintf("%s holds no PEM certificate", c.CAFile)}
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		// Read each file on its own first, so the error names the one at fault.
		if _, err := os.ReadFile(c.CertFile); err != nil {
			return nil, &FieldError{Field: "CertFile", Msg: "cannot read", Err: err}
		}
		if _, err := os.ReadFile(c.KeyFile); err != nil {
			return nil, &FieldError{Field: "KeyFile", Msg: "cannot read", Err: err}
		}
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, &FieldError{Field: "CertFile", Msg: "cannot load the client certificate and key", Err: err}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Mechanism returns the SASL mechanism, or nil when SASLMechanism is empty.
func (c Config) Mechanism() (sasl.Mechanism, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	switch strings.ToLower(c.SASLMechanism) {
	case MechanismPlain:
		return plain.Mechanism{Username: c.Username, Password: c.Password}, nil
	case MechanismSCRAMSHA256:
		return newSCRAM("SCRAM-SHA-256", sha256.New, c.Username, c.Password), nil
	case MechanismSCRAMSHA512:
		return newSCRAM("SCRAM-SHA-512", sha512.New, c.Username, c.Password), nil
	}
	return nil, nil
}

func (c Config) clientID() string {
	if c.ClientID == "" {
		return DefaultClientID
	}
	return c.ClientID
}

// Transport returns a kafka-go Transport for Writer and Client, with the TLS
// and SASL settings of c.
func (c Config) Transport() (*kafka.Transport, error) {
	tlsCfg, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	mech, err := c.Mechanism()
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{
		DialTimeout: 5 * time.Second,
		IdleTimeout: 30 * time.Second,
		ClientID:    c.clientID(),
		TLS:         tlsCfg,
		SASL:        mech,
	}, nil
}

// Dialer returns a kafka-go Dialer for Reader and ConsumerGroup, with the
// same TLS and SASL settings as [Config.Transport].
func (c Config) Dialer() (*kafka.Dialer, error) {
	tlsCfg, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	mech, err := c.Mechanism()
	if err != nil {
		return nil, err
	}
	return &kafka.Dialer{
		Timeout:       10 * time.Second,
		DualStack:     true,
		ClientID:      c.clientID(),
		TLS:           tlsCfg,
		SASLMechanism: mech,
	}, nil
}
