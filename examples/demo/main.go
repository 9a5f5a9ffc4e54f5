// Command demo runs outboxkit end to end, as `make demo` does: the orders
// service writes events with outbox.Write in its transactions, relays publish
// them to Kafka, and shipping consumers apply them with the inbox, each
// writing one follow-up event in the same transaction, which the relays
// publish in turn. A live progress line shows what is written, published and
// applied; the run ends with a verification that every order's events were
// applied once, in order, and that the shipments topic holds exactly one
// follow-up event per applied event.
//
// Kafka is the broker named by KAFKA_BROKERS when set, otherwise an
// in-process broker (kfake) started by the demo. PostgreSQL comes from
// DATABASE_URL (default postgres://postgres:postgres@127.0.0.1:5432/postgres);
// the demo works in a database of its own, outboxkit_demo, created afresh.
//
// Exit status: 0 when the verification passes, 1 when it does not or the run
// fails, 2 for bad flags.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/examples/orders"
	"github.com/outboxkit/outboxkit/examples/shipping"
	"github.com/outboxkit/outboxkit/inbox"
	"github.com/outboxkit/outboxkit/migrations"
	"github.com/outboxkit/outboxkit/relay"
)

type options struct {
	duration   time.Duration
	rate       float64
	relays     int
	consumers  int
	partitions int
	drain      time.Duration
	database   string
	verbose    bool
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "how long the orders service writes")
	flag.Float64Var(&o.rate, "rate", 500, "order changes per second")
	flag.IntVar(&o.relays, "relays", 2, "relay instances sharing the outbox")
	flag.IntVar(&o.consumers, "consumers", 2, "shipping consumers in one group")
	flag.IntVar(&o.partitions, "partitions", 6, "partitions of the orders topic")
	flag.DurationVar(&o.drain, "drain-timeout", 60*time.Second, "how long to wait for every event to be applied after writing stops")
	flag.StringVar(&o.database, "database", "outboxkit_demo", "database the demo creates afresh (dropped first if it exists) on DATABASE_URL's server")
	flag.BoolVar(&o.verbose, "v", false, "log what the relays and consumers do")
	flag.Parse()
	if o.duration <= 0 || o.rate < 0 || o.relays < 1 || o.consumers < 1 || o.partitions < 1 {
		fmt.Fprintln(os.Stderr, "demo: -duration, -relays, -consumers and -partitions must be positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (bool, error) {
	start := time.Now()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}

	dbURL, err := freshDatabase(ctx, o.database)
	if err != nil {
		return false, err
	}
	pool, err := pgxpool.New(ctx, dbURL+"&pool_max_conns=32")
	if err != nil {
		return false, err
	}
	defer pool.Close()
	if err := orders.Migrate(ctx, pool); err != nil {
		return false, err
	}
	if err := shipping.Migrate(ctx, pool); err != nil {
		return false, err
	}

	brokers, kind, stopKafka, err := kafkaBrokers()
	if err != nil {
		return false, err
	}
	defer stopKafka()
	// Names unique to the run: a real broker keeps the topics and groups of
	// earlier runs.
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic, shipTopic := "orders-demo-"+runID, "shipments-demo-"+runID
	topicCtx, cancelTopic := context.WithTimeout(ctx, 30*time.Second)
	defer cancelTopic()
	for _, t := range []string{topic, shipTopic} {
		if err := createTopic(topicCtx, brokers, t, o.partitions); err != nil {
			return false, err
		}
	}
	fmt.Printf("demo: PostgreSQL database %s, Kafka %s (%s), topics %s and %s with %d partitions each\n",
		o.database, strings.Join(brokers, ","), kind, topic, shipTopic, o.partitions)
	fmt.Printf("demo: orders service writing up to %.0f changes/s for %s; %d relays; %d shipping consumers\n",
		o.rate, o.duration, o.relays, o.consumers)

	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	var wg sync.WaitGroup
	errs := make(chan error, o.relays+o.consumers)
	for i := 0; i < o.relays; i++ {
		r, err := relay.New(pool, relay.Config{Kafka: broker.Config{Brokers: brokers}, Logger: logger.With("relay", i)})
		if err != nil {
			return false, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs <- r.Run(runCtx) }()
	}
	group := "shipping-demo-" + runID
	for i := 0; i < o.consumers; i++ {
		name := fmt.Sprintf("shipping-%d", i)
		c, err := inbox.NewConsumer(pool, inbox.Config{
			Kafka: broker.Config{Brokers: brokers}, GroupID: group, Topics: []string{topic},
			SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond,
			RebalanceTimeout: 10 * time.Second, JoinGroupBackoff: 500 * time.Millisecond,
			MaxWait: 100 * time.Millisecond, Logger: logger.With("consumer", name),
		}, shipping.Handler(name, shipTopic))
		if err != nil {
			return false, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs <- c.Run(runCtx) }()
	}

	load := &orders.Load{Rate: o.rate, Workers: 4, Prefix: "order", Seed: uint64(time.Now().UnixNano())}
	loadCtx, stopLoad := context.WithTimeout(ctx, o.duration)
	defer stopLoad()
	loadErr := make(chan error, 1)
	go func() { loadErr <- load.Run(loadCtx, orders.New(pool, topic)) }()

	p := &progress{pool: pool, load: load, shipTopic: shipTopic, tty: isTerminal()}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	writing := true
	var drainDeadline time.Time
	var last counts
	for done := false; !done; {
		select {
		case err := <-loadErr:
			if err != nil {
				return false, fmt.Errorf("orders service: %w", err)
			}
			writing = false
			drainDeadline = time.Now().Add(o.drain)
		case err := <-errs:
			return false, fmt.Errorf("a relay or consumer stopped: %v", err)
		case <-tick.C:
			c, err := p.print(ctx, writing)
			if err != nil && ctx.Err() == nil {
				return false, err
			}
			last = c
			drained := c.applied >= load.Written() && c.pendingFollowUps == 0
			if !writing && (drained || time.Now().After(drainDeadline)) {
				done = true
			}
		case <-ctx.Done():
			if !writing {
				done = true
			}
		}
	}
	p.finish()
	cancelRun()
	wg.Wait()

	versions, err := orders.Versions(context.WithoutCancel(ctx), pool)
	if err != nil {
		return false, err
	}
	rep, err := shipping.Verify(context.WithoutCancel(ctx), pool, versions)
	if err != nil {
		return false, err
	}
	readCtx, cancelRead := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancelRead()
	records, err := readToEnd(readCtx, brokers, shipTopic)
	if err != nil {
		return false, err
	}
	followUps := make([]shipping.FollowUp, 0, len(records))
	for _, m := range records {
		var f shipping.FollowUp
		for _, h := range m.Headers {
			switch h.Key {
			case inbox.HeaderID:
				f.ID = string(h.Value)
			case shipping.HeaderCausationID:
				f.CausationID = string(h.Value)
			}
		}
		followUps = append(followUps, f)
	}
	fu, err := shipping.VerifyFollowUps(context.WithoutCancel(ctx), pool, followUps)
	if err != nil {
		return false, err
	}
	elapsed := time.Since(start)
	fmt.Println()
	fmt.Println("verification (shipping_log against the orders table; the shipments topic against shipping_log)")
	fmt.Printf("  orders                  %d\n", len(versions))
	fmt.Printf("  events written          %d\n", rep.Expected)
	fmt.Printf("  events applied          %d\n", rep.Applied)
	fmt.Printf("  lost                    %d\n", rep.Lost)
	fmt.Printf("  applied twice           %d\n", rep.Duplicates)
	fmt.Printf("  applied out of order    %d\n", rep.OutOfOrder)
	fmt.Printf("  unknown events          %d\n", rep.Unexpected)
	fmt.Printf("  follow-up records       %d (on %s, relay copies included)\n", fu.Records, shipTopic)
	fmt.Printf("  distinct follow-ups     %d\n", fu.FollowUps)
	fmt.Printf("  applied, no follow-up   %d\n", fu.Missing)
	fmt.Printf("  extra follow-ups        %d\n", fu.Extra)
	fmt.Printf("  follow-ups, no cause    %d\n", fu.Orphans)
	fmt.Printf("  wall time               %s\n", elapsed.Round(100*time.Millisecond))
	if rep.OK() && int64(rep.Expected) == load.Written() && last.applied >= load.Written() &&
		fu.OK() && fu.Applied == rep.Expected {
		fmt.Println("PASS: every order's events were applied exactly once, in order, each with exactly one follow-up event")
		return true, nil
	}
	fmt.Println("FAIL: see the counts above")
	return false, nil
}

