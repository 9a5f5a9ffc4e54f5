package walstream

import (
	"errors"
	"fmt"
)

// Sentinels matched (with errors.Is) by the typed errors below.
var (
	// ErrWALLevel: the server's wal_level is not logical.
	ErrWALLevel = errors.New("relay: wal_level is not logical")
	// ErrSlotInUse: another session streams the slot (SQLSTATE 55006).
	ErrSlotInUse = errors.New("relay: replication slot in use")
	// ErrSlotLost: the slot was invalidated; its unread events are gone.
	ErrSlotLost = errors.New("relay: replication slot invalidated")
	// ErrPrivilege: the role lacks a privilege the stream needs.
	ErrPrivilege = errors.New("relay: missing privilege")
	// ErrPublicationMissing: pgoutput cannot find the publication at the
	// slot's position (the slot predates the publication).
	ErrPublicationMissing = errors.New("relay: publication missing at the slot's position")
	// ErrSlotMissing: the slot existed once (outbox_wal_settings says so)
	// and is gone from this server.
	ErrSlotMissing = errors.New("relay: replication slot missing")
	// ErrStandbySlotMissing: synchronized_standby_slots names a slot this
	// server lacks, so logical decoding would wait for it for ever.
	ErrStandbySlotMissing = errors.New("relay: synchronized_standby_slots names a missing slot")
	// ErrSettingsMismatch: the configured slot or publication is not the
	// one outbox_wal_settings names, which writers check before emitting.
	ErrSettingsMismatch = errors.New("relay: configuration disagrees with outbox_wal_settings")
	// ErrSlotUnusable: a slot of the configured name exists but cannot
	// carry WAL mode's events (another database's, another plugin's, a
	// physical or temporary slot).
	ErrSlotUnusable = errors.New("relay: replication slot unusable for WAL mode")
	// ErrClosed: Next was called after Close.
	ErrClosed = errors.New("relay: stream closed")
)

// WALLevelError says the server cannot decode logical messages: events
// emitted there are never delivered.
type WALLevelError struct {
	// Level is the server's wal_level.
	Level string
}

// Error says what is set and what is needed, on one line.
func (e *WALLevelError) Error() string {
	return fmt.Sprintf("relay: wal_level is %q, WAL mode needs wal_level = logical (set it in postgresql.conf and restart PostgreSQL)", e.Level)
}

// Is reports whether target is [ErrWALLevel].
func (e *WALLevelError) Is(target error) bool { return target == ErrWALLevel }

// SlotInUseError says another session is streaming the slot. Only one
// session streams a slot at a time; wait and open the stream again.
type SlotInUseError struct {
	// Slot is the replication slot's name.
	Slot string
	// Err is the server's error.
	Err error
}

// Error names the slot.
func (e *SlotInUseError) Error() string {
	return fmt.Sprintf("relay: replication slot %q is streamed by another session: %v", e.Slot, e.Err)
}

// Is reports whether target is [ErrSlotInUse].
func (e *SlotInUseError) Is(target error) bool { return target == ErrSlotInUse }

// Unwrap returns the server's error.
func (e *SlotInUseError) Unwrap() error { return e.Err }

// SlotLostError says the slot was invalidated (wal_status 'lost', usually
// by max_slot_wal_keep_size): the WAL holding its unread events is gone.
// The stream never recreates a slot by itself.
type SlotLostError struct {
	// Slot is the replication slot's name.
	Slot string
}

// Error names the slot and what it means.
func (e *SlotLostError) Error() string {
	return fmt.Sprintf("relay: replication slot %q is invalidated (wal_status lost): events it had not delivered are gone; find them from the writers' side, then drop and recreate the slot by hand", e.Slot)
}

// Is reports whether target is [ErrSlotLost].
func (e *SlotLostError) Is(target error) bool { return target == ErrSlotLost }

// PrivilegeError says which privilege the role lacks.
type PrivilegeError struct {
	// Missing names the privilege: "the REPLICATION role attribute" or
	// "CREATE on the database".
	Missing string
	// Err is the server's error.
	Err error
}

// Error names the missing privilege.
func (e *PrivilegeError) Error() string {
	return fmt.Sprintf("relay: the role needs %s: %v", e.Missing, e.Err)
}

// Is reports whether target is [ErrPrivilege].
func (e *PrivilegeError) Is(target error) bool { return target == ErrPrivilege }

// Unwrap returns the server's error.
func (e *PrivilegeError) Unwrap() error { return e.Err }

// PublicationMissingError says pgoutput could not find the publication as
// of the WAL position it decodes: the slot was created before the
// publication, and a transaction between the two changed a table, which
// PostgreSQL before 18 cannot decode without the publication. The stream
// cannot get past it; retrying gets the same error.
type PublicationMissingError struct {
	// Slot and Publication are the names streamed.
	Slot, Publication string
	// Err is the server's error.
	Err error
}

