package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/kafkasettings"
	"github.com/outboxkit/outboxkit/relay"
)

// config is the relay binary's configuration, read from the environment.
// Field names of tuning and kafkaSettings match relay.Config and
// kafkasettings.Settings, so the typed errors those packages return, which
// name fields, can be translated back to variables (see varNames and
// relayVars).
type config struct {
	DatabaseURL string   `env:"DATABASE_URL,required,notEmpty"`
	Brokers     []string `env:"KAFKA_BROKERS,required,notEmpty" envSeparator:","`
	HTTPAddr    string   `env:"RELAY_HTTP_ADDR" envDefault:"127.0.0.1:9090"`
	DBMaxConns  int      `env:"RELAY_DB_MAX_CONNS" envDefault:"16"`
	LogLevel    string   `env:"RELAY_LOG_LEVEL" envDefault:"info"`
	LogFormat   string   `env:"RELAY_LOG_FORMAT" envDefault:"json"`
	// Source is relay.Config.Source; the WAL fields are relay.WALConfig's.
	Source         string `env:"RELAY_SOURCE" envDefault:"table"`
	WALSlot        string `env:"RELAY_WAL_SLOT"`
	WALPublication string `env:"RELAY_WAL_PUBLICATION"`
	// Standbys and StandbysRequired are relay.Config's (0: all of them).
	Standbys         []string `env:"RELAY_STANDBYS" envSeparator:","`
	StandbysRequired int      `env:"RELAY_STANDBYS_REQUIRED"`

	Tuning tuning
	Kafka  kafkaSettings

	// Derived by parseConfig.
	pool  *pgxpool.Config
	kafka broker.Config
	level slog.Level
}

// tuning mirrors the tuning fields of relay.Config, field for field; the
// defaults are relay's (TestDefaultsMatchRelay keeps them in step).
type tuning struct {
	BatchSize         int           `env:"OUTBOX_BATCH_SIZE" envDefault:"1000"`
	MaxBatchBytes     int           `env:"OUTBOX_MAX_BATCH_BYTES" envDefault:"921600"`
	Lanes             int           `env:"RELAY_LANES" envDefault:"4"`
	MinPollInterval   time.Duration `env:"RELAY_MIN_POLL_INTERVAL" envDefault:"2ms"`
	MaxPollInterval   time.Duration `env:"RELAY_MAX_POLL_INTERVAL" envDefault:"100ms"`
	RebalanceInterval time.Duration `env:"RELAY_REBALANCE_INTERVAL" envDefault:"1s"`
	LockTimeout       time.Duration `env:"RELAY_LOCK_TIMEOUT" envDefault:"10s"`
	PublishTimeout    time.Duration `env:"RELAY_PUBLISH_TIMEOUT" envDefault:"30s"`
	ShutdownTimeout   time.Duration `env:"RELAY_SHUTDOWN_TIMEOUT" envDefault:"5s"`
	RetryBackoffMin   time.Duration `env:"RELAY_RETRY_BACKOFF_MIN" envDefault:"50ms"`
	RetryBackoffMax   time.Duration `env:"RELAY_RETRY_BACKOFF_MAX" envDefault:"5s"`
	ParkAfter         time.Duration `env:"RELAY_PARK_AFTER" envDefault:"15s"`
}

