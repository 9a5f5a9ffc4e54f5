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
// by topic and partition (murmur2 of the key, like the Java client), and the
// partitions by their leader broker; each broker gets one Produce request
// (acks=all) carrying its share of every partition it leads, all brokers in
// parallel. One request per broker rather than per partition costs the
// broker about 40 % less CPU per record (docs/benchmarks.md).
type kafkaPublisher struct {
	client          *kafka.Client
	balancer        kafka.Murmur2Balancer
	maxRequestBytes int

	mu    sync.Mutex
	parts map[string]topicPartitions
}

type topicPartitions struct {
	ids []int
	// leaders are the partitions' leader brokers when fetched, -1 where
	// none was known.
	leaders []int
	fetched time.Time
}

// maxProduceRequestBytes bounds the record bytes of one Produce request to
// a broker, whatever the partitions it carries: well under the broker's
// socket.request.max.bytes (100 MiB by default).
const maxProduceRequestBytes = maxCallBytes

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

func (p *kafkaPublisher) partitions(ctx context.Context, topic string) (topicPartitions, error) {
	p.mu.Lock()
	tp, ok := p.parts[topic]
	p.mu.Unlock()
	if ok && time.Since(tp.fetched) < partitionsTTL {
		return tp, nil
	}
	md, err := p.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return tp, fmt.Errorf("metadata for %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				return tp, fmt.Errorf("%s: %w (%w)", topic, ErrUnknownTopic, t.Error)
			}
			return tp, fmt.Errorf("metadata for %s: %w", topic, t.Error)
		}
		if len(t.Partitions) == 0 {
			return tp, fmt.Errorf("metadata for %s: no partitions", topic)
		}
		tp = topicPartitions{ids: make([]int, len(t.Partitions)), leaders: make([]int, len(t.Partitions)), fetched: time.Now()}
		for i := range tp.ids {
			// Partition IDs are 0..n-1; the Java partitioner indexes by count.
			tp.ids[i], tp.leaders[i] = i, -1
		}
		for _, pt := range t.Partitions {
			if pt.ID >= 0 && pt.ID < len(tp.leaders) && pt.Leader.Host != "" {
				tp.leaders[pt.ID] = pt.Leader.ID
			}
		}
		p.mu.Lock()
		p.parts[topic] = tp
		p.mu.Unlock()
		return tp, nil
	}
	return tp, fmt.Errorf("%s: %w", topic, ErrUnknownTopic)
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
	// The partitions of each leader go together, in the order they first
	// came; those whose leader is not known go alone.
	var brokers [][]partitionKey
	brokerOf := map[int]int{} // leader -> its index in brokers
	topicErr := map[string]error{}
	for i := range records {
		r := &records[i]
		if err, ok := topicErr[r.Topic]; ok {
			errs[i] = err
			continue
		}
		tp, err := p.partitions(ctx, r.Topic)
		if err != nil {
			topicErr[r.Topic] = err
			errs[i] = err
			continue
		}
		part := p.balancer.Balance(kafka.Message{Key: r.Key}, tp.ids...)
		k := partitionKey{r.Topic, part}
		if _, ok := groups[k]; !ok {
			if b, ok := brokerOf[tp.leaders[part]]; ok {
				brokers[b] = append(brokers[b], k)
			} else {
				if l := tp.leaders[part]; l >= 0 {
					brokerOf[l] = len(brokers)
				}
				brokers = append(brokers, []partitionKey{k})
			}
		}
		groups[k] = append(groups[k], i)
	}

	var wg sync.WaitGroup
	for _, keys := range brokers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.publishBroker(ctx, keys, groups, records, errs)
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

// share is the records of one partition that go in one Produce request.
type share struct {
	k   partitionKey
	idx []int
}

// publishBroker sends the records of the partitions keys, which have one
// leader, in Produce requests that each carry the next part of every
// partition (at most maxRequestBytes of each, at most
// maxProduceRequestBytes in all), one request after the other, and stores
// each record's outcome in errs. After a partition's part failed, the
// rest of that partition is not sent, so a later record of a key never
// lands while an earlier one did not; the other partitions go on.
func (p *kafkaPublisher) publishBroker(ctx context.Context, keys []partitionKey, groups map[partitionKey][]int, records []Record, errs []error) {
	rest := make([][]int, len(keys)) // each partition's records not sent yet
	for j, k := range keys {
		rest[j] = groups[k]
	}
	for {
		var (
			shares []share
			of     []int // the index in keys of each share
			total  int
		)
		for j, k := range keys {
			if len(rest[j]) == 0 {
				continue
			}
			n, size := p.part(records, rest[j])
			if len(shares) > 0 && total+size > maxProduceRequestBytes {
				continue // in a later request
			}
			shares, of = append(shares, share{k, rest[j][:n]}), append(of, j)
			total += size
		}
		if len(shares) == 0 {
			return
		}
		ok := p.publishShares(ctx, shares, records, errs)
		for s, j := range of {
			sent := len(shares[s].idx)
			if !ok[s] {
				for _, i := range rest[j][sent:] {
					errs[i] = fmt.Errorf("produce to %s/%d: not sent after an earlier request of the partition failed: %w", keys[j].topic, keys[j].partition, errNotSent)
				}
				sent = len(rest[j])
			}
			rest[j] = rest[j][sent:]
		}
	}
}

// part returns how many of the records idx, from the first, go in one
// request of their partition (at least one; at most maxRequestBytes in
// all), and their size.
func (p *kafkaPublisher) part(records []Record, idx []int) (n, size int) {
	for n < len(idx) && (n == 0 || size+records[idx[n]].size() <= p.maxRequestBytes) {
		size += records[idx[n]].size()
		n++
	}
	return n, size
}

