package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// clusterBrokers returns the three-node cluster's addresses, from
// scripts/services.sh cluster-env (KAFKA_BROKERS=host:port,...), once
// cluster-status says every node is up: the run kills and starts the nodes
// scripts/services.sh runs for OUTBOXKIT_STATE, and must not start from a
// degraded cluster.
func clusterBrokers(root string) (string, error) {
	b := &brokerControl{script: filepath.Join(root, "scripts", "services.sh")}
	status, err := b.services("cluster-status")
	if err != nil || !strings.Contains(status, "cluster: up") {
		return "", fmt.Errorf("scripts/services.sh cluster-status does not report the cluster up (%v): %s", err, status)
	}
	out, err := b.services("cluster-env")
	if err != nil {
		return "", fmt.Errorf("scripts/services.sh cluster-env: %v: %s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "KAFKA_BROKERS="); ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("scripts/services.sh cluster-env printed no KAFKA_BROKERS= line: %q", out)
}

// topicLeader returns the node that leads the most partitions of topic (the
// lowest id on a tie) and how many it leads. The cluster's node ids are the
// node numbers scripts/services.sh takes (1, 2, 3).
func topicLeader(brokers []string, topic string) (node, led, partitions int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, 0, 0, err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return 0, 0, 0, fmt.Errorf("metadata of %s: %v", topic, md.Topics)
	}
	count := map[int]int{}
	for _, p := range md.Topics[0].Partitions {
		if p.Error == nil && p.Leader.ID > 0 {
			count[p.Leader.ID]++
		}
	}
	for id, n := range count {
		if n > led || (n == led && id < node) {
			node, led = id, n
		}
	}
	if node == 0 {
		return 0, 0, 0, fmt.Errorf("no partition of %s has a leader", topic)
	}
	return node, led, len(md.Topics[0].Partitions), nil
}

// leaderKill SIGKILLs the node leading the most partitions of the chaos
// topic with scripts/services.sh cluster-kill, waits down, and starts it
// again with cluster-start (which returns once the node is healthy).
func (in *injector) leaderKill(kind string, down time.Duration) {
	defer func() {
		in.mu.Lock()
		in.brokerBusy, in.brokerDown, in.brokerEnd = false, false, time.Now()
		in.mu.Unlock()
	}()
	node, led, parts, err := topicLeader(in.cluster.brokers, in.cluster.topic)
	if err != nil {
		in.skip(kind, "find the leader: %v", err)
		return
	}
	n := fmt.Sprint(node)
	t0 := time.Now()
	if out, err := in.cluster.services("cluster-kill", n); err != nil {
		in.skip(kind, "scripts/services.sh cluster-kill %s: %v: %s", n, err, out)
		return
	}
	in.mu.Lock()
	in.brokerDown = true
	in.mu.Unlock()
	in.recordAt(t0, kind, "node %d (leader of %d of %d partitions) SIGKILL, down for %s", node, led, parts, down.Round(time.Millisecond))
	time.Sleep(down)
	if err := in.cluster.startNode(n, in.logf); err != nil {
		in.logf("cluster: could not start node %d again: %v", node, err)
		return
	}
	in.logf("cluster: node %d up again (%s after the kill)", node, time.Since(t0).Round(time.Millisecond))
}

// clusterControl kills and starts nodes of the three-node cluster with
// scripts/services.sh.
type clusterControl struct {
	brokerControl
	brokers []string
	topic   string
}

// startNode starts node n, retrying a failed start a few times.
func (c *clusterControl) startNode(n string, logf func(string, ...any)) error {
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		var out string
		if out, err = c.services("cluster-start", n); err == nil {
			return nil
		}
		logf("cluster: cluster-start %s attempt %d failed: %v: %s", n, attempt, err, out)
		time.Sleep(2 * time.Second)
	}
	return err
}

// ensureUp starts every node that does not answer, at the end of the load.
func (c *clusterControl) ensureUp(logf func(string, ...any)) error {
	for i, addr := range c.brokers {
		b := brokerControl{addr: addr}
		if b.answers() {
			continue
		}
		n := fmt.Sprint(i + 1)
		logf("cluster: node %s (%s) not answering; starting it", n, addr)
		if err := c.startNode(n, logf); err != nil {
			return err
		}
	}
	return nil
}
