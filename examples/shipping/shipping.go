// Package shipping is an example consumer written the way a user of
// outboxkit would: it applies order events to its own shipments table with
// the inbox, so each event's effects happen exactly once although Kafka may
// deliver it several times. It also reacts to each event with one event of
// its own (ShipmentRequested, ShipmentScheduled, ShipmentCancelled), written
// with outbox.Write in that same transaction: consume, transform and produce
// commit together, so a redelivery neither repeats the effects nor emits the
// follow-up twice.
package shipping

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/outbox"
)

//go:embed schema.sql
var schema string

// Migrate creates the service's own tables. The inbox tables come from
// outboxkit's migrations.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("shipping: migrate: %w", err)
	}
	return nil
}

// orderEvent is the part of an order event shipping needs. It is declared
// here, not imported: services share a wire format, not code.
type orderEvent struct {
	OrderID string `json:"order_id"`
	Version int    `json:"version"`
}

// Topic is where shipping's follow-up events go.
const Topic = "shipments"

// Follow-up event types: one per applied order event.
const (
	EventRequested = "ShipmentRequested" // after OrderPlaced
	EventScheduled = "ShipmentScheduled" // after OrderPaid
	EventCancelled = "ShipmentCancelled" // after OrderCancelled
)

// HeaderCausationID is the header of a follow-up event that carries the ID
// of the order event it answers, so a reader can tell which event caused it.
const HeaderCausationID = "causation_id"

// Event is the JSON payload of every follow-up event.
type Event struct {
	OrderID string `json:"order_id"`
	// OrderVersion is the version of the order event this one answers.
	OrderVersion int    `json:"order_version"`
	Status       string `json:"status"`
	// CausationID is the ID of that order event, as in the causation_id
	// header.
	CausationID string `json:"causation_id"`
}

// reaction is what shipping does for one order event type.
type reaction struct {
	status   string // the shipment's new status
	followUp string // the follow-up event type
}

var reactions = map[string]reaction{
	"OrderPlaced":    {"pending", EventRequested},
	"OrderPaid":      {"ready_to_ship", EventScheduled},
	"OrderCancelled": {"cancelled", EventCancelled},
}

