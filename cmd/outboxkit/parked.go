package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/outboxkit/outboxkit/relay"
)

func init() {
	register(&command{
		name:    "parked",
		summary: "list parked aggregates, retry them (one, a topic's, all) or skip one (list|retry|skip)",
		run: func(ctx context.Context, e *env, args []string) error {
			return subcommands(ctx, e, "outboxkit parked",
				"An aggregate is parked when Kafka keeps refusing its next event for good (missing topic,\n"+
					"record too large). Its events wait in the outbox, in order, while other aggregates flow.\n"+
					"Fix the cause, then retry it; or skip the failing event to let the later ones go.",
				args, map[string]func(context.Context, *env, []string) error{
					"list": parkedList, "retry": parkedRetry, "skip": parkedSkip,
				}, []string{"list", "retry", "skip"})
		},
	})
}

// parkedJSON is one entry of `parked list --json`.
type parkedJSON struct {
	AggregateType string    `json:"aggregate_type"`
	AggregateID   string    `json:"aggregate_id"`
	Seq           int64     `json:"seq"`
	EventID       string    `json:"event_id"`
	Topic         string    `json:"topic"`
	Error         string    `json:"error"`
	Attempts      int       `json:"attempts"`
	ParkedAt      time.Time `json:"parked_at"`
	Waiting       int64     `json:"waiting"`
}

func parkedList(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit parked list"
	fs := newFlagSet(e, cmd, "[--json]", "List parked aggregates, oldest first, with the event that failed and how many events wait behind it.")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	conn, err := connect(ctx, e, cmd)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	parked, err := relay.ListParked(ctx, conn)
	if err != nil {
		return missingTables(err)
	}
	out := make([]parkedJSON, len(parked))
	for i, p := range parked {
		out[i] = parkedJSON{
			AggregateType: p.AggregateType, AggregateID: p.AggregateID, Seq: p.Seq, EventID: p.EventID.String(),
			Topic: p.Topic, Error: p.Error, Attempts: p.Attempts, ParkedAt: p.ParkedAt.UTC(), Waiting: p.Waiting,
		}
	}
	if *asJSON {
		return writeJSON(e.stdout, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(e.stdout, "no parked aggregates")
		return nil
	}
	tw := newTable(e.stdout)
	fmt.Fprintln(tw, "AGGREGATE TYPE\tAGGREGATE ID\tWAITING\tATTEMPTS\tPARKED AT\tTOPIC\tEVENT ID\tERROR")
	for _, p := range out {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n",
			cell(p.AggregateType, 40), cell(p.AggregateID, 40), p.Waiting, p.Attempts, p.ParkedAt.Format(time.RFC3339),
			cell(p.Topic, 40), p.EventID, cell(p.Error, 80))
	}
	return tw.Flush()
}

// aggregateArgs parses "<aggregate_type> <aggregate_id>".
func aggregateArgs(fs *flagSet, args []string) (typ, id string, err error) {
	pos, err := parseFlags(fs, args, false)
	if err != nil {
		return "", "", err
	}
	if len(pos) != 2 {
		return "", "", usagef(fs.Name(), "want 2 arguments, <aggregate_type> <aggregate_id>, got %d", len(pos))
	}
	return pos[0], pos[1], nil
}

func parkedRetry(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit parked retry"
	fs := newFlagSet(e, cmd, "<aggregate_type> <aggregate_id> | --topic <topic> | --all",
		"Release a parked aggregate: the relay publishes its events again, starting with the one that failed.\n"+
			"--topic releases every aggregate parked on an event for that topic, --all every parked aggregate.\n"+
			"Fix the cause first (create the topic, raise the broker's size limit), or they park again.")
	topic := fs.String("topic", "", "release every aggregate whose failed event is for `topic`")
	all := fs.Bool("all", false, "release every parked aggregate")
	pos, err := parseFlags(fs, args, false)
	if err != nil {
		return err
	}
	topicSet := false
	fs.Visit(func(f *flag.Flag) { topicSet = topicSet || f.Name == "topic" })
	switch {
	case topicSet && *all:
		return usagef(cmd, "--topic and --all do not go together")
	case topicSet && *topic == "":
		return usagef(cmd, "--topic needs a topic name")
	case (topicSet || *all) && len(pos) > 0:
		return usagef(cmd, "want no arguments with --topic or --all, got %d", len(pos))
	case !topicSet && !*all && len(pos) != 2:
		return usagef(cmd, "want 2 arguments, <aggregate_type> <aggregate_id>, got %d (or --topic <topic>, or --all)", len(pos))
	}
	conn, err := connect(ctx, e, cmd)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	switch {
	case *all:
		n, err := relay.RetryAllParked(ctx, conn)
		if err != nil {
			return missingTables(err)
		}
		if n == 0 {
			fmt.Fprintln(e.stdout, "no parked aggregates: nothing to release")
			return nil
		}
		fmt.Fprintf(e.stdout, "released %d parked %s: the relay publishes their events again, starting with the ones that failed\n", n, plural(n, "aggregate"))
	case topicSet:
		n, err := relay.RetryParkedTopic(ctx, conn, *topic)
		if err != nil {
			return missingTables(err)
		}
		if n == 0 {
			fmt.Fprintf(e.stdout, "no aggregate parked on topic %s: nothing to release\n", printable(*topic))
			return nil
		}
		fmt.Fprintf(e.stdout, "released %d %s parked on topic %s: the relay publishes their events again, starting with the ones that failed\n",
			n, plural(n, "aggregate"), printable(*topic))
	default:
		typ, id := pos[0], pos[1]
		if err := relay.RetryParked(ctx, conn, typ, id); err != nil {
			if errors.Is(err, relay.ErrNotParked) {
				return fmt.Errorf("parked retry: aggregate %s/%s is not parked", typ, id)
			}
			return missingTables(err)
		}
		fmt.Fprintf(e.stdout, "released %s/%s: the relay publishes its events again, starting with the one that failed\n", printable(typ), printable(id))
	}
	return nil
}

// plural returns word, with an s unless n is 1.
func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func parkedSkip(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit parked skip"
	fs := newFlagSet(e, cmd, "--yes <aggregate_type> <aggregate_id>",
		"Delete a parked aggregate's failed event WITHOUT publishing it, and release the aggregate so its\n"+
			"later events flow. The event is gone for good: use it only for an event that can never be\n"+
			"delivered and that consumers can do without. Asks for --yes.")
	yes := fs.Bool("yes", false, "confirm that the failed event is to be deleted")
	typ, id, err := aggregateArgs(fs, args)
	if err != nil {
		return err
	}
	if !*yes {
		return usagef(cmd, "this deletes the failed event of %s/%s without publishing it; add --yes to confirm", typ, id)
	}
	conn, err := connect(ctx, e, cmd)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	eventID, err := relay.SkipParked(ctx, conn, typ, id)
	if err != nil {
		if errors.Is(err, relay.ErrNotParked) {
			return fmt.Errorf("parked skip: aggregate %s/%s is not parked", typ, id)
		}
		return missingTables(err)
	}
	fmt.Fprintf(e.stdout, "deleted event %s of %s/%s without publishing it; its later events flow again\n", eventID, printable(typ), printable(id))
	return nil
}
