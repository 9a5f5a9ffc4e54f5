package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outboxkit/outboxkit/internal/kafkasettings"
	"github.com/outboxkit/outboxkit/internal/walstream"
	"github.com/outboxkit/outboxkit/relay"
)

// variable is one environment variable of the binary: its row in -h (and
// in README's table, which a test keeps in step), and how its value lands
// in the configuration.
type variable struct {
	name string
	// def is the default as -h prints it. The binary applies it itself
	// only when apply is set; other defaults are relay's, which it applies
	// to a zero field, so the binary leaves the field zero.
	def   string
	apply bool
	// required, for a variable without a default, says what to set; the
	// error for a missing or empty value quotes it.
	required string
	// fileOf, for an X_FILE variable, is X: the variable holds the path of
	// a file whose content is X's value (see readFileVars).
	fileOf string
	help   string
	// fields are the relay.Config and kafkasettings.Settings fields the
	// variable sets, as the errors of those packages name them.
	fields []string
	// set parses a non-empty value into c; its error says what was wrong
	// with the value, without the variable's name.
	set func(c *config, v string) error
}

// variables is every variable the binary reads, in the order -h lists
// them and parseConfig checks them.
var variables = slices.Concat([]variable{
	{name: "DATABASE_URL", def: "required", help: "PostgreSQL URL or keyword/value string; TLS via sslmode", //nolint:gosec // G101: the example URL below, not a credential
		required: "the PostgreSQL URL, e.g. postgres://user:password@host:5432/db?sslmode=require",
		set:      text(func(c *config) *string { return &c.DatabaseURL })},
	{name: "DATABASE_URL_FILE", fileOf: "DATABASE_URL", help: "file holding DATABASE_URL, instead of it"},
	{name: "KAFKA_BROKERS", def: "required", help: "comma-separated bootstrap brokers, host:port,host:port",
		required: "comma-separated Kafka bootstrap addresses, e.g. kafka1:9092,kafka2:9092", fields: []string{"Brokers", "Kafka.Brokers"},
		set: list(func(c *config) *[]string { return &c.Brokers })},
	{name: "RELAY_HTTP_ADDR", def: "127.0.0.1:9090", apply: true, help: "address of /metrics, /healthz and /readyz; 0.0.0.0:9090 in a pod",
		set: text(func(c *config) *string { return &c.HTTPAddr })},
	{name: "RELAY_DB_MAX_CONNS", def: "16", apply: true, help: "pool size (1 to 1000), one connection of which holds the shard locks",
		set: integer(func(c *config) *int { return &c.DBMaxConns })},
	{name: "RELAY_LOG_LEVEL", def: "info", apply: true, help: "debug, info, warn or error",
		set: oneOf(func(c *config) *string { return &c.LogLevel }, "debug", "info", "warn", "error")},
	{name: "RELAY_LOG_FORMAT", def: "json", apply: true, help: "json or text; logs go to stderr",
		set: oneOf(func(c *config) *string { return &c.LogFormat }, "json", "text")},
	{name: "RELAY_START_TIMEOUT", def: "30s", apply: true, help: "how long to wait at start for PostgreSQL and Kafka to answer before exiting 1",
		set: positiveDuration(func(c *config) *time.Duration { return &c.StartTimeout })},
	{name: "OUTBOX_BATCH_SIZE", def: strconv.Itoa(relay.DefaultBatchSize), help: "most events one shard reads and publishes at once (1 to 10000)",
		fields: []string{"BatchSize"}, set: positiveInt(func(c *config) *int { return &c.Relay.BatchSize })},
	{name: "OUTBOX_MAX_BATCH_BYTES", def: strconv.Itoa(relay.DefaultMaxBatchBytes), help: "record bytes of one Produce request; below the broker's message.max.bytes",
		fields: []string{"MaxBatchBytes"}, set: positiveInt(func(c *config) *int { return &c.Relay.MaxBatchBytes })},
	{name: "RELAY_LANES", def: strconv.Itoa(relay.DefaultLanes), help: "batches one instance publishes at once",
		fields: []string{"Lanes"}, set: positiveInt(func(c *config) *int { return &c.Relay.Lanes })},
	{name: "RELAY_MIN_POLL_INTERVAL", def: relay.DefaultMinPollInterval.String(), help: "how soon the relay looks again after finding events",
		fields: []string{"MinPollInterval"}, set: positiveDuration(func(c *config) *time.Duration { return &c.Relay.MinPollInterval })},
	{name: "RELAY_MAX_POLL_INTERVAL", def: relay.DefaultMaxPollInterval.String(), help: "longest wait between looks when idle",
		fields: []string{"MaxPollInterval"}, set: positiveDuration(func(c *config) *time.Duration { return &c.Relay.MaxPollInterval })},
	{name: "RELAY_REBALANCE_INTERVAL", def: relay.DefaultRebalanceInterval.String(), help: "how often an instance checks its share of the shards and its lock connection",
		fields: []string{"RebalanceInterval"}, set: positiveDuration(func(c *config) *time.Duration { return &c.Relay.RebalanceInterval })},
	{name: "RELAY_LOCK_TIMEOUT", def: relay.DefaultLockTimeout.String(), help: "a paused or cut-off instance loses its shards after this long",
		fields: []string{"LockTimeout"}, set: positiveDuration(func(c *config) *time.Duration { return &c.Relay.LockTimeout })},
	{name: "RELAY_PUBLISH_TIMEOUT", def: relay.DefaultPublishTimeout.String(), help: "bound on one publish call; a timed-out call is sent again",
		fields: []string{"PublishTimeout"}, set: positiveDuration(func(c *config) *time.Duration { return &c.Relay.PublishTimeout })},
	{name: "RELAY_SHUTDOWN_TIMEOUT", def: relay.DefaultShutdownTimeout.String(), help: "grace for in-flight batches after SIGTERM",
		fields: []string{"ShutdownTimeout"}, set: positiveDuration(func(c *config) *time.Duration { return &c.Relay.ShutdownTimeout })},
	{name: "RELAY_RETRY_BACKOFF_MIN", def: relay.DefaultRetryBackoffMin.String(), help: "smallest pause after a transient Kafka or PostgreSQL error",
		fields: []string{"RetryBackoffMin"}, set: positiveDuration(func(c *config) *time.Duration { return &c.Relay.RetryBackoffMin })},
	{name: "RELAY_RETRY_BACKOFF_MAX", def: relay.DefaultRetryBackoffMax.String(), help: "largest pause; the backoff doubles up to it",
		fields: []string{"RetryBackoffMax"}, set: positiveDuration(func(c *config) *time.Duration { return &c.Relay.RetryBackoffMax })},
	{name: "RELAY_PARK_AFTER", def: relay.DefaultParkAfter.String(), help: "how long Kafka must refuse an aggregate's event for good before it is parked",
		fields: []string{"ParkAfter"}, set: positiveDuration(func(c *config) *time.Duration { return &c.Relay.ParkAfter })},
	{name: "RELAY_SOURCE", def: string(relay.SourceTable), help: "table, or wal for WAL mode (wal_level = logical, a REPLICATION role)",
		fields: []string{"Source"}, set: oneOf(func(c *config) *string { return (*string)(&c.Relay.Source) }, string(relay.SourceTable), string(relay.SourceWAL))},
	{name: "RELAY_WAL_SLOT", def: "from outbox_wal_settings", help: "WAL mode replication slot; must match outbox_wal_settings.slot_name",
		fields: []string{"WAL.Slot"}, set: text(func(c *config) *string { return &c.Relay.WAL.Slot })},
	{name: "RELAY_WAL_PUBLICATION", def: walstream.DefaultPublication, help: "WAL mode publication (created when missing)",
		fields: []string{"WAL.Publication"}, set: text(func(c *config) *string { return &c.Relay.WAL.Publication })},
	{name: "RELAY_STANDBYS", def: "none", help: "comma-separated application_names of standbys that must flush an event's commit before it is published",
		fields: []string{"Standbys"}, set: list(func(c *config) *[]string { return &c.Relay.Standbys })},
	{name: "RELAY_STANDBYS_REQUIRED", def: "all of them", help: "how many of RELAY_STANDBYS must have flushed",
		fields: []string{"StandbysRequired"}, set: integer(func(c *config) *int { return &c.Relay.StandbysRequired })},
}, kafkaVariables())

