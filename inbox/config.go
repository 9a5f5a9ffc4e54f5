package inbox

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/kafkasettings"
	"github.com/outboxkit/outboxkit/internal/record"
)

// StartOffset is where a partition without a committed offset starts.
type StartOffset int

const (
	// StartFirst starts at the oldest record the partition retains, so a
	// new group loses nothing that is still retained. It is the zero value.
	StartFirst StartOffset = iota
	// StartLast starts after the newest record: a new group sees only what
	// is published from then on.
	StartLast
)

// String returns "StartFirst" or "StartLast".
func (s StartOffset) String() string {
	switch s {
	case StartFirst:
		return "StartFirst"
	case StartLast:
		return "StartLast"
	}
	return fmt.Sprintf("StartOffset(%d)", int(s))
}

// Config configures a [Consumer]. Kafka.Brokers, GroupID and Topics are
// required; every other field has a default, applied when it is zero.
type Config struct {
	// Brokers is the former shorthand for Kafka.Brokers, used when that is
	// empty; both may be set only to the same list.
	//
	// Deprecated: set Kafka.Brokers.
	Brokers []string
	// Kafka holds how to reach Kafka: the bootstrap addresses
	// (Kafka.Brokers, required), TLS, SASL and client ID (which defaults to
	// "outboxkit-inbox"). It serves every connection, to the group
	// coordinator and to the partition leaders alike. Defaults to a
	// plaintext, unauthenticated connection.
	Kafka broker.Config
	// GroupID is the Kafka consumer group, and the key under which the
	// inbox records processed messages: two groups each apply every
	// message once. Required.
	GroupID string
	// Topics are the topics to consume. Required.
	Topics []string

	// StartOffset is where a partition without a committed offset starts:
	// StartFirst or StartLast. Defaults to StartFirst.
	StartOffset StartOffset

	// MessageID returns the ID under which a message is recorded in the
	// inbox, its deduplication key within the group; msg.ID is empty when
	// it is called. Two records with one ID are applied once. A record for
	// which it returns an error, an empty ID, an ID over 1024 bytes or one
	// that is not valid UTF-8 goes to the dead-letter table with that
	// reason, without reaching the handler. Set it when the topics come
	// from a producer whose id header is not a unique event ID (use
	// [IDFromPosition], or read the producer's own key). Defaults to
	// [IDFromHeader]: the id header the relay sets, or the record's
	// position when there is none.
	MessageID func(msg Message) (string, error)

	// BatchSize is the most messages of one partition applied in one
	// database transaction. Only messages already fetched are batched, so a
	// quiet partition gets one transaction per message; a backlog is drained
	// with one commit per batch. If any handler of a batch fails, the batch
	// is rolled back and re-applied one message per transaction. 1 gives one
	// transaction per message. Defaults to 100.
	BatchSize int
	// CommitInterval is the longest time a processed message's offset waits
	// before it is committed to Kafka. Defaults to 1s.
	CommitInterval time.Duration
	// CommitCount commits offsets as soon as this many messages were
	// processed since the last commit, before CommitInterval ends.
	// Defaults to 1000.
	CommitCount int

	// MaxAttempts is how many times a failing message is tried, one message
	// per transaction, before it goes to the dead-letter table. Handler
	// errors, panics and timeouts count; transient database errors do not,
	// whether the handler's own statements or the inbox's hit them (a lost
	// connection, a deadlock or serialization failure, a read-only
	// transaction after a failover, a statement or lock timeout, the server
	// out of connections or shutting down): they are retried with backoff
	// until the database answers, so an outage dead-letters nothing.
	// Defaults to 5.
	MaxAttempts int
	// RetryBackoffMin is the wait after the first failed attempt; each
	// further failure doubles it, up to RetryBackoffMax. Defaults to 200ms.
	RetryBackoffMin time.Duration
	// RetryBackoffMax caps the wait between attempts. Defaults to 30s.
	RetryBackoffMax time.Duration
	// HandlerTimeout bounds one handler call, through its context, and each
	// of the inbox's own statements. A handler that ignores its context and
	// is still running after twice HandlerTimeout (HandlerTimeout plus one
	// second at most) is abandoned: its connection leaves the pool and its
	// database session is terminated, which rolls back its transaction, and
	// the attempt counts as failed. Every inbox transaction also sets
	// statement_timeout and lock_timeout (SET LOCAL, in the round trip of
	// its BEGIN) to HandlerTimeout plus the grace (at most 1s), so a statement the client gave up on (a claim blocked on a
	// lock, a slow handler query) ends on the server as well, and frees its
	// locks, even when the cancel request pgx sends on closing the
	// connection does not arrive.
	// Defaults to 30s.
	HandlerTimeout time.Duration
	// IdleInTransactionTimeout is set, with SET LOCAL in the statement that
	// begins it, as idle_in_transaction_session_timeout on every
	// transaction the consumer opens, and on no other use of the pool. A
	// consumer process that is paused (SIGSTOP, a frozen VM) or cut off from
	// the network looks alive to PostgreSQL; this bound makes the server end
	// such a session, which rolls back its transaction and frees its inbox
	// claims, so the partition's next owner is not blocked on them for as
	// long as the fault lasts (see "Quiet faults" in the package doc). It
	// must exceed the longest legitimate idle gap in an inbox transaction,
	// one handler call (HandlerTimeout plus the grace before abandoning it),
	// so it must be at least HandlerTimeout + 2s. Negative leaves the
	// server's setting alone. Defaults to HandlerTimeout + 5s.
	IdleInTransactionTimeout time.Duration

	// RetentionWindow is how long inbox rows are kept, that is how late a
	// redelivery can come and still be recognized. It must exceed the
	// longest redelivery delay you expect, or the late copy is applied
	// again: a replay of old records, a producer retry long after the
	// original, or a group whose committed offsets expired (the broker's
	// offsets.retention.minutes, 7 days by default, counted while the group
	// is empty) re-reading from StartOffset everything its topics retain.
	// With StartFirst, a window at least as long as the topics'
	// retention.ms covers that last case. Longer windows cost table and
	// index size. Defaults to 7 days (Kafka's default log retention).
	RetentionWindow time.Duration
	// RetentionInterval is how often Run deletes this group's inbox rows
	// older than RetentionWindow, in batches of 5000 rows. Negative
	// disables it, for when [DeleteExpired] runs elsewhere. Defaults to 10m.
	RetentionInterval time.Duration

	// SessionTimeout is the group session timeout: a member that sends no
	// heartbeat for this long loses its partitions. The broker bounds it
	// (group.min.session.timeout.ms, 6s by default). Defaults to 30s.
	SessionTimeout time.Duration
	// HeartbeatInterval is how often the member heartbeats, and so how soon
	// it notices a rebalance. Defaults to 3s.
	HeartbeatInterval time.Duration
	// RebalanceTimeout is how long the coordinator waits for members to
	// rejoin during a rebalance; it should exceed HandlerTimeout, since a
	// member finishes the handler call in flight first (the rest of its
	// batch is rolled back). Defaults to 60s.
	RebalanceTimeout time.Duration
	// JoinGroupBackoff is the wait before joining the group again after an
	// error. Defaults to 5s.
	JoinGroupBackoff time.Duration
	// MaxWait is the longest a fetch waits on the broker for new records.
	// Defaults to 500ms.
	MaxWait time.Duration

	// Logger receives the consumer's logs (never message payloads).
	// Defaults to a logger that discards everything.
	Logger *slog.Logger
	// Registerer registers the consumer's Prometheus metrics, all named
	// outboxkit_inbox_*. Consumers sharing a registerer share the metrics,
	// told apart by their group label. Defaults to nil: not registered.
	Registerer prometheus.Registerer
	// TracerProvider makes the consumer's OpenTelemetry spans: one consumer
	// span per handler call, the child of the message's traceparent, passed
	// to the handler in its context. Defaults to otel.GetTracerProvider() (a
	// no-op until one is installed).
	TracerProvider trace.TracerProvider
}

