package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/internal/backoff"
	"github.com/outboxkit/outboxkit/internal/kafkaclient"
	"github.com/outboxkit/outboxkit/internal/wait"
)

// DefaultClientID is the Kafka client ID of a consumer when
// Config.Kafka.ClientID is empty.
const DefaultClientID = "outboxkit-inbox"

// kafka returns kafka-go's value for s.
func (s StartOffset) kafka() int64 {
	if s == StartLast {
		return kafka.LastOffset
	}
	return kafka.FirstOffset
}

// Consumer consumes Kafka topics as a consumer group and applies each
// message once, through a [Handler] that runs in the transaction recording
// the message in the inbox. Create it with [NewConsumer] and start it with
// [Consumer.Run].
type Consumer struct {
	pool    *pgxpool.Pool
	cfg     Config
	dialer  *kafka.Dialer
	handler Handler
	log     *slog.Logger
	metrics *metrics
	running atomic.Bool
	// health is what Live and Ready report (health.go).
	health health
	// txOptions begins every inbox transaction (see txOptions).
	txOptions pgx.TxOptions

	// skipInbox runs the same pipeline without claiming messages, for the
	// benchmark's baseline only.
	skipInbox bool

	// fatal is closed, once, on an error that retrying cannot fix
	// (fatalErr: ErrInboxTables from a partition worker, ErrJoinRefused
	// from a join): Run then stops and returns fatalErr.
	fatal     chan struct{}
	fatalOnce sync.Once
	fatalErr  error
}

// fail stops Run with err, which retrying cannot fix; the first call wins.
func (c *Consumer) fail(ctx context.Context, err error) {
	c.fatalOnce.Do(func() {
		c.log.ErrorContext(ctx, "stopping: retrying cannot fix this", "error", err)
		c.fatalErr = err
		close(c.fatal)
	})
}

// NewConsumer returns a Consumer of cfg.Topics in group cfg.GroupID that
// applies messages with h through pool. It validates cfg and registers the
// metrics; it does not connect to anything. Each partition the consumer
// owns holds one pool connection while it applies a batch, so size the pool
// for the partitions one instance may own, plus one for retention and one
// for [Consumer.Ready]'s ping; a
// smaller pool is slower, not stuck: partitions wait for a connection in
// turn, and an abandoned handler's connection leaves the pool.
func NewConsumer(pool *pgxpool.Pool, cfg Config, h Handler) (*Consumer, error) {
	if pool == nil {
		return nil, errors.New("inbox: pool is nil")
	}
	if h == nil {
		return nil, errors.New("inbox: handler is nil")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Kafka.Brokers = append([]string(nil), cfg.Kafka.Brokers...)
	cfg.Topics = append([]string(nil), cfg.Topics...)
	dialer, err := kafkaclient.Dialer(cfg.Kafka, DefaultClientID)
	if err != nil {
		return nil, fmt.Errorf("inbox: kafka dialer: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("inbox: register metrics: %w", err)
	}
	return &Consumer{
		pool:    pool,
		cfg:     cfg,
		dialer:  dialer,
		handler: h,
		log:     cfg.Logger.With("group", cfg.GroupID),
		metrics: m,

		txOptions: txOptions(cfg),
		fatal:     make(chan struct{}),
	}, nil
}

// ErrRunTwice is returned by [Consumer.Run] when it is called a second
// time, while the first call runs or after it returned.
var ErrRunTwice = errors.New("inbox: Run called twice")

// Run joins the consumer group and applies messages until ctx ends. Each
// assigned partition is consumed by its own goroutine, in offset order;
// partitions run in parallel. A message's offset is committed to Kafka only
// after the transaction that applied it committed.
//
// When ctx ends, Run lets in-flight transactions finish (or roll back),
// commits the offsets of every processed message, leaves the group and
// returns nil. It returns an error when it cannot start, and, after the
// same orderly stop, errors that retrying cannot fix (other failures are
// retried): one matching [ErrInboxTables] when the inbox's own statements
// find its tables missing or not usable by the role, one matching
// [ErrJoinRefused] when Kafka refuses the consumer's credentials or ACLs
// as it joins the group. A Consumer runs once: a second call returns
// [ErrRunTwice].
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	c.health.setRunning(true)
	defer c.health.setRunning(false)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.fatal:
			cancel()
		case <-ctx.Done():
		}
	}()
	// brokers is the bootstrap list in the order the group asks it; each
	// failure to join moves the first broker to the end (see joinFailed).
	brokers := slices.Clone(c.cfg.Kafka.Brokers)
	group, err := c.newGroup(brokers)
	if err != nil {
		return fmt.Errorf("inbox: consumer group: %w", err)
	}
	// retired holds groups being closed after a failed join.
	var retired sync.WaitGroup
	c.log.InfoContext(ctx, "consumer starting", "topics", c.cfg.Topics)

	var bg sync.WaitGroup
	if c.cfg.RetentionInterval > 0 {
		bg.Add(1)
		go func() {
			defer bg.Done()
			c.retentionLoop(ctx)
		}()
	}

	for {
		gen, err := group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			if joinRefused(err) {
				c.fail(ctx, fmt.Errorf("%w: %w", ErrJoinRefused, err))
				break
			}
			if errors.Is(err, kafka.RebalanceInProgress) {
				c.log.DebugContext(ctx, "rebalance in progress; joining again")
				continue
			}
			c.log.WarnContext(ctx, "joining the consumer group failed; retrying through the next broker",
				"error", err, "asked_first", brokers[0])
			if len(brokers) > 1 {
				if group, brokers = c.joinFailed(ctx, group, brokers, &retired); group == nil {
					break
				}
			}
			continue
		}
		c.startGeneration(ctx, gen, brokers)
	}

	// Closing the group ends the current generation: the partition
	// goroutines finish the handler call in flight and roll back the rest
	// of their batch, the committer commits the
	// processed offsets on the generation's connection, and the group is
	// left. Close returns after all of that.
	if group != nil {
		_ = group.Close()
	}
	retired.Wait()
	bg.Wait()
	c.log.InfoContext(context.WithoutCancel(parent), "consumer stopped")
	select {
	case <-c.fatal:
		return c.fatalErr
	default:
		return nil
	}
}

