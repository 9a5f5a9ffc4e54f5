package relay

import (
	"errors"
	"fmt"
	"strings"

	"github.com/outboxkit/outboxkit/internal/walstream"
)

// Errors [Relay.Run] returns when the database cannot serve a relay as
// it is.
var (
	// ErrNoOutboxTable is returned by [Relay.Run] when the database has no outbox
	// table: apply the migrations first.
	ErrNoOutboxTable = errors.New("relay: table outbox or outbox_parked does not exist; apply the migrations (outboxkit migrate up, or goose -dir migrations -table outboxkit_db_version postgres \"$DATABASE_URL\" up)")
	// ErrOutdatedSchema is returned by [Relay.Run] when the outbox tables exist
	// but lack what this relay needs from a later migration.
	ErrOutdatedSchema = errors.New("relay: the outbox tables are from an older outboxkit (outbox.parked is missing); apply the migrations (outboxkit migrate up, or goose -dir migrations -table outboxkit_db_version postgres \"$DATABASE_URL\" up)")
	// ErrStandbyDatabase is why a session does not start on a standby (a
	// server in recovery): it could read the outbox but never delete what it
	// published, so it would publish the same events again and again. The
	// relay retries, since a standby may be promoted; point DATABASE_URL at
	// the primary, or name every node with target_session_attrs=read-write
	// (README, PostgreSQL with a standby).
	ErrStandbyDatabase = errors.New("relay: the database is a standby (read-only); point DATABASE_URL at the primary, or name every node with target_session_attrs=read-write")
	// ErrUnstableSession is returned by [Relay.Run] when the statements of the
	// relay's lock connection do not all run in one server session, as behind
	// PgBouncer in transaction (or statement) pooling mode. The relay's shard
	// ownership rests on session advisory locks, which such a pooler hands to
	// whichever client next borrows the server connection; the relay refuses to
	// run rather than publish shards it does not really own.
	ErrUnstableSession = errors.New("relay: the database session is not stable (statements ran on different server backends), as behind PgBouncer in transaction pooling mode; session advisory locks need a direct connection or a session-pooled one (PgBouncer pool_mode=session)")
	// ErrStandbyPositions is returned by Run when Config.Standbys is set and
	// the relay's role cannot read the standbys' positions in
	// pg_stat_replication (PostgreSQL shows them only to superusers and
	// members of pg_read_all_stats): GRANT pg_monitor TO the relay's role.
	ErrStandbyPositions = errors.New("relay: Standbys is set, but the role cannot read the standbys' positions in pg_stat_replication")
)

// WAL mode errors that retrying cannot fix; [Relay.Run] returns them (the
// relay binary exits with code 2 on the first).
var (
	// ErrWALLevel: the server's wal_level is not logical, so emitted
	// events cannot be decoded.
	ErrWALLevel = walstream.ErrWALLevel
	// ErrSlotLost: the replication slot was invalidated; the events it had
	// not delivered are gone. The relay never recreates it by itself.
	ErrSlotLost = walstream.ErrSlotLost
	// ErrReplicationPrivilege: the role lacks the REPLICATION attribute (or
	// CREATE on the database, to create the publication).
	ErrReplicationPrivilege = walstream.ErrPrivilege
	// ErrPublicationMissing: the slot was created before the publication
	// and cannot be decoded past the transactions in between.
	ErrPublicationMissing = walstream.ErrPublicationMissing
	// ErrSlotMissing: the slot was in use on this database before and is
	// gone from the server (a failover to a standby without it, a restore,
	// a dropped slot). The relay does not create a new one, which would
	// skip what the old one had not delivered: `outboxkit wal setup` does,
	// on purpose.
	ErrSlotMissing = walstream.ErrSlotMissing
	// ErrStandbySlotMissing: synchronized_standby_slots names a slot the
	// server lacks (a promoted standby that kept its old primary's
	// setting), so decoding would wait for ever. Run does not return it:
	// it logs it and tries again every WAL.RetryInterval, since failover
	// tooling usually clears the setting moments after the promotion.
	ErrStandbySlotMissing = walstream.ErrStandbySlotMissing
	// ErrWALSettingsMismatch: WAL.Slot or WAL.Publication is not the one
	// outbox_wal_settings names (slot_name, publication_name), which
	// writers check before emitting.
	ErrWALSettingsMismatch = walstream.ErrSettingsMismatch
	// ErrSlotUnusable: a slot of the configured name exists but is not a
	// permanent pgoutput slot of this database (slot names are
	// cluster-wide: another database's, say).
	ErrSlotUnusable = walstream.ErrSlotUnusable
)

// ErrSharedWALPrefix is matched (with errors.Is) by the
// *[SharedWALPrefixError] Run returns when another outbox of the same
// database (another schema's outbox_wal_settings) is in WAL mode too.
var ErrSharedWALPrefix = errors.New("relay: another outbox of this database is in WAL mode")

// ErrInvalidConfig is matched (with errors.Is) by every [*ConfigError].
var ErrInvalidConfig = errors.New("relay: invalid config")

// ErrNotParked is returned by RetryParked and SkipParked for an aggregate
// that is not parked.
var ErrNotParked = errors.New("relay: aggregate is not parked")

// ErrUnknownTopic is returned for records whose topic the cluster does not
// have (and will not create). The relay takes it for a refusal by the whole
// topic, as if wrapped by [TopicRefused].
var ErrUnknownTopic = errors.New("topic does not exist")

