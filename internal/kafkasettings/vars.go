package kafkasettings

import (
	"errors"
	"fmt"
	"strings"
)

// Var is one KAFKA_* environment variable that sets a [Settings] field.
// The relay binary lists [Vars] in its -h and its table of variables;
// outboxkit reads them with [FromEnv]. Only the rows of Vars can Set.
type Var struct {
	// Name is the variable, such as "KAFKA_TLS".
	Name string
	// Field is the Settings field it sets, as [FieldError] names it.
	Field string
	// BrokerField is the broker.Config field the value ends up in, as
	// broker.ConfigError names it ("SASL.Mechanism"), or empty when the
	// value only shapes the TLS configuration.
	BrokerField string
	// Help says what the variable is for, on one line.
	Help string
	// Secret marks a value that is never printed. The relay binary also
	// reads it from the file that Name+"_FILE" names.
	Secret bool

	// One of text and flag points at the field: flag for a boolean.
	text func(*Settings) *string
	flag func(*Settings) *bool
}

// Vars is every KAFKA_* variable that sets a Settings field, in the order
// the relay's -h lists them. The brokers are not among them: each binary
// takes those its own way.
var Vars = []Var{
	{Name: "KAFKA_TLS", Field: "TLS", BrokerField: "TLS", Help: "connect to Kafka over TLS",
		flag: func(s *Settings) *bool { return &s.TLS }},
	{Name: "KAFKA_TLS_CA_FILE", Field: "CAFile", Help: "PEM file of the CAs that sign the brokers' certificates",
		text: func(s *Settings) *string { return &s.CAFile }},
	{Name: "KAFKA_TLS_CERT_FILE", Field: "CertFile", Help: "PEM client certificate, for mutual TLS (with KAFKA_TLS_KEY_FILE)",
		text: func(s *Settings) *string { return &s.CertFile }},
	{Name: "KAFKA_TLS_KEY_FILE", Field: "KeyFile", Help: "PEM key of the client certificate",
		text: func(s *Settings) *string { return &s.KeyFile }},
	{Name: "KAFKA_TLS_INSECURE_SKIP_VERIFY", Field: "InsecureSkipVerify", Help: "accept any broker certificate; tests only",
		flag: func(s *Settings) *bool { return &s.InsecureSkipVerify }},
	{Name: "KAFKA_SASL_MECHANISM", Field: "SASLMechanism", BrokerField: "SASL.Mechanism", Help: "plain, scram-sha-256 or scram-sha-512; empty for no SASL",
		text: func(s *Settings) *string { return &s.SASLMechanism }},
	{Name: "KAFKA_SASL_USERNAME", Field: "Username", BrokerField: "SASL.Username", Help: "SASL user",
		text: func(s *Settings) *string { return &s.Username }},
	{Name: "KAFKA_SASL_PASSWORD", Field: "Password", BrokerField: "SASL.Password", Help: "SASL password, never printed", Secret: true,
		text: func(s *Settings) *string { return &s.Password }},
	{Name: "KAFKA_SASL_ALLOW_PLAINTEXT", Field: "AllowPlaintextSASL", BrokerField: "AllowPlaintextSASL", Help: "accept SASL plain without TLS (the password goes in clear)",
		flag: func(s *Settings) *bool { return &s.AllowPlaintextSASL }},
	{Name: "KAFKA_CLIENT_ID", Field: "ClientID", BrokerField: "ClientID", Help: "client ID in broker logs and quotas",
		text: func(s *Settings) *string { return &s.ClientID }},
}

// Bool reports whether the variable is a boolean, false when unset.
func (v Var) Bool() bool { return v.flag != nil }

// Set parses value into v's field of s. Its error says what is wrong with
// the value, without the variable's name. An empty value is the field's
// zero value; a binary that tells unset from empty skips it.
func (v Var) Set(s *Settings, value string) error {
	if v.flag == nil {
		*v.text(s) = value
		return nil
	}
	switch strings.ToLower(value) {
	case "true", "1", "yes", "on":
		*v.flag(s) = true
	case "false", "0", "no", "off", "":
		*v.flag(s) = false
	default:
		return fmt.Errorf("invalid boolean %q (want true or false)", value)
	}
	return nil
}

// VarError says which variable of [Vars] is wrong and why. Its text is
// the one line a binary prints.
type VarError struct {
	// Var is the variable at fault, such as "KAFKA_SASL_MECHANISM".
	Var string
	// Reason says what is wrong, without Var, naming variables rather than
	// Settings fields, and ends with the cause's text when there is one.
	Reason string
	// Err is the cause, or nil.
	Err error
}

// Error returns "<Var>: <Reason>".
func (e *VarError) Error() string { return e.Var + ": " + e.Reason }

// Unwrap returns the cause, so errors.Is(err, fs.ErrNotExist) works for a
// missing file.
func (e *VarError) Unwrap() error { return e.Err }

// FromEnv reads the variables of [Vars] that getenv returns non-empty into
// Settings. Its error is a *VarError.
func FromEnv(getenv func(string) string) (Settings, error) {
	var s Settings
	for _, v := range Vars {
		val := getenv(v.Name)
		if val == "" {
			continue
		}
		if err := v.Set(&s, val); err != nil {
			return Settings{}, &VarError{Var: v.Name, Reason: err.Error()}
		}
	}
	return s, nil
}

// NameVariables restates a *FieldError, as [Settings.Config] returns it,
// as a *VarError that names the variables of [Vars] instead of the fields.
// Any other error comes back unchanged.
func NameVariables(err error) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return err
	}
	name := varOf(fe.Field)
	if name == "" {
		return err
	}
	var pairs []string
	for _, r := range fe.Related {
		if n := varOf(r); n != "" {
			pairs = append(pairs, r, n)
		}
	}
	// One pass, so a variable put in is not replaced again.
	reason := strings.NewReplacer(pairs...).Replace(fe.Reason)
	if fe.Err != nil {
		reason += ": " + fe.Err.Error()
	}
	return &VarError{Var: name, Reason: reason, Err: fe.Err}
}

// varOf returns the variable that sets the Settings field, or "".
func varOf(field string) string {
	for _, v := range Vars {
		if v.Field == field {
			return v.Name
		}
	}
	return ""
}