// newGroup returns a ConsumerGroup that bootstraps through brokers, in
// that order.
func (c *Consumer) newGroup(brokers []string) (*kafka.ConsumerGroup, error) {
	return kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                c.cfg.GroupID,
		Brokers:           brokers,
		Dialer:            c.dialer,
		Topics:            c.cfg.Topics,
		HeartbeatInterval: c.cfg.HeartbeatInterval,
		SessionTimeout:    c.cfg.SessionTimeout,
		RebalanceTimeout:  c.cfg.RebalanceTimeout,
		JoinGroupBackoff:  c.cfg.JoinGroupBackoff,
		Timeout:           coordinatorTimeout,
		StartOffset:       c.cfg.StartOffset.kafka(),
		Logger:            kafkaLogger(c.log, slog.LevelDebug),
		ErrorLogger:       kafkaLogger(c.log, slog.LevelInfo),
	})
}

// coordinatorTimeout bounds each request to the group coordinator, and the
// lookup of the coordinator (kafka-go's default, made explicit). JoinGroup
// and SyncGroup may take RebalanceTimeout and SessionTimeout more.
const coordinatorTimeout = 5 * time.Second

// joinFailed replaces group, whose last join failed, by a group that asks
// the brokers in a rotated order: the broker that was asked first becomes
// the last. kafka-go looks up the group coordinator through the first
// bootstrap broker that accepts a connection, always in the same order; a
// broker that is frozen (SIGSTOP, a hung VM) accepts connections and
// answers nothing, so without the rotation every join would time out on it
// for as long as it stays frozen, while the other brokers could serve the
// group. The old group is closed in the background, since closing waits
// for its requests in flight; retired counts it until then. After
// JoinGroupBackoff, the wait kafka-go keeps between failed joins, it
// returns the new group and order, or a nil group when ctx ended first.
func (c *Consumer) joinFailed(ctx context.Context, group *kafka.ConsumerGroup, brokers []string, retired *sync.WaitGroup) (*kafka.ConsumerGroup, []string) {
	retired.Add(1)
	go func() {
		defer retired.Done()
		_ = group.Close()
	}()
	brokers = append(slices.Clone(brokers[1:]), brokers[0])
	if !wait.Sleep(ctx, c.cfg.JoinGroupBackoff) {
		return nil, brokers
	}
	next, err := c.newGroup(brokers)
	if err != nil {
		// The settings were accepted by the first NewConsumerGroup; only
		// the order changed.
		c.log.ErrorContext(ctx, "cannot create the consumer group", "error", err)
		return nil, brokers
	}
	return next, brokers
}

// kafkaLogger forwards kafka-go's logs to log at level.
func kafkaLogger(log *slog.Logger, level slog.Level) kafka.Logger {
	return kafka.LoggerFunc(func(format string, args ...any) {
		ctx := context.Background()
		if log.Enabled(ctx, level) {
			log.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "kafka-go")
		}
	})
}

