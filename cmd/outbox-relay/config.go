package main

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/kafkasettings"
	"github.com/outboxkit/outboxkit/internal/suggest"
	"github.com/outboxkit/outboxkit/relay"
)

// config is the relay binary's configuration, read from the environment
// by the table of variables (vars.go).
type config struct {
	DatabaseURL  string
	Brokers      []string
	HTTPAddr     string
	DBMaxConns   int
	LogLevel     string
	LogFormat    string
	StartTimeout time.Duration

	// Relay holds the relay.Config fields the variables set. A field whose
	// variable is unset stays zero, which relay.New replaces by its default.
	Relay relay.Config
	// Kafka holds the KAFKA_* TLS and SASL variables.
	Kafka kafkasettings.Settings

	// Derived by parseConfig.
	pool  *pgxpool.Config
	kafka broker.Config
	level slog.Level
}

// configError is a configuration problem with one variable. Its text is
// the one line the binary prints before exiting with code 2.
type configError struct {
	Var string
	Msg string
}

func (e *configError) Error() string { return e.Var + ": " + e.Msg }

func bad(name, format string, args ...any) error {
	return &configError{Var: name, Msg: fmt.Sprintf(format, args...)}
}

// isVariable reports whether the binary reads name.
func isVariable(name string) bool { return variableNamed(name) != nil }

// ownPrefixes are the prefixes of the variables the binary reads. A
// variable with one of them that the binary does not read is a typo until
// proven otherwise: KAFKA_SASL_MECHANSIM=plain must not start a relay
// without SASL.
var ownPrefixes = []string{"OUTBOX_", "RELAY_", "KAFKA_", "DATABASE_"}

// serviceLink matches the variables a platform sets for a service that
// shares a name with one of ownPrefixes: Kubernetes gives every pod
// KAFKA_SERVICE_HOST, KAFKA_PORT_9092_TCP_ADDR and so on for a Service
// named kafka in its namespace (Docker's legacy links use the same _PORT
// names). They are not typos, and refusing them would stop every relay
// next to such a service.
var serviceLink = regexp.MustCompile(`^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(ADDR|PORT|PROTO))?)?)$`)

// isUnknown reports whether name looks like one of the binary's variables
// but is none.
func isUnknown(name string) bool {
	if isVariable(name) {
		return false
	}
	for _, p := range ownPrefixes {
		if strings.HasPrefix(name, p) {
			return p == "OUTBOX_" || p == "RELAY_" || !serviceLink.MatchString(name)
		}
	}
	return false
}

// readFileVars replaces each X_FILE variable (a row with fileOf) in vars
// by X, holding the file's content without one trailing line ending (\n
// or \r\n), which the tools that write secret files tend to add. It returns the variables
// read from files, X to X_FILE, so that errors name the variable that was
// set.
func readFileVars(vars map[string]string) (map[string]string, error) {
	from := map[string]string{}
	for _, fv := range variables {
		name, fileVar := fv.fileOf, fv.name
		if name == "" {
			continue
		}
		path, ok := vars[fileVar]
		if !ok {
			continue
		}
		if _, both := vars[name]; both {
			return nil, bad(fileVar, "is set and so is %s (set one)", name)
		}
		if path == "" {
			return nil, bad(fileVar, "is empty (want the path of a file holding %s)", name)
		}
		b, err := os.ReadFile(path) //nolint:gosec // G304: the operator names the secret file on purpose
		if err != nil {
			// The error names the path, never the content.
			return nil, bad(fileVar, "cannot be read: %v", err)
		}
		v := string(b)
		if t, ok := strings.CutSuffix(v, "\n"); ok {
			v = strings.TrimSuffix(t, "\r")
		}
		vars[name] = v
		delete(vars, fileVar)
		from[name] = fileVar
	}
	return from, nil
}

// parseConfig reads the configuration from environ ("KEY=value" entries,
// as os.Environ returns) and checks it. Its error, a *configError, names
// the first variable at fault.
func parseConfig(environ []string) (config, error) {
	vars := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}

	var unknown []string
	for k := range vars {
		if isUnknown(k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		msg := "unknown variable"
		if s := suggestVariable(unknown[0]); s != "" {
			msg += " (did you mean " + s + "?)"
		}
		return config{}, bad(unknown[0], "%s", msg)
	}

	fromFile, err := readFileVars(vars)
	if err != nil {
		return config{}, err
	}
	// An error about a value read from a file names the _FILE variable.
	named := func(err error) error {
		var ce *configError
		if errors.As(err, &ce) && fromFile[ce.Var] != "" {
			return &configError{Var: fromFile[ce.Var], Msg: strings.ReplaceAll(ce.Msg, ce.Var, fromFile[ce.Var])}
		}
		return err
	}
	var cfg config
	if err := cfg.set(vars); err != nil {
		return config{}, named(err)
	}
	if err := cfg.check(); err != nil {
		return config{}, named(err)
	}
	return cfg, nil
}