// Error names the slot, the publication and what to do.
func (e *PublicationMissingError) Error() string {
	return fmt.Sprintf("relay: replication slot %q was created before publication %q, and pgoutput cannot decode the transactions written in between (%v): "+
		"create the publication before the slot (the migrations and `outboxkit wal setup` do); this slot can only be dropped and recreated by hand, after reading what it holds with pg_logical_slot_peek_binary_changes",
		e.Slot, e.Publication, e.Err)
}

// Is reports whether target is [ErrPublicationMissing].
func (e *PublicationMissingError) Is(target error) bool { return target == ErrPublicationMissing }

// Unwrap returns the server's error.
func (e *PublicationMissingError) Unwrap() error { return e.Err }

// SlotMissingError says the slot was established once on this database
// (outbox_wal_settings records when) and does not exist on the server the
// stream reached: a failover to a standby that did not have it (before
// PostgreSQL 17, or a slot not yet synchronized), a restore from backup,
// or a dropped slot. The events emitted since its last confirmed position
// may never be delivered; the stream does not recreate it by itself.
type SlotMissingError struct {
	// Slot is the replication slot's name.
	Slot string
	// Since is when the slot was first seen or created, as recorded.
	Since string
}

// Error names the slot, what it means and what to do, on one line.
func (e *SlotMissingError) Error() string {
	return fmt.Sprintf("relay: replication slot %q, in use here since %s, does not exist on this server (a failover to a standby without it, a restore, or a dropped slot): "+
		"events emitted after its last confirmed position may be lost, and writers get OB001 until it exists; check what reached Kafka, then run `outboxkit wal setup` to create it again", e.Slot, e.Since)
}

// Is reports whether target is [ErrSlotMissing].
func (e *SlotMissingError) Is(target error) bool { return target == ErrSlotMissing }

// StandbySlotMissingError says synchronized_standby_slots (PostgreSQL 17+)
// names a physical slot the server does not have; logical decoding then
// waits for that standby for ever. It happens on a promoted standby that
// kept its old primary's setting.
type StandbySlotMissingError struct {
	// Slot is the missing slot's name.
	Slot string
}

// Error names the slot and what to do, on one line.
func (e *StandbySlotMissingError) Error() string {
	return fmt.Sprintf("relay: synchronized_standby_slots names %q, which is not a physical replication slot on this server, so logical decoding would wait for it for ever "+
		"(a promoted standby keeps its old primary's setting): point it at this server's standbys' slots or clear it (ALTER SYSTEM RESET synchronized_standby_slots; SELECT pg_reload_conf())", e.Slot)
}

// Is reports whether target is [ErrStandbySlotMissing].
func (e *StandbySlotMissingError) Is(target error) bool { return target == ErrStandbySlotMissing }

// SettingsMismatchError says a name the stream was given is not the one
// the database's outbox_wal_settings names: writers check that slot (and
// that publication) before they emit, so streaming another would leave
// their events unread. Retrying cannot fix it.
type SettingsMismatchError struct {
	// Setting is what disagrees: "slot" or "publication".
	Setting string
	// Configured is the name the stream was given; Named the one
	// outbox_wal_settings holds (column slot_name or publication_name).
	Configured, Named string
}

// Error names both and the fix, on one line.
func (e *SettingsMismatchError) Error() string {
	return fmt.Sprintf("relay: the %s is %q but outbox_wal_settings names %q, the one writers check before emitting; make them agree (UPDATE outbox_wal_settings SET %s_name = ..., or configure %q)",
		e.Setting, e.Configured, e.Named, e.Setting, e.Named)
}

// Is reports whether target is [ErrSettingsMismatch].
func (e *SettingsMismatchError) Is(target error) bool { return target == ErrSettingsMismatch }

// SlotUnusableError says a slot of the configured name exists but is not
// a permanent pgoutput slot of this database: a slot of another database
// (slot names are cluster-wide), another plugin's, a physical or a
// temporary one. The stream never drops a slot; pick another name.
type SlotUnusableError struct {
	// Slot is the replication slot's name.
	Slot string
	// Database and Plugin are the slot's ("" for a physical slot);
	// Current is the stream's database.
	Database, Plugin, Current string
	// Temporary says the slot is temporary.
	Temporary bool
}

// Error says what the slot is and what is needed, on one line.
func (e *SlotUnusableError) Error() string {
	kind := "permanent"
	if e.Temporary {
		kind = "temporary"
	}
	return fmt.Sprintf("relay: replication slot %q is a %s slot of database %q with plugin %q; WAL mode needs a permanent pgoutput slot of database %q: set another slot name in outbox_wal_settings and the relay",
		e.Slot, kind, e.Database, e.Plugin, e.Current)
}

// Is reports whether target is [ErrSlotUnusable].
func (e *SlotUnusableError) Is(target error) bool { return target == ErrSlotUnusable }
