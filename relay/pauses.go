package relay

import (
	"context"
	"log/slog"
	"time"

	"github.com/outboxkit/outboxkit/internal/backoff"
)

// topicPause is a topic whose records failed in WAL mode and that is not
// sent to before until.
type topicPause struct {
	pause    backoff.Backoff // doubled on each failure
	until    time.Time
	since    time.Time // the first failure
	attempts int
}

// topicPauses isolates the topics whose records fail in WAL mode
// (docs/design.md §2.11): a topic whose records fail (transiently, or
// refused as a whole by topicRefusals) is paused, with a pause that
// doubles from RetryBackoffMin to RetryBackoffMax on each failure, while
// the events of other topics keep flowing. An aggregate whose next event
// is on a paused topic is left out of the picks (pickN), so its order
// holds. The first failure and the recovery are logged, once each: not
// every retry. Only the goroutine that streams uses it.
type topicPauses struct {
	lo, hi time.Duration
	log    *slog.Logger
	now    func() time.Time
	m      map[string]*topicPause
}

func newTopicPauses(lo, hi time.Duration, log *slog.Logger) *topicPauses {
	return &topicPauses{lo: lo, hi: hi, log: log, now: time.Now, m: map[string]*topicPause{}}
}

// until returns when topic's pause ends, and whether it is paused at now.
// A nil topicPauses pauses nothing (table mode).
func (tp *topicPauses) until(topic string, now time.Time) (time.Time, bool) {
	if tp == nil {
		return time.Time{}, false
	}
	p := tp.m[topic]
	if p == nil || !now.Before(p.until) {
		return time.Time{}, false
	}
	return p.until, true
}

// failed records that a call's records of topic failed with err: the topic
// is paused for twice its last pause.
func (tp *topicPauses) failed(ctx context.Context, topic string, err error) {
	now := tp.now()
	p := tp.m[topic]
	if p == nil {
		p = &topicPause{since: now, pause: backoff.Backoff{Min: tp.lo, Max: tp.hi}}
		tp.m[topic] = p
		level := slog.LevelWarn
		if refused(err) {
			// A topic refusing every record: topicRefusals says so.
			level = slog.LevelDebug
		}
		tp.log.Log(ctx, level, "publishing to a topic fails; its events wait and are retried with a growing pause, other topics go on",
			"topic", topic, "error", err)
	}
	p.attempts++
	p.until = now.Add(p.pause.Next())
}

// took records that topic acknowledged a record: it is not paused any more.
func (tp *topicPauses) took(ctx context.Context, topic string) {
	p := tp.m[topic]
	if p == nil {
		return
	}
	delete(tp.m, topic)
	tp.log.InfoContext(ctx, "publishing to the topic works again", "topic", topic,
		"failed_for", tp.now().Sub(p.since).Round(time.Millisecond), "attempts", p.attempts)
}