// set applies each variable of the table to cfg: its value, or the
// binary's own default when it is unset or empty. Variables whose default
// is relay's leave their field zero.
func (cfg *config) set(vars map[string]string) error {
	for _, v := range variables {
		if v.fileOf != "" {
			continue // readFileVars has read it into v.fileOf
		}
		val, ok := vars[v.name]
		if v.required != "" {
			if !ok {
				return bad(v.name, "not set (%s)", v.required)
			}
			if val == "" {
				return bad(v.name, "is empty (%s)", v.required)
			}
		}
		if val == "" {
			if !v.apply {
				continue
			}
			val = v.def
		}
		if err := v.set(cfg, val); err != nil {
			return bad(v.name, "%v", err)
		}
	}
	return nil
}

// check validates what one variable alone cannot, and derives the pool config,
// the Kafka transport and the log level.
func (cfg *config) check() error {
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		// pgx redacts the password in its message.
		return bad("DATABASE_URL", "%v", err)
	}
	cfg.pool = pc

	for i, b := range cfg.Brokers {
		b = strings.TrimSpace(b)
		if b == "" {
			return bad("KAFKA_BROKERS", "has an empty address (want host:port,host:port)")
		}
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			return bad("KAFKA_BROKERS", "%q is not host:port", b)
		}
		cfg.Brokers[i] = b
	}
	if _, _, err := net.SplitHostPort(cfg.HTTPAddr); err != nil {
		return bad("RELAY_HTTP_ADDR", "%q is not host:port (e.g. 127.0.0.1:9090 or :9090)", cfg.HTTPAddr)
	}
	if cfg.DBMaxConns < 1 || cfg.DBMaxConns > 1000 {
		return bad("RELAY_DB_MAX_CONNS", "must be between 1 and 1000, got %d", cfg.DBMaxConns)
	}
	pc.MaxConns = int32(cfg.DBMaxConns)
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "outbox-relay"
	}

	cfg.level = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[cfg.LogLevel]

	cfg.kafka, err = cfg.Kafka.Config(cfg.Brokers)
	if err != nil {
		return translateSettingsError(err)
	}
	return nil
}

// shutdownGrace is how long after relay.Config.ShutdownTimeout the process
// waits for Run to release its shards and return before it exits 1 anyway
// (closing its connections releases the locks too). With the defaults the
// process is gone within 9s of SIGTERM.
const shutdownGrace = 4 * time.Second

// hardDeadline bounds the whole stop, from the signal to the exit.
func (cfg *config) hardDeadline() time.Duration {
	return cmp.Or(cfg.Relay.ShutdownTimeout, relay.DefaultShutdownTimeout) + shutdownGrace
}

// relayConfig returns the relay.Config of cfg (Logger and Registerer are
// the caller's).
func (cfg *config) relayConfig() relay.Config {
	rc := cfg.Relay
	rc.Kafka = cfg.kafka
	return rc
}

// withVars returns reason with each related field, which reason names,
// replaced by its variable in vars.
func withVars(reason string, related []string, vars map[string]string) string {
	var pairs []string
	for _, r := range related {
		if v := vars[r]; v != "" {
			pairs = append(pairs, r, v)
		}
	}
	if len(pairs) == 0 {
		return reason
	}
	// One pass, so a variable put in is not replaced again.
	return strings.NewReplacer(pairs...).Replace(reason)
}

// translateSettingsError names the variable behind a
// kafkasettings.FieldError, as the table the binaries share names it.
func translateSettingsError(err error) error {
	var ve *kafkasettings.VarError
	if !errors.As(kafkasettings.NameVariables(err), &ve) {
		return err
	}
	return &configError{Var: ve.Var, Msg: ve.Reason}
}

// translateRelayError turns the first relay.ConfigError that relay.New
// returns into a configError naming the variable instead of the Go field.
// Errors about fields without a variable come back unchanged.
func translateRelayError(err error) error {
	var ce *relay.ConfigError
	if !errors.As(err, &ce) || fieldVars[ce.Field] == "" {
		return err
	}
	return &configError{Var: fieldVars[ce.Field], Msg: withVars(ce.Reason, ce.Related, fieldVars)}
}

// suggest returns the known variable an unknown one was most likely meant
// to be, or "".
func suggestVariable(name string) string {
	suffix := func(s string) string {
		_, rest, _ := strings.Cut(s, "_")
		return rest
	}
	names := make([]string, 0, len(variables))
	for _, v := range variables {
		if suffix(v.name) == suffix(name) && tunable(v.name) && tunable(name) {
			return v.name // right name, wrong prefix
		}
		names = append(names, v.name)
	}
	return suggest.Closest(name, names, 3)
}

// tunable reports whether name has one of the prefixes the relay's own
// settings share, which are easy to swap: OUTBOX_BATCH_SIZE but
// RELAY_LANES.
func tunable(name string) bool {
	return strings.HasPrefix(name, "OUTBOX_") || strings.HasPrefix(name, "RELAY_")
}
