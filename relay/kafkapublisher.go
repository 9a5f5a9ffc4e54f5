package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/kafkaclient"
)

// kafkaPublisher is the kafka-go Publisher: for each call it groups records
// by topic and partition (murmur2 of the key, like the Java client) and sends
// each group as one Produce request with acks=all, all groups in parallel.
type kafkaPublisher struct {
	client          *kafka.Client
	balancer        kafka.Murmur2Balancer
	maxRequestBytes int

	mu    sync.Mutex
	parts map[string]topicPartitions
}

type topicPartitions struct {
	ids     []int
	fetched time.Time
}

// partitionsTTL is how long a topic's partition count is trusted; a Kafka
// error on a produce request drops the cached entry at once.
const partitionsTTL = 30 * time.Second

// NewKafkaPublisher returns the kafka-go Publisher the relay uses by default,
// connected as cfg says, with requests of at most DefaultMaxBatchBytes. It
// marks Kafka's refusals with [Permanent] and [TopicRefused]. The caller
// closes it. It returns a *broker.ConfigError when cfg is invalid.
func NewKafkaPublisher(cfg broker.Config) (Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return newKafkaPublisher(cfg, DefaultMaxBatchBytes, 0)
}

// DefaultClientID is the Kafka client ID of the relay when
// Config.Kafka.ClientID is empty.
const DefaultClientID = "outboxkit-relay"

// newKafkaPublisher builds the publisher of a validated cfg; metadataTTL
// overrides kafka-go's metadata cache time when not zero.
func newKafkaPublisher(cfg broker.Config, maxRequestBytes int, metadataTTL time.Duration) (*kafkaPublisher, error) {
	transport, err := kafkaclient.Transport(cfg, DefaultClientID)
	if err != nil {
		return nil, fmt.Errorf("relay: kafka transport: %w", err)
	}
	transport.MetadataTTL = metadataTTL
	return &kafkaPublisher{
		client:          &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: transport},
		maxRequestBytes: maxRequestBytes,
		parts:           map[string]topicPartitions{},
	}, nil
}

func (p *kafkaPublisher) Close() error {
	if t, ok := p.client.Transport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
	return nil
}

func (p *kafkaPublisher) partitions(ctx context.Context, topic string) ([]int, error) {
	p.mu.Lock()
	tp, ok := p.parts[topic]
	p.mu.Unlock()
	if ok && time.Since(tp.fetched) < partitionsTTL {
		return tp.ids, nil
	}
	md, err := p.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata for %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				return nil, fmt.Errorf("%s: %w (%w)", topic, ErrUnknownTopic, t.Error)
			}
			return nil, fmt.Errorf("metadata for %s: %w", topic, t.Error)
		}
		if len(t.Partitions) == 0 {
			return nil, fmt.Errorf("metadata for %s: no partitions", topic)
		}
		ids := make([]int, len(t.Partitions))
		for i := range ids {
			// Partition IDs are 0..n-1; the Java partitioner indexes by count.
			ids[i] = i
		}
		p.mu.Lock()
		p.parts[topic] = topicPartitions{ids: ids, fetched: time.Now()}
		p.mu.Unlock()
		return ids, nil
	}
	return nil, fmt.Errorf("%s: %w", topic, ErrUnknownTopic)
}

func (p *kafkaPublisher) forget(topic string) {
	p.mu.Lock()
	delete(p.parts, topic)
	p.mu.Unlock()
}

type partitionKey struct {
	topic     string
	partition int
}

func (p *kafkaPublisher) Publish(ctx context.Context, records []Record) error {
	errs := make([]error, len(records))
	groups := map[partitionKey][]int{}
	var order []partitionKey
	topicErr := map[string]error{}
	for i := range records {
		r := &records[i]
		if err, ok := topicErr[r.Topic]; ok {
			errs[i] = err
			continue
		}
		ids, err := p.partitions(ctx, r.Topic)
		if err != nil {
			topicErr[r.Topic] = err
			errs[i] = err
			continue
		}
		k := partitionKey{r.Topic, p.balancer.Balance(kafka.Message{Key: r.Key}, ids...)}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}

	var wg sync.WaitGroup
	for _, k := range order {
		idx := groups[k]
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.publishPartition(ctx, k, records, idx, errs)
		}()
	}
	wg.Wait()
	failed := false
	for i, err := range errs {
		if err != nil {
			errs[i] = classify(err)
			failed = true
		}
	}
	if failed {
		return &PublishError{Errs: errs}
	}
	return nil
}

// publishPartition sends the records idx of one partition, in requests of at
// most maxRequestBytes sent one after the other, and stores each record's
// outcome in errs. After a failed request the rest are not sent, so a later
// record of a key never lands while an earlier one did not.
func (p *kafkaPublisher) publishPartition(ctx context.Context, k partitionKey, records []Record, idx []int, errs []error) {
	for len(idx) > 0 {
		n, size := 0, 0
		for n < len(idx) && (n == 0 || size+records[idx[n]].size() <= p.maxRequestBytes) {
			size += records[idx[n]].size()
			n++
		}
		if !p.publishRequest(ctx, k, records, idx[:n], errs) {
			for _, i := range idx[n:] {
				errs[i] = fmt.Errorf("produce to %s/%d: not sent after an earlier request of the partition failed: %w", k.topic, k.partition, errNotSent)
			}
			return
		}
		idx = idx[n:]
	}
}