// ErrInvalidConfig is matched (with errors.Is) by every [*ConfigError].
var ErrInvalidConfig = errors.New("inbox: invalid config")

// ConfigError says which [Config] field is out of range and why;
// [NewConsumer] returns one per invalid field, joined.
type ConfigError struct {
	// Field is the Config field at fault, with the path to it for nested
	// fields: "GroupID", "Kafka.SASL.Username".
	Field string
	// Reason says what is wrong, without the field name.
	Reason string
	// Related lists the other fields Reason names, spelled as in Field, so
	// a program can name them its own way by replacing each one in Reason.
	Related []string
}

// Error returns "inbox: <Field> <Reason>".
func (e *ConfigError) Error() string { return "inbox: " + e.Field + " " + e.Reason }

// Is reports whether target is [ErrInvalidConfig].
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Defaults of [Config], applied to fields left zero.
const (
	// DefaultBatchSize is the default Config.BatchSize.
	DefaultBatchSize = 100
	// DefaultCommitInterval is the default Config.CommitInterval.
	DefaultCommitInterval = time.Second
	// DefaultCommitCount is the default Config.CommitCount.
	DefaultCommitCount = 1000
	// DefaultMaxAttempts is the default Config.MaxAttempts.
	DefaultMaxAttempts = 5
	// DefaultRetryBackoffMin is the default Config.RetryBackoffMin.
	DefaultRetryBackoffMin = 200 * time.Millisecond
	// DefaultRetryBackoffMax is the default Config.RetryBackoffMax.
	DefaultRetryBackoffMax = 30 * time.Second
	// DefaultHandlerTimeout is the default Config.HandlerTimeout.
	DefaultHandlerTimeout = 30 * time.Second
	// DefaultIdleInTransactionMargin is what the default
	// Config.IdleInTransactionTimeout adds to Config.HandlerTimeout.
	DefaultIdleInTransactionMargin = 5 * time.Second
	// DefaultRetentionWindow is the default Config.RetentionWindow.
	DefaultRetentionWindow = 7 * 24 * time.Hour
	// DefaultRetentionInterval is the default Config.RetentionInterval.
	DefaultRetentionInterval = 10 * time.Minute
	// DefaultSessionTimeout is the default Config.SessionTimeout.
	DefaultSessionTimeout = 30 * time.Second
	// DefaultHeartbeatInterval is the default Config.HeartbeatInterval.
	DefaultHeartbeatInterval = 3 * time.Second
	// DefaultRebalanceTimeout is the default Config.RebalanceTimeout.
	DefaultRebalanceTimeout = 60 * time.Second
	// DefaultJoinGroupBackoff is the default Config.JoinGroupBackoff.
	DefaultJoinGroupBackoff = 5 * time.Second
	// DefaultMaxWait is the default Config.MaxWait.
	DefaultMaxWait = 500 * time.Millisecond

	maxBatchSize = 10000
	// maxServerTimeout is the largest statement_timeout, lock_timeout and
	// idle_in_transaction_session_timeout PostgreSQL accepts: INT_MAX
	// milliseconds.
	maxServerTimeout = (1<<31 - 1) * time.Millisecond
	// minIdleInTransactionMargin is how much IdleInTransactionTimeout must
	// exceed HandlerTimeout: the grace before a hung handler is abandoned
	// (at most 1s), the idle time the inbox allows itself before a
	// keepalive statement (idleKeepalive), and slack for scheduling.
	minIdleInTransactionMargin = 2 * time.Second
)

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	setInt := func(n *int, def int) {
		if *n == 0 {
			*n = def
		}
	}
	c.Kafka = kafkasettings.Merge(c.Brokers, c.Kafka)
	if c.MessageID == nil {
		c.MessageID = IDFromHeader
	}
	setInt(&c.BatchSize, DefaultBatchSize)
	setDur(&c.CommitInterval, DefaultCommitInterval)
	setInt(&c.CommitCount, DefaultCommitCount)
	setInt(&c.MaxAttempts, DefaultMaxAttempts)
	setDur(&c.RetryBackoffMin, DefaultRetryBackoffMin)
	setDur(&c.RetryBackoffMax, DefaultRetryBackoffMax)
	setDur(&c.HandlerTimeout, DefaultHandlerTimeout)
	setDur(&c.IdleInTransactionTimeout, c.HandlerTimeout+DefaultIdleInTransactionMargin)
	setDur(&c.RetentionWindow, DefaultRetentionWindow)
	setDur(&c.RetentionInterval, DefaultRetentionInterval)
	setDur(&c.SessionTimeout, DefaultSessionTimeout)
	setDur(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	setDur(&c.RebalanceTimeout, DefaultRebalanceTimeout)
	setDur(&c.JoinGroupBackoff, DefaultJoinGroupBackoff)
	setDur(&c.MaxWait, DefaultMaxWait)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// validate checks a Config that went through withDefaults and returns a
// *ConfigError for each field out of range, joined.
func (c Config) validate() error {
	var errs []error
	bad := func(field, reason string, related ...string) {
		errs = append(errs, &ConfigError{Field: field, Reason: reason, Related: related})
	}
	invalid := func(field, format string, args ...any) { bad(field, fmt.Sprintf(format, args...)) }
	for _, p := range kafkasettings.Check(c.Brokers, c.Kafka) {
		bad(p.Field, p.Reason, p.Related...)
	}
	// The group is stored as text with every claim: a value PostgreSQL
	// cannot store would fail every transaction, for ever.
	if c.GroupID == "" {
		invalid("GroupID", "is empty")
	} else if reason := record.CheckText(c.GroupID); reason != "" {
		invalid("GroupID", "%s", reason)
	}
	if len(c.Topics) == 0 {
		invalid("Topics", "is empty")
	}
	for i, t := range c.Topics {
		if t == "" {
			invalid("Topics", "has an empty name at index %d", i)
		} else if reason := record.CheckText(t); reason != "" {
			invalid("Topics", "name at index %d %s", i, reason)
		}
	}
	if c.StartOffset != StartFirst && c.StartOffset != StartLast {
		invalid("StartOffset", "must be StartFirst or StartLast, got %d", int(c.StartOffset))
	}
	if c.BatchSize < 1 || c.BatchSize > maxBatchSize {
		invalid("BatchSize", "must be between 1 and %d, got %d", maxBatchSize, c.BatchSize)
	}
	if c.CommitCount < 1 {
		invalid("CommitCount", "must be at least 1, got %d", c.CommitCount)
	}
	if c.MaxAttempts < 1 {
		invalid("MaxAttempts", "must be at least 1, got %d", c.MaxAttempts)
	}
	negative := map[string]bool{}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"CommitInterval", c.CommitInterval},
		{"RetryBackoffMin", c.RetryBackoffMin},
		{"RetryBackoffMax", c.RetryBackoffMax},
		{"HandlerTimeout", c.HandlerTimeout},
		{"RetentionWindow", c.RetentionWindow},
		{"SessionTimeout", c.SessionTimeout},
		{"HeartbeatInterval", c.HeartbeatInterval},
		{"RebalanceTimeout", c.RebalanceTimeout},
		{"JoinGroupBackoff", c.JoinGroupBackoff},
		{"MaxWait", c.MaxWait},
	} {
		if d.v < 0 {
			negative[d.name] = true
			invalid(d.name, "must not be negative, got %s", d.v)
		}
	}
	// Both go to the server as milliseconds with every BEGIN (txOptions);
	// a value over its limit would make every transaction fail.
	if serverTimeout(c.HandlerTimeout) > maxServerTimeout {
		invalid("HandlerTimeout", "must be at most %s (PostgreSQL's limit for statement_timeout, less the 1s the server waits after it), got %s", maxServerTimeout-maxHungGrace, c.HandlerTimeout)
	}
	if c.IdleInTransactionTimeout > maxServerTimeout {
		invalid("IdleInTransactionTimeout", "must be at most %s (PostgreSQL's limit for idle_in_transaction_session_timeout), got %s", maxServerTimeout, c.IdleInTransactionTimeout)
	}
	// The checks between two fields speak only of fields that are in range
	// on their own, so each problem is said once.
	if !negative["RetryBackoffMin"] && !negative["RetryBackoffMax"] && c.RetryBackoffMax < c.RetryBackoffMin {
		bad("RetryBackoffMax", fmt.Sprintf("must not be below RetryBackoffMin (%s), got %s", c.RetryBackoffMin, c.RetryBackoffMax), "RetryBackoffMin")
	}
	if !negative["HeartbeatInterval"] && !negative["SessionTimeout"] && c.HeartbeatInterval >= c.SessionTimeout {
		bad("HeartbeatInterval", fmt.Sprintf("must be below SessionTimeout (%s), got %s", c.SessionTimeout, c.HeartbeatInterval), "SessionTimeout")
	}
	if !negative["HandlerTimeout"] && c.IdleInTransactionTimeout > 0 && c.IdleInTransactionTimeout <= maxServerTimeout &&
		c.IdleInTransactionTimeout < c.HandlerTimeout+minIdleInTransactionMargin {
		bad("IdleInTransactionTimeout", fmt.Sprintf("must be at least HandlerTimeout (%s) + %s, or negative to leave the server's setting alone, got %s",
			c.HandlerTimeout, minIdleInTransactionMargin, c.IdleInTransactionTimeout), "HandlerTimeout")
	}
	if !negative["MaxWait"] && c.MaxWait < time.Millisecond {
		invalid("MaxWait", "must be at least 1ms, got %s", c.MaxWait)
	}
	return errors.Join(errs...)
}