// topicPartition names one partition.
type topicPartition struct {
	topic     string
	partition int
}

// genState tracks, for one generation, the next offset to commit per
// partition. Each partition processes its messages in order, so the offset
// after its last processed message always ends a contiguous processed prefix.
type genState struct {
	mu        sync.Mutex
	next      map[topicPartition]int64
	committed map[topicPartition]int64
	pending   int
	kick      chan struct{}
}

func newGenState() *genState {
	return &genState{
		next:      map[topicPartition]int64{},
		committed: map[topicPartition]int64{},
		kick:      make(chan struct{}, 1),
	}
}

// processed records that every message of tp before offset next was applied
// (or dropped, or dead-lettered) and its transaction committed.
func (s *genState) processed(tp topicPartition, next int64, n, commitCount int) {
	s.mu.Lock()
	s.next[tp] = next
	s.pending += n
	full := s.pending >= commitCount
	s.mu.Unlock()
	if full {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// toCommit returns the offsets that moved since the last commit.
func (s *genState) toCommit() map[string]map[int]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out map[string]map[int]int64
	for tp, off := range s.next {
		if c, ok := s.committed[tp]; ok && c >= off {
			continue
		}
		if out == nil {
			out = map[string]map[int]int64{}
		}
		if out[tp.topic] == nil {
			out[tp.topic] = map[int]int64{}
		}
		out[tp.topic][tp.partition] = off
	}
	s.pending = 0
	return out
}

func (s *genState) committedAt(offsets map[string]map[int]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, parts := range offsets {
		for p, off := range parts {
			tp := topicPartition{topic, p}
			if off > s.committed[tp] {
				s.committed[tp] = off
			}
		}
	}
}

// startGeneration launches one goroutine per assigned partition and a
// committer, all bound to gen: the generation ends when any of them returns,
// and kafka-go waits for all of them before joining the next one.
// The partition readers bootstrap through brokers, the order in which the
// group last joined.
func (c *Consumer) startGeneration(ctx context.Context, gen *kafka.Generation, brokers []string) {
	c.metrics.generations.WithLabelValues(c.cfg.GroupID).Inc()
	c.health.join(gen.ID)
	st := newGenState()
	var parts sync.WaitGroup
	var owned []string
	topics := make([]string, 0, len(gen.Assignments))
	for topic := range gen.Assignments {
		topics = append(topics, topic)
	}
	sort.Strings(topics)
	for _, topic := range topics {
		for _, pa := range gen.Assignments[topic] {
			owned = append(owned, fmt.Sprintf("%s/%d", topic, pa.ID))
			parts.Add(1)
			gen.Start(func(genCtx context.Context) {
				defer parts.Done()
				c.consumePartition(ctx, genCtx, st, brokers, topic, pa)
			})
		}
	}
	c.log.InfoContext(ctx, "joined generation", "generation", gen.ID, "member_id", gen.MemberID, "partitions", owned)
	gen.Start(func(genCtx context.Context) {
		c.commitLoop(genCtx, gen, st, &parts)
	})
}

// commitLoop commits processed offsets every CommitInterval, or sooner when
// CommitCount messages are waiting. When the generation ends it waits for
// the partition goroutines to finish, then commits a last time, while the
// generation's coordinator connection is still open.
func (c *Consumer) commitLoop(genCtx context.Context, gen *kafka.Generation, st *genState, parts *sync.WaitGroup) {
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-genCtx.Done():
			c.health.leave(gen.ID)
			parts.Wait()
			c.commit(gen, st, true)
			return
		case <-t.C:
			c.commit(gen, st, false)
		case <-st.kick:
			c.commit(gen, st, false)
		}
	}
}

func (c *Consumer) commit(gen *kafka.Generation, st *genState, final bool) {
	offsets := st.toCommit()
	if len(offsets) == 0 {
		return
	}
	ctx := context.Background()
	if err := gen.CommitOffsets(offsets); err != nil {
		// Not fatal: the next owner of these partitions re-reads from the
		// last committed offset and the inbox drops what was applied.
		c.metrics.commitErrors.WithLabelValues(c.cfg.GroupID).Inc()
		c.log.WarnContext(ctx, "offset commit failed", "generation", gen.ID, "final", final, "error", err)
		return
	}
	st.committedAt(offsets)
	if c.log.Enabled(ctx, slog.LevelDebug) {
		c.log.DebugContext(ctx, "committed offsets", "generation", gen.ID, "final", final, "offsets", fmt.Sprint(offsets))
	}
}