// publishShares sends shares, of partitions with one leader, as one
// Produce request, stores each record's outcome in errs, and reports for
// each share whether all its records were acknowledged. When the request
// cannot be routed to one broker (the leaders moved since the metadata
// was fetched), nothing was sent, and each share goes in a request of its
// own.
func (p *kafkaPublisher) publishShares(ctx context.Context, shares []share, records []Record, errs []error) []bool {
	ok := make([]bool, len(shares))
	if len(shares) == 1 {
		ok[0] = p.publishRequest(ctx, shares[0].k, records, shares[0].idx, errs)
		return ok
	}
	resp, err := p.produceMany(ctx, shares, records)
	var routing *produceAPI.Error
	if errors.As(err, &routing) {
		for _, sh := range shares {
			p.forget(sh.k.topic)
		}
		var wg sync.WaitGroup
		for s := range shares {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok[s] = p.publishRequest(ctx, shares[s].k, records, shares[s].idx, errs)
			}()
		}
		wg.Wait()
		return ok
	}
	for s, sh := range shares {
		r, perr := p.outcome(resp, err, sh.k)
		ok[s] = p.settleRequest(ctx, sh.k, records, sh.idx, errs, r, perr)
	}
	return ok
}

// publishRequest sends the records idx as one Produce request, stores each
// record's outcome in errs and reports whether all were acknowledged.
func (p *kafkaPublisher) publishRequest(ctx context.Context, k partitionKey, records []Record, idx []int, errs []error) bool {
	res, err := p.produce(ctx, k, records, idx)
	return p.settleRequest(ctx, k, records, idx, errs, res, err)
}

// settleRequest stores in errs the outcome of the records idx of
// partition k, sent in one request that answered res and err, and reports
// whether all were acknowledged. A part too large for the broker as a
// whole is sent again one record at a time, in order, up to the first that
// fails.
func (p *kafkaPublisher) settleRequest(ctx context.Context, k partitionKey, records []Record, idx []int, errs []error, res *kafka.ProduceResponse, err error) bool {
	if err == nil {
		return true
	}
	tooLarge := errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge)
	switch {
	case tooLarge && len(idx) > 1:
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
	resp, err := p.produceMany(ctx, []share{{k, idx}}, records)
	return p.outcome(resp, err, k)
}

// outcome is partition k's answer in a Produce request that returned resp
// and err. On an error the topic's metadata is fetched again before the
// next call.
func (p *kafkaPublisher) outcome(resp *produceAPI.Response, err error, k partitionKey) (*kafka.ProduceResponse, error) {
	var res *kafka.ProduceResponse
	if err == nil {
		res, err = partitionResponse(resp, k)
	}
	if err != nil {
		p.forget(k.topic)
		return res, fmt.Errorf("produce to %s/%d: %w", k.topic, k.partition, err)
	}
	return res, nil
}

// produceMany sends shares as one Produce request, to the leader of their
// partitions, and returns the broker's answer.
func (p *kafkaPublisher) produceMany(ctx context.Context, shares []share, records []Record) (*produceAPI.Response, error) {
	var topics []produceAPI.RequestTopic
	for _, sh := range shares {
		recs := make([]kafka.Record, len(sh.idx))
		for j, i := range sh.idx {
			r := &records[i]
			hs := make([]kafka.Header, len(r.Headers))
			for h, hd := range r.Headers {
				hs[h] = kafka.Header{Key: hd.Key, Value: hd.Value}
			}
			recs[j] = kafka.Record{Key: kafka.NewBytes(r.Key), Value: kafka.NewBytes(r.Value), Headers: hs}
		}
		part := produceAPI.RequestPartition{
			Partition: int32(sh.k.partition),
			RecordSet: protocol.RecordSet{Records: kafka.NewRecordReader(recs...)},
		}
		if n := len(topics); n > 0 && topics[n-1].Topic == sh.k.topic {
			topics[n-1].Partitions = append(topics[n-1].Partitions, part)
		} else {
			topics = append(topics, produceAPI.RequestTopic{Topic: sh.k.topic, Partitions: []produceAPI.RequestPartition{part}})
		}
	}
	// kafka.Client.Produce would tell the leader to wait for the in-sync
	// replicas 500 ms (half the context's time when the Client has a
	// Timeout); the request is sent through the Transport so that the
	// leader gets the call's time instead (ackTimeout).
	m, err := p.client.Transport.RoundTrip(ctx, p.client.Addr, &produceAPI.Request{
		Acks:    int16(kafka.RequireAll),
		Timeout: int32(ackTimeout(ctx) / time.Millisecond),
		Topics:  topics,
	})
	if err != nil {
		return nil, err
	}
	r, ok := m.(*produceAPI.Response)
	if !ok {
		return nil, fmt.Errorf("produce: the broker answered %T", m)
	}
	return r, nil
}

// partitionResponse is what kafka.Client.Produce makes of partition k's
// part of a Produce response: the partition's error, and the records the
// broker rejected it for.
func partitionResponse(r *produceAPI.Response, k partitionKey) (*kafka.ProduceResponse, error) {
	var part *produceAPI.ResponsePartition
	for t := range r.Topics {
		if r.Topics[t].Topic != k.topic {
			continue
		}
		for i := range r.Topics[t].Partitions {
			if int(r.Topics[t].Partitions[i].Partition) == k.partition {
				part = &r.Topics[t].Partitions[i]
			}
		}
	}
	if part == nil {
		return nil, errors.New("produce: the broker answered without the partition")
	}
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
