package relay_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/outboxkit/outboxkit/broker"
	"github.com/outboxkit/outboxkit/internal/testenv"
	"github.com/outboxkit/outboxkit/relay"
)

// TestKafkaPublisherSettlesEachPartitionOfARequest sends one call whose
// records span six partitions of one broker, which the publisher sends as
// one Produce request. One partition's share holds a record over the
// topic's max.message.bytes. Kafka refuses that partition's batch alone:
// its records before the large one are acknowledged (sent again one at a
// time), the large one is refused for good, the ones after it are not
// sent; every record of the other partitions is acknowledged, and each
// acknowledged record is on the topic exactly once.
func TestKafkaPublisherSettlesEachPartitionOfARequest(t *testing.T) {
	testenv.NeedRealKafka(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	brokers := testenv.Brokers(t)
	topic := testenv.Unique("publisher-shares")
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: 6, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "4000"}},
	}}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		t.Fatalf("create topic: %v", err)
	}
	t.Cleanup(func() {
		if _, err := client.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{topic}}); err != nil {
			t.Logf("delete topic %s: %v", topic, err)
		}
	})

	pub, err := relay.NewKafkaPublisher(broker.Config{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	// Five records of each of 24 keys, key by key interleaved; the large
	// record is the third of key-7.
	var records []relay.Record
	for n := range 5 {
		for k := range 24 {
			value := fmt.Appendf(nil, "key-%d #%d", k, n)
			if k == 7 && n == 2 {
				value = append(value, make([]byte, 6000)...)
			}
			records = append(records, relay.Record{Topic: topic, Key: fmt.Appendf(nil, "key-%d", k), Value: value,
				Headers: []relay.Header{{Key: "n", Value: fmt.Appendf(nil, "%d", n)}}})
		}
	}
	// A fresh topic's partitions may answer NOT_LEADER for a moment: send
	// one record of each key first, again the failed ones, until all are
	// acknowledged.
	want := map[string]int{} // acknowledged values
	var warm []relay.Record
	for k := range 24 {
		warm = append(warm, relay.Record{Topic: topic, Key: fmt.Appendf(nil, "key-%d", k), Value: fmt.Appendf(nil, "key-%d warm-up", k)})
	}
	var perr *relay.PublishError
	for deadline := time.Now().Add(30 * time.Second); len(warm) > 0; time.Sleep(200 * time.Millisecond) {
		err := pub.Publish(ctx, warm)
		var left []relay.Record
		for i, r := range warm {
			if err == nil || errors.As(err, &perr) && perr.Errs[i] == nil {
				want[string(r.Value)]++
			} else {
				left = append(left, r)
			}
		}
		warm = left
		if time.Now().After(deadline) {
			t.Fatalf("warm-up: %d records still refused: %v", len(warm), err)
		}
	}
	err = pub.Publish(ctx, records)
	if !errors.As(err, &perr) {
		t.Fatalf("Publish: %v, want a *relay.PublishError", err)
	}
	partition := func(key []byte) int {
		return (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: key}, 0, 1, 2, 3, 4, 5)
	}
	bad := partition([]byte("key-7"))
	large := -1 // the large record's index
	for i, r := range records {
		if len(r.Value) > 6000 {
			large = i
		}
	}
	for i, r := range records {
		e := perr.Errs[i]
		var refusal *relay.RefusedError
		name := fmt.Sprintf("record %d (%s, partition %d)", i, r.Key, partition(r.Key))
		switch {
		case partition(r.Key) != bad && e != nil:
			t.Errorf("%s, not of the refused partition %d: %v, want acknowledged", name, bad, e)
		case partition(r.Key) != bad:
		case i < large && e != nil:
			t.Errorf("%s, before the large record of its partition: %v, want acknowledged", name, e)
		case i == large && (!errors.As(e, &refusal) || !errors.Is(e, kafka.MessageSizeTooLarge)):
			t.Errorf("the large record: %v, want Kafka's refusal for its size", e)
		case i > large && (e == nil || errors.As(e, &refusal)):
			t.Errorf("%s, after the large record of its partition: %v, want a transient not-sent error", name, e)
		}
		if e == nil {
			want[string(r.Value)]++
		}
	}
	got, err := testenv.ReadTopicToEnd(brokers, topic, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, m := range got {
		seen[string(m.Value)]++
	}
	for v, n := range seen {
		if want[v] != 1 || n != 1 {
			t.Errorf("%q on the topic %d times, acknowledged %d times", v[:min(len(v), 12)], n, want[v])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d records on the topic, %d acknowledged", len(got), len(want))
	}
	t.Logf("%d records in one call, %d acknowledged with the warm-up's 24; partition %d refused one", len(records), len(want), bad)
}