// progress prints the live line: written, published, applied, lag, and
// follow-ups published.
type progress struct {
	pool      *pgxpool.Pool
	load      *orders.Load
	shipTopic string
	tty       bool
}

// counts is what one progress line read.
type counts struct {
	pending          int64 // order events in the outbox
	pendingFollowUps int64 // follow-up events in the outbox
	applied          int64 // distinct order events applied, as many follow-ups written
}

func (p *progress) print(ctx context.Context, writing bool) (c counts, err error) {
	err = p.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE topic <> $1), count(*) FILTER (WHERE topic = $1),
(SELECT count(DISTINCT event_id) FROM shipping_log) FROM outbox`, p.shipTopic).Scan(&c.pending, &c.pendingFollowUps, &c.applied)
	if err != nil {
		return c, err
	}
	written := p.load.Written()
	phase := "writing"
	if !writing {
		phase = "draining"
	}
	line := fmt.Sprintf("[%s] written %d  published %d  applied %d  lag %d  follow-ups published %d",
		phase, written, max(written-c.pending, 0), c.applied, max(written-c.applied, 0), max(c.applied-c.pendingFollowUps, 0))
	if p.tty {
		fmt.Printf("\r\033[K%s", line)
	} else {
		fmt.Println(line)
	}
	return c, nil
}

func (p *progress) finish() {
	if p.tty {
		fmt.Println()
	}
}

func isTerminal() bool {
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// freshDatabase drops and creates name on DATABASE_URL's server, applies
// outboxkit's migrations and returns its URL.
func freshDatabase(ctx context.Context, name string) (string, error) {
	admin := os.Getenv("DATABASE_URL")
	if admin == "" {
		admin = "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable" //nolint:gosec // G101: the local server make demo starts
	}
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("DATABASE_URL must be a postgres:// URL")
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL (run `make services`): %w", err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", err
	}
	u.Path = "/" + name
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		return "", err
	}
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		return "", err
	}
	return u.String(), nil
}