// kafkaSettings has the fields of kafkasettings.Settings, in the same order
// and with the same types, so one converts to the other.
type kafkaSettings struct {
	TLS                bool   `env:"KAFKA_TLS" envDefault:"false"`
	CAFile             string `env:"KAFKA_TLS_CA_FILE"`
	CertFile           string `env:"KAFKA_TLS_CERT_FILE"`
	KeyFile            string `env:"KAFKA_TLS_KEY_FILE"`
	InsecureSkipVerify bool   `env:"KAFKA_TLS_INSECURE_SKIP_VERIFY" envDefault:"false"`
	SASLMechanism      string `env:"KAFKA_SASL_MECHANISM"`
	Username           string `env:"KAFKA_SASL_USERNAME"`
	Password           string `env:"KAFKA_SASL_PASSWORD"`
	AllowPlaintextSASL bool   `env:"KAFKA_SASL_ALLOW_PLAINTEXT" envDefault:"false"`
	ClientID           string `env:"KAFKA_CLIENT_ID" envDefault:"outboxkit-relay"`
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

// varNames maps each field name of config (and of its nested structs) to
// its environment variable, and "Brokers" to KAFKA_BROKERS.
var varNames = func() map[string]string {
	names := map[string]string{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for f := range t.Fields() {
			if !f.IsExported() {
				continue
			}
			if tag, ok := f.Tag.Lookup("env"); ok {
				names[f.Name] = strings.Split(tag, ",")[0]
			} else if f.Type.Kind() == reflect.Struct {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeFor[config]())
	return names
}()

// fileVars maps each secret's variable to the one that names a file holding
// it, the convention of container platforms (a mounted Kubernetes or Docker
// secret).
var fileVars = map[string]string{ //nolint:gosec // G101: variable names, not credentials
	"DATABASE_URL":        "DATABASE_URL_FILE",
	"KAFKA_SASL_PASSWORD": "KAFKA_SASL_PASSWORD_FILE",
}

// knownVars is the set of variables the binary reads.
var knownVars = func() map[string]bool {
	known := map[string]bool{}
	for _, v := range varNames {
		known[v] = true
	}
	for _, v := range fileVars {
		known[v] = true
	}
	return known
}()

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
	if knownVars[name] {
		return false
	}
	for _, p := range ownPrefixes {
		if strings.HasPrefix(name, p) {
			return p == "OUTBOX_" || p == "RELAY_" || !serviceLink.MatchString(name)
		}
	}
	return false
}

// readFileVars replaces each X_FILE of fileVars in vars by X, holding the
// file's content without one trailing line ending (\n or \r\n), which
// the tools that write secret files tend to add. It returns the variables
// read from files, X to X_FILE, so that errors name the variable that was
// set.
func readFileVars(vars map[string]string) (map[string]string, error) {
	from := map[string]string{}
	for name, fileVar := range fileVars {
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

// parsers give errors that quote the value and say what was expected.
var parsers = map[reflect.Type]env.ParserFunc{
	reflect.TypeFor[time.Duration](): func(v string) (any, error) {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("invalid duration %q (want a number with a unit, e.g. 250ms or 5s)", v)
		}
		return d, nil
	},
	reflect.TypeFor[int](): func(v string) (any, error) {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("invalid integer %q", v)
		}
		return n, nil
	},
	reflect.TypeFor[bool](): func(v string) (any, error) {
		switch strings.ToLower(v) {
		case "true", "1", "yes", "on":
			return true, nil
		case "false", "0", "no", "off":
			return false, nil
		}
		return nil, fmt.Errorf("invalid boolean %q (want true or false)", v)
	},
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
		if s := suggest(unknown[0]); s != "" {
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
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: vars, FuncMap: parsers}); err != nil {
		return config{}, named(translateEnvError(err))
	}
	if err := cfg.check(); err != nil {
		return config{}, named(err)
	}
	return cfg, nil
}

// translateEnvError turns the first error of caarlos0/env into a
// configError naming the variable.
func translateEnvError(err error) error {
	var agg env.AggregateError
	if errors.As(err, &agg) && len(agg.Errors) > 0 {
		err = agg.Errors[0]
	}
	var (
		notSet   env.VarIsNotSetError
		empty    env.EmptyVarError
		parseErr env.ParseError
	)
	switch {
	case errors.As(err, &notSet):
		return bad(notSet.Key, "not set (%s)", required[notSet.Key])
	case errors.As(err, &empty):
		return bad(empty.Key, "is empty (%s)", required[empty.Key])
	case errors.As(err, &parseErr):
		return bad(varNames[parseErr.Name], "%v", parseErr.Err)
	}
	return err
}

// required explains the variables that have no default.
var required = map[string]string{ //nolint:gosec // G101: an example URL in help text, not a credential
	"DATABASE_URL":  "the PostgreSQL URL, e.g. postgres://user:password@host:5432/db?sslmode=require",
	"KAFKA_BROKERS": "comma-separated Kafka bootstrap addresses, e.g. kafka1:9092,kafka2:9092",
}

// check validates what caarlos0/env cannot, and derives the pool config,
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

	switch cfg.Source = strings.ToLower(cfg.Source); relay.Source(cfg.Source) {
	case relay.SourceTable, relay.SourceWAL:
	default:
		return bad("RELAY_SOURCE", "must be table or wal, got %q", cfg.Source)
	}

	switch cfg.LogLevel = strings.ToLower(cfg.LogLevel); cfg.LogLevel {
	case "debug":
		cfg.level = slog.LevelDebug
	case "info":
		cfg.level = slog.LevelInfo
	case "warn":
		cfg.level = slog.LevelWarn
	case "error":
		cfg.level = slog.LevelError
	default:
		return bad("RELAY_LOG_LEVEL", "must be debug, info, warn or error, got %q", cfg.LogLevel)
	}
	switch cfg.LogFormat = strings.ToLower(cfg.LogFormat); cfg.LogFormat {
	case "json", "text":
	default:
		return bad("RELAY_LOG_FORMAT", "must be json or text, got %q", cfg.LogFormat)
	}
	// relay.Config treats zero as "use the default": an explicit zero is a
	// mistake, not a request for the default. Ranges are relay's to check.
	tv := reflect.ValueOf(cfg.Tuning)
	for i := range tv.NumField() {
		if f := tv.Field(i); f.Int() <= 0 {
			name := tv.Type().Field(i).Name
			return bad(varNames[name], "must be positive, got %v", f.Interface())
		}
	}

	cfg.kafka, err = kafkasettings.Settings(cfg.Kafka).Config(cfg.Brokers)
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
func (cfg *config) hardDeadline() time.Duration { return cfg.Tuning.ShutdownTimeout + shutdownGrace }

// relayConfig maps cfg onto relay.Config (Logger and Registerer are the
// caller's).
func (cfg *config) relayConfig() relay.Config {
	t := cfg.Tuning
	return relay.Config{
		Kafka:             cfg.kafka,
		BatchSize:         t.BatchSize,
		MaxBatchBytes:     t.MaxBatchBytes,
		Lanes:             t.Lanes,
		MinPollInterval:   t.MinPollInterval,
		MaxPollInterval:   t.MaxPollInterval,
		RebalanceInterval: t.RebalanceInterval,
		LockTimeout:       t.LockTimeout,
		PublishTimeout:    t.PublishTimeout,
		ShutdownTimeout:   t.ShutdownTimeout,
		RetryBackoffMin:   t.RetryBackoffMin,
		RetryBackoffMax:   t.RetryBackoffMax,
		ParkAfter:         t.ParkAfter,
		Source:            relay.Source(cfg.Source),
		WAL:               relay.WALConfig{Slot: cfg.WALSlot, Publication: cfg.WALPublication},
		Standbys:          cfg.Standbys,
		StandbysRequired:  cfg.StandbysRequired,
	}
}

// relayVars maps the relay.Config field paths that have a variable to it:
// the tuning fields, and the Kafka fields the variables set.
var relayVars = func() map[string]string {
	vars := map[string]string{
		"Brokers":                  "KAFKA_BROKERS",
		"Kafka.Brokers":            "KAFKA_BROKERS",
		"Kafka.ClientID":           varNames["ClientID"],
		"Kafka.TLS":                varNames["TLS"],
		"Kafka.SASL.Mechanism":     varNames["SASLMechanism"],
		"Kafka.SASL.Username":      varNames["Username"],
		"Kafka.SASL.Password":      varNames["Password"],
		"Kafka.AllowPlaintextSASL": varNames["AllowPlaintextSASL"],
		"Source":                   "RELAY_SOURCE",
		"Standbys":                 "RELAY_STANDBYS",
		"StandbysRequired":         "RELAY_STANDBYS_REQUIRED",
	}
	for f := range reflect.TypeFor[tuning]().Fields() {
		vars[f.Name] = varNames[f.Name]
	}
	return vars
}()

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
// kafkasettings.FieldError.
func translateSettingsError(err error) error {
	var fe *kafkasettings.FieldError
	if !errors.As(err, &fe) || varNames[fe.Field] == "" {
		return err
	}
	msg := withVars(fe.Reason, fe.Related, varNames)
	if fe.Err != nil {
		msg += ": " + fe.Err.Error()
	}
	return &configError{Var: varNames[fe.Field], Msg: msg}
}

// translateRelayError turns the first relay.ConfigError that relay.New
// returns into a configError naming the variable instead of the Go field.
// Errors about fields without a variable come back unchanged.
func translateRelayError(err error) error {
	var ce *relay.ConfigError
	if !errors.As(err, &ce) || relayVars[ce.Field] == "" {
		return err
	}
	return &configError{Var: relayVars[ce.Field], Msg: withVars(ce.Reason, ce.Related, relayVars)}
}

// suggest returns the known variable an unknown one was most likely meant
// to be, or "".
func suggest(name string) string {
	suffix := func(s string) string {
		_, rest, _ := strings.Cut(s, "_")
		return rest
	}
	best, bestDist := "", 4
	for known := range knownVars {
		if suffix(known) == suffix(name) && tunable(known) && tunable(name) {
			return known // right name, wrong prefix
		}
		if d := levenshtein(name, known); d < bestDist || (d == bestDist && known < best) {
			best, bestDist = known, d
		}
	}
	return best
}

// tunable reports whether name has one of the prefixes the relay's own
// settings share, which are easy to swap: OUTBOX_BATCH_SIZE but
// RELAY_LANES.
func tunable(name string) bool {
	return strings.HasPrefix(name, "OUTBOX_") || strings.HasPrefix(name, "RELAY_")
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
