package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outboxkit/outboxkit/internal/testenv/kafkatopic"
)

var (
	fakeOnce    sync.Once
	fakeBrokers []string
	fakeErr     error
)

// RealKafka reports whether KAFKA_BROKERS names a real broker (as it did
// before ForExamples set it).
func RealKafka() bool {
	if real, ok := pinnedRealKafka(); ok {
		return real
	}
	return os.Getenv("KAFKA_BROKERS") != ""
}

// Brokers returns the broker addresses of this test run: KAFKA_BROKERS, or
// an in-process kfake broker started on first use.
func Brokers(t testing.TB) []string {
	t.Helper()
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		return strings.Split(env, ",")
	}
	if err := startFake(); err != nil {
		t.Fatalf("testenv: start in-process Kafka: %v", err)
	}
	return fakeBrokers
}

func startFake() error {
	fakeOnce.Do(func() {
		var c *kfake.Cluster
		c, fakeErr = kfake.NewCluster(kfake.NumBrokers(1))
		if fakeErr == nil {
			fakeBrokers = c.ListenAddrs()
		}
	})
	return fakeErr
}

// NeedRealKafka skips t unless KAFKA_BROKERS is set. Tests that stop or
// restart the broker use it; `make test` always runs them.
func NeedRealKafka(t testing.TB) {
	t.Helper()
	if !RealKafka() {
		t.Skip("needs the real broker: run `make test`, or set KAFKA_BROKERS after `make services`")
	}
}

// CreateTopic creates a topic with a unique name from prefix and waits until
// every partition has a leader.
func CreateTopic(t testing.TB, prefix string, partitions int) string {
	t.Helper()
	topic := Unique(prefix)
	if err := CreateTopicNamed(Brokers(t), topic, partitions); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return topic
}

// CreateTopicNamed creates topic with the given number of partitions and
// waits until every partition has a leader.
func CreateTopicNamed(brokers []string, topic string, partitions int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return kafkatopic.Create(ctx, brokers, topic, partitions)
}

// NewWriter returns a kafka-go writer to brokers that produces like the
// relay: acks=all, partitioned by key with murmur2 (the Java client's
// default). Records name their topic unless topic is set. Close it when done.
func NewWriter(brokers []string, topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
	}
}

// ReadTopic reads every partition of topic from the start until it has read
// at least want records or timeout passes, and returns them per partition in
// offset order, partitions in ascending order.
func ReadTopic(t testing.TB, topic string, want int, timeout time.Duration) []kafka.Message {
	t.Helper()
	msgs, err := ReadTopicFrom(Brokers(t), topic, want, timeout)
	if err != nil {
		t.Fatalf("testenv: read %s: %v", topic, err)
	}
	return msgs
}

// ReadTopicFrom is ReadTopic for callers without a testing.TB.
func ReadTopicFrom(brokers []string, topic string, want int, timeout time.Duration) ([]kafka.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	partitions, err := kafkatopic.Partitions(ctx, client, topic)
	if err != nil {
		return nil, err
	}
	var (
		mu    sync.Mutex
		total int
		parts = map[int][]kafka.Message{}
		wg    sync.WaitGroup
	)
	readCtx, stop := context.WithCancel(ctx)
	defer stop()
	for _, p := range partitions {
		wg.Add(1)
		go func(partition int) {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers: brokers, Topic: topic, Partition: partition,
				MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond,
			})
			defer r.Close()
			for {
				m, err := r.ReadMessage(readCtx)
				if err != nil {
					return
				}
				mu.Lock()
				parts[partition] = append(parts[partition], m)
				total++
				if total >= want {
					stop()
				}
				mu.Unlock()
			}
		}(p)
	}
	wg.Wait()
	keys := make([]int, 0, len(parts))
	for p := range parts {
		keys = append(keys, p)
	}
	sort.Ints(keys)
	var out []kafka.Message
	for _, p := range keys {
		out = append(out, parts[p]...)
	}
	if total < want {
		return out, fmt.Errorf("read %d of %d records from %s within %s", total, want, topic, timeout)
	}
	return out, nil
}

