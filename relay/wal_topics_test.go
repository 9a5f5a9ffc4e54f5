package relay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/outbox"
	"github.com/outboxkit/outboxkit/relay"
)

// topicOutagePublisher fails every record of one topic with a transient
// error while failing is set (a partition leader that does not answer,
// say), and publishes the others.
type topicOutagePublisher struct {
	inner    relay.Publisher
	topic    string
	failing  atomic.Bool
	attempts atomic.Int64 // calls that failed records of topic
}

var errTopicOutage = errors.New("injected: the topic's partition leader does not answer")

func (p *topicOutagePublisher) Publish(ctx context.Context, recs []relay.Record) error {
	if !p.failing.Load() {
		return p.inner.Publish(ctx, recs)
	}
	errs := make([]error, len(recs))
	var ok []relay.Record
	var at []int
	for i, r := range recs {
		if r.Topic == p.topic {
			errs[i] = errTopicOutage
			continue
		}
		ok, at = append(ok, r), append(at, i)
	}
	if len(ok) == len(recs) {
		return p.inner.Publish(ctx, recs)
	}
	p.attempts.Add(1)
	if len(ok) > 0 {
		if err := p.inner.Publish(ctx, ok); err != nil {
			for _, i := range at {
				errs[i] = err
			}
		}
	}
	return &relay.PublishError{Errs: errs}
}

func (p *topicOutagePublisher) Close() error { return p.inner.Close() }

// lockedBuffer is a log destination shared by goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWALFailingTopicIsolated: while one topic fails, the events of
// other topics keep flowing, the failing topic's events are retried with
// a growing pause (not every RetryBackoffMin because other calls succeed)
// and logged once, an aggregate whose next event is on it waits in order,
// and once the topic works again everything arrives.
func TestWALFailingTopicIsolated(t *testing.T) {
	t.Parallel()
	b, _ := walSetup(t, 3)
	bad := testenv.CreateTopic(t, "relaywal-outage", 1)
	ctx := context.Background()
	p := &topicOutagePublisher{inner: newPublisher(t, b.brokers), topic: bad}
	p.failing.Store(true)
	logs := &lockedBuffer{}
	b.startRelay(walCfg(relay.Config{Publisher: p, Logger: slog.New(slog.NewTextHandler(logs, nil))}))

	emit := func(evs ...outbox.Event) {
		t.Helper()
		if err := outbox.Emit(ctx, b.db.Pool, evs...); err != nil {
			t.Fatal(err)
		}
	}
	ev := func(topic, agg, payload string) outbox.Event {
		return outbox.Event{Topic: topic, AggregateType: "acct", AggregateID: agg, EventType: "E", Payload: []byte(payload)}
	}
	// "mix" has its first event on the failing topic: its second waits.
	emit(ev(bad, "mix", "mix:0"), ev(b.topic, "mix", "mix:1"))
	start := time.Now()
	good := 0
	for time.Since(start) < 4*time.Second {
		emit(ev(b.topic, fmt.Sprintf("g%d", good%20), fmt.Sprintf("g:%d", good)), ev(bad, fmt.Sprintf("b%d", good%5), fmt.Sprintf("b:%d", good)))
		good++
		time.Sleep(20 * time.Millisecond)
	}
	msgs := testenv.ReadTopic(t, b.topic, good, 30*time.Second)
	for _, m := range msgs {
		if string(m.Key) == "mix" {
			t.Fatalf("mix:1 was published while mix:0 waits on the failing topic")
		}
	}
	attempts := p.attempts.Load()
	warns := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, bad) {
			warns++
		}
	}
	t.Logf("%d events of the working topic published during the outage; the failing topic was tried %d times in %s, %d WARN lines about it",
		good, attempts, time.Since(start).Round(time.Millisecond), warns)
	// With a pause doubling from 50 ms to 5 s, about 8 attempts fit in
	// 4-6 s; retried every 50 ms it would be about 100.
	if attempts > 20 {
		t.Errorf("the failing topic was tried %d times; want its pause to grow (at most 20)", attempts)
	}
	if warns != 1 {
		t.Errorf("%d WARN lines name the failing topic; want 1 (when it started failing)\n%s", warns, logs.String())
	}

	p.failing.Store(false)
	testenv.ReadTopic(t, bad, good+1, 60*time.Second)
	all := testenv.ReadTopic(t, b.topic, good+1, 30*time.Second)
	mixed := false
	for _, m := range all {
		mixed = mixed || string(m.Value) == "mix:1"
	}
	if !mixed {
		t.Fatal("mix:1 did not arrive after the topic recovered")
	}
	if !strings.Contains(logs.String(), "publishing to the topic works again") {
		t.Errorf("no log line says the topic recovered")
	}
}
