package walstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/outboxkit/outboxkit/internal/wait"
	"github.com/outboxkit/outboxkit/internal/walformat"
)

// LSN is a position in the write-ahead log.
type LSN uint64

// String formats l as PostgreSQL does ("16/B374D848").
func (l LSN) String() string { return pglogrepl.LSN(l).String() }

// Tx is one committed transaction's events.
type Tx struct {
	// Xid is the transaction's ID.
	Xid uint32
	// CommitLSN is the position of its commit record.
	CommitLSN LSN
	// EndLSN is the end of its commit record: pass it to [Stream.Ack].
	EndLSN LSN
	// CommitTime is when it committed.
	CommitTime time.Time
	// Events are its events, in the order they were emitted.
	Events []Event
	// More says the transaction goes on in the next Tx delivered: a
	// transaction whose messages exceed [Config.PieceBytes] is delivered
	// in pieces, in order, so that it is never held whole in memory. A
	// piece with More set has CommitLSN and EndLSN zero; the last piece
	// (More false, possibly with no events) carries them, and only its
	// EndLSN is acknowledged, once every piece's events are published.
	// The transaction is committed already when its first piece arrives
	// (pgoutput sends a transaction only after its commit).
	More bool
}

// Event is one decoded message.
type Event struct {
	// LSN is the end of the message's WAL record, as pgoutput reports it
	// (the last message's is its commit record's start). It is never a
	// position to confirm: confirming it would skip the transaction.
	LSN LSN
	// Message is the decoded event; zero when Err is set.
	Message walformat.Message
	// Err is set when the content could not be decoded (an unknown format
	// version, or a malformed content); it matches
	// walformat.ErrUnknownVersion for an unknown version. Such an event is
	// delivered, not dropped, so the caller can park it.
	Err error
	// Raw is the undecodable content, when Err is set.
	Raw []byte
}

// Config configures a [Stream].
type Config struct {
	// ConnString is the database's connection string (URL or key=value);
	// the stream adds replication=database. The role needs the REPLICATION
	// attribute, and CREATE on the database to create the publication.
	ConnString string
	// ConnConfig, when set, is used instead of ConnString (a copy of it,
	// with replication=database added): a program that configures its
	// pool in code (TLS, a password from a hook) passes the pool's
	// pgconn.Config so the replication connection is made the same way.
	ConnConfig *pgconn.Config
	// Slot is the replication slot. Defaults to the slot named in the
	// database's outbox_wal_settings table (that writers check before
	// emitting); a different name is refused.
	Slot string
	// Publication is the publication named in START_REPLICATION; pgoutput
	// sends logical messages whatever it contains, so it may be empty.
	// Defaults to "outboxkit".
	Publication string
	// StatusInterval is how often the confirmed position is sent to the
	// server. Defaults to 200 ms.
	StatusInterval time.Duration
	// SenderTimeout is the wal_sender_timeout of the replication session:
	// a client that stops answering loses the slot after this long, so
	// another instance can take it over. Defaults to 10 s.
	SenderTimeout time.Duration
	// Buffer is how many decoded transactions (or pieces of one) may wait
	// for Next. Defaults to 16.
	Buffer int
	// PieceBytes bounds the message bytes of one [Tx] delivered: a larger
	// transaction is delivered in pieces ([Tx.More]), so the stream holds
	// at most Buffer pieces, not a whole transaction of any size. Defaults
	// to 4 MiB.
	PieceBytes int
	// Logger receives the stream's logs. Defaults to a quiet logger.
	Logger *slog.Logger
	// EstablishedSince, when set, says the slot existed on this database
	// before (when, as recorded in outbox_wal_settings): a missing slot is
	// then not created but reported with a *[SlotMissingError], because a
	// new slot would start at the current position and skip what the old
	// one had not delivered. [Setup] ignores it.
	EstablishedSince string
}

// DefaultPublication is the publication of a [Config] without one.
const DefaultPublication = "outboxkit"

// nameRE is what PostgreSQL accepts as a replication slot name; the stream
// holds publication names to it too, so both go into commands unquoted.
var nameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