// Services runs scripts/services.sh with args (kafka-stop, kafka-start,
// kafka-kill) to break the real broker on purpose.
func Services(t testing.TB, args ...string) {
	t.Helper()
	NeedRealKafka(t)
	runServices(t, args...)
}

// ClusterBrokers returns the addresses of the three-node cluster of
// `scripts/services.sh cluster-up` from KAFKA_CLUSTER_BROKERS, and skips t
// unless OUTBOXKIT_CLUSTER=1 says the test may stop and pause its nodes
// (`make cluster-tests` sets both).
func ClusterBrokers(t testing.TB) []string {
	t.Helper()
	env := os.Getenv("KAFKA_CLUSTER_BROKERS")
	if os.Getenv("OUTBOXKIT_CLUSTER") != "1" || env == "" {
		t.Skip("stops and pauses brokers of the three-node cluster: runs in `make cluster-tests` (OUTBOXKIT_CLUSTER=1, KAFKA_CLUSTER_BROKERS)")
	}
	return strings.Split(env, ",")
}

// Cluster runs scripts/services.sh with a cluster command (cluster-kill 2,
// cluster-start 2, cluster-pause 3, ...) to break a node of the three-node
// cluster on purpose.
func Cluster(t testing.TB, args ...string) {
	t.Helper()
	ClusterBrokers(t)
	runServices(t, args...)
}

func runServices(t testing.TB, args ...string) {
	t.Helper()
	script := servicesScript()
	start := time.Now()
	out, err := exec.Command(script, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: services.sh %v: %v\n%s", args, err, out)
	}
	t.Logf("services.sh %v (%s): %s", args, time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(string(out)))
}

// FreeAddr returns a free 127.0.0.1 TCP address for a server under test.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ReadTopicToEnd reads every record of every partition of topic, up to the
// end offsets at the time of the call, per partition in offset order,
// partitions in ascending order. Call it after the producer is done (for
// the relay: after the outbox drained) to see everything it published,
// duplicates included.
func ReadTopicToEnd(brokers []string, topic string, timeout time.Duration) ([]kafka.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	partitions, err := kafkatopic.Partitions(ctx, client, topic)
	if err != nil {
		return nil, err
	}
	var reqs []kafka.OffsetRequest
	for _, p := range partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	// Right after a broker restart, ListOffsets may fail for a moment.
	var ends map[int]int64
	for {
		ends, err = endOffsets(ctx, client, topic, reqs)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(200 * time.Millisecond):
		}
	}
	parts := make([]int, 0, len(ends))
	for p := range ends {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	results := make([][]kafka.Message, len(parts))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		if ends[p] == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers: brokers, Topic: topic, Partition: p,
				MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond,
			})
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					errs[i] = fmt.Errorf("read %s/%d: %w (have %d records, end offset %d)", topic, p, err, len(results[i]), ends[p])
					return
				}
				results[i] = append(results[i], m)
				if m.Offset >= ends[p]-1 {
					return
				}
			}
		}()
	}
	wg.Wait()
	var out []kafka.Message
	for i := range parts {
		if errs[i] != nil {
			return nil, errs[i]
		}
		out = append(out, results[i]...)
	}
	return out, nil
}

func endOffsets(ctx context.Context, client *kafka.Client, topic string, reqs []kafka.OffsetRequest) (map[int]int64, error) {
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	ends := map[int]int64{}
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("end offset of %s/%d: %w", topic, po.Partition, po.Error)
		}
		ends[po.Partition] = po.LastOffset
	}
	return ends, nil
}

// BrokersForMain is Brokers for TestMain and Example functions, which have
// no testing.T; it panics when the in-process broker cannot start.
func BrokersForMain() []string {
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		return strings.Split(env, ",")
	}
	if err := startFake(); err != nil {
		panic(fmt.Sprintf("testenv: start in-process Kafka: %v", err))
	}
	return fakeBrokers
}