// Handler returns the inbox handler: inside the inbox's transaction it
// applies one order event to shipments, appends it to shipping_log, and
// writes the follow-up event to topic (Topic when empty) with outbox.Write.
// The inbox claim, the effects and the outbox row commit together or not at
// all. consumer names the instance in shipping_log, for diagnostics.
func Handler(consumer, topic string) inbox.Handler {
	if topic == "" {
		topic = Topic
	}
	return func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		eventType, _ := msg.Header(outbox.HeaderEventType)
		react, ok := reactions[eventType]
		if !ok {
			return nil // not an event shipping cares about
		}
		var ev orderEvent
		if err := json.Unmarshal(msg.Value, &ev); err != nil {
			return fmt.Errorf("shipping: decode %s: %w", eventType, err)
		}
		if ev.OrderID == "" || ev.Version < 1 {
			return errors.New("shipping: event without order_id or version")
		}
		if _, err := tx.Exec(ctx, `INSERT INTO shipments (order_id, status, version) VALUES ($1, $2, $3)
ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, version = excluded.version, updated_at = now()`,
			ev.OrderID, react.status, ev.Version); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO shipping_log (order_id, version, event_id, event_type, consumer) VALUES ($1, $2, $3, $4, $5)`,
			ev.OrderID, ev.Version, msg.ID, eventType, consumer); err != nil {
			return err
		}
		// The follow-up goes through the outbox in this transaction rather
		// than straight to Kafka: were it produced directly, a crash
		// between the produce and the commit would emit it and then apply
		// the event again on redelivery, emitting it twice.
		out, err := outbox.NewJSONEvent(topic, "shipment", ev.OrderID, react.followUp, Event{
			OrderID: ev.OrderID, OrderVersion: ev.Version, Status: react.status, CausationID: msg.ID,
		})
		if err != nil {
			return err
		}
		out.Headers[HeaderCausationID] = msg.ID
		return outbox.Write(ctx, tx, out)
	}
}

// Report is what the verifier found in shipping_log against the versions
// the orders service committed.
type Report struct {
	// Expected counts events committed by the orders service.
	Expected int
	// Applied counts distinct events applied.
	Applied int
	// Lost counts committed events never applied.
	Lost int
	// Duplicates counts events applied more than once (extra applications).
	Duplicates int
	// OutOfOrder counts events applied after a later event of their order.
	OutOfOrder int
	// Unexpected counts applied events the orders service does not know.
	Unexpected int
}

// OK reports whether nothing was lost, duplicated or reordered.
func (r Report) OK() bool {
	return r.Lost == 0 && r.Duplicates == 0 && r.OutOfOrder == 0 && r.Unexpected == 0
}

// String gives the counts on one line.
func (r Report) String() string {
	return fmt.Sprintf("expected %d, applied %d, lost %d, applied twice %d, out of order %d, unexpected %d",
		r.Expected, r.Applied, r.Lost, r.Duplicates, r.OutOfOrder, r.Unexpected)
}

// Verify compares shipping_log with versions (order ID -> last committed
// version, from the orders service): every version 1..n of every order must
// be applied exactly once, in increasing order.
func Verify(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, versions map[string]int) (Report, error) {
	var rep Report
	for _, v := range versions {
		rep.Expected += v
	}
	rows, err := db.Query(ctx, `SELECT order_id, version FROM shipping_log ORDER BY order_id, id`)
	if err != nil {
		return rep, fmt.Errorf("shipping: verify: %w", err)
	}
	type seen struct {
		count map[int]int
		max   int
	}
	per := map[string]*seen{}
	var orderID string
	var version int
	_, err = pgx.ForEachRow(rows, []any{&orderID, &version}, func() error {
		s := per[orderID]
		if s == nil {
			s = &seen{count: map[int]int{}}
			per[orderID] = s
		}
		s.count[version]++
		if s.count[version] > 1 {
			rep.Duplicates++
			return nil
		}
		if version < s.max {
			rep.OutOfOrder++
		}
		s.max = max(s.max, version)
		if version > versions[orderID] {
			rep.Unexpected++
			return nil
		}
		rep.Applied++
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("shipping: verify: %w", err)
	}
	for id, n := range versions {
		for v := 1; v <= n; v++ {
			if s := per[id]; s == nil || s.count[v] == 0 {
				rep.Lost++
			}
		}
	}
	return rep, nil
}

// FollowUp identifies one follow-up event as a reader found it, in the
// outbox table or on Kafka.
type FollowUp struct {
	// ID is the event's ID (the outbox row's id, Kafka's id header).
	ID string
	// CausationID is the order event it answers (the causation_id header).
	CausationID string
}

// FollowUpReport is what VerifyFollowUps found.
type FollowUpReport struct {
	// Applied counts distinct order events in shipping_log.
	Applied int
	// Records counts the follow-up records given, copies included.
	Records int
	// FollowUps counts distinct follow-up events (by ID).
	FollowUps int
	// Missing counts applied events without a follow-up.
	Missing int
	// Extra counts follow-up events beyond the first for one applied event:
	// distinct events, so the effect of a handler that ran twice, not a
	// relay's duplicate record.
	Extra int
	// Orphans counts follow-up events whose causing event was never applied.
	Orphans int
}

// OK reports whether every applied event has exactly one follow-up and
// every follow-up answers an applied event.
func (r FollowUpReport) OK() bool {
	return r.Missing == 0 && r.Extra == 0 && r.Orphans == 0 && r.FollowUps == r.Applied
}

// String gives the counts on one line.
func (r FollowUpReport) String() string {
	return fmt.Sprintf("applied %d, follow-up records %d, distinct follow-ups %d, missing %d, extra %d, orphans %d",
		r.Applied, r.Records, r.FollowUps, r.Missing, r.Extra, r.Orphans)
}

// VerifyFollowUps checks followUps against shipping_log: every applied
// order event must have exactly one follow-up event, counted by distinct
// follow-up ID (the relay may publish one event twice; the consumers of
// shipments drop such copies with their inbox), and no follow-up may answer
// an event that was not applied.
func VerifyFollowUps(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, followUps []FollowUp) (FollowUpReport, error) {
	rep := FollowUpReport{Records: len(followUps)}
	rows, err := db.Query(ctx, `SELECT DISTINCT event_id FROM shipping_log`)
	if err != nil {
		return rep, fmt.Errorf("shipping: verify follow-ups: %w", err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return rep, fmt.Errorf("shipping: verify follow-ups: %w", err)
	}
	rep.Applied = len(applied)
	byCause := map[string]map[string]bool{} // causation ID -> follow-up IDs
	ids := map[string]bool{}
	for _, f := range followUps {
		if byCause[f.CausationID] == nil {
			byCause[f.CausationID] = map[string]bool{}
		}
		byCause[f.CausationID][f.ID] = true
		ids[f.ID] = true
	}
	rep.FollowUps = len(ids)
	for _, id := range applied {
		n := len(byCause[id])
		if n == 0 {
			rep.Missing++
		}
		rep.Extra += max(n-1, 0)
		delete(byCause, id)
	}
	for _, fs := range byCause {
		rep.Orphans += len(fs)
	}
	return rep, nil
}