// ErrRunTwice is returned by [Relay.Run] when it is called a second time,
// while the first call runs or after it returned: a Relay runs once.
var ErrRunTwice = errors.New("relay: Run called twice")

// RefusedError marks a record's error as a refusal: Kafka will refuse the
// record however often it is sent. A [Publisher] returns one, through
// [Permanent] or [TopicRefused], in the record's entry of a [*PublishError]
// (or as the whole error, for every record of the call); the relay finds
// it with errors.As, however deeply it is wrapped. Every other error is
// transient: the record is sent again after a backoff. Refused records hold
// their aggregate back and, after Config.ParkAfter, park it
// (docs/design.md §2.7).
type RefusedError struct {
	// Err is the publisher's error.
	Err error
	// Topic reports that the refusal is about the topic rather than the
	// record (the topic does not exist, its name is invalid, the producer
	// may not write to it). Once a topic refused two aggregates that way
	// and took no record since, the relay retries its events like an
	// outage and parks none of them: a misconfiguration, not poison events.
	Topic bool
}

// Error returns the publisher's error text.
func (e *RefusedError) Error() string { return e.Err.Error() }

// Unwrap returns Err.
func (e *RefusedError) Unwrap() error { return e.Err }

// Permanent marks err as a refusal of the record itself (too large,
// invalid, against a policy): see [RefusedError]. It returns nil for nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &RefusedError{Err: err}
}

// TopicRefused marks err as a refusal by the record's whole topic (missing,
// invalid name, no write ACL): see [RefusedError]. It returns nil for nil.
func TopicRefused(err error) error {
	if err == nil {
		return nil
	}
	return &RefusedError{Err: err, Topic: true}
}

// refusal reports whether a record's err is a refusal, and whether the
// topic refused it rather than the record.
func refusal(err error) (refused, topic bool) {
	var re *RefusedError
	if errors.As(err, &re) {
		return true, re.Topic || errors.Is(re.Err, ErrUnknownTopic)
	}
	if errors.Is(err, ErrUnknownTopic) {
		return true, true
	}
	return false, false
}

// refused reports whether err is a refusal (see [RefusedError]).
func refused(err error) bool {
	r, _ := refusal(err)
	return r
}

// SequenceCacheError is returned by [Relay.Run] when the sequence behind the
// outbox's seq column caches values (CACHE greater than 1). Each session
// then takes seq values from a block of its own, so a later transaction of
// an aggregate can get a lower seq than an earlier one, and the relay, which
// publishes each shard in seq order, would publish them out of order.
type SequenceCacheError struct {
	// Sequence is the sequence's name, as PostgreSQL prints it.
	Sequence string
	// Cache is its CACHE setting.
	Cache int64
}

// Error says what is wrong and how to fix it, in one line.
func (e *SequenceCacheError) Error() string {
	return fmt.Sprintf("relay: sequence %s of outbox.seq has CACHE %d, which lets a later event of an aggregate take a lower seq and be published before an earlier one; run ALTER SEQUENCE %s CACHE 1", e.Sequence, e.Cache, e.Sequence)
}

// SharedWALPrefixError says another schema of the database holds an
// outbox in WAL mode. Logical decoding messages are database-wide and
// every outbox emits with the prefix outboxkit, so each relay would
// stream, and publish, the other's events too: WAL mode serves one outbox
// per database. Keep the other outbox in table mode, or move it to a
// database of its own.
type SharedWALPrefixError struct {
	// Schema is this relay's outbox schema; Others the schemas whose
	// outbox is in WAL mode (outbox_wal_settings.slot_established_at set).
	Schema string
	Others []string
}

// Error names the schemas and the fix, on one line.
func (e *SharedWALPrefixError) Error() string {
	return fmt.Sprintf("relay: the outbox in schema %q and the one in %s are both in WAL mode in one database; logical messages are database-wide with one prefix, so each relay would publish the other's events: WAL mode serves one outbox per database (keep the others in table mode, or in a database of their own)",
		e.Schema, strings.Join(e.Others, ", "))
}

// Is reports whether target is [ErrSharedWALPrefix].
func (e *SharedWALPrefixError) Is(target error) bool { return target == ErrSharedWALPrefix }

// ConfigError says which [Config] field is out of range and why; [New]
// returns one per invalid field, joined.
type ConfigError struct {
	// Field is the Config field at fault, with the path to it for nested
	// fields: "BatchSize", "Kafka.SASL.Username".
	Field string
	// Reason says what is wrong, without the field name.
	Reason string
	// Related lists the other fields Reason names, spelled as in Field, so
	// a program can name them its own way (the relay binary names
	// environment variables) by replacing each one in Reason.
	Related []string
}

// Error returns "relay: <Field> <Reason>".
func (e *ConfigError) Error() string { return "relay: " + e.Field + " " + e.Reason }

// Is reports whether target is [ErrInvalidConfig].
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// PublishError reports the outcome of each record of a partly failed
// [Publisher.Publish] call.
type PublishError struct {
	// Errs has one entry per record in call order: nil when the record was
	// acknowledged, the reason otherwise.
	Errs []error
}

// Error counts the records not acknowledged and gives the first reason.
func (e *PublishError) Error() string {
	failed, first := 0, error(nil)
	for _, err := range e.Errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	return fmt.Sprintf("relay: %d of %d records not acknowledged; first: %v", failed, len(e.Errs), first)
}