func (c Config) withDefaults() Config {
	if c.Publication == "" {
		c.Publication = DefaultPublication
	}
	if c.StatusInterval <= 0 {
		// Often, so that a relay killed at full speed leaves little to
		// deliver again: the server resumes a slot from the last position
		// it was told.
		c.StatusInterval = 200 * time.Millisecond
	}
	if c.SenderTimeout <= 0 {
		c.SenderTimeout = 10 * time.Second
	}
	if c.Buffer <= 0 {
		c.Buffer = 16
	}
	if c.PieceBytes <= 0 {
		c.PieceBytes = 4 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if c.ConnString == "" && c.ConnConfig == nil {
		return errors.New("relay: ConnString is empty")
	}
	if c.Slot != "" && !nameRE.MatchString(c.Slot) {
		return fmt.Errorf("relay: Slot %q must be 1 to 63 lower-case letters, digits or underscores", c.Slot)
	}
	if !nameRE.MatchString(c.Publication) {
		return fmt.Errorf("relay: Publication %q must be 1 to 63 lower-case letters, digits or underscores", c.Publication)
	}
	return nil
}

// ackEntry is a transaction handed out (or about to be), in commit order.
// A transaction being delivered in pieces has end openEnd until its last
// piece, which keeps pending sorted by end.
type ackEntry struct {
	end   LSN
	acked bool
}

// openEnd is the end of a transaction whose last piece is still to come.
const openEnd = LSN(1<<64 - 1)

// collapseMin is how many acknowledged entries pending may hold behind an
// unacknowledged one before runs of them are collapsed (Ack).
const collapseMin = 64

// Stream delivers committed transactions of events from a replication
// slot. Create it with [Open]; Close it when done.
type Stream struct {
	cfg  Config
	conn *pgconn.PgConn
	out  chan *Tx

	stop     context.CancelFunc
	stopCtx  context.Context
	finished chan struct{}
	err      error // set before finished closes

	mu        sync.Mutex
	pending   []ackEntry // handed-out transactions not yet confirmed, in commit order
	acked     int        // entries of pending acknowledged
	confirmed LSN

	openBytes int // message bytes of the open transaction not yet delivered

	createdSlot, createdPublication bool // by prepare
	version                         int  // server_version_num, read by prepare
	forSetup                        bool // Setup, which creates a missing slot whatever EstablishedSince says
}

// Open connects, checks the server and the slot, creates the publication
// and the slot when missing, and starts streaming from the slot's confirmed
// position. It returns a *[WALLevelError], *[SlotInUseError],
// *[SlotLostError], *[PrivilegeError], *[SettingsMismatchError] or
// *[SlotUnusableError] when those are the cause.
func Open(ctx context.Context, cfg Config) (*Stream, error) {
	s, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	start, err := s.setup(ctx)
	if err != nil {
		s.conn.Close(context.Background())
		return nil, err
	}
	s.confirmed = start
	// The stream outlives Open's ctx, which only bounds opening; Close ends it.
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	go s.run() //nolint:gosec // G118: the stream outlives Open's ctx (see above)
	return s, nil
}

// Prepared says what [Setup] found and did.
type Prepared struct {
	// Slot and Publication are the names set up.
	Slot, Publication string
	// CreatedSlot and CreatedPublication say whether Setup created them
	// (false: they existed).
	CreatedSlot, CreatedPublication bool
	// Confirmed is the slot's confirmed position.
	Confirmed LSN
}

// Setup does what [Open] does before streaming: it checks wal_level and
// the slot, and creates the publication and the permanent slot when they
// are missing, so writers can emit before a relay first runs. It returns
// the same typed errors as Open.
func Setup(ctx context.Context, cfg Config) (Prepared, error) {
	s, err := connect(ctx, cfg)
	if err != nil {
		return Prepared{}, err
	}
	defer s.conn.Close(context.Background())
	s.forSetup = true
	slot, err := s.prepare(ctx)
	if err != nil {
		return Prepared{}, err
	}
	return Prepared{Slot: s.cfg.Slot, Publication: s.cfg.Publication, CreatedSlot: s.createdSlot,
		CreatedPublication: s.createdPublication, Confirmed: slot.confirmed}, nil
}

// connect opens the replication connection of cfg.
func connect(ctx context.Context, cfg Config) (*Stream, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var pcfg *pgconn.Config
	if cfg.ConnConfig != nil {
		pcfg = cfg.ConnConfig.Copy()
		if pcfg.RuntimeParams == nil {
			pcfg.RuntimeParams = map[string]string{}
		}
	} else {
		var err error
		if pcfg, err = pgconn.ParseConfig(cfg.ConnString); err != nil {
			return nil, fmt.Errorf("relay: parse ConnString: %w", err)
		}
	}
	pcfg.RuntimeParams["replication"] = "database"
	pcfg.RuntimeParams["wal_sender_timeout"] = strconv.FormatInt(cfg.SenderTimeout.Milliseconds(), 10)
	if pcfg.RuntimeParams["application_name"] == "" {
		pcfg.RuntimeParams["application_name"] = "outboxkit-walstream"
	}
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		if sqlstate(err) == "42501" {
			return nil, &PrivilegeError{Missing: "the REPLICATION role attribute", Err: err}
		}
		return nil, fmt.Errorf("relay: connect: %w", err)
	}
	return &Stream{cfg: cfg, conn: conn, out: make(chan *Tx, cfg.Buffer), finished: make(chan struct{})}, nil
}

