package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/internal/kafkasettings"
	"github.com/outboxkit/outboxkit/internal/reach"
)

func init() {
	register(&command{
		name:    "deadletters",
		summary: "list inbox dead letters, or re-drive them to their topic (list|redrive)",
		run: func(ctx context.Context, e *env, args []string) error {
			return subcommands(ctx, e, "outboxkit deadletters",
				"A dead letter is a message whose inbox handler failed for good. Re-driving publishes it again to\n"+
					"its original topic so its consumer group applies it once more.",
				args, map[string]func(context.Context, *env, []string) error{
					"list": deadLettersList, "redrive": deadLettersRedrive,
				}, []string{"list", "redrive"})
		},
	})
}

// deadLetterJSON is one entry of `deadletters list --json`. The value is
// left out (it may hold personal data); its size says whether it is there.
type deadLetterJSON struct {
	ID         int64        `json:"id"`
	Group      string       `json:"group"`
	MessageID  string       `json:"message_id"`
	Topic      string       `json:"topic"`
	Partition  int          `json:"partition"`
	Offset     int64        `json:"offset"`
	Key        string       `json:"key"`
	ValueBytes int          `json:"value_bytes"`
	Headers    []headerJSON `json:"headers"`
	Error      string       `json:"error"`
	Attempts   int          `json:"attempts"`
	CreatedAt  time.Time    `json:"created_at"`
}

// headerJSON is one header of a dead letter, in the record's order: its
// value as text when it is valid UTF-8, otherwise base64 in value_base64.
type headerJSON struct {
	Key         string  `json:"key"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 []byte  `json:"value_base64,omitempty"`
}

func headersJSON(hs []inbox.Header) []headerJSON {
	out := make([]headerJSON, len(hs))
	for i, h := range hs {
		out[i].Key = h.Key
		if v := string(h.Value); utf8.ValidString(v) {
			out[i].Value = &v
		} else {
			out[i].ValueBase64 = h.Value
		}
	}
	return out
}

func deadLettersList(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit deadletters list"
	fs := newFlagSet(e, cmd, "[--group GROUP] [--limit N] [--json]", "List pending dead letters (not re-driven), oldest first.")
	group := fs.String("group", "", "only this consumer `GROUP`")
	limit := fs.Int("limit", 100, "show at most `N`")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	if *limit < 1 {
		return usagef(cmd, "--limit must be at least 1, got %d", *limit)
	}
	conn, err := connect(ctx, e, cmd)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	dls, err := inbox.ListDeadLetters(ctx, conn, *group, *limit)
	if err != nil {
		return missingTables(err)
	}
	out := make([]deadLetterJSON, len(dls))
	for i, d := range dls {
		out[i] = deadLetterJSON{
			ID: d.ID, Group: d.Group, MessageID: d.MessageID, Topic: d.Topic, Partition: d.Partition, Offset: d.Offset,
			Key: string(d.Key), ValueBytes: len(d.Value), Headers: headersJSON(d.Headers), Error: d.Error, Attempts: d.Attempts,
			CreatedAt: d.CreatedAt.UTC(),
		}
	}
	if *asJSON {
		return writeJSON(e.stdout, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(e.stdout, "no pending dead letters")
		return nil
	}
	tw := newTable(e.stdout)
	fmt.Fprintln(tw, "ID\tGROUP\tTOPIC\tPARTITION\tOFFSET\tKEY\tATTEMPTS\tCREATED AT\tMESSAGE ID\tERROR")
	for _, d := range out {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%d\t%s\t%s\t%s\n", d.ID, cell(d.Group, 40), cell(d.Topic, 40), d.Partition, d.Offset,
			cell(d.Key, 40), d.Attempts, d.CreatedAt.Format(time.RFC3339), cell(d.MessageID, 40), cell(d.Error, 80))
	}
	return tw.Flush()
}

func deadLettersRedrive(ctx context.Context, e *env, args []string) error {
	const cmd = "outboxkit deadletters redrive"
	fs := newFlagSet(e, cmd, "[--kafka-brokers HOST:PORT,...] <id>...", redriveHelp())
	brokers := fs.String("kafka-brokers", e.getenv("KAFKA_BROKERS"), "comma-separated Kafka `brokers` (default $KAFKA_BROKERS)")
	pos, err := parseFlags(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef(cmd, "want at least one dead-letter id")
	}
	ids := make([]int64, len(pos))
	for i, p := range pos {
		if ids[i], err = strconv.ParseInt(p, 10, 64); err != nil || ids[i] < 1 {
			return usagef(cmd, "dead-letter id %q is not a positive integer", p)
		}
	}
	var addrs []string
	for _, b := range strings.Split(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			addrs = append(addrs, b)
		}
	}
	if len(addrs) == 0 {
		return usagef(cmd, "no Kafka brokers: set --kafka-brokers or KAFKA_BROKERS")
	}
	kc, err := kafkaFromEnv(e.getenv, addrs)
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	pool, err := connectPool(ctx, e, cmd)
	if err != nil {
		return err
	}
	defer pool.Close()
	w, err := inbox.NewRedriveWriter(kc)
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	defer w.Close()

	failed := 0
	for _, id := range ids {
		if err := inbox.Redrive(ctx, pool, w, id); err != nil {
			failed++
			switch {
			case errors.Is(err, inbox.ErrDeadLetterNotFound) || errors.Is(err, inbox.ErrAlreadyRedriven):
				fmt.Fprintf(e.stderr, "dead letter %d: %s\n", id, printable(err.Error()))
			case reach.Unreachable(err):
				fmt.Fprintf(e.stderr, "dead letter %d: %s\n", id, printable(reach.Kafka(err, strings.Join(addrs, ","), "--kafka-brokers or KAFKA_BROKERS").Error()))
			default:
				fmt.Fprintf(e.stderr, "dead letter %d: %s\n", id, printable(missingTables(err).Error()))
			}
			continue
		}
		fmt.Fprintf(e.stdout, "re-drove dead letter %d\n", id)
	}
	if failed > 0 {
		return fmt.Errorf("deadletters redrive: %d of %d dead letters not re-driven", failed, len(ids))
	}
	return nil
}

// kafkaFromEnv reads the Kafka TLS and SASL variables the relay binary uses
// (kafkasettings.Vars) and returns the connection settings for brokers.
// Its errors name the variable at fault.
func kafkaFromEnv(getenv func(string) string, brokers []string) (broker.Config, error) {
	s, err := kafkasettings.FromEnv(getenv)
	if err != nil {
		return broker.Config{}, err
	}
	if s.ClientID == "" {
		s.ClientID = "outboxkit-cli"
	}
	cfg, err := s.Config(brokers)
	if err != nil {
		return broker.Config{}, kafkasettings.NameVariables(err)
	}
	return cfg, nil
}

// redriveHelp is the description of deadletters redrive, which names
// every Kafka TLS and SASL variable it reads.
func redriveHelp() string {
	names := make([]string, len(kafkasettings.Vars))
	for i, v := range kafkasettings.Vars {
		names[i] = v.Name
	}
	return "Publish dead letters again to their original topic (acks=all), so their consumer group applies them\n" +
		wrap("once more. Kafka TLS and SASL come from the relay's variables: "+strings.Join(names, ", ")+".", 100)
}

// wrap breaks text into lines of at most width bytes, between words.
func wrap(text string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(text) {
		switch {
		case i == 0:
		case n+1+len(w) > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}
