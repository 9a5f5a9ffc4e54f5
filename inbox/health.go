package inbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// ErrNotRunning is the error of [Consumer.Live] and [Consumer.Ready] before
// [Consumer.Run] is called and after it returned.
var ErrNotRunning = errors.New("inbox: consumer is not running")

// ErrNotJoined is the error of [Consumer.Ready] while Run is running but
// the consumer is not a member of a generation of its group: it is joining,
// or rejoining during a rebalance or after losing the group coordinator.
var ErrNotJoined = errors.New("inbox: consumer has not joined its consumer group")

// ErrStuck is the error of [Consumer.Live] when a partition has waited on
// one handler call for longer than the consumer allows (see
// [Consumer.Live]): the consumer no longer makes progress on its own.
var ErrStuck = errors.New("inbox: consumer is stuck")

// health is what Live and Ready report on: set by Run, by the generation
// hooks and around each handler call.
type health struct {
	mu      sync.Mutex
	running bool
	// gen is the generation the consumer is a member of; joined is false
	// between generations.
	gen    int32
	joined bool
	// calls holds, per partition worker, when the handler call it waits on
	// started.
	calls map[*partitionWorker]time.Time
}

func (h *health) setRunning(running bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running = running
	if !running {
		h.joined = false
	}
}

// join records that the consumer is a member of generation gen.
func (h *health) join(gen int32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gen, h.joined = gen, true
}

// leave records that generation gen ended; a later generation's join may
// have come first, and stands.
func (h *health) leave(gen int32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gen == gen {
		h.joined = false
	}
}

// callStarted records that p waits on a handler call from now on; the
// function it returns records that the wait is over.
func (h *health) callStarted(p *partitionWorker) func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.calls == nil {
		h.calls = map[*partitionWorker]time.Time{}
	}
	h.calls[p] = time.Now()
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.calls, p)
	}
}

// stuckAfter is how long a partition may wait on one handler call before
// the consumer counts as stuck: the call's HandlerTimeout, as long again
// for terminating the session of a handler abandoned after its grace
// (bounded by HandlerTimeout), and a minute of slack for the grace and a
// starved or briefly paused process. Past that, only a fault of the
// consumer itself keeps the partition waiting.
func (c *Consumer) stuckAfter() time.Duration {
	return 2*c.cfg.HandlerTimeout + time.Minute
}

// Live reports whether the consumer is alive: nil while [Consumer.Run] is
// running, including while it rejoins the group and while it retries a
// database or a broker that is down, since restarting the process fixes
// neither. It returns an error matching [ErrNotRunning] before Run and
// after Run returned, the error Run is stopping with when retrying cannot
// fix it ([ErrInboxTables], [ErrJoinRefused]), and one matching [ErrStuck]
// when a partition has waited on one handler call for twice
// Config.HandlerTimeout plus a minute: a handler that ignores its deadline
// is abandoned long before that, so the wait means the consumer itself is
// stuck, which a restart fixes. Use it for a liveness probe; it does no I/O.
func (c *Consumer) Live() error {
	c.health.mu.Lock()
	defer c.health.mu.Unlock()
	if !c.health.running {
		return ErrNotRunning
	}
	select {
	case <-c.fatal:
		return c.fatalErr
	default:
	}
	limit := c.stuckAfter()
	for p, since := range c.health.calls {
		if waited := time.Since(since); waited > limit {
			return fmt.Errorf("%w: partition %s/%d has waited %s on one handler call (limit %s)",
				ErrStuck, p.pos.topic, p.pos.partition, waited.Round(time.Second), limit)
		}
	}
	return nil
}

// Ready reports whether the consumer is doing its work: nil when
// [Consumer.Live] is nil, the consumer is a member of a generation of its
// group (it may own no partition, when the group has more members than the
// topics have partitions), and the database answers a ping through the
// pool within ctx. Otherwise it returns Live's error, one matching
// [ErrNotJoined], or the database's error. The ping takes a pool
// connection: leave one to spare beyond the partitions a member may own.
// Use it for a readiness probe.
func (c *Consumer) Ready(ctx context.Context) error {
	if err := c.Live(); err != nil {
		return err
	}
	c.health.mu.Lock()
	joined := c.health.joined
	c.health.mu.Unlock()
	if !joined {
		return ErrNotJoined
	}
	if err := c.pool.Ping(ctx); err != nil {
		return fmt.Errorf("inbox: database: %w", err)
	}
	return nil
}

// readyTimeout bounds the database ping of the HTTP readiness check, for
// probes that set no deadline of their own.
const readyTimeout = 5 * time.Second

// HealthHandler returns an http.Handler that serves the consumer's health
// as the outbox-relay binary serves its own: GET /healthz answers 200 "ok"
// while [Consumer.Live] is nil, GET /readyz answers 200 "ready" while
// [Consumer.Ready] is nil (its ping bounded by the request's context and
// 5s), and both answer 503 with the reason otherwise. Mount it on the
// service's own mux,
//
//	h := c.HealthHandler()
//	mux.Handle("GET /healthz", h)
//	mux.Handle("GET /readyz", h)
//
// or under another path with [http.StripPrefix].
func (c *Consumer) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeHealth(w, "ok", c.Live())
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		writeHealth(w, "ready", c.Ready(ctx))
	})
	return mux
}

// writeHealth writes 200 and ok, or 503 and err's text, as plain text.
func writeHealth(w http.ResponseWriter, ok string, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintln(w, err)
		return
	}
	_, _ = fmt.Fprintln(w, ok)
}