// setup checks the server, creates what is missing and starts
// replication; it returns the slot's confirmed position.
func (s *Stream) setup(ctx context.Context) (LSN, error) {
	slot, err := s.prepare(ctx)
	if err != nil {
		return 0, err
	}
	err = pglogrepl.StartReplication(ctx, s.conn, s.cfg.Slot, pglogrepl.LSN(slot.confirmed), pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '2'", "publication_names '" + s.cfg.Publication + "'", "messages 'true'"},
	})
	switch sqlstate(err) {
	case "":
		if err != nil {
			return 0, fmt.Errorf("relay: start replication: %w", err)
		}
	case "55006":
		return 0, &SlotInUseError{Slot: s.cfg.Slot, Err: err}
	case "55000":
		// The slot was invalidated between the read above and the start.
		return 0, &SlotLostError{Slot: s.cfg.Slot}
	default:
		return 0, fmt.Errorf("relay: start replication: %w", err)
	}
	s.cfg.Logger.InfoContext(ctx, "streaming", "slot", s.cfg.Slot, "from", slot.confirmed.String())
	return slot.confirmed, nil
}

// prepare checks the server, creates the publication and the slot when
// missing and returns the slot's row.
func (s *Stream) prepare(ctx context.Context) (*slotRow, error) {
	rows, err := s.query(ctx, "SHOW wal_level")
	if err != nil {
		return nil, fmt.Errorf("relay: read wal_level: %w", err)
	}
	if len(rows) != 1 || rows[0][0] != "logical" {
		level := ""
		if len(rows) == 1 {
			level = rows[0][0]
		}
		return nil, &WALLevelError{Level: level}
	}

	if rows, err = s.query(ctx, "SHOW server_version_num"); err != nil || len(rows) != 1 {
		return nil, fmt.Errorf("relay: read server_version_num: %v", err)
	}
	if s.version, err = strconv.Atoi(rows[0][0]); err != nil {
		return nil, fmt.Errorf("relay: server_version_num %q: %w", rows[0][0], err)
	}
	if err := s.checkStandbySlots(ctx); err != nil {
		return nil, err
	}

	// publication_name came with migration 00010; before it, writers
	// did not check the publication.
	rows, err = s.query(ctx, "SELECT slot_name, publication_name FROM outbox_wal_settings")
	if sqlstate(err) == "42703" {
		rows, err = s.query(ctx, "SELECT slot_name, '"+s.cfg.Publication+"' FROM outbox_wal_settings")
	}
	if err != nil {
		return nil, fmt.Errorf("relay: read outbox_wal_settings (apply the migrations first): %w", err)
	}
	if len(rows) != 1 {
		return nil, fmt.Errorf("relay: outbox_wal_settings has %d rows, want 1", len(rows))
	}
	switch configured := rows[0][0]; {
	case s.cfg.Slot == "":
		if !nameRE.MatchString(configured) {
			return nil, fmt.Errorf("relay: outbox_wal_settings names slot %q; use 1 to 63 lower-case letters, digits or underscores", configured)
		}
		s.cfg.Slot = configured
	case s.cfg.Slot != configured:
		return nil, &SettingsMismatchError{Setting: "slot", Configured: s.cfg.Slot, Named: configured}
	}
	if named := rows[0][1]; named != s.cfg.Publication {
		return nil, &SettingsMismatchError{Setting: "publication", Configured: s.cfg.Publication, Named: named}
	}

	rows, err = s.query(ctx, "SELECT 1 FROM pg_publication WHERE pubname = '"+s.cfg.Publication+"'")
	if err != nil {
		return nil, fmt.Errorf("relay: read publications: %w", err)
	}
	if len(rows) == 0 {
		// Empty: pgoutput sends logical decoding messages whatever the
		// publication holds, and no table's changes are wanted.
		_, err := s.query(ctx, "CREATE PUBLICATION "+s.cfg.Publication)
		switch code := sqlstate(err); {
		case err == nil:
			s.createdPublication = true
			s.cfg.Logger.InfoContext(ctx, "created publication", "publication", s.cfg.Publication)
		case code == "42710": // another instance created it meanwhile
		case code == "42501":
			return nil, &PrivilegeError{Missing: "CREATE on the database (to create publication " + s.cfg.Publication + ")", Err: err}
		default:
			return nil, fmt.Errorf("relay: create publication %s: %w", s.cfg.Publication, err)
		}
	}

	slot, err := s.readSlot(ctx)
	if err != nil {
		return nil, err
	}
	if slot == nil && s.cfg.EstablishedSince != "" && !s.forSetup {
		return nil, &SlotMissingError{Slot: s.cfg.Slot, Since: s.cfg.EstablishedSince}
	}
	if slot == nil {
		err := s.createSlot(ctx)
		switch code := sqlstate(err); {
		case err == nil:
			s.createdSlot = true
			s.cfg.Logger.InfoContext(ctx, "created replication slot", "slot", s.cfg.Slot)
		case code == "42710":
		case code == "42501":
			return nil, &PrivilegeError{Missing: "the REPLICATION role attribute", Err: err}
		default:
			return nil, fmt.Errorf("relay: create replication slot %s: %w", s.cfg.Slot, err)
		}
		if slot, err = s.readSlot(ctx); err != nil {
			return nil, err
		}
		if slot == nil {
			return nil, fmt.Errorf("relay: replication slot %s vanished right after its creation", s.cfg.Slot)
		}
	}
	// A logical slot that another session is still creating (a relay
	// racing this one, or the slot sync worker after a failover) shows its
	// database before its plugin: wait until the creation completes rather
	// than call the slot unusable. Seen once in make failover-tests.
	for deadline := time.Now().Add(10 * time.Second); slot.plugin == "" && slot.database != "" && time.Now().Before(deadline); {
		if !wait.Sleep(ctx, 50*time.Millisecond) {
			return nil, ctx.Err()
		}
		if slot, err = s.readSlot(ctx); err != nil {
			return nil, err
		}
		if slot == nil {
			return nil, fmt.Errorf("relay: replication slot %s vanished while another session created it", s.cfg.Slot)
		}
	}
	switch {
	case slot.walStatus == "lost":
		return nil, &SlotLostError{Slot: s.cfg.Slot}
	case slot.plugin != "pgoutput" || slot.database != slot.current || slot.temporary:
		return nil, &SlotUnusableError{Slot: s.cfg.Slot, Database: slot.database, Plugin: slot.plugin, Current: slot.current, Temporary: slot.temporary}
	case s.version >= 170000 && !slot.failover:
		// A slot made before 17, or by hand: without failover a standby
		// never synchronizes it, and a failover loses it.
		if _, err := s.query(ctx, "ALTER_REPLICATION_SLOT "+s.cfg.Slot+" (FAILOVER true)"); err != nil {
			s.cfg.Logger.WarnContext(ctx, "replication slot has failover off, so standbys do not keep a copy of it and a failover loses it; enabling it failed: run ALTER_REPLICATION_SLOT on a replication connection",
				"slot", s.cfg.Slot, "error", err)
		} else {
			s.cfg.Logger.InfoContext(ctx, "enabled failover on the replication slot (standbys with sync_replication_slots keep a copy)", "slot", s.cfg.Slot)
		}
	}

	return slot, nil
}

