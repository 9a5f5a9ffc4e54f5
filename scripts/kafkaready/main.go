// Command kafkaready exits 0 once a Kafka broker is healthy, and 1 with the
// reason on stderr otherwise. scripts/services.sh uses it to tell when a
// broker it started is really up, not merely listening.
//
// Without flags beyond -brokers it checks that a metadata request answers
// with a controller and at least one broker. -node-id N also requires node N
// in the answer's broker list: a KRaft broker appears there only once the
// controller quorum has registered and unfenced it. -probe-topic goes further
// and proves the node can take writes: it creates a one-partition topic whose
// replicas are -replication-factor nodes (0: every broker listed; node N first, so it is the preferred
// leader), with min.insync.replicas equal to that factor, produces one record
// with acks=all, and deletes the topic again.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated broker addresses")
	timeout := flag.Duration("timeout", 2*time.Second, "how long to wait for an answer")
	nodeID := flag.Int("node-id", -1, "require this node in the metadata broker list (and lead the probe topic)")
	probe := flag.Bool("probe-topic", false, "create a probe topic, produce one record with acks=all, delete it")
	rf := flag.Int("replication-factor", 1, "replicas of the probe topic; 0 means every broker in the metadata")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(strings.Split(*brokers, ",")...), Timeout: *timeout}
	md, err := checkMetadata(ctx, client, *nodeID)
	if err == nil && *probe {
		err = probeTopic(ctx, client, md, *nodeID, *rf)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafkaready:", err)
		os.Exit(1)
	}
	what := "metadata"
	if *probe {
		what = "metadata and a probe topic"
	}
	fmt.Printf("kafka ready (%s): %d broker(s), controller %d\n", what, len(md.Brokers), md.Controller.ID)
}

// checkMetadata asks for the cluster metadata and requires a known
// controller, at least one broker and, when nodeID >= 0, that node.
func checkMetadata(ctx context.Context, client *kafka.Client, nodeID int) (*kafka.MetadataResponse, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	if md.Controller.ID < 0 || len(md.Brokers) == 0 {
		return nil, errors.New("broker answered without a controller")
	}
	if nodeID >= 0 && !slices.ContainsFunc(md.Brokers, func(b kafka.Broker) bool { return b.ID == nodeID }) {
		return nil, fmt.Errorf("node %d is not in the metadata broker list %v (not registered or fenced)", nodeID, brokerIDs(md.Brokers))
	}
	return md, nil
}

func brokerIDs(bs []kafka.Broker) []int {
	ids := make([]int, len(bs))
	for i, b := range bs {
		ids[i] = b.ID
	}
	slices.Sort(ids)
	return ids
}

// probeTopic creates a throwaway topic on rf nodes (nodeID first when set),
// writes one record with acks=all, and deletes the topic whatever happened.
func probeTopic(ctx context.Context, client *kafka.Client, md *kafka.MetadataResponse, nodeID, rf int) error {
	ids := brokerIDs(md.Brokers)
	if rf <= 0 {
		rf = len(ids)
	}
	if rf > len(ids) {
		return fmt.Errorf("probe needs %d brokers, metadata lists %v", rf, ids)
	}
	replicas := ids[:0:0]
	if nodeID >= 0 {
		replicas = append(replicas, nodeID)
	}
	for _, id := range ids {
		if len(replicas) < rf && id != nodeID {
			replicas = append(replicas, id)
		}
	}
	topic := fmt.Sprintf("outboxkit-probe-%d-%d", max(nodeID, 0), time.Now().UnixNano())
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: -1, ReplicationFactor: -1,
		ReplicaAssignments: []kafka.ReplicaAssignment{{Partition: 0, Replicas: replicas}},
		ConfigEntries:      []kafka.ConfigEntry{{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(rf)}},
	}}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		return fmt.Errorf("create probe topic on nodes %v: %w", replicas, err)
	}
	defer func() {
		// The delete gets its own time: the probe's may be spent.
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := client.DeleteTopics(dctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}}); err != nil {
			fmt.Fprintf(os.Stderr, "kafkaready: delete probe topic %s: %v\n", topic, err)
		}
	}()
	// A new partition takes a moment to get its leader; retry until the
	// record is acknowledged by all rf replicas or the time is up.
	for {
		res, err := client.Produce(ctx, &kafka.ProduceRequest{
			Topic: topic, Partition: 0, RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(kafka.Record{Value: kafka.NewBytes([]byte("probe"))}),
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("produce to probe topic on nodes %v: %w", replicas, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