// kafkaVariables returns the rows of the Kafka TLS and SASL variables, from
// the table outboxkit reads too (kafkasettings.Vars): each sets its
// kafkasettings.Settings field and the relay.Config field under "Kafka."
// that the value ends up in, and a secret one is followed by its _FILE
// variable.
func kafkaVariables() []variable {
	var rows []variable
	for _, kv := range kafkasettings.Vars {
		row := variable{name: kv.Name, help: kv.Help, fields: []string{kv.Field},
			set: func(c *config, v string) error { return kv.Set(&c.Kafka, v) }}
		if kv.BrokerField != "" {
			row.fields = append(row.fields, "Kafka."+kv.BrokerField)
		}
		switch {
		case kv.Bool():
			row.def = "false"
		case kv.Field == "ClientID":
			row.def = relay.DefaultClientID // relay's to apply
		}
		rows = append(rows, row)
		if kv.Secret {
			rows = append(rows, variable{name: kv.Name + "_FILE", fileOf: kv.Name, help: "file holding " + kv.Name + ", instead of it"})
		}
	}
	return rows
}

// variableNamed returns the row of the variable name, or nil.
func variableNamed(name string) *variable {
	for i := range variables {
		if variables[i].name == name {
			return &variables[i]
		}
	}
	return nil
}