type slotRow struct {
	plugin, database, current, walStatus string
	confirmed                            LSN
	failover                             bool // PostgreSQL 17+
	temporary                            bool
}

// createSlot creates the permanent pgoutput slot, with failover on
// PostgreSQL 17 and later so that standbys with sync_replication_slots keep
// a copy that survives their promotion.
func (s *Stream) createSlot(ctx context.Context) error {
	if s.version >= 170000 {
		_, err := s.query(ctx, "CREATE_REPLICATION_SLOT "+s.cfg.Slot+" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)")
		return err
	}
	_, err := pglogrepl.CreateReplicationSlot(ctx, s.conn, s.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
	return err
}

// checkStandbySlots returns a *StandbySlotMissingError when
// synchronized_standby_slots (PostgreSQL 17+) names a physical slot the
// server lacks.
func (s *Stream) checkStandbySlots(ctx context.Context) error {
	if s.version < 170000 {
		return nil
	}
	rows, err := s.query(ctx, `SELECT n FROM unnest(string_to_array(current_setting('synchronized_standby_slots'), ',')) AS u(n)
		WHERE btrim(n) <> '' AND NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = btrim(u.n) AND slot_type = 'physical')`)
	if err != nil {
		return fmt.Errorf("relay: read synchronized_standby_slots: %w", err)
	}
	if len(rows) > 0 {
		return &StandbySlotMissingError{Slot: strings.TrimSpace(rows[0][0])}
	}
	// A standby that sends no hot_standby_feedback leaves its physical
	// slot without an xmin: its copy of the logical slot never
	// becomes sync-ready, and a failover to it loses the slot.
	rows, err = s.query(ctx, `SELECT slot_name FROM pg_replication_slots
		WHERE slot_type = 'physical' AND active AND xmin IS NULL AND catalog_xmin IS NULL
		  AND slot_name = ANY (SELECT btrim(n) FROM unnest(string_to_array(current_setting('synchronized_standby_slots'), ',')) AS u(n))`)
	if err != nil {
		return fmt.Errorf("relay: read the standbys' slots: %w", err)
	}
	for _, r := range rows {
		s.cfg.Logger.WarnContext(ctx, "the standby streaming from this physical slot sends no hot_standby_feedback, so its copy of the WAL mode slot never becomes usable and a failover to it loses the slot: set hot_standby_feedback = on on that standby",
			"standby_slot", r[0], "slot", s.cfg.Slot)
	}
	return nil
}

// readSlot returns the slot's row, or nil when it does not exist.
func (s *Stream) readSlot(ctx context.Context) (*slotRow, error) {
	failover := "false"
	if s.version >= 170000 {
		failover = "failover"
	}
	rows, err := s.query(ctx, `SELECT coalesce(plugin, ''), coalesce(database, ''), current_database(),
		coalesce(wal_status, ''), coalesce(confirmed_flush_lsn, '0/0'), `+failover+`, temporary
		FROM pg_replication_slots WHERE slot_name = '`+s.cfg.Slot+"'")
	if err != nil {
		return nil, fmt.Errorf("relay: read replication slot %s: %w", s.cfg.Slot, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	r := rows[0]
	lsn, err := pglogrepl.ParseLSN(r[4])
	if err != nil {
		return nil, fmt.Errorf("relay: replication slot %s: %w", s.cfg.Slot, err)
	}
	return &slotRow{plugin: r[0], database: r[1], current: r[2], walStatus: r[3], confirmed: LSN(lsn), failover: r[5] == "t", temporary: r[6] == "t"}, nil
}

// query runs sql with the simple protocol (a walsender accepts no other)
// and returns the rows of its last result as text.
func (s *Stream) query(ctx context.Context, sql string) ([][]string, error) {
	results, err := s.conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return nil, nil
	}
	var out [][]string
	for _, row := range results[len(results)-1].Rows {
		r := make([]string, len(row))
		for i, v := range row {
			r[i] = string(v)
		}
		out = append(out, r)
	}
	return out, nil
}

func sqlstate(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// Next returns the next committed transaction, in commit order. It returns
// the error that ended the stream (ErrClosed after Close), or ctx's error.
// A transaction already received is returned even when ctx is done, so a
// done ctx makes Next a non-blocking poll.
func (s *Stream) Next(ctx context.Context) (*Tx, error) {
	select {
	case tx, ok := <-s.out:
		if ok {
			return tx, nil
		}
		<-s.finished
		return nil, s.err
	default:
	}
	select {
	case tx, ok := <-s.out:
		if ok {
			return tx, nil
		}
		<-s.finished
		return nil, s.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Ready returns the channel Next receives from, for a caller that waits on
// it together with other channels: a transaction received from it is the
// one Next would have returned. Once it is closed the stream has ended,
// and Next returns why.
func (s *Stream) Ready() <-chan *Tx { return s.out }

// Ack records that every event of the transaction ending at end was
// published. The server is told at the next status update, as far as the
// longest prefix of acknowledged transactions reaches. Acknowledging a
// position that is not a delivered transaction's EndLSN does nothing.
func (s *Stream) Ack(end LSN) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// pending is in commit order, so in order of end positions.
	if i, ok := slices.BinarySearchFunc(s.pending, end, func(e ackEntry, end LSN) int { return cmp.Compare(e.end, end) }); ok && !s.pending[i].acked {
		s.pending[i].acked = true
		s.acked++
	}
	s.advanceLocked()
}

// advanceLocked moves confirmed over the acknowledged prefix of pending.
func (s *Stream) advanceLocked() {
	n := 0
	for n < len(s.pending) && s.pending[n].acked {
		s.confirmed = s.pending[n].end
		n++
	}
	s.acked -= n
	// Reslicing keeps this O(1) per transaction; append reallocates the
	// array, dropping the confirmed front, when it fills.
	s.pending = s.pending[n:]
	if s.acked >= collapseMin && 2*s.acked > len(s.pending) {
		s.collapseLocked()
	}
}

// collapseLocked keeps only the last entry of each run of acknowledged
// entries in pending: behind a transaction that stays unacknowledged (an
// event held back), the confirmed position needs no more, since it moves
// over the whole run at once when that transaction is acknowledged. So
// pending holds at most one acknowledged entry per unacknowledged one,
// whatever number of transactions are published behind a stuck one.
// Entries are moved about once each, as runs grow to half of pending.
func (s *Stream) collapseLocked() {
	out := s.pending[:0]
	for i, e := range s.pending {
		if e.acked && i+1 < len(s.pending) && s.pending[i+1].acked {
			continue
		}
		out = append(out, e)
	}
	s.acked = 0
	for _, e := range out {
		if e.acked {
			s.acked++
		}
	}
	s.pending = out
}

// Confirmed returns the position the stream confirms to the server: the
// end of the last transaction of the acknowledged prefix, or a later
// keepalive position when nothing was pending.
func (s *Stream) Confirmed() LSN {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.confirmed
}

// Close stops streaming, sends the confirmed position to the server one
// last time and closes the connection. It returns the error that had
// ended the stream, if any.
func (s *Stream) Close() error {
	s.stop()
	<-s.finished
	if errors.Is(s.err, ErrClosed) {
		return nil
	}
	return s.err
}

// run owns the connection: it receives, decodes, hands transactions to
// Next and sends status updates, until Close or an error.
func (s *Stream) run() {
	err := s.loop()
	if s.stopCtx.Err() != nil {
		// Closing: the last confirmed position is worth sending, so a
		// restart redelivers as little as possible.
		if serr := s.sendStatus(false); serr != nil && err == nil {
			err = serr
		}
		if err == nil || errors.Is(err, context.Canceled) {
			err = ErrClosed
		}
	} else {
		s.cfg.Logger.Error("stream ended", "slot", s.cfg.Slot, "error", err)
	}
	s.err = err
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s.conn.Close(ctx)
	cancel()
	close(s.out)
	close(s.finished)
}

func (s *Stream) loop() error {
	// Reads wait until the next status update is due, by the connection's
	// read deadline: a context per message would cost more than decoding
	// it. Close moves the deadline to now.
	netConn := s.conn.Conn()
	stopRead := context.AfterFunc(s.stopCtx, func() { _ = netConn.SetReadDeadline(time.Now()) })
	defer stopRead()
	nextStatus := time.Now().Add(s.cfg.StatusInterval)
	var deadline time.Time
	var open *Tx   // between BEGIN and COMMIT
	split := false // pieces of open were delivered
	for {
		if now := time.Now(); !now.Before(nextStatus) {
			if err := s.sendStatus(false); err != nil {
				return err
			}
			nextStatus = now.Add(s.cfg.StatusInterval)
		}
		if !deadline.Equal(nextStatus) && s.stopCtx.Err() == nil {
			if err := netConn.SetReadDeadline(nextStatus); err != nil {
				return fmt.Errorf("relay: set read deadline: %w", err)
			}
			deadline = nextStatus
			if s.stopCtx.Err() != nil {
				// Close came between the check and the call.
				_ = netConn.SetReadDeadline(time.Now())
			}
		}
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if s.stopCtx.Err() != nil {
				return nil
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("relay: receive: %w", err)
		}
		var data []byte
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			data = msg.Data
		case *pgproto3.ErrorResponse:
			err := pgconn.ErrorResponseToPgError(msg)
			if err.Code == "55000" {
				return &SlotLostError{Slot: s.cfg.Slot}
			}
			if err.Code == "42704" && strings.Contains(err.Message, "publication") {
				return &PublicationMissingError{Slot: s.cfg.Slot, Publication: s.cfg.Publication, Err: err}
			}
			return fmt.Errorf("relay: server: %w", err)
		case *pgproto3.CopyDone:
			return errors.New("relay: the server ended the stream")
		default:
			continue
		}
		if len(data) == 0 {
			continue
		}
		switch data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
			if err != nil {
				return fmt.Errorf("relay: keepalive: %w", err)
			}
			s.mu.Lock()
			// Everything before the keepalive was received: with no
			// transaction open or unacknowledged, nothing up to its
			// position remains to deliver.
			if open == nil && len(s.pending) == 0 && LSN(ka.ServerWALEnd) > s.confirmed {
				s.confirmed = LSN(ka.ServerWALEnd)
			}
			s.mu.Unlock()
			if ka.ReplyRequested {
				if err := s.sendStatus(false); err != nil {
					return err
				}
				nextStatus = time.Now().Add(s.cfg.StatusInterval)
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(data[1:])
			if err != nil {
				return fmt.Errorf("relay: xlog data: %w", err)
			}
			tx, err := s.decode(open, xld.WALData)
			if err != nil {
				return err
			}
			open = tx
		}
		switch {
		case open != nil && open.EndLSN != 0:
			done := open
			open = nil
			if err := s.deliver(done, split, &nextStatus); err != nil {
				return err
			}
			split = false
		case open != nil && s.openBytes >= s.cfg.PieceBytes:
			// Hand out what is decoded so far, and go on decoding the
			// transaction into a new piece.
			piece := open
			piece.More = true
			open = &Tx{Xid: piece.Xid, CommitTime: piece.CommitTime}
			if err := s.deliver(piece, split, &nextStatus); err != nil {
				return err
			}
			split = true
		}
	}
}

// decode applies one pgoutput message to the open transaction and returns
// it; a committed transaction comes back with its EndLSN set.
func (s *Stream) decode(open *Tx, walData []byte) (*Tx, error) {
	m, err := pglogrepl.ParseV2(walData, false)
	if err != nil {
		return nil, fmt.Errorf("relay: decode pgoutput message: %w", err)
	}
	switch m := m.(type) {
	case *pglogrepl.BeginMessage:
		if open != nil {
			return nil, fmt.Errorf("relay: BEGIN of xid %d inside xid %d", m.Xid, open.Xid)
		}
		s.openBytes = 0
		return &Tx{Xid: m.Xid, CommitTime: m.CommitTime}, nil
	case *pglogrepl.CommitMessage:
		if open == nil {
			return nil, errors.New("relay: COMMIT without BEGIN")
		}
		open.CommitLSN, open.EndLSN, open.CommitTime = LSN(m.CommitLSN), LSN(m.TransactionEndLSN), m.CommitTime
		return open, nil
	case *pglogrepl.LogicalDecodingMessageV2:
		if m.Prefix != walformat.Prefix {
			return open, nil
		}
		if !m.Transactional || open == nil {
			// Our writers emit transactional messages only; a
			// non-transactional one has no commit to confirm after.
			s.cfg.Logger.Warn("ignored a non-transactional message with the outbox prefix", "lsn", LSN(m.LSN).String())
			return open, nil
		}
		ev := Event{LSN: LSN(m.LSN)}
		// Decode copies: m.Content aliases the connection's buffer.
		msg, err := walformat.Decode(m.Content)
		if err != nil {
			ev.Err, ev.Raw = err, append([]byte(nil), m.Content...)
		} else {
			ev.Message = msg
		}
		open.Events = append(open.Events, ev)
		// Decoded, an event costs about its content and a few small
		// allocations.
		s.openBytes += len(m.Content) + 128
		return open, nil
	case *pglogrepl.StreamStartMessageV2, *pglogrepl.StreamStopMessageV2, *pglogrepl.StreamCommitMessageV2, *pglogrepl.StreamAbortMessageV2:
		return nil, fmt.Errorf("relay: unexpected streamed transaction message %T (streaming was not requested)", m)
	}
	return open, nil
}

// deliver records tx as pending (acknowledged already when it has no
// events) and hands it to Next, sending status updates while it waits so
// the server does not take a slow consumer for a dead one. A piece of a
// transaction ([Tx.More]) is recorded once, when split is false (its
// first piece); the last piece sets the transaction's end.
func (s *Stream) deliver(tx *Tx, split bool, nextStatus *time.Time) error {
	s.openBytes = 0
	s.mu.Lock()
	switch {
	case split && !tx.More:
		s.pending[len(s.pending)-1].end = tx.EndLSN
	case split:
	case tx.More:
		s.pending = append(s.pending, ackEntry{end: openEnd})
	default:
		e := ackEntry{end: tx.EndLSN, acked: len(tx.Events) == 0}
		if e.acked {
			s.acked++
		}
		s.pending = append(s.pending, e)
		s.advanceLocked()
	}
	s.mu.Unlock()
	if len(tx.Events) == 0 && !split {
		return nil
	}
	for {
		wait := time.Until(*nextStatus)
		if wait <= 0 {
			if err := s.sendStatus(false); err != nil {
				return err
			}
			*nextStatus = time.Now().Add(s.cfg.StatusInterval)
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case s.out <- tx:
			timer.Stop()
			return nil
		case <-timer.C:
		case <-s.stopCtx.Done():
			timer.Stop()
			return nil
		}
	}
}

// sendStatus tells the server the confirmed position, as write, flush and
// apply alike: pglogrepl would put the write position in a zero flush
// position, and the server keeps the slot's WAL from the flush position on.
func (s *Stream) sendStatus(reply bool) error {
	pos := pglogrepl.LSN(s.Confirmed())
	if pos == 0 {
		return nil
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos, ReplyRequested: reply,
	})
	if err != nil {
		return fmt.Errorf("relay: send status: %w", err)
	}
	return nil
}