// consumePartition reads one partition from where the group stands (the
// lower of Kafka's committed offset and the database's position) and
// applies its messages in order until the generation ends. runCtx is Run's
// context: handlers get its values but not its cancellation, so a handler
// call in flight completes; genCtx ends with the generation, and stops a
// batch between two messages. When a transaction finds that the database
// lost commits (position.go), the partition is read again from the
// database's position.
func (c *Consumer) consumePartition(runCtx, genCtx context.Context, st *genState, brokers []string, topic string, pa kafka.PartitionAssignment) {
	log := c.log.With("topic", topic, "partition", pa.ID)
	tm := c.metrics.bind(c.cfg.GroupID, topic, pa.ID)
	defer c.metrics.unbindLag(c.cfg.GroupID, topic, pa.ID)

	base := context.WithoutCancel(runCtx)
	p := &partitionWorker{c: c, base: base, stop: genCtx, log: log, tm: tm,
		pos: partPosition{topic: topic, partition: pa.ID}, rewind: -1}
	start, ok := p.startOffset(pa)
	for ok {
		p.rewind = -1
		c.readPartition(p, st, brokers, topic, pa.ID, start)
		start, ok = p.rewind, p.rewind >= 0 && genCtx.Err() == nil
	}
}

// readPartition applies the partition's messages from offset start until
// the generation ends or a transaction finds the database behind
// (p.rewind set).
func (c *Consumer) readPartition(p *partitionWorker, st *genState, brokers []string, topic string, partition int, start int64) {
	log, genCtx := p.log, p.stop
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     brokers,
		Topic:       topic,
		Partition:   partition,
		Dialer:      c.dialer,
		MinBytes:    1,
		MaxBytes:    10 << 20,
		MaxWait:     c.cfg.MaxWait,
		Logger:      kafkaLogger(log, slog.LevelDebug),
		ErrorLogger: kafkaLogger(log, slog.LevelInfo),
	})
	defer r.Close()
	if err := r.SetOffset(start); err != nil {
		log.ErrorContext(p.base, "cannot position the partition reader", "offset", start, "error", err)
		return
	}
	log.DebugContext(p.base, "partition assigned", "offset", start)

	// The fetcher keeps up to BatchSize records ready, so a batch is
	// whatever has arrived while the previous one was being applied.
	fetched := make(chan kafka.Message, c.cfg.BatchSize)
	fetchCtx, stopFetch := context.WithCancel(genCtx)
	fetchDone := make(chan struct{})
	go func() {
		defer close(fetchDone)
		c.fetch(fetchCtx, r, fetched, log)
	}()
	defer func() {
		stopFetch()
		<-fetchDone
	}()

	batch := make([]kafka.Message, 0, c.cfg.BatchSize)
	for {
		if genCtx.Err() != nil {
			return
		}
		select {
		case <-genCtx.Done():
			return
		case m := <-fetched:
			batch = append(batch[:0], m)
		}
	drain:
		for len(batch) < c.cfg.BatchSize {
			select {
			case m := <-fetched:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		n := p.process(batch)
		if n > 0 {
			last := batch[n-1]
			st.processed(topicPartition{topic, partition}, last.Offset+1, n, c.cfg.CommitCount)
			if last.HighWaterMark > 0 {
				p.tm.lag.Set(float64(max(0, last.HighWaterMark-last.Offset-1)))
			}
		}
		if n < len(batch) {
			return // the generation ended mid-batch (the rest is redelivered), or the database lost commits
		}
	}
}

// fetch copies records from r to out until ctx ends. kafka-go's reader
// retries broker errors itself; an error that still surfaces is logged and
// fetching resumes after a pause.
func (c *Consumer) fetch(ctx context.Context, r *kafka.Reader, out chan<- kafka.Message, log *slog.Logger) {
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.WarnContext(ctx, "fetch failed; retrying", "error", err)
			if !wait.Sleep(ctx, time.Second) {
				return
			}
			continue
		}
		select {
		case out <- m:
		case <-ctx.Done():
			return
		}
	}
}

// retryBackoff returns a backoff for one message's retries: doubling from
// RetryBackoffMin, capped at RetryBackoffMax, with up to 20% jitter removed
// so retries of many partitions do not align.
func (c *Consumer) retryBackoff() backoff.Backoff {
	return backoff.Backoff{Min: c.cfg.RetryBackoffMin, Max: c.cfg.RetryBackoffMax, Jitter: 0.2}
}