// fieldVars maps each field of relay.Config and kafkasettings.Settings
// that a variable sets to the variable, so errors naming fields can name
// variables instead.
var fieldVars = func() map[string]string {
	m := map[string]string{}
	for _, v := range variables {
		for _, f := range v.fields {
			m[f] = v.name
		}
	}
	return m
}()

func text(p func(*config) *string) func(*config, string) error {
	return func(c *config, v string) error { *p(c) = v; return nil }
}

func list(p func(*config) *[]string) func(*config, string) error {
	return func(c *config, v string) error { *p(c) = strings.Split(v, ","); return nil }
}

func integer(p func(*config) *int) func(*config, string) error {
	return func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("invalid integer %q", v)
		}
		*p(c) = n
		return nil
	}
}

// positiveInt and positiveDuration refuse zero, which relay.Config would
// silently replace by its default: an explicit zero is a mistake, not a
// request for the default. Ranges are relay's to check.
func positiveInt(p func(*config) *int) func(*config, string) error {
	return func(c *config, v string) error {
		if err := integer(p)(c, v); err != nil {
			return err
		}
		if n := *p(c); n <= 0 {
			return fmt.Errorf("must be positive, got %d", n)
		}
		return nil
	}
}

func positiveDuration(p func(*config) *time.Duration) func(*config, string) error {
	return func(c *config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("invalid duration %q (want a number with a unit, e.g. 250ms or 5s)", v)
		}
		if d <= 0 {
			return fmt.Errorf("must be positive, got %s", d)
		}
		*p(c) = d
		return nil
	}
}

// oneOf takes one of choices, in any letter case.
func oneOf(p func(*config) *string, choices ...string) func(*config, string) error {
	return func(c *config, v string) error {
		for _, ch := range choices {
			if strings.EqualFold(v, ch) {
				*p(c) = ch
				return nil
			}
		}
		want := strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
		return fmt.Errorf("must be %s, got %q", want, v)
	}
}

// printUsage writes the -h text: the usage line and every variable with
// its default and meaning.
func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: outbox-relay [-h | -version]
       outbox-relay version

Publishes the outbox table's events to Kafka. Configuration comes from these
environment variables; any other OUTBOX_*, RELAY_*, KAFKA_* or DATABASE_*
variable is refused as a typo. Durations use Go syntax (250ms, 5s, 1m).

`)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	for _, v := range variables {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.name, v.def, v.help)
	}
	_ = tw.Flush()
	fmt.Fprint(w, `
The standard OpenTelemetry variables turn on span export over OTLP/HTTP:
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
OTEL_SERVICE_NAME (outbox-relay), OTEL_RESOURCE_ATTRIBUTES; none set, or
OTEL_TRACES_EXPORTER=none, exports nothing.

Flags:
  -h, --help           print this text
  -version, --version  print the module version and VCS commit, and exit

Exit codes: 0 stopped by a signal, 1 runtime error (PostgreSQL or Kafka
unreachable at start, migrations missing), 2 bad configuration or usage.
`)
}
