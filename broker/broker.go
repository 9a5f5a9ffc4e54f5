// Package broker describes how a program reaches and authenticates with a
// Kafka cluster: the bootstrap addresses, the client ID, TLS and SASL. The
// relay ([github.com/outboxkit/outboxkit/relay.Config].Kafka) and the inbox
// ([github.com/outboxkit/outboxkit/inbox.Config].Kafka) take one [Config] each,
// so a program that runs both configures its cluster once, and its producer
// and consumers cannot disagree on TLS or SASL.
//
// The package has no dependency on a Kafka client: the relay and the inbox
// turn a Config into the client objects they need. It knows nothing of
// environment variables either; the binaries in cmd/ map their own settings
// onto Config and translate a [*ConfigError] back to the variable that holds
// the field.
//
//	cfg := broker.Config{
//		Brokers: []string{"kafka1:9093", "kafka2:9093"},
//		TLS:     &tls.Config{MinVersion: tls.VersionTLS12},
//		SASL:    broker.SASL{Mechanism: broker.SCRAMSHA512, Username: "orders", Password: pw},
//	}
//	r, err := relay.New(pool, relay.Config{Kafka: cfg})
package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/xdg-go/stringprep"
)

// Mechanism is a SASL mechanism, named as Kafka names it.
type Mechanism string

// The SASL mechanisms a [Config] may use. The empty Mechanism means no SASL.
const (
	// PLAIN sends the password as it is; [Config.Validate] refuses it
	// without TLS unless AllowPlaintextSASL is set.
	PLAIN Mechanism = "PLAIN"
	// SCRAMSHA256 is SCRAM with SHA-256 (RFC 7677): the password never
	// crosses the wire.
	SCRAMSHA256 Mechanism = "SCRAM-SHA-256"
	// SCRAMSHA512 is SCRAM with SHA-512.
	SCRAMSHA512 Mechanism = "SCRAM-SHA-512"
)

// SASL holds the SASL settings of a [Config]. The zero value means no SASL.
type SASL struct {
	// Mechanism is PLAIN, SCRAMSHA256, SCRAMSHA512, or empty for no SASL.
	Mechanism Mechanism
	// Username is required with a Mechanism.
	Username string
	// Password is the user's password. It is never logged, and no error
	// of this module quotes it. With SCRAM, [Config.Validate] refuses a
	// Username or Password that SASLprep (RFC 4013), which SCRAM applies,
	// rejects: control characters (a trailing newline read from a file is
	// one), characters that are not text and code points unassigned in
	// Unicode 3.2 (such as most emoji). With PLAIN, which sends the bytes as
	// they are, it refuses only NUL, which PLAIN uses as its separator.
	Password string
}

// Config holds the settings shared by every Kafka connection of a program.
// Only Brokers is required: the zero value of the rest is a plaintext,
// unauthenticated connection.
type Config struct {
	// Brokers are the bootstrap addresses ("host:port"). Required.
	Brokers []string
	// ClientID identifies the program in broker logs and quotas. Defaults
	// to the component's own ID: "outboxkit-relay", "outboxkit-inbox" or
	// "outboxkit-redrive".
	ClientID string
	// TLS, when not nil, turns TLS on with this configuration (root CAs,
	// client certificate for mutual TLS). Defaults to nil: plaintext.
	TLS *tls.Config
	// SASL authenticates the connection. Defaults to no SASL.
	SASL SASL
	// AllowPlaintextSASL accepts SASL PLAIN without TLS, which lets anyone
	// on the path read the password. Only for brokers on a trusted network,
	// such as a test cluster. Defaults to false: Validate refuses it.
	AllowPlaintextSASL bool
}

// ErrInvalidConfig is matched (with errors.Is) by every [*ConfigError].
var ErrInvalidConfig = errors.New("broker: invalid config")

// ConfigError says which [Config] field is wrong and why.
type ConfigError struct {
	// Field is the Config field at fault, with the path to it for nested
	// fields: "Brokers", "SASL.Username".
	Field string
	// Reason says what is wrong, without the field name.
	Reason string
	// Related lists the other fields Reason names, spelled as in Field, so
	// a program can name them its own way (an environment variable, a
	// flag) by replacing each one in Reason.
	Related []string
}

// Error returns "broker: <Field> <Reason>".
func (e *ConfigError) Error() string { return "broker: " + e.Field + " " + e.Reason }

