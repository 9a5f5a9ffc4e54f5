package inbox

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/segmentio/kafka-go"
)

// transientDBError reports whether err is the database failing rather than
// the message: a condition that a later attempt of the same transaction can
// get past without anyone changing the message or the handler. Such errors
// are retried without counting toward MaxAttempts, so an outage, a failover
// or lock contention dead-letters nothing.
//
// Detected by SQLSTATE (docs/design.md §4):
//   - class 08 (connection exception) and 53 (insufficient resources:
//     out of connections, memory, disk);
//   - 40001 serialization_failure and 40P01 deadlock_detected: the
//     transaction lost a race and is meant to be retried;
//   - 25006 read_only_sql_transaction: the primary became a standby in a
//     failover, and the connection will be replaced;
//   - 55P03 lock_not_available and 57014 query_canceled (statement or lock
//     timeout): contention, not the message;
//   - 57P01..57P03: the server is shutting down or starting;
//   - 25P03 idle_in_transaction_session_timeout: the server ended the
//     session of a transaction that sat idle, as it does to a consumer
//     that was paused or cut off (Config.IdleInTransactionTimeout).
//
// A handler that outlived HandlerTimeout is not transient even when its
// statement was cancelled with 57014: callers check the deadline first.
func transientDBError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// A server always sends a five-character code; an error built
		// elsewhere (a proxy, a test) may carry none.
		if len(pgErr.Code) >= 2 {
			switch pgErr.Code[:2] {
			case "08", "53":
				return true
			}
		}
		switch pgErr.Code {
		case "40001", "40P01", "25006", "25P03", "55P03", "57014", "57P01", "57P02", "57P03":
			return true
		}
		return false
	}
	// No server answer at all: a dial, TLS or I/O failure of the connection.
	var connectErr *pgconn.ConnectError
	return errors.As(err, &connectErr) || pgconn.SafeToRetry(err)
}

// ErrInboxTables is matched (errors.Is) by the error [Consumer.Run] returns
// when one of the inbox's own statements finds its tables missing
// (SQLSTATE 42P01 undefined_table: migrations not applied, or a search_path
// that does not reach them) or not usable by the consumer's role (42501
// insufficient_privilege). Retrying cannot fix either, so Run stops instead
// of retrying them as transient, and the error names the statement and the
// server's message.
var ErrInboxTables = errors.New("inbox: the inbox tables are missing or this role may not use them (apply the migrations, check search_path and grants)")

// setupDBError reports whether err, from one of the inbox's own statements
// (never a handler's), says the database is not set up for the inbox: see
// ErrInboxTables.
func setupDBError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42P01", "42501":
			return true
		}
	}
	return false
}

// ErrJoinRefused is matched (errors.Is) by the error [Consumer.Run]
// returns when the Kafka cluster refuses the consumer for good as it joins
// the group: its SASL credentials or mechanism are rejected, or its ACLs
// do not allow the group, the topics or the cluster operation. Run stops
// instead of retrying what only an operator can fix; the error carries
// Kafka's.
var ErrJoinRefused = errors.New("inbox: the Kafka cluster refused this consumer (authentication or authorization)")

// joinRefused reports whether err, from joining the group, is Kafka
// refusing the client's credentials or permissions.
func joinRefused(err error) bool {
	for _, code := range []kafka.Error{
		kafka.SASLAuthenticationFailed, kafka.UnsupportedSASLMechanism,
		kafka.GroupAuthorizationFailed, kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed,
	} {
		if errors.Is(err, code) {
			return true
		}
	}
	return false
}
