// Command kafkaready exits 0 once a Kafka broker answers a metadata request.
// scripts/services.sh uses it to tell when the broker it started is ready.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated broker addresses")
	timeout := flag.Duration("timeout", 2*time.Second, "how long to wait for an answer")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(strings.Split(*brokers, ",")...), Timeout: *timeout}
	resp, err := client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafkaready:", err)
		os.Exit(1)
	}
	if resp.Controller.ID < 0 || len(resp.Brokers) == 0 {
		fmt.Fprintln(os.Stderr, "kafkaready: broker answered without a controller")
		os.Exit(1)
	}
	fmt.Printf("kafka ready: %d broker(s), controller %d\n", len(resp.Brokers), resp.Controller.ID)
}