// Is reports whether target is [ErrInvalidConfig].
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Validate checks the settings and returns a [*ConfigError] naming the
// first field at fault, or nil. It also checks that the mechanism can send
// SASL.Username and SASL.Password (see [SASL]); its errors give a byte
// offset into a credential, never the credential.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return &ConfigError{Field: "Brokers", Reason: "is empty (set at least one host:port)"}
	}
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			return &ConfigError{Field: "Brokers", Reason: fmt.Sprintf("has an empty address at index %d", i)}
		}
	}
	switch c.SASL.Mechanism {
	case "":
		if c.SASL.Username != "" {
			return &ConfigError{Field: "SASL.Username", Reason: "is set but SASL.Mechanism is empty", Related: []string{"SASL.Mechanism"}}
		}
		if c.SASL.Password != "" {
			return &ConfigError{Field: "SASL.Password", Reason: "is set but SASL.Mechanism is empty", Related: []string{"SASL.Mechanism"}}
		}
	case PLAIN, SCRAMSHA256, SCRAMSHA512:
		if c.SASL.Username == "" {
			return &ConfigError{Field: "SASL.Username", Reason: "is empty but SASL.Mechanism is " + string(c.SASL.Mechanism), Related: []string{"SASL.Mechanism"}}
		}
		if err := c.SASL.checkCredentials(); err != nil {
			return err
		}
		if c.SASL.Mechanism == PLAIN && c.TLS == nil && !c.AllowPlaintextSASL {
			return &ConfigError{Field: "SASL.Mechanism",
				Reason:  "is PLAIN without TLS, which sends the password in clear (turn TLS on, use SCRAM, or set AllowPlaintextSASL)",
				Related: []string{"TLS", "AllowPlaintextSASL"}}
		}
	default:
		return &ConfigError{Field: "SASL.Mechanism", Reason: fmt.Sprintf("is an unknown mechanism %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", string(c.SASL.Mechanism))}
	}
	return nil
}

// checkCredentials refuses a username or password the mechanism cannot
// send. The reasons name byte offsets, never characters: a ConfigError is
// printed and logged, and even one character of a password is too much.
func (s SASL) checkCredentials() error {
	for _, f := range []struct{ field, value string }{{"SASL.Username", s.Username}, {"SASL.Password", s.Password}} {
		if s.Mechanism == PLAIN {
			if i := strings.IndexByte(f.value, 0); i >= 0 {
				return &ConfigError{Field: f.field, Reason: fmt.Sprintf("has a NUL byte at byte offset %d of %d, which PLAIN cannot send", i, len(f.value))}
			}
			continue
		}
		if reason := saslprepFault(f.value); reason != "" {
			return &ConfigError{Field: f.field, Reason: reason + " (SCRAM prepares credentials with SASLprep, RFC 4013)"}
		}
	}
	return nil
}

// saslprepFault returns why SASLprep rejects s, or "" when it accepts it.
// The verdict is SASLprep's own (the implementation the SCRAM client runs),
// so Validate refuses exactly what the client would; only the explanation
// is ours, because the library's error quotes the whole string.
func saslprepFault(s string) string {
	if _, err := stringprep.SASLprep.Prepare(s); err == nil {
		return ""
	}
	// SASLprep maps and normalizes the whole string before it checks it;
	// a character it prohibits is prohibited on its own too, so testing
	// one character at a time finds the first.
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return fmt.Sprintf("is not valid UTF-8 at byte offset %d of %d", i, len(s))
			}
		}
		if _, err := stringprep.SASLprep.Prepare(string(r)); err != nil {
			return fmt.Sprintf("has a character SASLprep prohibits (a control character such as a trailing newline, a character that is not text, or one unassigned in Unicode 3.2) at byte offset %d of %d", i, len(s))
		}
	}
	// Every character passes alone: the string breaks the rule for
	// right-to-left text. The first bad character is a left-to-right one,
	// or else the first or last, which must be right-to-left.
	at := -1
	last := 0
	for i, r := range s {
		if at < 0 && stringprep.TableD2.Contains(r) {
			at = i
		}
		last = i
	}
	switch {
	case at >= 0:
	case !startsRTL(s):
		at = 0
	default:
		at = last
	}
	return fmt.Sprintf("breaks SASLprep's rule for right-to-left text (RFC 3454 section 6) at byte offset %d of %d", at, len(s))
}

func startsRTL(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return stringprep.TableD1.Contains(r)
}