// publishRequest sends the records idx as one Produce request, stores each
// record's outcome in errs and reports whether all were acknowledged.
func (p *kafkaPublisher) publishRequest(ctx context.Context, k partitionKey, records []Record, idx []int, errs []error) bool {
	res, err := p.produce(ctx, k, records, idx)
	if err == nil {
		return true
	}
	tooLarge := errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge)
	switch {
	case tooLarge && len(idx) > 1:
		// The batch as a whole was too large for the broker: send the records
		// one at a time, in order, and stop at the first that fails.
		for n, i := range idx {
			if _, err := p.produce(ctx, k, records, []int{i}); err != nil {
				errs[i] = err
				for _, rest := range idx[n+1:] {
					errs[rest] = fmt.Errorf("produce to %s/%d: not sent after an earlier record of the partition failed: %w", k.topic, k.partition, errNotSent)
				}
				return false
			}
		}
		return true
	case res != nil && len(res.RecordErrors) > 0:
		// The broker rejected the batch because of some records; the others
		// were not written and go again.
		for j, i := range idx {
			if rerr, ok := res.RecordErrors[j]; ok {
				errs[i] = fmt.Errorf("%w: %v", err, rerr)
			} else {
				errs[i] = fmt.Errorf("produce to %s/%d: batch rejected for another record: %w", k.topic, k.partition, errNotSent)
			}
		}
	default:
		for _, i := range idx {
			errs[i] = err
		}
	}
	return false
}

// errNotSent marks records that were not written because of another
// record's failure; they are retried like any transient error.
var errNotSent = errors.New("not sent")

// produce sends records idx as one Produce request to partition k.
func (p *kafkaPublisher) produce(ctx context.Context, k partitionKey, records []Record, idx []int) (*kafka.ProduceResponse, error) {
	recs := make([]kafka.Record, len(idx))
	for j, i := range idx {
		r := &records[i]
		hs := make([]kafka.Header, len(r.Headers))
		for h, hd := range r.Headers {
			hs[h] = kafka.Header{Key: hd.Key, Value: hd.Value}
		}
		recs[j] = kafka.Record{Key: kafka.NewBytes(r.Key), Value: kafka.NewBytes(r.Value), Headers: hs}
	}
	// kafka.Client.Produce would tell the leader to wait for the in-sync
	// replicas 500 ms (half the context's time when the Client has a
	// Timeout); the request is sent through the Transport so that the
	// leader gets the call's time instead (ackTimeout).
	m, err := p.client.Transport.RoundTrip(ctx, p.client.Addr, &produceAPI.Request{
		Acks:    int16(kafka.RequireAll),
		Timeout: int32(ackTimeout(ctx) / time.Millisecond),
		Topics: []produceAPI.RequestTopic{{
			Topic: k.topic,
			Partitions: []produceAPI.RequestPartition{{
				Partition: int32(k.partition),
				RecordSet: protocol.RecordSet{Records: kafka.NewRecordReader(recs...)},
			}},
		}},
	})
	var res *kafka.ProduceResponse
	if err == nil {
		res, err = produceResponse(m)
	}
	if err != nil {
		p.forget(k.topic)
		return res, fmt.Errorf("produce to %s/%d: %w", k.topic, k.partition, err)
	}
	return res, nil
}

// produceResponse is what kafka.Client.Produce makes of the answer to a
// one-partition request: the partition's error, and the records the
// broker rejected it for.
func produceResponse(m protocol.Message) (*kafka.ProduceResponse, error) {
	r, ok := m.(*produceAPI.Response)
	if !ok || len(r.Topics) == 0 || len(r.Topics[0].Partitions) == 0 {
		return nil, fmt.Errorf("produce: the broker answered %T without the partition", m)
	}
	part := &r.Topics[0].Partitions[0]
	res := &kafka.ProduceResponse{BaseOffset: part.BaseOffset}
	if len(part.RecordErrors) > 0 {
		res.RecordErrors = make(map[int]error, len(part.RecordErrors))
		for _, re := range part.RecordErrors {
			res.RecordErrors[int(re.BatchIndex)] = errors.New(re.BatchIndexErrorMessage)
		}
	}
	if part.ErrorCode != 0 {
		res.Error = kafka.Error(part.ErrorCode)
		if part.ErrorMessage != "" {
			res.Error = fmt.Errorf("%w: %s", kafka.Error(part.ErrorCode), part.ErrorMessage)
		}
		return res, res.Error
	}
	return res, nil
}

// ackTimeout is how long the leader may wait for the in-sync replicas
// before it answers a Produce request: the time left of the call, less a
// tenth (at most a second) for the answer to come back; 30 s without a
// deadline. A leader that gives up sooner answers REQUEST_TIMED_OUT with
// the records already in its log, which Kafka commits once a dead follower
// leaves the ISR: every resend in that window would add a copy to a
// partition whose leader never failed (docs/design.md §2.5).
func ackTimeout(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return 30 * time.Second
	}
	left := time.Until(d)
	return max(left-min(left/10, time.Second), time.Millisecond)
}

// classify marks a record's kafka-go error for the relay: [TopicRefused]
// when the topic refuses it, [Permanent] when Kafka refuses the record
// itself, unchanged (transient) otherwise.
func classify(err error) error {
	switch {
	case !permanent(err):
		return err
	case topicWide(err):
		return TopicRefused(err)
	default:
		return Permanent(err)
	}
}

// topicWide reports whether a permanent err is about the topic rather than
// the record.
func topicWide(err error) bool {
	return errors.Is(err, ErrUnknownTopic) || errors.Is(err, kafka.InvalidTopic) ||
		errors.Is(err, kafka.TopicAuthorizationFailed)
}

// permanent reports whether Kafka will refuse a record however often it is
// sent: the relay parks its aggregate instead of retrying forever.
func permanent(err error) bool {
	for _, target := range []error{
		ErrUnknownTopic,
		kafka.MessageSizeTooLarge,
		kafka.RecordListTooLarge,
		kafka.InvalidRecord,
		kafka.InvalidTopic,
		kafka.TopicAuthorizationFailed,
		kafka.PolicyViolation,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
